"""The student's configuration: its backbone, input, schedule, KD and unlabelled-image settings (params.yaml's ``student``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from iaakd.config import Rule, param
from iaakd.data.images import INPUT_MODES, RESIZE_FILTERS
from iaakd.devices import PRECISIONS
from iaakd.losses import MIXES, OUTPUT_TARGETS
from iaakd.models.heads import SEMANTIC_MODES

INITS = ("weights", "pretrain", "align")  # student.init: where the backbone starts (iaakd.pretrained)
BATCHNORM_MODES = ("joint", "separate")  # how BatchNorm sees the unlabelled images (UnlabeledConfig)


# The unlabelled side's random streams, each seeded from (its tag, student.seed, ...): none of them is the
# labelled run's (the loader's generator, torch's global stream), so adding the pool never moves those.
UNLABELED_ORDER, UNLABELED_DROPOUT, UNLABELED_SHUFFLE = 1, 2, 3


@dataclass(frozen=True)
class KDConfig:
    enabled: bool = True  # false: the baseline trained on ground-truth distributions alone
    feature_weight: float = param(1.0, minimum=0)  # weight of MSE(f_t, f_s); 0 removes the feature term
    target: str = param("teacher", choices=OUTPUT_TARGETS)  # the output term's target (Table VI)
    mix: str = param("none", choices=MIXES)  # none | loss (Eq. 10) | label (Eq. 11)
    shuffle: bool = False  # control: teacher knowledge permuted across training images


@dataclass(frozen=True)
class UnlabeledConfig:
    """CSKD's semi-supervised KD (phase 2): the KD terms also on images without labels (the pool, and
    split.label_fraction's withheld training images), whose only target is the teacher's knowledge."""

    enabled: bool = False
    weight: float = param(1.0, minimum=0)  # weight of the KD terms on unlabelled images
    share: float | None = param(None, above=0, below=1)  # of each batch; None: their share of all images
    batchnorm: str = param(
        "joint", choices=BATCHNORM_MODES
    )  # joint: one pass for both kinds | separate: their own pass, BatchNorm's running statistics untouched


@dataclass(frozen=True)
class StudentConfig:
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "auto"
    init: str = param(
        "weights", choices=INITS
    )  # weights: from `weights`; pretrain, align: those stages' backbone
    input_size: int = param(128, minimum=32)
    resize_filter: str = param("bilinear", choices=RESIZE_FILTERS)
    input_mode: str = param("resize", choices=INPUT_MODES)  # pad_crop (Table VII): centred on pad_size, cut
    pad_size: int = param(800, above=0)
    jpeg_draft: bool = False  # resize: decode JPEGs at 1/2-1/8 scale, still >= input_size (faster loader)
    epochs: int = param(12, above=0)
    batch_size: int = param(16, above=0)
    lr: float = param(3e-4, above=0)
    lr_step_epochs: int = param(4, above=0)
    weight_decay: float = param(0.0, minimum=0)
    freeze_backbone: bool = False  # Table V: train only the head
    precision: str = param("fp32", choices=PRECISIONS)  # autocast on the device (fp16 with gradient scaling)
    seed: int = 0
    semantic: str = param(
        "none", choices=SEMANTIC_MODES
    )  # input (multi-modal) | target (multi-task), Table XII
    semantic_weight: float = param(
        1.0, minimum=0
    )  # target: weight of BCE(tags) (Eq. 9 adds it with weight 1)
    kd: KDConfig = field(default_factory=KDConfig)
    unlabeled: UnlabeledConfig = field(default_factory=UnlabeledConfig)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            lambda c: c.input_mode != "pad_crop" or c.pad_size >= c.input_size,
            "{prefix}.pad_size={pad_size} must be >= {prefix}.input_size={input_size}"
            " (pad_crop cuts input_size out of the padded square)",
        ),
        Rule(
            lambda c: not c.jpeg_draft or c.input_mode == "resize",
            "{prefix}.jpeg_draft=true works with {prefix}.input_mode=resize only (pad_crop keeps the pixels' scale)",
        ),
        Rule(
            lambda c: not c.unlabeled.enabled or c.kd.enabled,
            "{prefix}.unlabeled.enabled=true needs {prefix}.kd.enabled=true: the teacher's knowledge is the only"
            " target an unlabelled image has",
        ),
        Rule(
            lambda c: not c.unlabeled.enabled or (c.kd.target == "teacher" and c.kd.mix == "none"),
            "{prefix}.unlabeled.enabled=true needs {prefix}.kd.target=teacher and {prefix}.kd.mix=none (got"
            " {kd.target} and {kd.mix}): an unlabelled image can only learn the teacher's output, and labelled"
            " images taught another target would pull the same output two ways",
        ),
        Rule(
            lambda c: not c.unlabeled.enabled or c.semantic != "input",
            "{prefix}.unlabeled.enabled=true does not work with {prefix}.semantic=input: the pool's images have"
            " no tags to take as input",
        ),
    )
