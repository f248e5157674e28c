"""Backbones trained before the student (``student.init``): a self-describing checkpoint per kind.

``pretrain`` (Pfister et al.'s distortion ranking) and ``align`` (CSKD's alignment to a frozen encoder) each
write one file holding the backbone's architecture, its weights, where it started from and what trained it.
A stage that is switched off writes the same kind of file with ``trained: false`` and the reason, so the
pipeline's graph stays whole and cheap; asking the student to start from such a file is one clear error.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from iaakd import models  # names load on first use: a switched-off stage never imports timm
from iaakd.checkpoints import safe_load, save_atomically
from iaakd.errors import UserError, first_line

FORMAT = 1


def save_backbone(path: Path, kind: str, backbone: nn.Module, started_from: dict, details: dict) -> None:
    """The trained backbone of stage ``kind`` (``pretrain`` or ``align``)."""
    save_atomically(
        {"kind": kind, "format": FORMAT, "trained": True, "backbone": models.model_name(backbone),
         "started_from": started_from, "details": details, "state_dict": backbone.state_dict()},
        path,
    )  # fmt: skip


def save_switched_off(path: Path, kind: str, reason: str) -> None:
    """The documented no-op output of a stage nothing asks for: no weights, the reason why."""
    save_atomically({"kind": kind, "format": FORMAT, "trained": False, "reason": reason}, path)


def load_backbone(path: Path, kind: str, expected: str) -> tuple[nn.Module, dict]:
    """The backbone of a ``kind`` checkpoint, loaded strictly into a fresh ``expected`` architecture, and its
    weights source for the student's records; a file of another kind or architecture, or one written by a
    switched-off stage, ends in one line."""
    saved = safe_load(path, f"a {kind} checkpoint")
    if saved.get("kind") != kind or saved.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a {kind} checkpoint (kind: {saved.get('kind')}, format: {saved.get('format')})"
        )
    if not saved.get("trained"):
        raise UserError(
            f"{path}: holds no trained backbone ({saved.get('reason', 'the stage trained nothing')})"
        )
    wanted = models.resolve_name(expected)
    if saved["backbone"] != wanted:
        raise UserError(
            f"{path}: a {saved['backbone']} backbone, but student.backbone is {wanted}; rerun `{kind}` for it"
        )
    try:
        with torch.random.fork_rng(
            devices=[]
        ):  # the random start is overwritten: leave the caller's stream be
            backbone, _ = models.create_backbone(wanted, "random", num_classes=0)
        backbone.load_state_dict(saved["state_dict"], strict=True)
        started_from = saved["started_from"]
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = first_line(error)
        raise UserError(
            f"{path}: its weights do not fit {wanted} ({type(error).__name__}: {detail})"
        ) from None
    digest = models.file_sha256(Path(path))
    return backbone, {
        "source": kind,
        "path": str(path),
        "sha256": digest,
        "started_from": started_from,
    }
