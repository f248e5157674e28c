"""The training loop: build, then for each epoch train, validate, record; the last epoch is the model (the paper's protocol)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from iaakd import distributed
from iaakd.checkpoints import Checkpoint, fingerprint
from iaakd.data.images import Preprocess
from iaakd.devices import autocast_context
from iaakd.distributed import SINGLE, Ranks
from iaakd.losses import student_loss, tag_loss, unlabeled_loss
from iaakd.metrics import srcc
from iaakd.models import Student
from iaakd.models.heads import HEAD_START, StudentOutput, start_output_at
from iaakd.student.build import CPU, build_student
from iaakd.student.checkpoint import CHECKPOINT_FORMAT
from iaakd.student.config import UNLABELED_DROPOUT, StudentConfig
from iaakd.student.data import StudentData, _prepared, _TargetDataset, _training_loader
from iaakd.student.predict import predict
from iaakd.student.unlabeled import _stream_seed, _unlabeled_loader
from iaakd.tasks import DISTRIBUTION, Task
from iaakd.training import TrainingHistory, TrainingState, fit, resume, seeded


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
