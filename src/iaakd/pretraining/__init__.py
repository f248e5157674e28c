"""Self-supervised distortion-ranking pretraining (Pfister, Kobs, Hotho, NTIRE 2021): the distortions
(:mod:`.distortions`), the variants and ranking pairs of a pool image (:mod:`.pairs`), the heads and losses
(:mod:`.losses`) and the loader dataset that makes the stacks in its workers (:mod:`.dataset`)."""

from iaakd.pretraining.dataset import DistortionStackDataset, collate_stacks, stack_metadata
from iaakd.pretraining.distortions import (
    DISTORTIONS,
    GROUPS,
    Distortion,
    group_members,
    reference,
    select_distortions,
)
from iaakd.pretraining.losses import TASKS, PretrainHeads, ScoreHead, margin_ranking_loss, pretraining_loss
from iaakd.pretraining.pairs import (
    StackRow,
    Variant,
    expected_pair_count,
    pair_accuracy,
    ranking_pairs,
    sample_variants,
    stack_rows,
)

__all__ = [
    "DISTORTIONS",
    "GROUPS",
    "TASKS",
    "Distortion",
    "DistortionStackDataset",
    "PretrainHeads",
    "ScoreHead",
    "StackRow",
    "Variant",
    "collate_stacks",
    "expected_pair_count",
    "group_members",
    "margin_ranking_loss",
    "pair_accuracy",
    "pretraining_loss",
    "ranking_pairs",
    "reference",
    "sample_variants",
    "select_distortions",
    "stack_metadata",
    "stack_rows",
]
