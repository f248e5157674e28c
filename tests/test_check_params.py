"""python -m iaakd.stages.check_params: every stage's configuration from params.yaml, with `-S` values as
`dvc exp run -S` sets them, checked without running anything (the reproduction test leans on it)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT

from iaakd.errors import UserError
from iaakd.stages.check_params import check
from iaakd.stages.params_file import with_overrides


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
        ("align.teacher=sometimes", "align.teacher"),  # not a boolean
    ],
)
def test_a_bad_value_is_one_error_naming_its_key(params, assignment, named):
    with pytest.raises(UserError, match=re.escape(named)):
        check(with_overrides(params, [assignment]))


def test_a_misspelt_key_is_refused_rather_than_added(params):
    """`dvc exp run -S` adds a key params.yaml lacks; a stage would then refuse it mid-run."""
    with pytest.raises(UserError, match=r"no key 'student\.kd\.mixx'"):
        with_overrides(params, ["student.kd.mixx=loss"])


def test_an_override_is_read_as_yaml_and_leaves_the_original_alone(params):
    changed = with_overrides(params, ["distiller.backbones=[tf_efficientnet_lite0.in1k]"])
    assert changed["distiller"]["backbones"] == ["tf_efficientnet_lite0.in1k"]
    assert params["distiller"]["backbones"] != changed["distiller"]["backbones"]
    assert with_overrides(params, ["student.kd.enabled=false"])["student"]["kd"]["enabled"] is False
    check(changed)


def test_a_number_in_e_notation_is_a_number_as_dvc_exp_run_reads_it(params):
    """PyYAML reads `1e-4` as the string '1e-4'; `dvc exp run -S student.lr=1e-4` writes 0.0001."""
    changed = with_overrides(params, ["student.lr=1e-4"])
    assert changed["student"]["lr"] == pytest.approx(1e-4) and isinstance(changed["student"]["lr"], float)
    check(changed)


def test_a_value_that_is_not_valid_override_syntax_is_one_error_naming_it(params):
    with pytest.raises(UserError, match=re.escape("-S distiller.backbones=[a,b:")):
        with_overrides(params, ["distiller.backbones=[a,b"])


def test_a_yaml_syntax_error_in_params_yaml_names_its_line(tmp_path):
    from iaakd.stages.common import load_params

    broken = tmp_path / "params.yaml"
    broken.write_text("student:\n  lr: 0.001\n  epochs: [3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"params\.yaml:\d+:\d+: not valid YAML"):
        load_params(broken)


def test_params_yaml_in_e_notation_reads_as_a_number(tmp_path):
    """A hand-edited `lr: 1e-4` is the number DVC's `dvc params diff` shows, not a string."""
    from iaakd.stages.common import load_params

    written = tmp_path / "params.yaml"
    written.write_text("student:\n  lr: 1e-4\n", encoding="utf-8")
    assert load_params(written)["student"]["lr"] == pytest.approx(1e-4)


def test_the_command_on_a_broken_override_prints_one_error_line_and_fails():
    result = subprocess.run(
        [sys.executable, "-m", "iaakd.stages.check_params", "-S", "distiller.backbones=[a,b"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith("error: -S distiller.backbones=[a,b")
