"""The student: one backbone trained on resized images, by knowledge distillation or on ground truth.

The loop reads top to bottom: build, then for each epoch train, validate, record; save the last epoch
(the paper's protocol) and a self-describing checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iaakd.data.images import Preprocess, load_rgb
from iaakd.devices import autocast_context
from iaakd.errors import UserError
from iaakd.losses import emd, student_loss
from iaakd.metrics import mean_score, srcc
from iaakd.models import Student, create_backbone, model_name, normalisation
from iaakd.teacher import TrainingHistory, set_seed

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
    epochs: int = 12
    batch_size: int = 16
    lr: float = 3e-4
    lr_step_epochs: int = 4
    weight_decay: float = 0.0
    freeze_backbone: bool = False  # Table V: train only the head
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast on the device (fp16 with gradient scaling)
    seed: int = 0
    kd: KDConfig = field(default_factory=KDConfig)


@dataclass
class StudentData:
    """What one split needs: image paths, ground-truth distributions, and teacher knowledge (may be None)."""

    paths: list[str]
    ground_truth: np.ndarray
    teacher_distribution: np.ndarray | None = None
    teacher_feature: np.ndarray | None = None


class _TargetDataset(Dataset):
    """(image as uint8, ground truth, teacher distribution, teacher feature); teacher parts are empty
    tensors where no knowledge is given."""

    def __init__(self, data: StudentData, preprocess: Preprocess) -> None:
        self.data, self.preprocess = data, preprocess
        self.empty = torch.zeros(0)

    def __len__(self) -> int:
        return len(self.data.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image = self.preprocess(load_rgb(self.data.paths[index]))
        ground_truth = torch.from_numpy(self.data.ground_truth[index])
        if self.data.teacher_distribution is None:
            return image, ground_truth, self.empty, self.empty
        return (
            image,
            ground_truth,
            torch.from_numpy(self.data.teacher_distribution[index]),
            torch.from_numpy(self.data.teacher_feature[index]),
        )


def build_student(config: StudentConfig, feature_dim: int) -> tuple[Student, Preprocess, dict]:
    backbone, weights_info = create_backbone(config.backbone, config.weights, num_classes=0)
    mean, std = normalisation(backbone)
    preprocess = Preprocess(mean=mean, std=std, size=config.input_size, resize_filter=config.resize_filter)
    return Student(backbone, feature_dim), preprocess, weights_info.as_dict()


def predict(
    model: Student,
    paths: list[str],
    preprocess: Preprocess,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    device: torch.device = CPU,
    precision: str = "fp32",
) -> np.ndarray:
    """Predicted distributions (n, 10) for image files."""
    dataset = _TargetDataset(StudentData(paths, np.zeros((len(paths), 10), np.float32)), preprocess)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    model.to(device).eval()
    outputs = []
    with torch.no_grad(), autocast_context(device, precision):
        for images, *_ in tqdm(loader, desc="predict", disable=not progress):
            outputs.append(model(preprocess.normalise(images.to(device, non_blocking=True)))[0].float().cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 10), np.float32)


def train_step(
    model: Student,
    preprocess: Preprocess,
    batch: list[torch.Tensor],
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: StudentConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch from the loader; returns (loss, predicted distribution), on the device."""
    images, ground_truth, teacher_distribution, teacher_feature = (
        part.to(device, non_blocking=True) for part in batch
    )
    with autocast_context(device, config.precision):
        distribution, aesthetic_feature = model(preprocess.normalise(images))
        loss = student_loss(
            distribution.float(),
            aesthetic_feature.float(),
            ground_truth,
            teacher_distribution,
            teacher_feature,
            kd_enabled=config.kd.enabled,
            feature_weight=config.kd.feature_weight,
            target=config.kd.target,
            mix=config.kd.mix,
        )
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return loss.detach(), distribution.detach()


def train_student(
    config: StudentConfig,
    train: StudentData,
    val: StudentData,
    feature_dim: int,
    num_workers: int = 0,
    progress: bool = True,
    device: torch.device = CPU,
) -> tuple[Student, Preprocess, dict, TrainingHistory]:
    """Trains the student; returns the last epoch's model, its preprocessing, its weights source, and the curves."""
    generator = set_seed(config.seed)
    model, preprocess, weights_source = build_student(config, feature_dim)
    model.to(device)
    if config.kd.enabled:
        if train.teacher_distribution is None or train.teacher_feature is None:
            raise UserError("student.kd.enabled is true but no teacher knowledge was given")
        if config.kd.shuffle:
            order = np.random.default_rng(config.seed).permutation(len(train.paths))
            train = StudentData(
                train.paths,
                train.ground_truth,
                train.teacher_distribution[order],
                train.teacher_feature[order],
            )
    loader = DataLoader(
        _TargetDataset(train, preprocess),
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=num_workers,
        drop_last=len(train.paths) > config.batch_size,
        pin_memory=device.type == "cuda",
    )
    if config.freeze_backbone:
        model.backbone.requires_grad_(False)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=config.lr_step_epochs, gamma=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
    history = TrainingHistory()
    for epoch in range(1, config.epochs + 1):
        model.train()
        if config.freeze_backbone:
            model.backbone.eval()  # frozen means frozen: BatchNorm statistics too
        losses, train_predicted, train_true = [], [], []
        for batch in tqdm(
            loader, desc=f"student epoch {epoch}/{config.epochs}", disable=not progress, leave=False
        ):
            loss, distribution = train_step(model, preprocess, batch, optimiser, scaler, config, device)
            losses.append(loss)
            train_predicted.append(distribution)
            train_true.append(batch[1])
        epoch_loss = torch.stack(losses).mean().item()  # one synchronisation per epoch, not per step
        if not np.isfinite(epoch_loss):
            raise UserError(f"student: loss became {epoch_loss} in epoch {epoch}; lower student.lr")
        scheduler.step()
        val_prediction = predict(
            model, val.paths, preprocess, num_workers=num_workers, device=device, precision=config.precision
        )
        history.add(
            epoch=epoch,
            train_loss=epoch_loss,
            # in train mode, during the epoch
            train_srcc=srcc(
                mean_score(torch.cat(train_predicted).float().cpu().numpy()),
                mean_score(torch.cat(train_true).numpy()),
            ),
            val_emd=float(emd(torch.from_numpy(val.ground_truth), torch.from_numpy(val_prediction))),
            val_srcc=srcc(mean_score(val_prediction), mean_score(val.ground_truth)),
        )
        if progress:
            row = history.rows[-1]
            tqdm.write(
                f"student epoch {epoch}: train loss {row['train_loss']:.4f}, val EMD {row['val_emd']:.4f}, val SRCC {row['val_srcc']}"
            )
    model.cpu().eval()
    return model, preprocess, weights_source, history


def save_student(
    path: Path, model: Student, preprocess: Preprocess, config: StudentConfig, weights_source: dict
) -> None:
    """A self-describing checkpoint: architecture, input and normalisation, head sizes, weights source."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "backbone": model_name(model.backbone),
        "weights_source": weights_source,
        "preprocess": preprocess.as_dict(),
        "feature_dim": model.output.in_features,
        "head": {
            "to_feature": [model.backbone.num_features, model.output.in_features],
            "output": [model.output.in_features, 10],
        },
        "config": asdict(config),
        "state_dict": model.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    torch.save(checkpoint, staging)
    staging.replace(path)


def load_student(path: Path) -> tuple[Student, Preprocess, dict]:
    """The model and its preprocessing from a checkpoint written by :func:`save_student`; no weights download."""
    if not Path(path).is_file():
        raise UserError(f"student model not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {checkpoint.get('format')}")
    backbone, _ = create_backbone(checkpoint["backbone"], "random", num_classes=0)
    model = Student(backbone, checkpoint["feature_dim"])
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    p = checkpoint["preprocess"]
    preprocess = Preprocess(
        mean=tuple(p["mean"]), std=tuple(p["std"]), size=p["size"], resize_filter=p["resize_filter"]
    )
    return model, preprocess, checkpoint
