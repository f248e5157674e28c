"""The student: one backbone trained on resized images, by knowledge distillation or on ground truth.

The loop reads top to bottom: build, then for each epoch train, validate, record; save the last epoch
(the paper's protocol) and a self-describing checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from iaakd import distributed
from iaakd.checkpoints import Checkpoint, fingerprint, restore_rng_state, rng_state
from iaakd.data.images import Preprocess
from iaakd.devices import autocast_context
from iaakd.distributed import SINGLE, Ranks
from iaakd.errors import UserError
from iaakd.feature_rows import VectorRows
from iaakd.losses import student_loss, tag_loss
from iaakd.metrics import srcc
from iaakd.models import Student, create_backbone, model_name, normalisation
from iaakd.tasks import DISTRIBUTION, Task
from iaakd.teacher import TrainingHistory, raise_not_finite, set_seed

CHECKPOINT_FORMAT = 1
CPU = torch.device("cpu")


@dataclass(frozen=True)
class KDConfig:
    enabled: bool = True  # false: the baseline trained on ground-truth distributions alone
    feature_weight: float = 1.0  # weight of MSE(f_t, f_s); 0 removes the feature term
    target: str = "teacher"  # output term against the teacher's distribution or the ground truth (Table VI)
    mix: str = "none"  # none | loss (Eq. 10) | label (Eq. 11)
    shuffle: bool = False  # control: teacher knowledge permuted across training images


@dataclass(frozen=True)
class StudentConfig:
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "auto"
    input_size: int = 128
    resize_filter: str = "bilinear"
    input_mode: str = "resize"  # resize | pad_crop (Table VII): centred on pad_size, centre cut
    pad_size: int = 800
    jpeg_draft: bool = False  # resize: decode JPEGs at 1/2-1/8 scale, still >= input_size (faster loader)
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-4
    lr_step_epochs: int = 4
    weight_decay: float = 0.0
    freeze_backbone: bool = False  # Table V: train only the head
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast on the device (fp16 with gradient scaling)
    seed: int = 0
    semantic: str = "none"  # none | input (multi-modal) | target (multi-task): AVA's tags, Table XII
    semantic_weight: float = 1.0  # target: weight of BCE(tags) (Eq. 9 adds it with weight 1)
    kd: KDConfig = field(default_factory=KDConfig)


@dataclass
class StudentData:
    """What one split needs: image paths, ground-truth targets (``Task.targets``), teacher knowledge
    (may be None): the teacher's output D_t (or y_t) and feature f_t, and AVA's tags as two-hot vectors
    (``iaakd.data.labels.two_hot_tags``; needed only by the semantic baselines)."""

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
    config: StudentConfig, feature_dim: int, task: Task = DISTRIBUTION
) -> tuple[Student, Preprocess, dict]:
    backbone, weights_info = create_backbone(config.backbone, config.weights, num_classes=0)
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
        weights_info.as_dict(),
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch from the loader; returns (loss, the model's output), on the device."""
    images, ground_truth, teacher_output, teacher_feature, tags = (
        part.to(device, non_blocking=True) for part in batch
    )
    with autocast_context(device, config.precision):
        output, aesthetic_feature, tag_logits = model(
            preprocess.normalise(images), tags if tags.numel() else None
        )
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
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return loss.detach(), output.detach()


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
) -> tuple[Student, Preprocess, dict, TrainingHistory]:
    """Trains the student; returns the last epoch's model, its preprocessing, its weights source, and the curves.

    With ``work_root``, the state after each epoch is kept in ``work_root/<fingerprint>/`` and a rerun of
    the same configuration on the same data continues from it.

    Under torchrun (``ranks``), DistributedDataParallel: ``config.batch_size`` is the global batch, split
    evenly across ranks; BatchNorm is synchronised on GPUs (PyTorch's SyncBatchNorm has no CPU kernel, so
    on CPU each rank normalises its own share). Rank 0 validates, keeps the checkpoint and the curves.
    """
    generator = set_seed(config.seed)
    model, preprocess, weights_source = build_student(config, feature_dim, task)
    model.to(device)
    if config.kd.enabled:
        if train.teacher_output is None or train.teacher_feature is None:
            raise UserError("student.kd.enabled is true but no teacher knowledge was given")
        if config.kd.shuffle:
            order = np.random.default_rng(config.seed).permutation(len(train.paths))
            train = replace(
                train,
                teacher_output=train.teacher_output[order],
                teacher_feature=train.teacher_feature[order],
            )
    if config.semantic != "none" and (train.tags is None or val.tags is None):
        raise UserError(
            f"student.semantic={config.semantic} needs AVA's tags for the training and validation images"
        )
    if config.batch_size % ranks.world:
        raise UserError(
            f"student.batch_size={config.batch_size} is not divisible by the {ranks.world} processes"
        )
    dataset = _TargetDataset(train, preprocess)
    drop_last = len(train.paths) > config.batch_size
    sampler = (
        DistributedSampler(
            dataset, ranks.world, ranks.rank, shuffle=True, seed=config.seed, drop_last=drop_last
        )
        if ranks.distributed
        else None
    )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size // ranks.world,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
    )
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    trained = model  # what the optimiser steps: the model itself, or its DDP wrapper
    if ranks.distributed:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=config.lr_step_epochs, gamma=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    checkpoint = Checkpoint(
        work_root
        / fingerprint(
            {**asdict(config), **task.as_dict(), "weights": weights_source},
            train.paths, train.ground_truth, train.teacher_output, train.teacher_feature, train.tags,
            val.paths, val.ground_truth, val.tags,
        )
        if work_root is not None
        else None
    )  # fmt: skip
    history, first_epoch = TrainingHistory(), 1
    if (state := checkpoint.load()) is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng_state(generator, state["rng"])
        history.rows, first_epoch = state["history"], state["epoch"] + 1
        print(f"student: resuming after epoch {state['epoch']} from {checkpoint.path}", flush=True)
    for epoch in range(first_epoch, config.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        model.train()
        if config.freeze_backbone:
            model.backbone.eval()  # frozen means frozen: BatchNorm statistics too
        losses, train_predicted, train_true = [], [], []
        for batch in tqdm(
            loader,
            desc=f"student epoch {epoch}/{config.epochs}",
            disable=not (progress and ranks.is_main),
            leave=False,
        ):
            loss, output = train_step(trained, preprocess, batch, optimiser, scaler, config, device, task)
            losses.append(loss)
            train_predicted.append(output)
            train_true.append(batch[1])
        epoch_loss = distributed.mean_over_ranks(torch.stack(losses).mean(), ranks)  # one sync per epoch
        if not np.isfinite(epoch_loss):
            raise_not_finite("student", epoch, epoch_loss, checkpoint, "student.lr")
        scheduler.step()
        if ranks.is_main:
            val_prediction = predict(
                model,
                val.paths,
                preprocess,
                num_workers=num_workers,
                device=device,
                precision=config.precision,
                tags=val.tags if config.semantic == "input" else None,
            )
            history.add(
                epoch=epoch,
                train_loss=epoch_loss,
                # in train mode, during the epoch (under torchrun: rank 0's share)
                train_srcc=srcc(
                    task.predicted_score(torch.cat(train_predicted).float().cpu().numpy()),
                    task.predicted_score(torch.cat(train_true).numpy()),
                ),
                val_loss=float(
                    task.loss(torch.from_numpy(val.ground_truth), torch.from_numpy(val_prediction))
                ),
                val_srcc=srcc(task.predicted_score(val_prediction), task.predicted_score(val.ground_truth)),
            )
            checkpoint.save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(generator),
                    "history": history.rows,
                }
            )
            if progress:
                row = history.rows[-1]
                tqdm.write(
                    f"student epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, val SRCC {row['val_srcc']}"
                )
        distributed.barrier(ranks)  # the others wait while rank 0 validates
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
) -> None:
    """A self-describing checkpoint: architecture, input and normalisation, head sizes, weights source."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "backbone": model_name(model.backbone),
        "weights_source": weights_source,
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
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    torch.save(checkpoint, staging)
    staging.replace(path)


def load_student(path: Path) -> tuple[Student, Preprocess, dict]:
    """The model, its preprocessing and the checkpoint (its ``task`` says how to read the outputs) from a
    file written by :func:`save_student`; no weights download."""
    if not Path(path).is_file():
        raise UserError(f"student model not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {checkpoint.get('format')}")
    backbone, _ = create_backbone(checkpoint["backbone"], "random", num_classes=0)
    task = checkpoint_task(checkpoint)
    semantic = checkpoint["head"].get("semantic", "none")
    model = Student(backbone, checkpoint["feature_dim"], task.output_size, task.activation, semantic=semantic)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return model, Preprocess.from_dict(checkpoint["preprocess"]), checkpoint


def checkpoint_task(checkpoint: dict) -> Task:
    """The output type a student checkpoint was trained for (checkpoints before outputs had types: distribution)."""
    return Task.from_dict(checkpoint["task"]) if "task" in checkpoint else DISTRIBUTION
