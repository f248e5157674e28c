"""Shared fixtures. ../shared/ava-sample is read by path: absent, its tests skip, except under CI=true.

Pipeline tests (the real `dvc repro` in a temporary git repository) share ONE built tiny-demo repository,
``built_tiny_repo``: made and reproduced once per session, then committed (dvc.lock, metrics and all). A test
asks for ``tiny_repo``, its own copy of it (git history, .dvc/cache and every output included), changes
params, reruns, kills; only the stages its change reruns run, and nothing leaks into another test.

The build, and then README's "Reproducing the paper" script (``reproduction_run``), run in a background
thread from the start of the session while the other tests run: on 2 cores most of a stage's time is one
core importing torch and timm, so the second core would otherwise idle. Tests that need the build run
after the others, and those that wait for the script run last (``pytest_collection_modifyitems``); the
terminal summary gives the background's own durations, which --durations cannot see.

Every torch in the session, this process's and its subprocesses', runs one thread (OMP_NUM_THREADS=1 unless
set): with the background on one core, a two-thread foreground oversubscribes the two cores, and OpenMP's
waiting threads then spin against the background (measured in a fresh clone: the suite took 17 min 40 s
that way, 12 min 30 s with one thread; the semi-supervised fixture 58 s, now under 12 s).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before anything imports torch (above)
# No test reaches the real Hub (this machine and CI have no internet); the weights tests serve their own on the
# loopback and switch this off for their commands (tests/hub_stand_in.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# ONNX exports the scorer caches (iaakd.runtime) go to a folder of this run, not the user's cache; the scorer's
# tests run torch unless they name a backend (each tiny model's export costs seconds; the ONNX Runtime path has
# its own tests: test_backends.py, test_model_sharing.py, and the scoring tutorial in the reproduction script)
os.environ.setdefault("IAAKD_CACHE", tempfile.mkdtemp(prefix="iaakd-cache-"))
os.environ.setdefault("IAAKD_BACKEND", "torch")
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
AVA_SAMPLE = REPO_ROOT.parent / "shared" / "ava-sample"
BIN = Path(sys.executable).parent
GIT_COMMIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q")
TINY_TRIO = [
    "tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite1.in1k",
    "tf_efficientnet_lite2.in1k",
]
# The tiny demo's params: the smallest demo the `demo` stage allows, three small backbones with packaged
# weights (the README's paper commands need three), small inputs, a tiny distiller, one epoch.
TINY = {
    ("data", "demo", "num_images"): 40,
    ("data", "demo", "test_fraction"): 0.25,  # 10 test images, 30 for training and validation
    ("split", "val_fraction"): 0.3,  # 9 validation images, both classes of the binary task among them
    ("features", "backbones"): TINY_TRIO,
    ("features", "input_size"): 64,
    ("features", "batch_size"): 8,
    ("distiller", "backbones"): TINY_TRIO,
    ("distiller", "epochs"): 3,
    ("distiller", "hidden"): [32, 16],
    ("student", "epochs"): 1,
    ("student", "input_size"): 32,
    ("evaluate", "bootstrap_resamples"): 50,
    # the pools the result scripts make in the reproduction run (the switches' own tests set theirs)
    ("pretrain", "num_images"): 16,
    ("unlabeled", "num_images"): 12,
}
EVERY_STAGE = {
    "demo",
    "dataset",
    "split",
    *(f"extract@{backbone}" for backbone in TINY_TRIO),
    "pool",
    *(f"extract_pool@{backbone}" for backbone in TINY_TRIO),
    "distill",
    "teacher",
    "pretrain",
    "align",
    "extract_align",
    "student",
    "evaluate",
}


@pytest.fixture(scope="session")
def ava_sample() -> Path:
    if not AVA_SAMPLE.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{AVA_SAMPLE} is missing, and under CI=true it must be present")
        pytest.skip(f"{AVA_SAMPLE} is absent: tests on the real AVA sample are skipped")
    return AVA_SAMPLE


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A 48-image demo dataset in the AVA layout, generated once per session (library tests, no DVC)."""
    from iaakd.data.demo import DemoConfig, generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, DemoConfig(num_images=48, seed=3), progress=False)
    return root


def set_params(repo: Path, changes: dict) -> None:
    """Sets params.yaml's keys, each given as a tuple of its path, to the values."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for keys, value in changes.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# `dvc exp run` commits experiments: an identity for a fresh machine without a git config
GIT_IDENTITY = {
    f"GIT_{role}_{field}": value
    for role in ("AUTHOR", "COMMITTER")
    for field, value in (("NAME", "t"), ("EMAIL", "t@t"))
}


def environment(extra: dict | None = None) -> dict:
    return {
        **GIT_IDENTITY,
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "IAAKD_PROGRESS": "0",
        **(extra or {}),
    }


def run(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=repo, env=environment(env), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, *GIT_COMMIT, "--allow-empty", "-m", message)


def make_repo(repo: Path, changes: dict) -> Path:
    """A git + DVC repository holding the pipeline (dvc.yaml, params.yaml with ``changes``, src/, scripts/,
    presets/, results/paper.json), committed."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    for folder in ("src", "scripts", "presets"):
        shutil.copytree(
            REPO_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    (repo / "results").mkdir()  # the paper's numbers, which the report puts beside the demo's, as in a clone
    shutil.copy(REPO_ROOT / "results" / "paper.json", repo / "results" / "paper.json")
    set_params(repo, changes)
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    commit(repo, "pipeline")
    return repo


def copy_repo(source: Path, target: Path) -> Path:
    """A copy of a built repository with its git history, .dvc/cache and outputs: DVC finds every stage
    up to date, and a changed param reruns only what depends on it."""
    shutil.copytree(source, target, symlinks=True)
    return target


# What the smoke test changes in README's "Reproducing the paper" commands: the paper's models become small
# ones with packaged weights; the folds, the input sizes (the tiny demo's images are at most 320 px; its
# students are 32 px) and the seed counts shrink to fit 40 images and a test's time; Fig. 6's loop runs
# its first fold and first student only (every other fold is the same two commands with another number:
# two `dvc exp run`s of split, distill, teacher, student and evaluate, about 2 minutes of the suite); Tables
# I and II's loop, one subset of the tiny trio. Every command is otherwise run as written.
PAPER_TO_TINY = {
    # Tables I, II: the six ImageNet/IG/SWSL extractors become the tiny trio, their 14 subsets one of them
    "gsf=resnet18.tv_in1k,resnet50.tv_in1k,resnet101.tv_in1k,resnext101_32x8d.tv_in1k,"
    "resnext101_32x8d.fb_wsl_ig1b_ft_in1k,resnext101_32x8d.fb_swsl_ig1b_ft_in1k": "gsf="
    + ",".join(TINY_TRIO),
    "for backbones in resnet18.tv_in1k resnet50.tv_in1k resnet101.tv_in1k resnet18.tv_in1k,resnet50.tv_in1k "
    "resnet50.tv_in1k,resnet101.tv_in1k resnet18.tv_in1k,resnet101.tv_in1k "
    "resnet18.tv_in1k,resnet50.tv_in1k,resnet101.tv_in1k resnext101_32x8d.tv_in1k "
    "resnext101_32x8d.fb_wsl_ig1b_ft_in1k resnext101_32x8d.fb_swsl_ig1b_ft_in1k "
    "resnext101_32x8d.tv_in1k,resnext101_32x8d.fb_wsl_ig1b_ft_in1k "
    "resnext101_32x8d.fb_wsl_ig1b_ft_in1k,resnext101_32x8d.fb_swsl_ig1b_ft_in1k "
    "resnext101_32x8d.tv_in1k,resnext101_32x8d.fb_swsl_ig1b_ft_in1k "
    "resnext101_32x8d.tv_in1k,resnext101_32x8d.fb_wsl_ig1b_ft_in1k,resnext101_32x8d.fb_swsl_ig1b_ft_in1k; do": (
        "for backbones in tf_efficientnet_lite1.in1k; do"
    ),
    # Fig. 6: the first of the three students (the loop body is the same for each)
    "for student in resnext101_32x8d.fb_swsl_ig1b_ft_in1k resnet50.tv_in1k resnet18.tv_in1k; do": (
        "for student in tf_efficientnet_lite0; do"
    ),
    # before the KD comparison's own (after them): the KD comparison's first seed, their reference
    "pretraining.py --seeds 0 1 2 3 4": "pretraining.py --seeds 0",
    "cskd.py --seeds 0 1 2 3 4": "cskd.py --seeds 0",
    "--seeds 0 1 2 3 4": "--seeds 0 1",
    "ablations.py --seeds 0 1 2": "ablations.py --seeds 0",
    "folds_and_outputs.py --seeds 0 1 2": "folds_and_outputs.py --seeds 0",
    "--pad-size 800 --crop-size 640": "--pad-size 64 --crop-size 48",
    "student.input_size=640 -S student.pad_size=800": "student.input_size=48 -S student.pad_size=64",
    "features.input_size=300": "features.input_size=48",
    "resnext101_32x8d.fb_swsl_ig1b_ft_in1k": "tf_efficientnet_lite0.in1k",
    "resnext101_32x48d.fb_wsl_ig1b_ft_in1k": "tf_efficientnet_lite1.in1k",
    "resnetv2_152x4_bit.goog_in21k_ft_in1k": "tf_efficientnet_lite2.in1k",
    "resnet50.tv_in1k": "tf_efficientnet_lite1.in1k",
    "resnet18.tv_in1k": "tf_efficientnet_lite2.in1k",
    "$(seq 0 11)": "$(seq 0 0)",
    "split.num_folds=12": "split.num_folds=2",
    "split.test_size=20000": "split.test_size=4",
    "--folds 12 --test-size 20000": "--folds 2 --test-size 4",
}


# Experiments whose stages another command of the block runs with other values of the same keys: in the
# tiny run their values are validated by every stage's configuration builder (test_pipeline.py, through
# iaakd.stages.check_params) instead of trained, about 17 s of the background each. Which one runs:
# Table III's singles -> teacher-swsl-bit and the Tables I-II loop; v-no-kd, v-frozen -> v-frozen-no-kd;
# vi-no-feature -> vi-target-gt; vii-640-no-kd -> vii-640; student-resnet18 -> student-resnet50;
# xv-*-no-kd -> xv-binary, xv-score; Fig. 6's no-KD runs -> the same fold with KD.
VALIDATED_ONLY = (
    "teacher-swsl", "teacher-ig", "teacher-bit", "v-no-kd", "v-frozen", "vi-no-feature", "vii-640-no-kd",
    "student-resnet18", "xv-binary-no-kd", "xv-score-no-kd", "fig6-tf_efficientnet_lite0-fold0-no-kd",
    "fig6-tf_efficientnet_lite0-ilgnet-no-kd",
)  # fmt: skip
VALIDATED_ONLY_FILE = "validated-only.txt"  # one line per such command, its arguments split by \x1f
_VALIDATE_INSTEAD = (
    f'exp() {{ if [[ " {" ".join(VALIDATED_ONLY)} " == *" $2 "* ]]; then (IFS=$\'\\x1f\'; printf \'%s\\n\' "$*")'
    f' >> {VALIDATED_ONLY_FILE}; else git checkout -q params.yaml && dvc exp run "$@"; fi; }}\n'
)


# README "Your own experiment": its blocks run after the paper's, from the baseline again, the grid at two seeds
OWN_TO_TINY = {
    "-S 'student.seed=0,1,2'": "-S 'student.seed=0,1'",
    "iaakd compare grid-1,grid-2,grid-3 grid-4,grid-5,grid-6": "iaakd compare grid-1,grid-2 grid-3,grid-4 --json",
}
BASELINE_AGAIN = "git checkout -q -- params.yaml dvc.lock metrics plots reports && dvc checkout -q\n"


def documented_pages() -> list[Path]:
    """README.md and every page of the documentation (docs/**/*.md)."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def commands_block(name: str) -> str:
    """The ``<!-- commands:NAME -->`` shell block of README.md or a documentation page (exactly one)."""
    pattern = re.compile(rf"<!-- commands:{name} -->\n```sh\n(.*?)```\n<!-- /commands:{name} -->", re.S)
    found = [
        block for page in documented_pages() for block in pattern.findall(page.read_text(encoding="utf-8"))
    ]
    assert len(found) == 1, (
        f"{len(found)} <!-- commands:{name} --> blocks in README.md and docs/ (one expected)"
    )
    return found[0]


def reproduction_commands() -> str:
    """README's <!-- commands:paper --> block, with PAPER_TO_TINY's replacements, and its ``exp`` redefined
    to record VALIDATED_ONLY's commands instead of running them; then, from the baseline again, the "Your own
    experiment" blocks (<!-- commands:own -->, <!-- commands:grid --> with OWN_TO_TINY's replacements, then
    <!-- commands:other -->)."""
    commands = commands_block("paper")
    for paper, tiny in PAPER_TO_TINY.items():
        assert paper in commands, f"{paper} is no longer in the README's commands: update PAPER_TO_TINY"
        commands = commands.replace(paper, tiny)
    definition, rest = commands.split("\n", 1)
    assert definition.startswith("exp() {"), "the README's block no longer starts by defining exp()"
    own = commands_block("own") + commands_block("grid") + commands_block("other")
    for readme, tiny in OWN_TO_TINY.items():
        assert readme in own, (
            f"{readme} is no longer in the README's own-experiment blocks: update OWN_TO_TINY"
        )
        own = own.replace(readme, tiny)
    # the scoring tutorial scores the student the last experiment left (its outputs are what the own-experiment
    # test reads, so the baseline is not restored before it)
    scoring = "echo '--- scoring'\n" + commands_block("scoring")
    return (
        definition
        + "\n"
        + _VALIDATE_INSTEAD
        + rest
        + BASELINE_AGAIN
        + "echo '--- own experiment'\n"
        + own
        + scoring
    )


# what the reproduction script's traps write: "<seconds since start>\t<command>" per command, then "<seconds>\tend"
COMMAND_TIMES = "command-times.tsv"


class Background:
    """The shared repository's build, then README's reproduction script in a copy of it, in a thread;
    ``build`` and ``reproduction`` are their futures. ``stop`` kills what is still running."""

    def __init__(self, base: Path, reproduce: bool) -> None:
        self.base = base
        self.build: Future = Future()
        self.reproduction: Future = Future()
        self.seconds: dict[str, float] = {}
        self._processes: list[subprocess.Popen] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._work, args=(reproduce,), daemon=True)
        self._thread.start()

    def _work(self, reproduce: bool) -> None:
        for name, future, job in (("build", self.build, self._build), ("reproduction", self.reproduction,
                                                                        self._reproduce)):  # fmt: skip
            if name == "reproduction" and not reproduce:
                return
            start = time.perf_counter()
            try:
                future.set_result(job())
            except BaseException as error:  # handed to the tests that wait for it
                future.set_exception(error)
                if name == "build":
                    self.reproduction.set_exception(error)
                return
            finally:
                self.seconds[name] = time.perf_counter() - start

    def _run(self, repo: Path, *args: str) -> subprocess.CompletedProcess:
        """``run``, in a process group of its own that ``stop`` can kill."""
        if self._stopped:
            raise RuntimeError("the test session has ended")
        # one thread: the tests in the foreground have the other core
        process = subprocess.Popen(args, cwd=repo, env=environment({"OMP_NUM_THREADS": "1", "IAAKD_BACKEND": "auto"}),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
        self._processes.append(process)
        stdout, stderr = process.communicate()
        result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
        return result

    def _build(self) -> Path:
        repo = make_repo(self.base / "built" / "repo", TINY)
        first = self._run(repo, "dvc", "repro")
        every_stage = set(run(repo, "dvc", "stage", "list", "--name-only").stdout.split())
        assert every_stage >= EVERY_STAGE and stages_run(first.stdout) == every_stage
        commit(repo, "tiny demo reproduced")
        return repo

    def _reproduce(self) -> tuple[Path, subprocess.CompletedProcess]:
        repo = copy_repo(self.build.result(), self.base / "reproduction" / "repo")
        # each top-level command's start time, and the end (an EXIT trap keeps the script's exit status)
        line = '"%s\\t%s\\n" "$SECONDS"'
        timing = (
            f"trap 'printf {line} \"$BASH_COMMAND\" >> {COMMAND_TIMES}' DEBUG\n"
            f"trap 'trap - DEBUG; printf {line} end >> {COMMAND_TIMES}' EXIT\n"
        )
        (repo / "reproduce.sh").write_text("set -euo pipefail\n" + timing + reproduction_commands())
        return repo, self._run(repo, "bash", "reproduce.sh")

    def slowest_commands(self, count: int = 8) -> list[tuple[int, str]]:
        """The reproduction script's ``count`` slowest commands so far, (seconds, command), slowest first:
        where the suite's time goes."""
        times = self.base / "reproduction" / "repo" / COMMAND_TIMES
        if not times.is_file():
            return []
        lines = times.read_text(encoding="utf-8").splitlines()
        rows = [row for row in (line.split("\t", 1) for line in lines) if len(row) == 2 and row[0].isdigit()]
        spans = [(int(after[0]) - int(start), command) for (start, command), after in pairwise(rows)]
        return sorted(spans, key=lambda span: -span[0])[:count]

    def stop(self) -> None:
        self._stopped = True
        for process in self._processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        self._thread.join(timeout=60)


BACKGROUND: list[Background] = []  # the session's, for the terminal summary


def pytest_collection_modifyitems(config, items) -> None:
    """Tests on the shared repository after the others (its build runs meanwhile), and those that wait
    for the reproduction script last."""
    items.sort(
        key=lambda item: ("reproduction_run" in item.fixturenames, "built_tiny_repo" in item.fixturenames)
    )


def pytest_terminal_summary(terminalreporter) -> None:
    for background in BACKGROUND:
        durations = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in background.seconds.items())
        terminalreporter.write_line(f"in the background (conftest.py): {durations}")
        for seconds, command in background.slowest_commands():
            terminalreporter.write_line(f"  {seconds:5d} s  {command[:110]}")


@pytest.fixture(scope="session", autouse=True)
def pipeline_background(request, tmp_path_factory) -> Iterator[Background | None]:
    """Starts the background work at the start of the session, where a selected test needs it."""
    needs = {name for item in request.session.items for name in item.fixturenames}
    if "built_tiny_repo" not in needs:
        yield None
        return
    work = Background(tmp_path_factory.mktemp("background"), reproduce="reproduction_run" in needs)
    BACKGROUND.append(work)
    yield work
    work.stop()


@pytest.fixture(scope="session")
def built_tiny_repo(pipeline_background) -> Path:
    """The tiny demo reproduced once (every stage runs) and committed: dvc.lock, metrics, plots. Read-only:
    tests take a copy (``tiny_repo``)."""
    return pipeline_background.build.result()


@pytest.fixture(scope="session")
def reproduction_run(pipeline_background, built_tiny_repo) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the built repository in which README's "Reproducing the paper" block ran as a script
    (``reproduction_commands``), and the script's output; read-only."""
    return pipeline_background.reproduction.result()


@pytest.fixture
def tiny_repo(built_tiny_repo, tmp_path) -> Path:
    """This test's own copy of the built tiny-demo repository (HEAD: the reproduced state)."""
    return copy_repo(built_tiny_repo, tmp_path / "repo")
