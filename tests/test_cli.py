"""``iaakd``: the four subcommands, and ``iaakd plan`` being the planner (``python -m iaakd.plan``)."""

from __future__ import annotations

from scoring_helpers import run_cli


def test_help_lists_the_four_subcommands(capsys):
    status, stdout, _ = run_cli(["--help"], capsys)
    assert status == 0
    assert all(name in stdout for name in ("score", "export", "explain", "plan"))


def test_plan_subcommand_passes_its_arguments_to_the_planner(capsys):
    status, stdout, _ = run_cli(
        ["plan", "tf_efficientnet_lite0", "--images", "1000", "--size", "224x224"], capsys
    )
    assert status == 0
    assert stdout.splitlines()[1].startswith("tf_efficientnet_lite0")
    assert "at 224x224" in stdout and "for 1,000 images" in stdout


def test_unknown_subcommand_is_one_error_line_with_status_1(capsys):
    status, _, stderr = run_cli(["rate", "photo.jpg"], capsys)
    assert status == 1 and stderr.count("\n") == 1 and stderr.startswith("error: iaakd: argument command")
