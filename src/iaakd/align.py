"""CSKD phase 1 (Xu et al., arXiv 2307.15640): the student's backbone aligned to a frozen encoder's embedding.

A frozen encoder (any timm model, by full name; a CLIP image tower where its weights are present) embeds
every image once, at the start, without augmentation, at its own input size and normalisation: the targets
are fixed, so they are kept in memory. The student's backbone (``student.backbone`` from ``student.weights``)
and a linear projection head to the embedding's width are then trained so that the projected pooled feature
points where the encoder's embedding points: loss ``cosine`` (1 - cos) or ``mse`` (of L2-normalised vectors).
The first ``frozen_epochs`` train the head alone (backbone frozen, its BatchNorm statistics too), so the
held-out cosine after them is what the starting backbone gives ("before"); the rest train everything
("after"). Labels are never read: the images are the pool and the training images.

What the paper's abstract leaves open is this module's choice: the projection (one linear layer on the
pooled feature), the loss (on the final embedding only, by default on embeddings less their mean over the
training images: ``centre``), the input (a square resize, both networks), the schedule (Adam, constant
rate, head first), BatchNorm's running statistics kept as they started (``batchnorm``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iaakd import models  # names load on first use: a switched-off stage never imports timm
from iaakd.checkpoints import Checkpoint, fingerprint
from iaakd.config import Rule, param
from iaakd.data.images import RESIZE_FILTERS, ImageDataset, Preprocess
from iaakd.errors import UserError
from iaakd.training import TrainingHistory, TrainingState, fit, resume, seeded

CPU = torch.device("cpu")
EMBEDDINGS = ("pre_logits", "head")  # the encoder's pooled feature | the output of its own head
LOSSES = ("cosine", "mse")
BATCHNORM = ("frozen", "train")  # the backbone's BatchNorm statistics: kept as they started | updated
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class AlignConfig:
    """``align.*``: the frozen encoder, the loss, and the schedule of the alignment."""

    encoder: str = "tf_efficientnet_lite2.in1k"  # a full timm name (a CLIP image tower where present)
    encoder_weights: str = "auto"  # auto (package, Hugging Face cache) | a file path | random (tests only)
    encoder_input_size: int = param(224, minimum=32)  # the encoder sees images resized to this square
    embedding: str = param("pre_logits", choices=EMBEDDINGS)  # head: e.g. a CLIP tower's projection
    loss: str = param("cosine", choices=LOSSES)
    input_size: int | None = param(None, minimum=32)  # the student's side; None: the student's input size
    held_out_fraction: float = param(0.2, above=0, below=1)  # whole images held out for the cosine
    epochs: int = param(4, above=0)
    frozen_epochs: int = param(1, minimum=0)  # the head alone first; = epochs: the head-only control
    batch_size: int = param(16, above=0)
    lr: float = param(1e-4, above=0)
    weight_decay: float = param(0.0, minimum=0)
    centre: bool = True  # targets less the training images' mean embedding (ours; see align_backbone)
    batchnorm: str = param("frozen", choices=BATCHNORM)  # frozen: running statistics kept (ours)
    seed: int = 0  # the held-out split, the head's start, the shuffling

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            lambda c: c.frozen_epochs <= c.epochs,
            "{prefix}.frozen_epochs={frozen_epochs} must be <= {prefix}.epochs={epochs}"
            " (the head alone first, then everything)",
        ),
    )


class AlignModel(nn.Module):
    """The student's backbone (pooled features) and a linear projection to the encoder's embedding; the
    projection's bias starts at the mean training target (its weights as PyTorch initialises them)."""

    def __init__(self, backbone: nn.Module, mean_target: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Linear(backbone.num_features, len(mean_target))
        with torch.no_grad():
            self.projection.bias.copy_(mean_target)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(images))


def alignment_loss(predicted: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """``cosine``: mean of 1 - cos(predicted, target); ``mse``: mean squared error of the two L2-normalised
    vectors, averaged over elements (on unit vectors (2 - 2 cos) / width: the same direction of descent as
    ``cosine``, a different scale)."""
    if loss == "cosine":
        return (1 - F.cosine_similarity(predicted, target, dim=1)).mean()
    if loss == "mse":
        return F.mse_loss(F.normalize(predicted, dim=1), F.normalize(target, dim=1))
    raise ValueError(f"alignment_loss: unknown loss {loss!r}; one of {LOSSES}")


def held_out_split(paths: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) into ``paths``: whole images, drawn with ``seed``, at least one
    on each side, each side in the order of ``paths``."""
    if len(paths) < 2:
        raise UserError(f"align: {len(paths)} image(s) to align on; it needs at least 2 (the pool and the"
                        " training images)")  # fmt: skip
    order = np.random.default_rng([seed, 5]).permutation(len(paths))
    held = set(order[: min(len(paths) - 1, max(1, round(fraction * len(paths))))].tolist())
    return [i for i in range(len(paths)) if i not in held], sorted(held)


@dataclass
class Encoder:
    """The frozen encoder: the model (outputs its embedding), its input preparation and its weights source."""

    model: nn.Module
    preprocess: Preprocess
    weights: dict
    name: str
    embedding: str


def build_encoder(config: AlignConfig) -> Encoder:
    """The frozen encoder ``config.encoder`` with ``config.encoder_weights`` (resolved like every backbone:
    file, package, Hugging Face cache; random only when asked for by name), in eval mode, without gradients;
    its input: a square resize to ``encoder_input_size`` with its own interpolation and normalisation.
    ``embedding="head"`` keeps the model's own head (a CLIP tower's projection; an ImageNet classifier's
    logits), ``pre_logits`` drops it (the pooled feature). A name or weights problem is one line naming its
    key."""
    try:
        name = models.resolve_name(config.encoder)
    except UserError as error:
        raise UserError(f"params: align.encoder: {error}") from None
    try:
        # random weights (asked for by name) are the same on every run; the caller's stream stays
        with seeded(config.seed):
            model, weights = models.create_backbone(name, config.encoder_weights,
                                             num_classes=None if config.embedding == "head" else 0)  # fmt: skip
    except UserError as error:
        raise UserError(
            f"params: align.encoder_weights={config.encoder_weights} for {name}: {error}"
        ) from None
    if config.embedding == "head" and not getattr(model, "num_classes", 0):
        raise UserError(f"params: align.embedding=head, but {name} has no head; use pre_logits")
    mean, std = models.normalisation(model)
    interpolation = model.pretrained_cfg.get("interpolation", "bilinear")
    preprocess = Preprocess(mean=mean, std=std, size=config.encoder_input_size,
                            resize_filter=interpolation if interpolation in RESIZE_FILTERS else "bilinear")  # fmt: skip
    return Encoder(model.eval().requires_grad_(False), preprocess, weights.as_dict(), name, config.embedding)


def encoder_embeddings(encoder: Encoder, paths: list[str], batch_size: int = 32, num_workers: int = 0,
                       progress: bool = True, device: torch.device = CPU) -> torch.Tensor:  # fmt: skip
    """(n, embedding dim) float32 on the CPU: the frozen encoder's embedding of each image, once, in order."""
    loader = DataLoader(ImageDataset(paths, encoder.preprocess), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda")  # fmt: skip
    model = encoder.model.to(device).eval()
    embeddings = []
    with torch.no_grad():
        for _indices, images in tqdm(loader, desc=f"align: {encoder.name} embeddings", disable=not progress):
            embeddings.append(model(encoder.preprocess.normalise(images.to(device))).float().cpu())
    return torch.cat(embeddings)


class _TargetDataset(Dataset):
    """(the student's input as uint8, the encoder's embedding of the same image)."""

    def __init__(self, paths: list[str], targets: torch.Tensor, preprocess: Preprocess) -> None:
        self.paths, self.targets, self.preprocess = paths, targets, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.preprocess.load(self.paths[index]), self.targets[index]


def _keep_batchnorm_statistics(module: nn.Module) -> None:
    """BatchNorm layers in eval mode: they normalise with their running statistics and do not update them
    (their scale and shift still train)."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def _train_epoch(epoch: int, state: TrainingState, loader: DataLoader, preprocess: Preprocess,
                 config: AlignConfig, device: torch.device, progress: bool) -> dict:  # fmt: skip
    """One pass over the training images; in the first ``frozen_epochs`` epochs only the projection head
    trains (the backbone stays as it started, in eval mode); after them everything, with the backbone's
    BatchNorm statistics kept (``batchnorm=frozen``) or updated (``train``)."""
    frozen = epoch <= config.frozen_epochs
    model = state.model
    model.train()
    model.backbone.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()
    elif config.batchnorm == "frozen":
        _keep_batchnorm_statistics(model.backbone)
    losses = []
    for images, targets in tqdm(loader, desc=f"align epoch {epoch}/{config.epochs}"
                                f"{' (head only)' if frozen else ''}", disable=not progress, leave=False):  # fmt: skip
        predicted = model(preprocess.normalise(images.to(device, non_blocking=True)))
        loss = alignment_loss(predicted, targets.to(device, non_blocking=True), config.loss)
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
        losses.append(loss.detach())
    model.backbone.requires_grad_(True)
    return {"train_loss": float(torch.stack(losses).mean())}


def held_out_cosines(model: AlignModel, loader: DataLoader, preprocess: Preprocess,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(the model's projections, the encoder's embeddings) of the held-out images, in eval mode."""
    model.eval()
    predicted, targets = [], []
    with torch.no_grad():
        for images, target in loader:
            predicted.append(model(preprocess.normalise(images.to(device))).float().cpu())
            targets.append(target)
    return torch.cat(predicted), torch.cat(targets)


def _validate(model: AlignModel, loader: DataLoader, preprocess: Preprocess, config: AlignConfig,
              offset: torch.Tensor, device: torch.device) -> dict:  # fmt: skip
    """The loss and the mean cosine on the held-out images, in the loss's space (centred embeddings with
    ``align.centre``), and the cosine of the embeddings themselves (``offset``, the mean, added back)."""
    predicted, targets = held_out_cosines(model, loader, preprocess, device)
    return {
        "val_loss": float(alignment_loss(predicted, targets, config.loss)),
        "val_cosine": float(F.cosine_similarity(predicted, targets, dim=1).mean()),
        "val_uncentred_cosine": float(
            F.cosine_similarity(predicted + offset, targets + offset, dim=1).mean()
        ),
    }


@dataclass
class AlignResult:
    """The aligned backbone (CPU, eval mode), where it started from, the curves and the metrics."""

    backbone: nn.Module
    weights_source: dict
    history: TrainingHistory
    metrics: dict


def align_backbone(
    config: AlignConfig, backbone_name: str, weights: str, preprocess: Preprocess, paths: list[str],
    num_workers: int = 0, progress: bool = True, device: torch.device = CPU, work_root: Path | None = None,
) -> AlignResult:  # fmt: skip
    """Aligns ``backbone_name`` (starting from ``weights``, resolved as the student's) to the frozen encoder
    on the images ``paths`` (labels unused); ``preprocess`` is the student's input preparation at the
    alignment's input size, with the backbone's normalisation. With ``work_root`` the state after each
    epoch is kept in ``work_root/<fingerprint>/`` and a rerun continues from it.

    The targets are the encoder's embeddings less the training images' mean (``centre``, the default): a
    pretrained encoder's embeddings share a large common direction (on the demo every held-out image is
    at cosine 0.7 from the mean training embedding), so the plain cosine mostly measures that direction and
    its loss barely moves the features; centred, a constant prediction scores 0 and the loss asks for
    what tells the images apart.

    The metrics give the held-out cosine (``held_out_cosine``, in the loss's space) between the projected
    student feature and the target at the ``start`` (the head as initialised), ``before`` (after the
    head-only epochs: what the starting backbone gives; the start itself when ``frozen_epochs`` is 0) and
    ``after`` (the last epoch); ``held_out_uncentred_cosine`` the same for the embeddings themselves, with
    ``constant``: every held-out image predicted by the mean training embedding."""
    train_index, held_index = held_out_split(paths, config.held_out_fraction, config.seed)
    encoder = build_encoder(config)
    targets = encoder_embeddings(encoder, paths, config.batch_size, num_workers, progress, device)
    encoder_record = {"name": encoder.name, "weights": encoder.weights, "embedding": encoder.embedding,
                      "embedding_dim": targets.shape[1], "preprocess": encoder.preprocess.as_dict()}  # fmt: skip
    del encoder  # the targets are fixed: the encoder's memory is free for the training
    if device.type == "cuda":
        torch.cuda.empty_cache()
    mean_embedding = targets[train_index].mean(0)
    offset = mean_embedding if config.centre else torch.zeros_like(mean_embedding)
    targets = targets - offset
    train_paths, held_paths = [paths[i] for i in train_index], [paths[i] for i in held_index]
    with seeded(config.seed) as generator:
        backbone, weights_info = models.create_backbone(backbone_name, weights, num_classes=0)
        model = AlignModel(backbone, targets[train_index].mean(0)).to(device)  # centred: zero
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        state = TrainingState(
            model, optimiser, torch.optim.lr_scheduler.ConstantLR(optimiser, 1.0, 0), generator
        )
        train_loader = DataLoader(
            _TargetDataset(train_paths, targets[train_index], preprocess), batch_size=config.batch_size,
            shuffle=True, generator=generator, num_workers=num_workers,
            drop_last=len(train_paths) > config.batch_size, pin_memory=device.type == "cuda",
        )  # fmt: skip
        held_out = DataLoader(_TargetDataset(held_paths, targets[held_index], preprocess),
                              batch_size=config.batch_size, num_workers=num_workers)  # fmt: skip
        checkpoint = Checkpoint(
            work_root / fingerprint({**asdict(config), "backbone": models.model_name(backbone),
                                     "weights": weights_info.as_dict(), "encoder": encoder_record,
                                     "preprocess": preprocess.as_dict()}, train_paths, held_paths)
            if work_root is not None else None
        )  # fmt: skip
        start = _validate(model, held_out, preprocess, config, offset, device)  # the same on a resumed run
        resume(state, checkpoint, "align")
        history = fit(
            state, config.epochs,
            train_epoch=partial(_train_epoch, state=state, loader=train_loader, preprocess=preprocess,
                                config=config, device=device, progress=progress),
            validate=partial(_validate, model, held_out, preprocess, config, offset, device),
            checkpoint=checkpoint, name="align", lr_key="align.lr", progress=progress,
        )  # fmt: skip
    checkpoint.clear()
    rows = [start, *history.rows]  # rows[epoch]: the held-out values after that epoch (0: the start)
    cosines = {
        space: {"start": rows[0][column], "before": rows[config.frozen_epochs][column],
                "after": rows[config.epochs][column]}
        for space, column in (("held_out_cosine", "val_cosine"), ("held_out_uncentred_cosine", "val_uncentred_cosine"))
    }  # fmt: skip
    constant = F.cosine_similarity(mean_embedding[None], targets[held_index] + offset, dim=1)
    cosines["held_out_uncentred_cosine"]["constant"] = float(constant.mean())
    metrics = {
        **cosines,
        "centred": config.centre,
        "images": {"total": len(paths), "training": len(train_paths), "held_out": len(held_paths)},
        "encoder": encoder_record,
        "loss": config.loss,
        "frozen_epochs": config.frozen_epochs,
        "epochs": config.epochs,
    }
    return AlignResult(backbone.cpu().eval(), weights_info.as_dict(), history, metrics)


def student_input(backbone_name: str, input_size: int, resize_filter: str) -> Preprocess:
    """The student's input preparation at ``input_size``: a square resize, with the normalisation of
    ``backbone_name`` (timm's configuration of the architecture, as ``student.build_student`` reads it)."""
    with torch.random.fork_rng(devices=[]):  # built for its configuration only: the caller's stream stays
        backbone, _ = models.create_backbone(backbone_name, RANDOM_WEIGHTS, num_classes=0)
    mean, std = models.normalisation(backbone)
    return Preprocess(mean=mean, std=std, size=input_size, resize_filter=resize_filter)
