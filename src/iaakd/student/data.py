"""What one split feeds the student: image paths, targets, the teacher's knowledge; its dataset and the labelled loader."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from iaakd.data.images import Preprocess
from iaakd.distributed import Ranks
from iaakd.errors import UserError
from iaakd.feature_rows import VectorRows
from iaakd.student.config import UNLABELED_SHUFFLE, StudentConfig


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
