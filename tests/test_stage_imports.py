"""What a stage process imports before it works: most of a short stage's time is its imports (the suite runs
~200 stage processes), so the stages that train no timm model must not import timm and torchvision (about 2 s
each), and the lazily loaded packages must still give their functions, not their submodules."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_TIMM = (
    "demo",
    "dataset",
    "split",
    "pool",
    "extract_align",
    "distill",
    "teacher",
    "pretrain",
    "align",
    "student",
)


def test_stages_that_train_no_timm_model_start_without_importing_timm():
    """pretrain and align import their libraries but touch timm only when student.init asks them to train;
    the student stage only when it builds the student."""
    script = (
        "import sys\n"
        + "".join(f"import iaakd.stages.{stage}\n" for stage in WITHOUT_TIMM)
        + "print(sorted(name for name in ('timm', 'torchvision') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout


def test_lazily_loaded_names_are_the_functions_not_their_namesake_submodules():
    """iaakd.student.predict is a function in a submodule of the same name; after the training library
    imports that submodule, the package's name must still be the function (lazy-loader >= 0.6)."""
    import iaakd.student.train  # noqa: F401  (imports iaakd.student.predict, the submodule)
    from iaakd.student import build_student, predict
    from iaakd.student.predict import predict as defined

    assert predict is defined and callable(build_student)
