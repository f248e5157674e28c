"""CSKD's unlabelled images in training: how many join each step, and their own seeded loader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from iaakd.data.images import Preprocess
from iaakd.distributed import SINGLE, Ranks
from iaakd.student.build import CPU
from iaakd.student.config import UNLABELED_ORDER, StudentConfig
from iaakd.student.data import StudentData, _TargetDataset, _training_loader


def _stream_seed(*keys: int) -> int:
    """A seed of its own for each tuple of keys (a stream's tag, student.seed, epoch, step, ...)."""
    return int(np.random.SeedSequence([key % 2**64 for key in keys]).generate_state(1)[0])


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
