"""The student: one backbone trained on resized images, by knowledge distillation or on ground truth.

The loop reads top to bottom: build, then for each epoch train, validate, record; save the last epoch
(the paper's protocol) and a self-describing checkpoint.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from iaakd import distributed
from iaakd.checkpoints import Checkpoint, fingerprint, safe_load, save_atomically
from iaakd.config import Rule, param
from iaakd.data.images import INPUT_MODES, RESIZE_FILTERS, Preprocess
from iaakd.devices import PRECISIONS, autocast_context
from iaakd.distributed import SINGLE, Ranks
from iaakd.errors import UserError, first_line
from iaakd.feature_rows import VectorRows
from iaakd.losses import MIXES, OUTPUT_TARGETS, student_loss, tag_loss, unlabeled_loss
from iaakd.metrics import srcc
from iaakd.models import Student, create_backbone, model_name, normalisation
from iaakd.models.heads import HEAD_START, SEMANTIC_MODES, StudentOutput, start_output_at
from iaakd.pretrained import INITS, load_backbone
from iaakd.tasks import DISTRIBUTION, Task
from iaakd.training import TrainingHistory, TrainingState, fit, resume, seeded

CHECKPOINT_FORMAT = 2  # 2: "kind" and "data_source" recorded; loads with weights_only=True
READABLE_FORMATS = (1, 2)
CPU = torch.device("cpu")
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


@dataclass
class StudentData:
    """What one split needs: image paths, ground-truth targets (``Task.targets``), teacher knowledge
    (may be None): the teacher's output D_t (or y_t) and feature f_t, and AVA's tags as two-hot vectors
    (``iaakd.data.labels.two_hot_tags``; needed only by the semantic baselines). Unlabelled images (CSKD)
    have a zero-width ground truth, shape (n, 0): no labels, and nothing that could be read as one."""

    paths: list[str]
    ground_truth: np.ndarray
    teacher_output: np.ndarray | VectorRows | None = None  # VectorRows: read from disk, item by item
    teacher_feature: np.ndarray | VectorRows | None = None
    tags: np.ndarray | None = None


class _TargetDataset(Dataset):
    """(image as uint8, ground truth, teacher output, teacher feature, tags); the teacher parts and the
    tags are empty tensors where none are given."""

    def __init__(self, data: StudentData, preprocess: Preprocess) -> None:
        self.data, self.preprocess = data, preprocess
        self.empty = torch.zeros(0)

    def __len__(self) -> int:
        return len(self.data.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        data = self.data
        image = self.preprocess.load(data.paths[index])
        ground_truth = torch.from_numpy(data.ground_truth[index])
        tags = self.empty if data.tags is None else torch.from_numpy(data.tags[index])
        if data.teacher_output is None:
            return image, ground_truth, self.empty, self.empty, tags
        return (
            image,
            ground_truth,
            torch.from_numpy(data.teacher_output[index]),
            torch.from_numpy(data.teacher_feature[index]),
            tags,
        )


def build_student(
    config: StudentConfig, feature_dim: int, task: Task = DISTRIBUTION, init_file: Path | None = None
) -> tuple[Student, Preprocess, dict]:
    """The student, its preprocessing and its weights source; with ``config.init`` other than ``weights``,
    the backbone comes from ``init_file`` (models/pretrain.pt or models/align.pt), loaded strictly."""
    if config.init == "weights":
        backbone, weights = create_backbone(config.backbone, config.weights, num_classes=0)
        weights_info = weights.as_dict()
    elif init_file is None:
        raise UserError(f"student.init={config.init} needs the {config.init} stage's checkpoint; none given")
    else:
        backbone, weights_info = load_backbone(init_file, config.init, config.backbone)
    mean, std = normalisation(backbone)
    preprocess = Preprocess(
        mean=mean,
        std=std,
        size=config.input_size,
        resize_filter=config.resize_filter,
        mode=config.input_mode,
        pad_size=config.pad_size if config.input_mode == "pad_crop" else None,
        jpeg_draft=config.jpeg_draft,
    )
    return (
        Student(backbone, feature_dim, task.output_size, task.activation, semantic=config.semantic),
        preprocess,
        weights_info,
    )


def predict(
    model: Student,
    paths: list[str],
    preprocess: Preprocess,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    device: torch.device = CPU,
    precision: str = "fp32",
    tags: np.ndarray | None = None,
) -> np.ndarray:
    """The model's outputs (n, output size) for image files: distributions, scores or probabilities.
    ``tags`` (two-hot, one row per path) are the input of a multi-modal student (``semantic="input"``)."""
    if model.semantic == "input" and tags is None:
        raise UserError(
            "this student takes AVA's two tags per image as input (student.semantic=input); none given"
        )
    output_size = model.output.out_features
    dataset = _TargetDataset(
        StudentData(paths, np.zeros((len(paths), output_size), np.float32), tags=tags), preprocess
    )
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    model.to(device).eval()
    outputs = []
    with torch.no_grad(), autocast_context(device, precision):
        for images, *_, batch_tags in tqdm(loader, desc="predict", disable=not progress):
            images = preprocess.normalise(images.to(device, non_blocking=True))
            batch_tags = batch_tags.to(device) if batch_tags.numel() else None
            outputs.append(model(images, batch_tags).output.float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, output_size), np.float32)


def train_step(
    model: Student,
    preprocess: Preprocess,
    batch: list[torch.Tensor],
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: StudentConfig,
    device: torch.device,
    task: Task = DISTRIBUTION,
    unlabeled: list[torch.Tensor] | None = None,
    unlabeled_seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch from the loader; returns (loss, the model's output), on the device.

    With ``unlabeled``, a batch of unlabelled images (CSKD: image, empty ground truth, teacher output,
    teacher feature, tags), their KD terms times ``config.unlabeled.weight`` join the labelled loss, which
    stays as it is (:func:`_forward` says how BatchNorm sees them; ``unlabeled_seed`` seeds the random
    stream of their separate pass). The returned output is the labelled images'.
    """
    images, ground_truth, teacher_output, teacher_feature, tags = (
        part.to(device, non_blocking=True) for part in batch
    )
    extra_images, _, extra_output, extra_feature, _ = (
        (None,) * 5 if unlabeled is None else (part.to(device, non_blocking=True) for part in unlabeled)
    )
    with autocast_context(device, config.precision):
        (output, aesthetic_feature, tag_logits), extra = _forward(
            model, preprocess, images, tags if tags.numel() else None, extra_images,
            config.unlabeled.batchnorm, unlabeled_seed,
        )  # fmt: skip
        loss = student_loss(
            output.float(),
            aesthetic_feature.float(),
            ground_truth,
            teacher_output,
            teacher_feature,
            kd_enabled=config.kd.enabled,
            feature_weight=config.kd.feature_weight,
            target=config.kd.target,
            mix=config.kd.mix,
            output_loss=task.loss,
        )
        if tag_logits is not None:  # the multi-task baseline, Eq. 9
            loss = loss + config.semantic_weight * tag_loss(tags, tag_logits)
        if extra is not None:  # CSKD: the KD terms on the unlabelled images
            loss = loss + config.unlabeled.weight * unlabeled_loss(
                extra.output.float(), extra.aesthetic_feature.float(), extra_output, extra_feature,
                feature_weight=config.kd.feature_weight, output_loss=task.loss,
            )  # fmt: skip
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return loss.detach(), output.detach()


def _forward(
    model: torch.nn.Module, preprocess: Preprocess, images: torch.Tensor, tags: torch.Tensor | None,
    unlabeled_images: torch.Tensor | None, batchnorm: str, seed: int,
) -> tuple[StudentOutput, StudentOutput | None]:  # fmt: skip
    """The model's outputs on the labelled images and on the unlabelled ones (None without them).

    ``joint``: one pass over both kinds, so BatchNorm normalises over both and its running statistics
    follow both. ``separate``: the labelled pass exactly as without unlabelled images, then theirs, under a
    random stream of its own (``seed``: dropout, drop-path) and with BatchNorm on their batch's statistics,
    its running averages untouched: with weight 0 the run is the run without them, bit for bit. Under
    torchrun the separate pass goes through the module itself, so DDP sees one forward per step.
    """
    if unlabeled_images is None:
        return model(preprocess.normalise(images), tags), None
    if batchnorm == "joint":  # semantic=input is refused with unlabelled images: no tags to pass
        both = model(preprocess.normalise(torch.cat([images, unlabeled_images])))
        n = len(images)
        return (
            StudentOutput(*(None if part is None else part[:n] for part in both)),
            StudentOutput(*(None if part is None else part[n:] for part in both)),
        )
    labelled = model(preprocess.normalise(images), tags)
    module = getattr(model, "module", model)  # DistributedDataParallel's wrapped model
    with seeded(seed), _batch_statistics_only(module):
        return labelled, module(preprocess.normalise(unlabeled_images))


@contextmanager
def _batch_statistics_only(model: torch.nn.Module) -> Iterator[None]:
    """For the block, BatchNorm in train mode normalises with the batch's own statistics and leaves its
    running averages and its count of batches as they are (``track_running_stats`` off; a momentum of 0
    would keep the averages but still count the batch); layers in eval mode keep using their running
    statistics."""
    layers = [
        layer for layer in model.modules() if isinstance(layer, _BatchNorm) and layer.track_running_stats
    ]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True


def _stream_seed(*keys: int) -> int:
    """A seed of its own for each tuple of keys (a stream's tag, student.seed, epoch, step, ...)."""
    return int(np.random.SeedSequence([key % 2**64 for key in keys]).generate_state(1)[0])


def _prepared(
    config: StudentConfig, train: StudentData, val: StudentData, ranks: Ranks, unlabeled: StudentData | None
) -> tuple[StudentData, StudentData | None]:
    """The training data, labelled and unlabelled (None unless ``config.unlabeled.enabled``), as the
    configuration uses them (knowledge shuffled for the control); the configuration's needs checked
    against the data."""
    if config.kd.enabled and (train.teacher_output is None or train.teacher_feature is None):
        raise UserError("student.kd.enabled is true but no teacher knowledge was given")
    if not config.unlabeled.enabled:
        unlabeled = None
    elif unlabeled is None or not unlabeled.paths or unlabeled.teacher_output is None:
        raise UserError(
            "student.unlabeled.enabled is true but no unlabelled images with teacher knowledge were given"
            " (the pool is empty with unlabeled.source=none, and split.label_fraction=1.0 withholds none)"
        )
    if config.semantic != "none" and (train.tags is None or val.tags is None):
        raise UserError(
            f"student.semantic={config.semantic} needs AVA's tags for the training and validation images"
        )
    if config.batch_size % ranks.world:
        raise UserError(
            f"student.batch_size={config.batch_size} is not divisible by the {ranks.world} processes"
        )
    if not train.paths or not val.paths:
        raise UserError(f"the student has {len(train.paths)} training and {len(val.paths)} validation images;"
                        " it needs at least one of each")  # fmt: skip
    if config.kd.enabled and config.kd.shuffle:
        order = np.random.default_rng(config.seed).permutation(len(train.paths))
        train = replace(
            train, teacher_output=train.teacher_output[order], teacher_feature=train.teacher_feature[order]
        )
        if unlabeled is not None:  # the control decouples knowledge and image on every training image
            order = np.random.default_rng([UNLABELED_SHUFFLE, config.seed]).permutation(len(unlabeled.paths))
            unlabeled = replace(unlabeled, teacher_output=unlabeled.teacher_output[order],
                                teacher_feature=unlabeled.teacher_feature[order])  # fmt: skip
    return train, unlabeled


def _training_loader(
    dataset: Dataset, config: StudentConfig, generator: torch.Generator, num_workers: int, device: torch.device,
    ranks: Ranks,
) -> DataLoader:  # fmt: skip
    """Shuffled batches of the global batch size split across ranks (a DistributedSampler under torchrun)."""
    drop_last = len(dataset) > config.batch_size
    sampler = (
        DistributedSampler(
            dataset, ranks.world, ranks.rank, shuffle=True, seed=config.seed, drop_last=drop_last
        )
        if ranks.distributed
        else None
    )
    return DataLoader(
        dataset, batch_size=config.batch_size // ranks.world, shuffle=sampler is None, sampler=sampler,
        generator=generator, num_workers=num_workers, drop_last=drop_last, pin_memory=device.type == "cuda",
    )  # fmt: skip


@dataclass(frozen=True)
class UnlabeledSchedule:
    """How CSKD's unlabelled images join training: ``per_step`` of them with each labelled batch (in each
    process), ``steps`` labelled batches per epoch, and ``images_used``: how many different unlabelled
    images the whole run draws (0 when switched off)."""

    per_step: int
    steps: int
    images_used: int


def unlabeled_schedule(
    config: StudentConfig, labeled_count: int, unlabeled_count: int, ranks: Ranks = SINGLE
) -> UnlabeledSchedule:
    """An epoch is one pass over the labelled images, as without unlabelled ones; each step adds
    u = round(b * share / (1 - share)) unlabelled images (at least one), b the labelled batch. A share of
    None is their share of all training images, so that an epoch draws each about once."""
    steps = len(_training_loader(range(labeled_count), config, torch.Generator(), 0, CPU, ranks))
    if not config.unlabeled.enabled or not unlabeled_count:
        return UnlabeledSchedule(0, steps, 0)
    share = config.unlabeled.share
    if share is None:
        share = unlabeled_count / (labeled_count + unlabeled_count)
    per_step = max(1, round(config.batch_size // ranks.world * share / (1 - share)))
    drawn = config.epochs * steps * per_step * ranks.world  # passes over all of them, one after another
    return UnlabeledSchedule(per_step, steps, min(unlabeled_count, drawn))


class _UnlabeledBatches(Sampler[list[int]]):
    """Which unlabelled images each of an epoch's ``steps`` takes: a stream of passes over all ``count``
    of them, each pass in its own order (drawn from ``seed`` and the pass's number), continued from epoch
    to epoch; under torchrun each rank takes its own ``per_step`` of every step's images. A function of the
    seed and the epoch alone: a resumed run draws what an uninterrupted one draws, and nothing here draws
    from the labelled loader's generator or torch's global stream."""

    def __init__(self, count: int, per_step: int, steps: int, seed: int, ranks: Ranks = SINGLE) -> None:
        self.count, self.per_step, self.steps, self.seed, self.ranks = count, per_step, steps, seed, ranks
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.steps * self.per_step * self.ranks.world
        start = (self.epoch - 1) * per_epoch
        first_pass, last_pass = start // self.count, (start + per_epoch - 1) // self.count
        stream = np.concatenate([self._order(number) for number in range(first_pass, last_pass + 1)])
        taken = stream[start - first_pass * self.count :][:per_epoch]
        for step in taken.reshape(self.steps, self.ranks.world, self.per_step):
            yield step[self.ranks.rank].tolist()

    def _order(self, pass_number: int) -> np.ndarray:
        return np.random.default_rng([UNLABELED_ORDER, self.seed % 2**64, pass_number]).permutation(
            self.count
        )


def _unlabeled_loader(
    data: StudentData | None, preprocess: Preprocess, config: StudentConfig, labeled_count: int,
    num_workers: int, device: torch.device, ranks: Ranks,
) -> DataLoader | None:  # fmt: skip
    """One batch of unlabelled images per labelled batch (:class:`_UnlabeledBatches`); its generator (the
    workers' seeds) is its own too."""
    if data is None:
        return None
    schedule = unlabeled_schedule(config, labeled_count, len(data.paths), ranks)
    batches = _UnlabeledBatches(len(data.paths), schedule.per_step, schedule.steps, config.seed, ranks)
    return DataLoader(
        _TargetDataset(data, preprocess), batch_sampler=batches, num_workers=num_workers,
        generator=torch.Generator().manual_seed(_stream_seed(UNLABELED_ORDER, config.seed)),
        pin_memory=device.type == "cuda",
    )  # fmt: skip


def _wrapped_for_ranks(model: Student, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """What the optimiser steps: the model itself, or, under torchrun, its DDP wrapper (BatchNorm synchronised
    on GPUs; PyTorch's SyncBatchNorm has no CPU kernel, so on CPU each rank normalises its own share)."""
    if not ranks.distributed:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def _checkpoint(
    work_root: Path | None, config: StudentConfig, task: Task, weights_source: dict, train: StudentData,
    val: StudentData, unlabeled: StudentData | None = None,
) -> Checkpoint:  # fmt: skip
    """``work_root/<fingerprint>/``: named by everything that determines the run, configuration and data
    (the unlabelled images and their knowledge included, so a resumed run never mixes two pools)."""
    if work_root is None:
        return Checkpoint(None)
    run = {
        **asdict(config),
        **task.as_dict(),
        "weights": weights_source,
        "format": CHECKPOINT_FORMAT,
        "head": HEAD_START,
    }
    pool = () if unlabeled is None else (unlabeled.paths, unlabeled.teacher_output, unlabeled.teacher_feature)
    return Checkpoint(
        work_root / fingerprint(
            run, train.paths, train.ground_truth, train.teacher_output, train.teacher_feature, train.tags,
            val.paths, val.ground_truth, val.tags, *pool,
        )
    )  # fmt: skip


def _train_epoch(
    epoch: int, state: TrainingState, trained: torch.nn.Module, loader: DataLoader, preprocess: Preprocess,
    config: StudentConfig, task: Task, device: torch.device, ranks: Ranks, progress: bool,
    unlabeled: DataLoader | None = None,
) -> dict:  # fmt: skip
    """One pass over the training images, with a batch of ``unlabeled`` images beside each labelled batch
    (CSKD); the loss averaged over ranks (one sync per epoch), and the SRCC of the labelled images' outputs
    in train mode during the epoch (under torchrun: each rank's share)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
    if unlabeled is not None:
        unlabeled.batch_sampler.set_epoch(epoch)  # the stream of unlabelled images goes on where it was
    unlabeled_batches = itertools.repeat(None) if unlabeled is None else iter(unlabeled)
    state.model.train()
    if config.freeze_backbone:
        state.model.backbone.eval()  # frozen means frozen: BatchNorm statistics too
    losses, predicted, true = [], [], []
    labeled_batches = tqdm(loader, desc=f"student epoch {epoch}/{config.epochs}",
                           disable=not (progress and ranks.is_main), leave=False)  # fmt: skip
    for step, (batch, unlabeled_batch) in enumerate(zip(labeled_batches, unlabeled_batches, strict=False)):
        loss, output = train_step(
            trained, preprocess, batch, state.optimiser, state.scaler, config, device, task,
            unlabeled_batch, _stream_seed(UNLABELED_DROPOUT, config.seed, ranks.rank, epoch, step),
        )  # fmt: skip
        losses.append(loss)
        predicted.append(output)
        true.append(batch[1])
    return {
        "train_loss": distributed.mean_over_ranks(torch.stack(losses).mean(), ranks),
        "train_srcc": srcc(task.predicted_score(torch.cat(predicted).float().cpu().numpy()),
                           task.predicted_score(torch.cat(true).numpy())),
    }  # fmt: skip


def _validate(
    model: Student, val: StudentData, preprocess: Preprocess, config: StudentConfig, task: Task,
    device: torch.device, num_workers: int,
) -> dict:  # fmt: skip
    prediction = predict(model, val.paths, preprocess, num_workers=num_workers, device=device,
                         precision=config.precision, tags=val.tags if config.semantic == "input" else None)  # fmt: skip
    return {
        "val_loss": float(task.loss(torch.from_numpy(val.ground_truth), torch.from_numpy(prediction))),
        "val_srcc": srcc(task.predicted_score(prediction), task.predicted_score(val.ground_truth)),
    }


def train_student(
    config: StudentConfig,
    train: StudentData,
    val: StudentData,
    feature_dim: int,
    task: Task = DISTRIBUTION,
    num_workers: int = 0,
    progress: bool = True,
    device: torch.device = CPU,
    work_root: Path | None = None,
    ranks: Ranks = SINGLE,
    init_file: Path | None = None,
    unlabeled: StudentData | None = None,
) -> tuple[Student, Preprocess, dict, TrainingHistory]:
    """Trains the student; returns the last epoch's model, its preprocessing, its weights source, and the curves.

    With ``work_root``, the state after each epoch is kept in ``work_root/<fingerprint>/`` and a rerun of
    the same configuration on the same data continues from it.

    Under torchrun (``ranks``), DistributedDataParallel: ``config.batch_size`` is the global batch, split
    evenly across ranks. Rank 0 validates, keeps the checkpoint and the curves.

    With ``config.unlabeled.enabled``, CSKD's semi-supervised KD: ``unlabeled`` (teacher knowledge, no
    labels) adds the KD terms on its images to every step (:func:`unlabeled_schedule`, :func:`_forward`);
    the labelled images keep their loss, their loader and their random streams.
    """
    train, unlabeled = _prepared(config, train, val, ranks, unlabeled)
    with seeded(config.seed) as generator:
        model, preprocess, weights_source = build_student(config, feature_dim, task, init_file)
        start_output_at(model.output, task.output_bias(train.ground_truth))  # KD or not: the same start
        model.to(device)
        loader = _training_loader(
            _TargetDataset(train, preprocess), config, generator, num_workers, device, ranks
        )
        unlabeled_loader = _unlabeled_loader(
            unlabeled, preprocess, config, len(train.paths), num_workers, device, ranks
        )
        if config.freeze_backbone:
            model.backbone.requires_grad_(False)
        trained = _wrapped_for_ranks(model, ranks, device)
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimiser = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
        state = TrainingState(
            model, optimiser, torch.optim.lr_scheduler.StepLR(optimiser, config.lr_step_epochs, gamma=0.1),
            generator, torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
        )  # fmt: skip
        checkpoint = _checkpoint(work_root, config, task, weights_source, train, val, unlabeled)
        resume(state, checkpoint, "student")
        history = fit(
            state, config.epochs,
            train_epoch=partial(_train_epoch, state=state, trained=trained, loader=loader, preprocess=preprocess,
                                config=config, task=task, device=device, ranks=ranks, progress=progress,
                                unlabeled=unlabeled_loader),
            validate=partial(_validate, model, val, preprocess, config, task, device, num_workers),
            checkpoint=checkpoint, name="student", lr_key="student.lr", progress=progress, is_main=ranks.is_main,
            barrier=partial(distributed.barrier, ranks),
        )  # fmt: skip
    model.cpu().eval()
    if ranks.is_main:
        checkpoint.clear()
    return model, preprocess, weights_source, history


def save_student(
    path: Path,
    model: Student,
    preprocess: Preprocess,
    config: StudentConfig,
    weights_source: dict,
    task: Task = DISTRIBUTION,
    data_source: str | None = None,
    unlabeled_images: int = 0,
) -> None:
    """A self-describing checkpoint: architecture, input and normalisation, head sizes, weights source, and
    what it was trained on (``data_source``: demo, ava, csv; ``unlabeled_images``: how many unlabelled
    images CSKD's semi-supervised KD used, :class:`UnlabeledSchedule`); its init is in ``config``; it loads
    without running pickle code."""
    checkpoint = {
        "kind": "student",
        "format": CHECKPOINT_FORMAT,
        "backbone": model_name(model.backbone),
        "weights_source": weights_source,
        "data_source": data_source,
        "unlabeled_images": unlabeled_images,
        "preprocess": preprocess.as_dict(),
        "feature_dim": model.output.in_features,
        "head": {
            "to_feature": [model.to_feature[0].in_features, model.output.in_features],
            "output": [model.output.in_features, model.output.out_features],
            "semantic": model.semantic,
        },
        "task": task.as_dict(),
        "config": asdict(config),
        "state_dict": model.state_dict(),
    }
    save_atomically(checkpoint, path)


def load_student(path: Path) -> tuple[Student, Preprocess, dict]:
    """The model, its preprocessing and the checkpoint (its ``task`` says how to read the outputs) from a
    file written by :func:`save_student`; no weights download, and no code in the file runs: anything else
    (a distiller, a random, truncated or crafted file) is refused in one line naming the file."""
    checkpoint = safe_load(Path(path), "a student checkpoint (models/student.pt)")
    kind = checkpoint.get("kind", "student" if "backbone" in checkpoint else None)  # format 1 had no kind
    if kind != "student" or checkpoint.get("format") not in READABLE_FORMATS:
        raise UserError(
            f"{path}: not a student checkpoint (kind: {kind}, format: {checkpoint.get('format')}; "
            f"this version reads formats {', '.join(map(str, READABLE_FORMATS))})"
        )
    try:
        task = checkpoint_task(checkpoint)
        with torch.random.fork_rng(
            devices=[]
        ):  # random weights, overwritten below: the caller's stream stays
            backbone, _ = create_backbone(checkpoint["backbone"], "random", num_classes=0)
            model = Student(backbone, checkpoint["feature_dim"], task.output_size, task.activation,
                        semantic=checkpoint["head"].get("semantic", "none"))  # fmt: skip
        model.load_state_dict(checkpoint["state_dict"])
        preprocess = Preprocess.from_dict(checkpoint["preprocess"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = first_line(error)
        raise UserError(f"{path}: a damaged student checkpoint ({type(error).__name__}: {detail})") from None
    model.eval()
    return model, preprocess, checkpoint


def checkpoint_task(checkpoint: dict) -> Task:
    """The output type a student checkpoint was trained for (checkpoints before outputs had types: distribution)."""
    return Task.from_dict(checkpoint["task"]) if "task" in checkpoint else DISTRIBUTION
