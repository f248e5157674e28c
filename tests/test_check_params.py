"""python -m iaakd.stages.check_params: every stage's configuration from params.yaml, with `-S` values as
`dvc exp run -S` sets them, checked without running anything (the reproduction test leans on it)."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO_ROOT

from iaakd.errors import UserError
from iaakd.stages.check_params import check, with_override


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_the_committed_params_pass(params):
    check(params)


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("student.kd.mix=lost", "student.kd.mix"),  # a value outside the choices
        ("student.epochs=-1", "student.epochs"),
        ("split.label_fraction=1.5", "split.label_fraction"),
        ("task.output=regression", "task.output"),
        ("distiller.backbones=[resnet18.tv_in1k]", "distiller.backbones"),  # not among features.backbones
        ("features.backbones=[resnet18]", "full names"),  # not a full timm name
        ("student.backbone=notamodel", "unknown backbone 'notamodel'"),
        ("align.encoder=vit_base_patch16_clip_224.nonsense", "vit_base_patch16_clip_224"),
        ("pretrain.task=rank+guess", "pretrain.task"),
        ("align.frozen_epochs=9", "align.frozen_epochs"),
        ("unlabeled.source=web", "unlabeled.source"),
    ],
)
def test_a_bad_value_is_one_error_naming_its_key(params, assignment, named):
    with pytest.raises(UserError, match=re.escape(named)):
        check(with_override(params, assignment))


def test_a_misspelt_key_is_refused_rather_than_added(params):
    """`dvc exp run -S` adds a key params.yaml lacks; a stage would then refuse it mid-run."""
    with pytest.raises(UserError, match=r"no key 'student\.kd\.mixx'"):
        with_override(params, "student.kd.mixx=loss")


def test_an_override_is_read_as_yaml_and_leaves_the_original_alone(params):
    changed = with_override(params, "distiller.backbones=[tf_efficientnet_lite0.in1k]")
    assert changed["distiller"]["backbones"] == ["tf_efficientnet_lite0.in1k"]
    assert params["distiller"]["backbones"] != changed["distiller"]["backbones"]
    assert with_override(params, "student.kd.enabled=false")["student"]["kd"]["enabled"] is False
    check(changed)
