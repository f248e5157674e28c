"""Every stage's configuration built from params.yaml, without running anything: a misspelt key or a bad value
ends in one line naming it, before a long run starts rather than hours into it.

    python -m iaakd.stages.check_params                       # params.yaml as it is
    python -m iaakd.stages.check_params -S student.kd.mix=loss -S 'distiller.backbones=[a,b]'

``-S key=value`` sets a value with DVC's own code for ``dvc exp run -S`` (its Hydra override parser: ``1e-4`` a
number, ``[a,b]`` a list), on a copy: params.yaml is not written. Model names are looked up in timm's registry (no weights are loaded). What needs the data or
the weights (labels with tags for student.semantic, a test list for split.name, weights found offline) is
checked by the stages themselves when they run.
"""

from __future__ import annotations

from collections.abc import Callable

from iaakd.errors import UserError
from iaakd.models.backbones import resolve_name
from iaakd.stages import common
from iaakd.stages.align import align_config
from iaakd.stages.dataset import data_config
from iaakd.stages.demo import demo_config
from iaakd.stages.distill import distiller_config
from iaakd.stages.evaluate import evaluate_config
from iaakd.stages.extract import extract_config
from iaakd.stages.params_file import with_overrides
from iaakd.stages.pool import pool_config
from iaakd.stages.pretrain import pretrain_config
from iaakd.stages.split import split_config
from iaakd.stages.student import student_config
from iaakd.tasks import OUTPUTS


def _task(params: dict) -> None:
    output = common.section(params, "task").get("output", "distribution")
    common.require(output in OUTPUTS, f"params: task.output={output!r} is not one of {', '.join(OUTPUTS)}")


def _model_names(params: dict) -> None:
    """The student's backbone and the alignment's encoder are models timm knows (the stages resolve them)."""
    resolve_name(student_config(params).backbone)
    resolve_name(align_config(params).encoder)


def _features(params: dict) -> None:
    backbones = common.section(params, "features").get("backbones") or []
    common.require(backbones, "params: features.backbones is empty")
    for backbone in backbones:
        extract_config(params, backbone)


# Each stage's configuration, in the pipeline's order; the builders the stages themselves call
CHECKS: tuple[Callable[[dict], object], ...] = (
    data_config, demo_config, split_config, _features, _task, distiller_config, pool_config,
    pretrain_config, align_config, student_config, _model_names, evaluate_config,
)  # fmt: skip


def check(params: dict) -> None:
    """Builds every stage's configuration from ``params``; the first mistake is a UserError naming its key."""
    for build in CHECKS:
        build(params)


def main(argv: list[str]) -> None:
    arguments, assignments = list(argv), []
    while arguments:
        flag = arguments.pop(0)
        if flag != "-S" or not arguments:
            raise UserError("usage: python -m iaakd.stages.check_params [-S key=value ...]")
        assignments.append(arguments.pop(0))
    check(with_overrides(common.load_params(), assignments))
    print(f"params: every stage's configuration is valid ({len(CHECKS)} checked)")


if __name__ == "__main__":
    common.run(main)
