"""Pretraining the student's backbone by distortion ranking (Pfister et al., NTIRE 2021), on the shared skeleton.

A step takes a few pool images, each with its stack of distorted variants (made in the loader's workers,
``iaakd.pretraining.dataset``), scores every row with the backbone and a small score head, and ranks: the
original above each of its variants, the weaker level above the stronger (margin ranking loss); optionally
with a head that names the distortion of its group, or one that measures its signed level. Validation is
the share of held-out pairs ordered correctly, on held-out pool images whose variants stay fixed.

The authors' choices are parameters (``presets/pfister.yaml`` sets them): ``level_batches`` (the step's
images share their variants and each distortion level is forwarded as its own batch, ``train_pre/IA.py:
159-169``), ``balance: authors`` (summed terms through exp(z / T), :mod:`iaakd.pretraining.losses`) and
``lr_decay`` (``train_pre/train.py:101``: ``MultiplicativeLR`` by ``lr_decay ** (epoch + 1)`` after every
epoch, so after k epochs the rate is lr x lr_decay ** (k (k + 3) / 2); the audit's "x 0.9 per epoch"
is the first step of it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from iaakd import models  # names load on first use: a switched-off stage never imports timm
from iaakd.checkpoints import Checkpoint, fingerprint
from iaakd.config import param
from iaakd.data.copies import CopyConfig
from iaakd.data.images import INPUT_MODES, Preprocess
from iaakd.errors import UserError
from iaakd.pretraining.dataset import DistortionStackDataset, SharedVariantBatches, collate_stacks
from iaakd.pretraining.distortions import Distortion, group_members, select_distortions
from iaakd.pretraining.losses import (
    BALANCES,
    SCORES,
    TASKS,
    PretrainHeads,
    as_pair_stack,
    margin_ranking_loss,
    pair_scores,
    pretraining_loss,
)
from iaakd.pretraining.pairs import pair_accuracy
from iaakd.student.config import StudentConfig
from iaakd.training import TrainingHistory, TrainingState, fit, resume, seeded

CPU = torch.device("cpu")
POOL_SOURCES = ("demo", "folders")
OPTIMISERS = ("adam", "rmsprop")


@dataclass(frozen=True)
class PretrainConfig:
    source: str = param("demo", choices=POOL_SOURCES)  # where the pool of good photos comes from
    num_images: int = param(160, minimum=8, maximum=5000)  # demo: pool images generated
    folders: list[str] = field(default_factory=list)  # folders: any folders of photos, scanned
    seed: int = 0  # the pool (demo), its held-out part, the variants and the training
    copies: CopyConfig = field(default_factory=CopyConfig)  # folders: copies of labelled images dropped
    input_size: int | None = param(None, minimum=32)  # null: the student's input size
    input_mode: str | None = param(None, choices=INPUT_MODES)  # null: the student's; the authors: letterbox
    distortions: list[str] | None = None  # distortion or group names; null: all three groups
    variants_per_image: int = param(8, above=0)  # sampled per pool image and step (the authors: all 171)
    levels_per_side: int = param(2, minimum=1)  # levels drawn per (distortion, side): pairs within a side
    task: str = param("rank", choices=TASKS)
    margin: float = param(0.2, above=0)
    auxiliary_weight: float = param(1.0, minimum=0)
    balance: str = param("mean", choices=BALANCES)  # authors: summed terms, each task through exp(z / T)
    scores: str = param("one", choices=SCORES)  # three: a score head per group (the authors' option)
    temperature: float = param(50.0, above=0)  # balance=authors: T of exp(z / T)
    level_batches: bool = False  # the step's images share variants; each level forwarded as its own batch
    dropout: float = param(0.2, minimum=0, below=1)
    held_out_fraction: float = param(0.2, above=0, below=1)
    epochs: int = param(4, above=0)
    batch_size: int = param(4, above=0)  # pool images per step
    optimiser: str = param("adam", choices=OPTIMISERS)
    lr: float = param(1e-4, above=0)
    lr_step_epochs: int = param(1000, above=0)  # lr divided by 10 every this many epochs
    lr_decay: float = param(1.0, above=0, maximum=1)  # after epoch e: lr x lr_decay^(e+1) (the authors: 0.9)
    momentum: float = param(0.9, minimum=0)  # rmsprop
    weight_decay: float = param(0.0, minimum=0)
    frozen_steps: int = param(0, minimum=0)  # the backbone frozen (only the heads train) for the first steps


class PretrainModel(nn.Module):
    """The student's backbone (pooled features) and the pretraining heads."""

    def __init__(self, backbone: nn.Module, heads: PretrainHeads) -> None:
        super().__init__()
        self.backbone, self.heads = backbone, heads

    def forward(self, images: torch.Tensor) -> dict:
        return self.heads(self.backbone(images))


def held_out_split(paths: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training pool, held-out pool): whole images held out, drawn with ``seed``, at least one each side."""
    if len(paths) < 2:
        raise UserError(f"pretrain: the pool has {len(paths)} usable image(s); it needs at least 2")
    order = np.random.default_rng([seed, 4]).permutation(len(paths))
    n_held = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    held = set(order[:n_held].tolist())
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


def _loader(paths: list[str], preprocess: Preprocess, selection: dict, config: PretrainConfig, seed: int,
            num_workers: int, training: bool, generator: torch.Generator | None = None) -> DataLoader:  # fmt: skip
    """The training loader (shuffled; with ``level_batches`` its steps share variants and an incomplete last
    step is dropped, as the authors' loader does) or the held-out one (in order, every image its own draw:
    scoring in eval mode needs no level batches, and shared draws would leave distortions without pairs)."""
    shared = config.level_batches and training
    dataset = DistortionStackDataset(paths, preprocess, selection, config.variants_per_image, seed,
                                     levels_per_side=config.levels_per_side, shared_variants=shared)  # fmt: skip
    if shared:
        batches = SharedVariantBatches(len(dataset), config.batch_size, generator)
        return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_stacks)
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=training, generator=generator,
                      num_workers=num_workers, collate_fn=collate_stacks)  # fmt: skip


def forward_by_level(model: nn.Module, images: torch.Tensor, row_in_stack: torch.Tensor) -> dict:
    """``model`` run once per stack row (one distortion level across the step's images, as the authors
    forward a step), its outputs put back in the rows' order: in train mode BatchNorm normalises each level
    by its own batch statistics, so what a level shifts for every image (brightness, contrast) is taken out."""
    chunks = [torch.nonzero(row_in_stack == row).squeeze(-1) for row in torch.unique(row_in_stack)]
    outputs = [model(images[chunk]) for chunk in chunks]
    back = torch.argsort(torch.cat(chunks))
    return {
        "score": torch.cat([output["score"] for output in outputs])[back],
        "auxiliary": {
            group: torch.cat([output["auxiliary"][group] for output in outputs])[back]
            for group in outputs[0]["auxiliary"]
        },
    }


def _outputs(
    model: PretrainModel,
    preprocess: Preprocess,
    batch: dict,
    device: torch.device,
    level_batches: bool = False,
) -> dict:
    images = preprocess.normalise(batch["images"].to(device, non_blocking=True))
    if level_batches:
        return forward_by_level(model, images, batch["row_in_stack"].to(device))
    return model(images)


def lr_factor(epoch: int, config: PretrainConfig) -> float:
    """The rate's multiple after ``epoch`` epochs: / 10 every ``lr_step_epochs``, and the authors'
    ``MultiplicativeLR`` decay, prod over e = 1..epoch of lr_decay ** (e + 1) = lr_decay ** (epoch (epoch + 3) / 2)."""
    return 0.1 ** (epoch // config.lr_step_epochs) * config.lr_decay ** (epoch * (epoch + 3) / 2)


def _train_epoch(
    epoch: int, state: TrainingState, loader: DataLoader, preprocess: Preprocess, config: PretrainConfig,
    device: torch.device, progress: bool,
) -> dict:  # fmt: skip
    """One pass over the training pool, its variants drawn anew for this epoch; during the first
    ``frozen_steps`` steps of the run only the heads train (the backbone and its BatchNorm statistics stay)."""
    loader.dataset.set_epoch(epoch)
    losses = []
    for step, batch in enumerate(tqdm(loader, desc=f"pretrain epoch {epoch}/{config.epochs}", disable=not progress,
                                      leave=False), start=(epoch - 1) * len(loader)):  # fmt: skip
        frozen = step < config.frozen_steps
        state.model.train()
        state.model.backbone.requires_grad_(not frozen)
        if frozen:
            state.model.backbone.eval()
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        outputs = _outputs(state.model, preprocess, batch, device, config.level_batches)
        loss = pretraining_loss(outputs, batch, config.task, config.margin, config.auxiliary_weight,
                                config.balance, config.temperature)["total"]  # fmt: skip
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
        losses.append(loss.detach())
    state.model.backbone.requires_grad_(True)
    return {"train_loss": float(torch.stack(losses).mean())}


def held_out_scores(
    model: PretrainModel, loader: DataLoader, preprocess: Preprocess, device: torch.device
) -> dict:
    """Scores of every held-out pair (better, worse) and each pair's distortion index, in eval mode."""
    model.eval()
    better, worse, distortion = [], [], []
    with torch.no_grad():
        for batch in loader:
            scores = _outputs(model, preprocess, batch, device)["score"].float().cpu()
            pair_better, pair_worse = pair_scores(scores, batch)
            better.append(pair_better)
            worse.append(pair_worse)
            distortion.append(batch["pair_distortion"])
    return {"better": torch.cat(better), "worse": torch.cat(worse), "distortion": torch.cat(distortion)}


def held_out_accuracy(model: PretrainModel, loader: DataLoader, preprocess: Preprocess, selection: dict,
                      device: torch.device) -> dict:  # fmt: skip
    """Pair accuracy on the held-out pool, overall, per distortion and per group, with binomial intervals."""
    scores = held_out_scores(model, loader, preprocess, device)
    names = list(selection)
    return pair_accuracy(scores["better"].numpy(), scores["worse"].numpy(),
                         [names[i] for i in scores["distortion"].tolist()], selection)  # fmt: skip


def _validate(model: PretrainModel, loader: DataLoader, preprocess: Preprocess, config: PretrainConfig,
              device: torch.device) -> dict:  # fmt: skip
    scores = held_out_scores(model, loader, preprocess, device)
    loss = margin_ranking_loss(*as_pair_stack(scores["better"], scores["worse"]), config.margin)
    correct = (scores["better"] > scores["worse"]).float() + 0.5 * (
        scores["better"] == scores["worse"]
    ).float()
    return {"val_loss": float(loss), "val_pair_accuracy": float(correct.mean())}


@dataclass
class PretrainResult:
    backbone: nn.Module
    weights_source: dict
    history: TrainingHistory
    accuracy_before: dict
    accuracy_after: dict
    selection: dict[str, Distortion] = field(repr=False)


def pretrain_backbone(
    config: PretrainConfig, backbone_name: str, weights: str, preprocess: Preprocess, pool: list[str],
    num_workers: int = 0, progress: bool = True, device: torch.device = CPU,
    work_root: Path | None = None,
) -> PretrainResult:  # fmt: skip
    """Trains ``backbone_name`` (starting from ``weights``, resolved as the student's) by distortion ranking on
    ``pool``; ``preprocess`` is the student's (its input size and resize), with the backbone's normalisation."""
    selection = select_distortions(config.distortions)
    train_pool, held_out_pool = held_out_split(pool, config.held_out_fraction, config.seed)
    if config.level_batches and (config.batch_size < 2 or len(train_pool) < config.batch_size):
        raise UserError(f"pretrain: level_batches forwards each level as a batch of pretrain.batch_size="
                        f"{config.batch_size} images: it needs at least 2, and as many training images (the "
                        f"pool leaves {len(train_pool)})")  # fmt: skip
    with seeded(config.seed) as generator:
        backbone, weights_info = models.create_backbone(backbone_name, weights, num_classes=0)
        heads = PretrainHeads(backbone.num_features, config.task,
                              {g: len(m) for g, m in group_members(selection).items()}, config.dropout,
                              config.scores)  # fmt: skip
        model = PretrainModel(backbone, heads).to(device)
        optimiser = (
            torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            if config.optimiser == "adam"
            else torch.optim.RMSprop(model.parameters(), lr=config.lr, momentum=config.momentum,
                                     weight_decay=config.weight_decay)
        )  # fmt: skip
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(lr_factor, config=config))
        state = TrainingState(model, optimiser, schedule, generator)
        train_loader = _loader(
            train_pool, preprocess, selection, config, config.seed, num_workers, True, generator
        )
        held_out = _loader(
            held_out_pool,
            preprocess,
            selection,
            config,
            config.seed + 1,
            num_workers,
            False,
            torch.Generator().manual_seed(config.seed + 1),
        )  # fixed variants: epoch 0 throughout
        checkpoint = Checkpoint(
            work_root / fingerprint({**asdict(config), "backbone": backbone_name, "weights": weights_info.as_dict(),
                                     "preprocess": preprocess.as_dict()}, train_pool, held_out_pool)
            if work_root is not None else None
        )  # fmt: skip
        before = held_out_accuracy(
            model, held_out, preprocess, selection, device
        )  # the same on a resumed run
        resume(state, checkpoint, "pretrain")
        history = fit(
            state, config.epochs,
            train_epoch=partial(_train_epoch, state=state, loader=train_loader, preprocess=preprocess,
                                config=config, device=device, progress=progress),
            validate=partial(_validate, model, held_out, preprocess, config, device),
            checkpoint=checkpoint, name="pretrain", lr_key="pretrain.lr", progress=progress,
        )  # fmt: skip
        after = held_out_accuracy(model, held_out, preprocess, selection, device)
    checkpoint.clear()
    return PretrainResult(backbone.cpu().eval(), weights_info.as_dict(), history, before, after, selection)


def pretraining_preprocess(config: PretrainConfig, student: StudentConfig) -> Preprocess:
    """The pretraining's input preparation: the student's, at ``config.input_size`` and in
    ``config.input_mode`` where they are set (null: the student's own)."""
    size, mode = config.input_size or student.input_size, config.input_mode or student.input_mode
    if mode == "pad_crop" and student.pad_size < size:
        raise UserError(f"pretrain: pad_crop cuts {size} px out of student.pad_size={student.pad_size}: "
                        f"it must be >= {size} (pretrain.input_size or student.input_size)")  # fmt: skip
    return student_preprocess(
        student.backbone, size, student.resize_filter, mode=mode, pad_size=student.pad_size
    )


def student_preprocess(
    backbone_name: str, input_size: int, resize_filter: str, mode: str = "resize", pad_size: int | None = None
) -> Preprocess:
    """The student's input preparation at ``input_size`` for ``backbone_name`` (its normalisation), in
    ``mode`` (:class:`Preprocess`; ``pad_size`` for ``pad_crop``)."""
    with torch.random.fork_rng(devices=[]):  # built for its configuration only: the caller's stream stays
        backbone, _ = models.create_backbone(backbone_name, "random", num_classes=0)
    mean, std = models.normalisation(backbone)
    return Preprocess(mean=mean, std=std, size=input_size, resize_filter=resize_filter, mode=mode,
                      pad_size=pad_size if mode == "pad_crop" else None)  # fmt: skip
