"""Pool images to stacks of distorted versions, made in the loader's workers.

One item is one pool image: the image decoded, scaled so its short side is ``work_scale`` x the input size
(the distortions act there; the crop windows and the rotations' box are cut from it), each row of the stack
made (original, references, variants), then each row turned into the network input by the student's
:class:`~iaakd.data.images.Preprocess` (its resize, pad-and-crop or letterbox to the input size, uint8 CHW).

Variants are drawn anew each epoch: an item's generator is seeded by (seed, epoch, index), so a pool image
gets other variants (and other noise, another motion-blur direction) every epoch, the same on every run and
whatever worker makes it. Call :meth:`DistortionStackDataset.set_epoch` before each epoch with loaders
that do not keep their workers (``persistent_workers=False``, the default: the dataset is sent to the
workers anew each epoch); keep the epoch fixed for a held-out set, so its pairs stay the same.

With ``shared_variants`` the pool images of one step carry the same variants, as in the authors' steps
(``train_pre/IA.py:159-169``): :class:`SharedVariantBatches` hands out (index, step) keys, the variants are
drawn from (seed, epoch, step) and each image's own randomness (noise, blur direction) from (seed, epoch,
index). Row r of every stack is then the same distortion level, and the step can be forwarded one level
at a time (``row_in_stack``), so BatchNorm's batch statistics are those of one level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, Dataset, Sampler

from iaakd.data.images import RESIZE_FILTERS, Preprocess, load_rgb
from iaakd.pretraining.distortions import GROUPS, Distortion, group_members, reference_of_kind
from iaakd.pretraining.pairs import StackRow, ranking_pairs, sample_variants, stack_rows

SIDE_SIGN = {"neg": -1, "pos": 1}


def stack_metadata(rows: Sequence[StackRow], selection: Mapping[str, Distortion]) -> dict[str, torch.Tensor]:
    """Per row: ``distortion`` (index in ``selection``), ``group`` (index in :data:`GROUPS`),
    ``class_in_group`` (index among the group's selected distortions), ``side`` (-1 neg, 1 pos), ``level``
    (in the distortion's unit), ``step``, ``target`` (the signed level to regress) and ``reference_row``
    (the row it is ranked below); -1, 0 or NaN for the original and references. Per pair: ``pairs``
    (better, worse) and ``pair_distortion`` (the worse row's distortion)."""
    names = list(selection)
    members = group_members(selection)
    reference_row = {row.reference: index for index, row in enumerate(rows) if row.role != "variant"}
    columns: dict[str, list] = {key: [] for key in ("distortion", "group", "class_in_group", "side", "step")}
    levels, targets, references = [], [], []
    for row in rows:
        variant = row.variant
        if variant is None:
            for key in columns:
                columns[key].append(0 if key in ("side", "step") else -1)
            levels.append(float("nan"))
            targets.append(0.0)
            references.append(-1)
            continue
        group = selection[variant.distortion].group
        columns["distortion"].append(names.index(variant.distortion))
        columns["group"].append(GROUPS.index(group))
        columns["class_in_group"].append(members[group].index(variant.distortion))
        columns["side"].append(SIDE_SIGN[variant.side])
        columns["step"].append(variant.step)
        levels.append(variant.level)
        targets.append(variant.signed_step)
        references.append(reference_row[row.reference])
    metadata = {key: torch.tensor(values, dtype=torch.long) for key, values in columns.items()}
    metadata["level"] = torch.tensor(levels, dtype=torch.float32)
    metadata["target"] = torch.tensor(targets, dtype=torch.float32)
    metadata["reference_row"] = torch.tensor(references, dtype=torch.long)
    pairs = torch.tensor(ranking_pairs(rows), dtype=torch.long).reshape(-1, 2)
    metadata["pairs"] = pairs
    metadata["pair_distortion"] = metadata["distortion"][pairs[:, 1]]
    return metadata


def scaled_to_short_side(image: Image.Image, short_side: int, resample: Image.Resampling) -> Image.Image:
    scale = short_side / min(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, resample)


class DistortionStackDataset(Dataset):
    """Item ``index``: a dict with ``images`` (R, 3, S, S) uint8, the stack of pool image ``index`` (row 0
    the original, then the references its variants need, then ``variants_per_image`` variants drawn side by
    side, ``levels_per_side`` levels a side; None: all of them), the metadata of
    :func:`stack_metadata` and ``index``.

    ``preprocess``: the student's, with a fixed ``size`` (the input size). ``work_scale``: the short side the
    distortions act at, as a multiple of that size (1: at the input's own scale; the authors distort at 224
    px, their input size, and cut the crops from 336 px); None: at the file's full resolution."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        preprocess: Preprocess,
        selection: Mapping[str, Distortion],
        variants_per_image: int | None,
        seed: int,
        epoch: int = 0,
        levels_per_side: int = 2,
        work_scale: float | None = 1.0,
        shared_variants: bool = False,
    ) -> None:
        if preprocess.size is None:
            raise ValueError("DistortionStackDataset: the preprocess needs a fixed input size")
        self.paths = [str(path) for path in paths]
        self.preprocess = preprocess
        self.selection = dict(selection)
        self.variants_per_image = variants_per_image
        self.seed = seed
        self.epoch = epoch
        self.levels_per_side = levels_per_side
        self.work_scale = work_scale
        self.shared_variants = shared_variants

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def working_image(self, index: int) -> Image.Image:
        """The decoded file at the scale the distortions act at."""
        if self.work_scale is None:
            return load_rgb(self.paths[index])
        short_side = max(1, round(self.work_scale * self.preprocess.size))
        draft = (short_side, short_side) if self.preprocess.jpeg_draft else None
        resample = RESIZE_FILTERS[self.preprocess.resize_filter]
        return scaled_to_short_side(load_rgb(self.paths[index], draft), short_side, resample)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index, or with ``shared_variants`` (index, step) from :class:`SharedVariantBatches`."""
        index, step = key if self.shared_variants else (key, None)
        rng = np.random.default_rng((self.seed, self.epoch, index))  # the image's own: noise, blur direction
        draw = rng if step is None else np.random.default_rng((self.seed, self.epoch, step, 1))  # its step's
        variants = sample_variants(self.selection, self.variants_per_image, draw, self.levels_per_side)
        rows = stack_rows(variants, self.selection)
        image = self.working_image(index)
        made = [self._make(image, row, rng) for row in rows]
        return {
            "images": torch.stack([self.preprocess(picture) for picture in made]),
            **stack_metadata(rows, self.selection),
            "index": index,
        }

    def _make(self, image: Image.Image, row: StackRow, rng: np.random.Generator) -> Image.Image:
        if row.variant is None:
            return reference_of_kind(image, row.reference)
        return self.selection[row.variant.distortion](image, row.variant.level, rng)


class SharedVariantBatches(Sampler[list[tuple[int, int]]]):
    """torch's batches of ``batch_size`` pool images, shuffled with ``generator``, each index keyed by its step
    in the epoch, for a :class:`DistortionStackDataset` with ``shared_variants``. An incomplete last batch is
    left out, as the authors' loader does (drop_last: a level forwarded for one image alone would give
    BatchNorm a batch of one)."""

    def __init__(self, length: int, batch_size: int, generator: torch.Generator | None = None) -> None:
        self.length, self.batch_size, self.generator = length, batch_size, generator

    def __len__(self) -> int:
        return self.length // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = torch.randperm(self.length, generator=self.generator).tolist()
        for step, batch in enumerate(BatchSampler(order, self.batch_size, drop_last=True)):
            yield [(index, step) for index in batch]


def collate_stacks(items: Sequence[dict]) -> dict:
    """Stacks of several pool images as one batch: rows concatenated, ``pairs`` and ``reference_row``
    shifted to the batch's row numbers, ``image`` (R,) naming each row's pool image (its dataset index),
    ``row_in_stack`` (R,) each row's place in its own stack."""
    offsets = np.cumsum([0] + [len(item["images"]) for item in items[:-1]])
    batch = {"images": torch.cat([item["images"] for item in items])}
    batch["row_in_stack"] = torch.cat([torch.arange(len(item["images"])) for item in items])
    for key in ("distortion", "group", "class_in_group", "side", "step", "level", "target"):
        batch[key] = torch.cat([item[key] for item in items])
    batch["reference_row"] = torch.cat(
        [
            torch.where(item["reference_row"] >= 0, item["reference_row"] + int(offset), -1)
            for item, offset in zip(items, offsets, strict=True)
        ]
    )
    batch["pairs"] = torch.cat(
        [item["pairs"] + int(offset) for item, offset in zip(items, offsets, strict=True)]
    )
    batch["pair_distortion"] = torch.cat([item["pair_distortion"] for item in items])
    batch["image"] = torch.cat(
        [torch.full((len(item["images"]),), item["index"], dtype=torch.long) for item in items]
    )
    return batch
