"""MLSP for ViT-style backbones: every block's mean patch token plus the final class token, at any size."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

from iaakd.errors import UserError
from iaakd.models import MLSP, create_backbone, mlsp_level_dims
from iaakd.models.backbones import any_size_kwargs


def hooked_by_hand(
    model: torch.nn.Module, images: torch.Tensor, prefix: int, class_token: bool
) -> tuple[torch.Tensor, int]:
    """Block outputs caught by our own hooks (and the token count): the mean of each block's patch tokens (the last block's after
    the final norm), then the final class token."""
    outputs: dict[str, torch.Tensor] = {}
    names = [f"blocks.{index}" for index in range(len(model.blocks))] + ["norm"]
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name in names
    ]
    with torch.no_grad():
        model.forward_features(images)
    for handle in handles:
        handle.remove()
    levels = [outputs[name] for name in names[:-2]] + [outputs["norm"]]
    pooled = [level[:, prefix:].mean(dim=1) for level in levels]
    if class_token:
        pooled.append(outputs["norm"][:, 0])
    return torch.cat(pooled, dim=1), outputs["blocks.0"].shape[1]


@pytest.mark.parametrize(
    ("name", "patch", "prefix", "class_token"),
    [
        ("vit_tiny_patch16_224", 16, 1, True),
        ("deit_tiny_distilled_patch16_224", 16, 2, True),  # class and distillation tokens
        ("test_vit2", 16, 1, False),  # one register token, no class token
        ("eva02_tiny_patch14_224", 14, 1, True),  # Eva, rotary position embeddings
    ],
)
def test_vit_mlsp_equals_block_patch_means_and_class_token_hooked_by_hand_at_an_odd_size(
    name, patch, prefix, class_token
):
    torch.manual_seed(0)
    model, _ = create_backbone(name, "random")
    model.eval()
    height, width = 75, 109  # a multiple of neither 14 nor 16: the patch grid is padded, never cropped
    images = torch.randn(2, 3, height, width)
    with torch.no_grad():
        pooled = MLSP(model)(images)
    expected, tokens = hooked_by_hand(model, images, prefix, class_token)
    assert tokens == prefix + -(-height // patch) * -(-width // patch)  # full resolution, padded grid
    depth, channels = len(model.blocks), model.embed_dim
    assert pooled.shape == (2, (depth + class_token) * channels)
    torch.testing.assert_close(pooled, expected)
    with torch.no_grad():
        alone = MLSP(model)(images[1:])
    torch.testing.assert_close(alone, pooled[1:], rtol=1e-4, atol=1e-5)  # a batch mixes nothing


@pytest.mark.parametrize(
    ("name", "channels", "depth", "tiny"),
    [
        ("vit_base_patch16_clip_224.openai", 768, 12, {"embed_dim": 64, "depth": 3, "num_heads": 2}),
        ("vit_small_patch14_dinov2.lvd142m", 384, 12, {"embed_dim": 48, "depth": 2, "num_heads": 2}),
    ],
)
def test_vit_level_dims_on_the_meta_device_match_a_real_forward(name, channels, depth, tiny):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **any_size_kwargs(name))
        assert mlsp_level_dims(model) == [channels] * (depth + 1)  # every block, then the class token
        assert MLSP(model).eval()(torch.empty(1, 3, 480, 640)).shape == (1, channels * (depth + 1))
        tiny_on_meta = timm.create_model(name, pretrained=False, **tiny, **any_size_kwargs(name))
        tiny_dims = mlsp_level_dims(tiny_on_meta)
    torch.manual_seed(0)
    tiny_model = timm.create_model(name, pretrained=False, **tiny, **any_size_kwargs(name)).eval()
    with torch.no_grad():
        real = MLSP(tiny_model)(torch.randn(1, 3, 57, 90))
    assert tiny_dims == [tiny["embed_dim"]] * (tiny["depth"] + 1)
    assert real.shape == (1, sum(tiny_dims))


@pytest.mark.parametrize(
    ("size", "clip_gmacs"),
    [("224x224", "17.6"), ("640x480", "129.3")],  # timm's table: 17.6 GMACs for the CLIP B/16 at 224
)
def test_planning_command_prints_mlsp_rows_for_clip_and_dinov2_towers(size, clip_gmacs):
    command = [sys.executable, "-m", "iaakd.plan", "--images", "1000", "--size", size]
    result = subprocess.run(
        [*command, "vit_base_patch16_clip_224.openai", "vit_small_patch14_dinov2.lvd142m"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()}
    clip, dinov2 = rows["vit_base_patch16_clip_224.openai"], rows["vit_small_patch14_dinov2.lvd142m"]
    assert clip[1:4] == ["86.2", clip_gmacs, "9984"] and clip[4:] == " + ".join(["768"] * 13).split()
    assert dinov2[1] == "22.1" and dinov2[3] == "4992"
    assert f"at {size}; features: 29,952 bytes per image" in result.stdout


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("swin_tiny_patch4_window7_224", "its feature maps are NHWC, not NCHW"),
        ("beit_base_patch16_224", "its tokens come in a structure (Beit) MLSP does not know"),
        ("hrnet_w18_small", "its feature_info names a module 'stem' it does not have"),
        ("botnet26t_256", "at 224x224: AssertionError"),  # a fixed-size model: its meta forward fails
    ],
)
def test_an_unpoolable_backbone_is_one_error_line_naming_it(capsys, name, why):
    from iaakd.plan import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--size", "224x224", "resnet18", name])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    assert lines[0].startswith(f"error: backbone '{name}.") and why in lines[0]


def test_a_vit_made_without_dynamic_image_size_is_refused_by_name():
    with torch.device("meta"):
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    with pytest.raises(
        UserError, match=r"backbone 'vit_tiny_patch16_224.augreg_in21k_ft_in1k'.*dynamic_img_size"
    ):
        MLSP(model)
