"""The real `dvc repro` on a tiny demo in a temporary git repository: which stages run, and when."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TINY = {
    ("data", "demo", "num_images"): 48,
    ("features", "backbones"): ["tf_efficientnet_lite0.in1k"],
    ("distiller", "backbones"): ["tf_efficientnet_lite0.in1k"],
    ("distiller", "epochs"): 3,
    ("distiller", "hidden"): [32, 16],
    ("student", "epochs"): 1,
    ("student", "input_size"): 64,
    ("evaluate", "bootstrap_resamples"): 50,
}


def set_params(repo: Path, changes: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for keys, value in changes.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def environment(extra: dict | None = None) -> dict:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "IAAKD_PROGRESS": "0",
        **(extra or {}),
    }


def kill_repro_when(repo: Path, ready, what: str) -> None:
    """Starts `dvc repro`, and kills it (SIGKILL, the whole process group) as soon as ``ready()``."""
    process = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=environment(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not ready() and time.time() < deadline:
        assert process.poll() is None, f"the {what} finished before it could be killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run(repo: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = environment(env)
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def make_repo(repo: Path, changes: dict) -> Path:
    """A git + DVC repository holding the pipeline (dvc.yaml, params.yaml with ``changes``, src/)."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, repo / name)
    shutil.copytree(
        REPO_ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    set_params(repo, changes)
    run(repo, "git", "init", "-q")
    run(
        repo,
        "git",
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    )
    run(repo, "dvc", "init", "-q")
    run(repo, "dvc", "config", "core.analytics", "false")
    return repo


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("pipeline"), TINY)
    first = run(repo, "dvc", "repro")
    assert stages_run(first.stdout) == {
        "demo",
        "dataset",
        "split",
        "extract@tf_efficientnet_lite0.in1k",
        "distill",
        "teacher",
        "student",
        "evaluate",
    }
    return repo


def test_repro_writes_the_evaluate_contract(tiny_repo):
    report = json.loads((tiny_repo / "metrics" / "evaluate.json").read_text())
    assert report["n"] == 12
    for model in ("teacher", "student"):
        for key in ("srcc", "plcc", "acc", "emd", "srcc_ci95", "params_m", "gmacs"):
            assert key in report[model], f"{model}.{key} missing"
        assert 0 <= report[model]["acc"] <= 1
    assert 0 < report["noise_ceiling_srcc"] <= 1
    assert 0 <= report["constant_predictor_acc"] <= 1
    assert "NaN" not in (tiny_repo / "metrics" / "evaluate.json").read_text()
    for png in ("plots/evaluate/scatter.png", "plots/student/curves.png", "plots/distill/curves.png"):
        assert (tiny_repo / png).stat().st_size > 1000


def test_second_repro_runs_nothing(tiny_repo):
    again = run(tiny_repo, "dvc", "repro")
    assert stages_run(again.stdout) == set()


def test_changing_student_epochs_reruns_only_student_and_evaluate(tiny_repo):
    set_params(tiny_repo, {("student", "epochs"): 2})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"student", "evaluate"}


def test_changing_a_distiller_param_keeps_features(tiny_repo):
    set_params(tiny_repo, {("distiller", "seed"): 1})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"distill", "teacher", "student", "evaluate"}


def test_metrics_diff_shows_teacher_and_student(tiny_repo):
    result = run(tiny_repo, "dvc", "metrics", "show")
    for key in ("teacher.srcc", "teacher.plcc", "teacher.acc", "student.srcc", "student.plcc", "student.acc"):
        assert key in result.stdout


def test_student_without_offline_weights_stops_with_one_clear_line(tiny_repo):
    set_params(tiny_repo, {("student", "backbone"): "resnet18"})
    result = run(tiny_repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "no pretrained weights for 'resnet18.a1_in1k' found offline" in error_lines[0]
    assert "weights=random" in error_lines[0]
    assert "Traceback" not in result.stderr
    set_params(tiny_repo, {("student", "weights"): "random"})
    result = run(tiny_repo, "dvc", "repro")
    assert stages_run(result.stdout) == {"student", "evaluate"}
    assert json.loads((tiny_repo / "metrics" / "student.json").read_text())["weights"] == "random"


def test_pipeline_on_the_real_ava_sample(ava_sample, tmp_path):
    """Real rows, 86 real photos, most rows without an image, as in real downloads: the run completes,
    lists what it skipped, and evaluates on the official test ids that have an image."""
    repo = make_repo(
        tmp_path / "ava",
        {
            **TINY,
            ("data", "source"): "ava",
            ("data", "root"): str(ava_sample),
            ("data", "max_missing_fraction"): 0.95,
        },
    )
    run(repo, "dvc", "repro")
    dataset = json.loads((repo / "metrics" / "dataset.json").read_text())
    assert (dataset["rows"], dataset["images"], dataset["skipped"]) == (1212, 86, 1126)
    skipped = (repo / "data" / "skipped.csv").read_text().splitlines()
    assert skipped[0] == "image_id,file,reason" and len(skipped) == 1 + 1126
    report = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert report["n"] == 9 and report["noise_ceiling_srcc"] is None
    # generic_test.jpgl names 20,000 ids; those without a usable labelled image are left out and counted
    split = json.loads((repo / "metrics" / "split.json").read_text())
    assert split["test"] == 9 and split["test_list_ids_without_image"] == 20000 - 9
    # Too many missing images for the threshold: one clear line, and no labels that look complete.
    set_params(repo, {("data", "max_missing_fraction"): 0.5})
    result = run(repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "1126 of 1212 labelled rows (92.9 %) have no usable image" in result.stderr
    assert not (repo / "data" / "labels.parquet").exists()


def test_pipeline_on_own_csv_with_scores_trains_the_regression_variant(tiny_demo, tmp_path):
    """data.source=csv: ids and a score on a 10..100 scale; task.output=score (Eq. 13); Acc at the
    cut-off in the data's units; no EMD, as there are no distributions."""
    from iaakd.data.ava import read_ava_txt

    labels = read_ava_txt(tiny_demo / "AVA_dataset" / "AVA.txt")
    votes = np.stack(labels["votes"].to_numpy())
    scores = 10 * (votes @ np.arange(1, 11)) / votes.sum(axis=1)
    csv_file = tmp_path / "my_ratings.csv"
    csv_file.write_text(
        "image,mos\n" + "".join(f"{i},{s:.3f}\n" for i, s in zip(labels["image_id"], scores, strict=True))
    )
    repo = make_repo(
        tmp_path / "csv",
        {
            **TINY,
            ("data", "source"): "csv",
            ("data", "root"): str(tiny_demo / "images"),
            ("data", "labels_file"): str(csv_file),
            ("data", "score_range"): [10, 100],
            ("split", "name"): "random",
            ("split", "num_folds"): 2,
            ("split", "test_size"): 0.25,
            ("task", "output"): "score",
            ("evaluate", "cutoff"): 50,
        },
    )
    run(repo, "dvc", "repro")
    dataset = json.loads((repo / "metrics" / "dataset.json").read_text())
    assert dataset["images"] == 48 and dataset["has_votes"] is False and dataset["score_range"] == [10, 100]
    report = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert report["output"] == "score" and report["n"] == 12
    for model in ("teacher", "student"):
        assert report[model]["emd"] is None
        assert report[model]["srcc"] is not None and 0 <= report[model]["acc"] <= 1
    scatter = np.genfromtxt(repo / "plots" / "evaluate" / "scatter.csv", delimiter=",", names=True)
    assert scatter["true_score"].min() >= 10 and scatter["true_score"].max() <= 100
    assert scatter["teacher"].mean() > 20  # predictions come back in the data's units, not [0, 1]
    # official needs AVA's lists: with a CSV it is refused in one line
    set_params(repo, {("split", "name"): "official"})
    result = run(repo, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "use split.name=random with data.source=csv" in result.stderr


def test_killed_student_leaves_no_model_and_resumes_to_the_same_result(tiny_repo):
    """A stage killed mid-training leaves no output that looks complete; the rerun continues from the
    last finished epoch (kept in .work/, outside DVC's outputs) and ends where an uninterrupted run ends."""
    import torch

    set_params(
        tiny_repo,
        {
            ("student", "epochs"): 6,
            ("student", "seed"): 7,
            ("student", "weights"): "auto",
            ("student", "backbone"): "tf_efficientnet_lite0",
        },
    )
    kill_repro_when(
        tiny_repo, lambda: bool(list((tiny_repo / ".work" / "student").glob("*/last.pt"))), "student"
    )
    (checkpoint,) = (tiny_repo / ".work" / "student").glob("*/last.pt")
    assert 1 <= torch.load(checkpoint, weights_only=False)["epoch"] < 6
    assert not (tiny_repo / "models" / "student.pt").exists()  # nothing that looks complete

    resumed = run(tiny_repo, "dvc", "repro")
    assert "student: resuming after epoch" in resumed.stdout
    assert not list((tiny_repo / ".work" / "student").glob("*/last.pt"))  # cleared after success
    state = torch.load(tiny_repo / "models" / "student.pt", weights_only=False)["state_dict"]
    metrics = json.loads((tiny_repo / "metrics" / "student.json").read_text())

    uninterrupted = run(tiny_repo, "dvc", "repro", "-f", "-s", "student")
    assert "resuming" not in uninterrupted.stdout
    reference = torch.load(tiny_repo / "models" / "student.pt", weights_only=False)["state_dict"]
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    reference_metrics = json.loads((tiny_repo / "metrics" / "student.json").read_text())
    assert (metrics["val_srcc"], metrics["val_loss"]) == (
        reference_metrics["val_srcc"],
        reference_metrics["val_loss"],
    )


def test_killed_extraction_resumes_from_its_finished_parts(tiny_repo):
    """Extraction killed halfway: no features folder that looks complete; the rerun continues from the
    parts kept in .work/extract/ and its output equals the uninterrupted run's."""
    from test_extract import features_of

    backbone = "tf_efficientnet_lite0.in1k"
    reference_ids, reference = features_of(tiny_repo / "data" / "features" / backbone)
    set_params(
        tiny_repo, {("features", "rows_per_part"): 1}
    )  # one batch per part: the same batches as before
    work = tiny_repo / ".work" / "extract" / backbone
    kill_repro_when(tiny_repo, lambda: len(list(work.glob("*/part-*.parquet"))) >= 2, "extraction")
    finished = len(list(work.glob("*/part-*.parquet")))
    assert finished >= 2
    assert not (tiny_repo / "data" / "features" / backbone).exists()

    resumed = run(tiny_repo, "dvc", "repro")
    done, total = map(int, re.search(r"(\d+) of (\d+) parts were already done", resumed.stdout).groups())
    assert done == finished < total
    assert not work.exists() or not list(work.iterdir())
    ids, features = features_of(tiny_repo / "data" / "features" / backbone)
    assert (ids == reference_ids).all()
    np.testing.assert_array_equal(features, reference)


def test_extraction_under_torchrun_with_two_processes_equals_one_process(tiny_repo):
    """IAAKD_LAUNCHER runs the stage under torchrun (gloo on CPU): each rank writes its own parts, rank 0
    puts them in place. Same ids, features within one float16 unit in the last place; and the launcher,
    an environment variable, does not make DVC see a changed stage."""
    from test_extract import features_of

    backbone = "tf_efficientnet_lite0.in1k"
    # One thread per process in both runs, as torchrun sets it: with 2 threads against 1, float32 sums
    # differ in their last bits, which moves near-zero pooled values by up to 4 float16 units.
    one_thread = {"OMP_NUM_THREADS": "1"}
    run(tiny_repo, "dvc", "repro", "-f", "-s", f"extract@{backbone}", env=one_thread)
    reference_ids, reference = features_of(tiny_repo / "data" / "features" / backbone)
    launcher = {"IAAKD_LAUNCHER": "torchrun --standalone --nproc_per_node=2", **one_thread}
    result = run(tiny_repo, "dvc", "repro", "-f", "-s", f"extract@{backbone}", env=launcher)
    assert (
        "(random weights, 2 processes)" in result.stdout or "(packaged weights, 2 processes)" in result.stdout
    )
    ids, features = features_of(tiny_repo / "data" / "features" / backbone)
    assert (ids == reference_ids).all()
    last_place = np.spacing(np.abs(reference)).astype(np.float32)
    assert (np.abs(features.astype(np.float32) - reference.astype(np.float32)) <= last_place).all()
    for environment in (launcher, {}):
        status = run(tiny_repo, "dvc", "status", env=environment).stdout
        assert f"extract@{backbone}" not in status


def test_student_under_torchrun_with_two_processes_matches_one_process(tiny_repo):
    """DDP on 2 CPU processes, global batch split in two: rank 0 alone writes the outputs, and the
    training reaches what one process reaches, within the stated tolerance (README)."""
    one_thread = {"OMP_NUM_THREADS": "1"}
    set_params(
        tiny_repo,
        {
            ("student", "epochs"): 3,
            ("student", "weights"): "auto",
            ("student", "backbone"): "tf_efficientnet_lite0",
        },
    )
    run(tiny_repo, "dvc", "repro", "-f", "-s", "student", env=one_thread)
    single = json.loads((tiny_repo / "metrics" / "student.json").read_text())
    launcher = {"IAAKD_LAUNCHER": "torchrun --standalone --nproc_per_node=2", **one_thread}
    result = run(tiny_repo, "dvc", "repro", "-f", "-s", "student", env=launcher)
    assert result.stdout.count("student: val SRCC") == 1  # rank 0 alone reports and writes
    double = json.loads((tiny_repo / "metrics" / "student.json").read_text())
    print(
        f"train loss {single['train_loss']} vs {double['train_loss']}, val loss {single['val_loss']} vs {double['val_loss']}"
    )
    # Stated tolerance (README): the validation EMD within 5 %; the training loss, averaged over the steps
    # of the epoch in train mode, within 30 %: BatchNorm sees half the batch per rank on CPU and the
    # shuffle order differs, which moves each step's loss but not where training ends.
    assert abs(double["val_loss"] - single["val_loss"]) <= 0.05 * single["val_loss"]
    assert abs(double["train_loss"] - single["train_loss"]) <= 0.3 * single["train_loss"]
    assert "up to date" in run(tiny_repo, "dvc", "status", "student").stdout


def run_script(repo: Path, name: str, out: Path, *args: str) -> dict:
    """Runs scripts/<name> in ``repo`` with ``--out out`` and returns the JSON it wrote."""
    run(repo, sys.executable, str(REPO_ROOT / "scripts" / name), *args, "--out", str(out))
    return json.loads(out.read_text())


def test_result_scripts_run_on_the_pipeline_outputs_and_render(tiny_repo, tmp_path):
    """scripts/kd_comparison.py, matching.py and teacher_spread.py (one or two seeds, one or two epochs),
    and the README tables they feed."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from report import kd_table, matching_table, teacher_spread_table

    results = run_script(tiny_repo, "kd_comparison.py", tmp_path / "kd.json", "--seeds", "0", "--epochs", "1")
    assert set(results["summary"]) == {"student_kd", "student_no_kd", "student_kd_shuffled"}
    assert results["teacher"]["srcc"] is not None and results["n_test"] == 12
    table = kd_table(results)
    assert "| student with KD |" in table and "| constant predictor" in table

    matching = run_script(tiny_repo, "matching.py", tmp_path / "matching.json")
    assert matching["n_test"] == 12 and matching["gsf_dim"] == 1792
    for key in ("gsf_matching", "teacher_feature_matching", "teacher"):
        assert 0 <= matching[key]["acc"] <= 1
    assert "| nearest image in MLSP feature space (1,792 dims) |" in matching_table(matching)

    spread = run_script(
        tiny_repo, "teacher_spread.py", tmp_path / "spread.json", "--seeds", "0", "1", "--epochs", "2"
    )
    assert [run["seed"] for run in spread["runs"]] == [0, 1] and spread["srcc"]["sd"] is not None
    assert "| 1 |" in teacher_spread_table(spread)


def test_ablations_go_on_where_an_earlier_run_stopped(tiny_repo, tmp_path):
    """A second run keeps the tables already written from the same configuration and trains only the rest;
    a student that two tables share is trained once; another configuration starts again."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from experiment import earlier_results

    out = tmp_path / "ablations.json"
    first = run_script(tiny_repo, "ablations.py", out, "--tables", "xiv", "--epochs", "1")
    assert set(first["tables"]) == {"xiv"} and not first["complete"]

    second = run(
        tiny_repo, sys.executable, str(REPO_ROOT / "scripts" / "ablations.py"),
        "--tables", "xiv", "vi", "--epochs", "1", "--out", str(out),
    )  # fmt: skip
    assert "kept from" in second.stdout and "tables xiv" in second.stdout
    trained = re.findall(r"^--- Table (\w+):", second.stdout, re.M)
    assert trained == ["VI"] * 3, second.stdout  # Eq. 7's row comes from Table XIV's
    merged = json.loads(out.read_text())
    assert merged["tables"]["xiv"] == first["tables"]["xiv"]
    eq7 = {key: value for key, value in merged["tables"]["vi"]["rows"][-1].items() if key != "name"}
    assert eq7 == {key: value for key, value in first["tables"]["xiv"]["rows"][0].items() if key != "name"}

    assert earlier_results(out, merged["signature"])["tables"] == merged["tables"]
    other_epochs = {**merged["signature"], "student": {**merged["signature"]["student"], "epochs": 2}}
    assert earlier_results(out, other_epochs) == {}
    assert earlier_results(out, merged["signature"], fresh=True) == {}


# What the smoke test changes in README's "Reproducing the paper" commands: the paper's models become small
# ones with packaged weights; the folds, the input sizes (the tiny demo's images are at most 320 px) and the
# seed counts shrink to fit 48 images and a test's time. Every command is otherwise run as written.
PAPER_TO_TINY = {
    "--seeds 0 1 2 3 4": "--seeds 0 1",
    "--seeds 0 1 2": "--seeds 0",
    "--pad-size 800 --crop-size 640": "--pad-size 320 --crop-size 256",
    "student.input_size=640 -S student.pad_size=800": "student.input_size=256 -S student.pad_size=320",
    "resnext101_32x8d.fb_swsl_ig1b_ft_in1k": "tf_efficientnet_lite0.in1k",
    "resnext101_32x48d.fb_wsl_ig1b_ft_in1k": "tf_efficientnet_lite1.in1k",
    "resnetv2_152x4_bit.goog_in21k_ft_in1k": "tf_efficientnet_lite2.in1k",
    "resnet50.tv_in1k": "tf_efficientnet_lite1.in1k",
    "resnet18.tv_in1k": "tf_efficientnet_lite2.in1k",
    "$(seq 0 11)": "$(seq 0 1)",
    "split.test_size=20000": "split.test_size=4",
    "--folds 12 --test-size 20000": "--folds 2 --test-size 4",
}
TINY_TRIO = [
    "tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite1.in1k",
    "tf_efficientnet_lite2.in1k",
]


def reproduction_commands() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- commands:paper -->\n```sh\n(.*?)```\n<!-- /commands:paper -->", readme, re.S)
    assert block, "README.md has no <!-- commands:paper --> block"
    commands = block.group(1)
    for paper, tiny in PAPER_TO_TINY.items():
        assert paper in commands, f"{paper} is no longer in the README's commands: update PAPER_TO_TINY"
        commands = commands.replace(paper, tiny)
    return commands


def test_every_reproduction_command_runs_on_a_tiny_demo(tmp_path):
    """README "Reproducing the paper": the whole command block, as a script, on a 48-image demo with the
    paper's trio replaced by three small backbones and one epoch of training."""
    commands = reproduction_commands()
    repo = make_repo(
        tmp_path / "repo",
        {**TINY, ("features", "backbones"): TINY_TRIO, ("distiller", "backbones"): TINY_TRIO},
    )
    for folder in ("scripts", "presets"):
        shutil.copytree(REPO_ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    run(repo, "dvc", "repro")
    commit = ("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "baseline")
    run(repo, "git", "add", "-A")
    run(repo, *commit)
    (repo / "reproduce.sh").write_text("set -euo pipefail\n" + commands)
    run(repo, "bash", "reproduce.sh")

    experiments = set(run(repo, "dvc", "exp", "list", "--name-only").stdout.split())
    expected = set(re.findall(r"exp -n ([\w$-]+)", commands))
    expected = {name.replace("$fold", str(fold)) for name in expected for fold in (0, 1)}
    assert expected <= experiments, f"not in dvc exp show: {sorted(expected - experiments)}"
    ablations = json.loads((repo / "results" / "ablations.json").read_text())
    assert ablations["complete"] and set(ablations["tables"]) == {"v", "vi", "vii", "xii", "xiv"}
    assert len(ablations["teacher_backbones"]["rows"]) == 7  # every subset of the three backbones
    retrained = json.loads((repo / "results" / "folds_and_outputs.json").read_text())
    assert (
        retrained["complete"]
        and len(retrained["folds"]) == 2
        and set(retrained["outputs"]) == {"binary", "score"}
    )
    report = (repo / "results" / "REPORT.md").read_text()
    for heading in (
        "Tables I-III",
        "Table IV",
        "Table VII",
        "Table IX",
        "Table XII",
        "Table XV",
        "Fig. 6",
        "Fig. 7",
    ):
        assert f"## {heading}" in report
    assert "Not run yet" not in report and "did not finish" not in report
