from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from iaakd.costs import backbone_costs
from iaakd.errors import UserError
from iaakd.models import MLSP, Distiller, Student, create_backbone, mlsp_level_dims, resolve_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnext101_32x8d", 3904),
        ("resnext101_32x8d.fb_swsl_ig1b_ft_in1k", 3904),
        ("resnet18", 1024),
        ("tf_efficientnet_lite0", 1792),
        ("tf_efficientnet_lite1", 1792),
        ("tf_efficientnet_lite2", 1840),
        ("resnetv2_152x4_bit.goog_in21k_ft_in1k", 15616),
    ],
)
def test_mlsp_dimensions_on_the_meta_device(name, expected):
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
        assert sum(mlsp_level_dims(model)) == expected
        pooled = MLSP(model)(torch.empty(2, 3, 64, 96))
    assert pooled.shape == (2, expected)


def test_mlsp_equals_pooling_hooked_layers_by_hand_at_an_odd_size():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False).eval()
    by_hand = {}
    for name in ("act1", "layer1", "layer2", "layer3", "layer4"):
        dict(model.named_modules())[name].register_forward_hook(
            lambda _m, _i, out, name=name: by_hand.__setitem__(name, out)
        )
    images = torch.randn(2, 3, 203, 317)
    with torch.no_grad():
        pooled = MLSP(model)(images)
    expected = torch.cat(
        [by_hand[name].mean(dim=(2, 3)) for name in ("act1", "layer1", "layer2", "layer3", "layer4")], 1
    )
    torch.testing.assert_close(pooled, expected)


def test_mlsp_adds_the_head_conv_when_wider_than_the_last_stage():
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    levels = {}
    for info in model.feature_info:
        dict(model.named_modules())[info["module"]].register_forward_hook(
            lambda _m, _i, out, name=info["module"]: levels.__setitem__(name, out)
        )
    images = torch.randn(1, 3, 203, 317)
    with torch.no_grad():
        pooled = MLSP(model)(images)
        head = model.forward_features(images)
    expected = torch.cat(
        [levels[info["module"]].mean(dim=(2, 3)) for info in model.feature_info] + [head.mean(dim=(2, 3))], 1
    )
    assert expected.shape[1] == 1792
    torch.testing.assert_close(pooled, expected)


SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_packaged_weights_load_strictly_and_classify_real_photos(name):
    model, weights = create_backbone(name, "auto")
    assert weights.source == "packaged" and len(weights.sha256) == 64
    model.eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)
    transform = timm.data.create_transform(**config)
    for file_name, allowed in (("chelsea.png", range(281, 286)), ("coffee.png", [967])):  # cats; espresso
        image = Image.open(SKIMAGE_DATA / file_name).convert("RGB")
        with torch.no_grad():
            top_class = model(transform(image)[None]).argmax(1).item()
        assert top_class in allowed, f"{name} calls {file_name} class {top_class}"


def test_missing_weights_fail_with_a_clear_message_never_random():
    with pytest.raises(
        UserError, match="no pretrained weights for 'resnet18.a1_in1k' found offline.*weights=random"
    ):
        create_backbone("resnet18", "auto")


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(
        UserError, match="unknown backbone 'tf_efficientnet_lite9'.*did you mean.*tf_efficientnet_lite"
    ):
        resolve_name("tf_efficientnet_lite9")


def test_deprecated_alias_is_refused():
    with pytest.raises(UserError, match="deprecated timm alias"):
        resolve_name("ig_resnext101_32x48d")


def test_bare_name_resolves_to_timm_default_tag():
    assert resolve_name("tf_efficientnet_lite0") == "tf_efficientnet_lite0.in1k"
    with pytest.raises(UserError, match="no tag"):
        resolve_name("resnet18.nonexistent_tag")


def test_weights_file_path_loads_and_bad_file_is_a_clear_error(tmp_path):
    model, _ = create_backbone("resnet18", "random", num_classes=0)
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    loaded, weights = create_backbone("resnet18", str(tmp_path / "resnet18.pth"), num_classes=0)
    assert weights.source == "file"
    torch.testing.assert_close(loaded.state_dict()["conv1.weight"], model.state_dict()["conv1.weight"])
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        create_backbone("resnet18", str(tmp_path / "broken.pth"))
    with pytest.raises(UserError, match="weights file not found"):
        create_backbone("resnet18", str(tmp_path / "absent.pth"))


def test_distiller_and_student_shapes():
    distiller = Distiller(40, [16, 8], dropout=0.1).eval()
    distribution, feature = distiller(torch.randn(5, 40))
    assert distribution.shape == (5, 10) and feature.shape == (5, 8)
    torch.testing.assert_close(distribution.sum(1), torch.ones(5))
    backbone, _ = create_backbone("resnet18", "random", num_classes=0)
    distribution, feature, tag_logits = Student(backbone, 8).eval()(torch.randn(2, 3, 64, 64))
    assert distribution.shape == (2, 10) and feature.shape == (2, 8) and (feature >= 0).all()
    assert tag_logits is None  # only the multi-task baseline predicts tags


def test_gmacs_in_the_papers_unit():
    # The paper: ResNeXt101 32x8d costs 16.4 G "FLOPs" (MACs) at 224x224 and 30.6 G at 300x300.
    params_m, macs = backbone_costs("resnext101_32x8d", 224, 224, mlsp=False)
    assert params_m == pytest.approx(86.7, abs=0.5)  # without the classifier
    assert macs == pytest.approx(16.4, abs=0.2)
    assert backbone_costs("resnext101_32x8d", 300, 300, mlsp=False)[1] == pytest.approx(30.6, abs=0.6)
    assert np.isfinite(macs)


PAPER_TRIO = {  # Table VIII: parameters (M) of each backbone, MLSP dimensions
    "resnext101_32x8d.fb_swsl_ig1b_ft_in1k": (88.8, 3904),
    "resnext101_32x48d.fb_wsl_ig1b_ft_in1k": (828.4, 3904),
    "resnetv2_152x4_bit.goog_in21k_ft_in1k": (936.5, 15616),
}
PAPER_TOTAL_PARAMS_M = 1853.2  # Table VIII's total for the trio


def test_papers_teacher_trio_on_the_meta_device():
    """23,424 MLSP dimensions and the paper's parameter counts (Table VIII), counted from the models
    themselves, without any weights. The models' counts add up to 1,853.7 M; the paper prints 1,853.2 M
    (its per-model figures add up to 1,853.7 too), within 0.05 %."""
    dims, params_m = {}, {}
    for name in PAPER_TRIO:
        with torch.device("meta"):
            model = timm.create_model(resolve_name(name), pretrained=False)
        params_m[name] = sum(p.numel() for p in model.parameters()) / 1e6
        dims[name] = sum(mlsp_level_dims(model))
    for name, (paper_params_m, paper_dim) in PAPER_TRIO.items():
        assert params_m[name] == pytest.approx(paper_params_m, abs=0.05), name
        assert dims[name] == paper_dim, name
    assert sum(dims.values()) == 23424
    assert sum(params_m.values()) == pytest.approx(PAPER_TOTAL_PARAMS_M, rel=5e-4)


def test_32x48d_builder_is_the_wide_model_not_the_32x8d_alias():
    assert resolve_name("resnext101_32x48d") == "resnext101_32x48d.fb_wsl_ig1b_ft_in1k"
    with torch.device("meta"):
        model = timm.create_model("resnext101_32x48d.fb_wsl_ig1b_ft_in1k")
    assert model.pretrained_cfg["url"].endswith("ig_resnext101_32x48-3e41cc8a.pth")
    assert model.layer1[0].conv2.out_channels == 1536  # 32 groups x base width 48 (32x8d: 256)


def test_planning_command_prints_the_papers_numbers(capsys):
    from iaakd.plan import main

    main(["--images", "255502", "--size", "800x600", *PAPER_TRIO])
    output = capsys.readouterr().out
    assert "23424" in output and "46,848 bytes per image" in output and "12.0 GB for 255,502 images" in output
    assert "1853.7" in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--size", "800"], "argument --size: '800' is not WIDTHxHEIGHT (for example 800x600)"),
        (["--size", "0x600"], "argument --size: '0x600': width and height must be positive"),
        (["--size", "800x-6"], "argument --size: '800x-6': width and height must be positive"),
        (["--images", "0"], "argument --images: '0' must be positive"),
        (["--images", "many"], "argument --images: 'many' is not a whole number"),
    ],
)
def test_planning_command_refuses_bad_sizes_and_counts_in_one_line(capsys, arguments, message):
    from iaakd.plan import main

    with pytest.raises(SystemExit) as exit_info:
        main([*arguments, "resnet18"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"python -m iaakd.plan: error: {message}"


def test_planning_command_does_not_call_a_model_error_a_bad_size(monkeypatch):
    """A ValueError from timm or the MAC counter is not "--size is not WIDTHxHEIGHT"."""
    from iaakd import plan

    def broken(*_args):
        raise ValueError("timm: this model cannot take that input")

    monkeypatch.setattr(plan, "plan_backbone", broken)
    with pytest.raises(ValueError, match="timm: this model cannot take that input"):
        plan.main(["--size", "800x600", "resnet18"])
