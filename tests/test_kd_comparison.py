"""scripts/kd_comparison.py, the KD comparison's seed protocol, without training or a pipeline: the paired
differences built from the runs' test outputs, runs kept and loaded on a rerun, and the README table made
from the results, in the old format (one list of seeds, no paired differences) and the new."""

import dataclasses
import json
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT

from iaakd.data.tables import ground_truth
from iaakd.feature_rows import ArrayRows
from iaakd.models import Distiller
from iaakd.stages.evaluate import NO_CATEGORY_TAGS, NO_TAGS
from iaakd.student import KDConfig, StudentConfig
from iaakd.tasks import Task
from iaakd.teacher import DistillerConfig, train_fold_distillers

N_IMAGES = 150
SCORE = Task(output="score", score_range=(1.0, 10.0), cutoff=5.0)
DISTRIBUTION = Task(output="distribution", score_range=(1.0, 10.0), cutoff=5.0)


@pytest.fixture
def kd(monkeypatch) -> Iterator:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import experiment
    import kd_comparison

    before = list(experiment.RAN)  # what a kept run adds to the provenance stays in this test
    yield kd_comparison
    experiment.RAN[:] = before


@pytest.fixture
def report(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import report

    return report


def truth(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(3.0, 7.5, N_IMAGES)


def score_rows(scores: np.ndarray) -> np.ndarray:
    """Output rows of a score head (the score scaled to [0, 1]) for ``scores`` in the data's units."""
    return ((scores - 1.0) / 9.0).reshape(-1, 1)


def fake_outputs(true_score: np.ndarray, arms: dict[str, list[int]], good: set[str]) -> dict:
    """Each arm's output rows by seed: the truth plus a little noise for arms in ``good``, noise otherwise."""
    outputs = {}
    for index, (arm, seeds) in enumerate(arms.items()):
        outputs[arm] = {}
        for seed in seeds:
            rng = np.random.default_rng([index, seed])
            if arm in good:
                scores = true_score + rng.normal(0.0, 0.3, N_IMAGES)
            else:
                scores = rng.uniform(3.0, 7.5, N_IMAGES)
            outputs[arm][seed] = score_rows(np.clip(scores, 1.0, 10.0))
    return outputs


def test_kd_that_tracks_the_truth_against_noise_has_an_interval_above_zero_and_is_the_primary(kd):
    """The primary comparison reads the right arms, in the order A - B, flags itself primary, and its
    interval excludes 0 when A is far better: a sign flip or the arms swapped would fail."""
    true_score = truth()
    planned = {"student_kd": [0, 1, 2], "student_no_kd": [0, 1, 2]}
    outputs = fake_outputs(true_score, planned, good={"student_kd"})
    section = kd.paired_section(outputs, planned, SCORE, true_score, None)
    assert [(entry["a"], entry["b"], entry["primary"]) for entry in section] == [
        ("student_kd", "student_no_kd", True)
    ]
    srcc = section[0]["metrics"]["srcc"]
    assert srcc["ci95_low"] > 0 and srcc["difference"] > 0.5
    assert srcc["share_a_beats_b"] == 1.0 and srcc["paired_seeds"] and srcc["resamples"] == kd.RESAMPLES
    assert section[0]["metrics"]["emd"] is None  # a score head has no distribution
    assert "KD shown to help: yes" in kd.describe_primary(section[0])

    reversed_outputs = {"student_kd": outputs["student_no_kd"], "student_no_kd": outputs["student_kd"]}
    reversed_section = kd.paired_section(reversed_outputs, planned, SCORE, true_score, None)
    assert reversed_section[0]["metrics"]["srcc"]["ci95_high"] < 0
    assert "KD shown to help: no" in kd.describe_primary(reversed_section[0])


def test_a_comparison_waits_until_both_arms_have_every_planned_seed(kd):
    """A comparison of a half-run arm would be reported as if it were the protocol's."""
    true_score = truth()
    planned = {"student_kd": [0, 1, 2], "student_no_kd": [0, 1, 2]}
    outputs = fake_outputs(true_score, {"student_kd": [0, 1, 2], "student_no_kd": [0, 1]}, set())
    assert kd.paired_section(outputs, planned, SCORE, true_score, None) == []


def test_arms_with_different_seed_lists_are_compared_with_unpaired_seeds(kd):
    """KD over 5 seeds against no feature term over 3: seed j of one is not seed j of the other."""
    true_score = truth()
    planned = {"student_kd": [0, 1, 2, 3, 4], "student_kd_no_feature": [0, 1, 2]}
    outputs = fake_outputs(true_score, planned, good={"student_kd", "student_kd_no_feature"})
    (entry,) = kd.paired_section(outputs, planned, SCORE, true_score, None)
    assert (entry["a"], entry["b"], entry["primary"]) == ("student_kd", "student_kd_no_feature", False)
    srcc = entry["metrics"]["srcc"]
    assert (srcc["n_seeds_a"], srcc["n_seeds_b"], srcc["paired_seeds"]) == (5, 3, False)
    assert entry["seeds_a"] == [0, 1, 2, 3, 4] and entry["seeds_b"] == [0, 1, 2]


def test_distribution_outputs_are_compared_in_emd_as_distributions(kd):
    """With distribution heads the EMD difference is there (from the output rows, not the scores), and a
    student whose distributions are the truth's wins it with a negative difference (lower is better)."""
    rng = np.random.default_rng(3)
    true_dist = rng.dirichlet(np.ones(10), N_IMAGES)
    true_score = true_dist @ np.arange(1, 11)
    near = [true_dist * 0.9 + 0.01 for _ in range(2)]
    far = [rng.dirichlet(np.ones(10), N_IMAGES) for _ in range(2)]
    outputs = {"student_kd": dict(enumerate(near)), "student_no_kd": dict(enumerate(far))}
    planned = {"student_kd": [0, 1], "student_no_kd": [0, 1]}
    (entry,) = kd.paired_section(outputs, planned, DISTRIBUTION, true_score, true_dist)
    emd = entry["metrics"]["emd"]
    assert emd is not None and emd["difference"] < 0 and emd["ci95_high"] < 0 and emd["share_a_beats_b"] == 1
    (scores_only,) = kd.paired_section(outputs, planned, DISTRIBUTION, true_score, None)
    assert scores_only["metrics"]["emd"] is None  # labels with scores only: no true distributions


def test_each_comparison_is_computed_once_and_kept(kd):
    """The results file is rewritten after every run; the bootstrap must not run again for each."""
    true_score = truth()
    planned = {"student_kd": [0], "student_no_kd": [0]}
    outputs = fake_outputs(true_score, planned, good={"student_kd"})
    done: dict = {}
    first = kd.paired_section(outputs, planned, SCORE, true_score, None, done)
    outputs["student_kd"][0] = outputs["student_no_kd"][0]  # would change the result if computed again
    assert kd.paired_section(outputs, planned, SCORE, true_score, None, done) == first


def test_headline_arms_run_every_seed_and_the_others_the_first_three(kd):
    """The protocol's seed counts: 5 for KD, no KD, shuffled and out-of-fold, 3 for the rest; one seed
    (smoke tests) runs every arm once."""
    protocol = kd.protocol([0, 1, 2, 3, 4])
    headline = {"student_kd", "student_no_kd", "student_kd_shuffled", "student_kd_oof"}
    assert {arm for arm, seeds in protocol["seeds"].items() if seeds == [0, 1, 2, 3, 4]} == headline
    assert all(seeds == [0, 1, 2] for arm, seeds in protocol["seeds"].items() if arm not in headline)
    assert all(seeds == [0] for seeds in kd.protocol([0])["seeds"].values())
    assert protocol["primary"] == "student_kd vs student_no_kd" and protocol["resamples"] == 2000
    assert (protocol["bootstrap_seed"], protocol["interval"]) == (0, 0.95)


def test_the_primary_comparison_is_kd_against_no_kd_and_every_compared_arm_is_run(kd):
    arms = {arm.name: arm for arm in kd.ARMS}
    assert [comparison for comparison in kd.COMPARISONS if comparison[2]] == [
        ("student_kd", "student_no_kd", True)
    ]
    assert {name for a, b, _ in kd.COMPARISONS for name in (a, b)} == set(arms)
    assert arms["student_kd"].kd == KDConfig(enabled=True) and not arms["student_no_kd"].kd.enabled
    assert arms["student_kd_oof_output_only"].kd.feature_weight == 0.0
    assert arms["student_kd_oof_fold_feature"].knowledge == kd.OUT_OF_FOLD_FOLD_FEATURE


def test_one_run_has_no_sd_rather_than_a_zero_one(kd):
    summary = kd.summarise([{"srcc": 0.5, "plcc": 0.6, "acc": 0.7, "emd": 0.08}])
    assert summary["srcc"]["sd"] is None and summary["srcc"]["spread"] == 0.0
    two = kd.summarise([{"srcc": 0.5, "plcc": 0.6, "acc": 0.7, "emd": None}] * 2)
    assert two["srcc"]["sd"] == 0.0 and "emd" not in two


# ---- resuming: a finished run's test outputs are kept and loaded instead of trained again


def store_and_config(kd, tmp_path, inputs: dict | None = None):
    store = kd.RunStore(tmp_path / "store", {"inputs": inputs or {"data/labels.parquet": "abc"}})
    return store, StudentConfig(epochs=1)


def never(*_args, **_kwargs):
    raise AssertionError("trained again although the run was kept")


def test_a_finished_run_is_loaded_from_its_file_not_trained_again(kd, tmp_path):
    store, config = store_and_config(kd, tmp_path)
    arm = kd.ARMS[0]
    rows = np.random.default_rng(0).uniform(size=(N_IMAGES, 1))
    made, loaded = store.get(arm, 0, config, rows.shape, lambda: rows)
    assert not loaded and np.array_equal(made, rows)
    path = store.path(arm, 0, config)
    assert path.name == "student_kd-seed0.npy" and path.parent.parent == tmp_path / "store"
    # written atomically: no temporary left; the device and precision it ran with beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["student_kd-seed0.made.json", path.name]
    again, loaded = kd.RunStore(tmp_path / "store", store.signature).get(arm, 0, config, rows.shape, never)
    assert loaded and np.array_equal(again, rows)


def test_another_seed_arm_student_config_or_pipeline_input_is_not_the_kept_run(kd, tmp_path):
    """A run kept from other inputs would be reported as this configuration's."""
    store, config = store_and_config(kd, tmp_path)
    kd_arm, no_kd = kd.ARMS[0], kd.ARMS[1]
    store.get(kd_arm, 0, config, (N_IMAGES, 1), lambda: np.zeros((N_IMAGES, 1)))
    other_inputs, _ = store_and_config(kd, tmp_path, {"data/labels.parquet": "def"})
    paths = {
        store.path(kd_arm, 0, config),
        store.path(kd_arm, 1, config),
        store.path(no_kd, 0, config),
        store.path(kd_arm, 0, StudentConfig(epochs=2)),
        other_inputs.path(kd_arm, 0, config),
    }
    assert len(paths) == 5
    _, loaded = other_inputs.get(kd_arm, 0, config, (N_IMAGES, 1), lambda: np.ones((N_IMAGES, 1)))
    assert not loaded


def test_a_damaged_or_misshapen_kept_run_is_trained_again(kd, tmp_path):
    store, config = store_and_config(kd, tmp_path)
    arm = kd.ARMS[0]
    path = store.path(arm, 0, config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x93NUMPY cut short")
    rows, loaded = store.get(arm, 0, config, (N_IMAGES, 1), lambda: np.ones((N_IMAGES, 1)))
    assert not loaded and rows.shape == (N_IMAGES, 1)
    rows, loaded = store.get(arm, 0, config, (N_IMAGES, 10), lambda: np.ones((N_IMAGES, 10)))
    assert not loaded and rows.shape == (N_IMAGES, 10)  # another head: the kept rows do not fit


def test_fresh_trains_a_kept_run_again(kd, tmp_path):
    store, config = store_and_config(kd, tmp_path)
    arm = kd.ARMS[0]
    store.get(arm, 0, config, (N_IMAGES, 1), lambda: np.zeros((N_IMAGES, 1)))
    fresh = kd.RunStore(store.root, store.signature, fresh=True)
    rows, loaded = fresh.get(arm, 0, config, (N_IMAGES, 1), lambda: np.ones((N_IMAGES, 1)))
    assert not loaded and rows.sum() == N_IMAGES


# ---- the README table, from the results in the old format and the new


def committed_results() -> dict:
    return json.loads((REPO_ROOT / "results" / "kd_comparison.json").read_text(encoding="utf-8"))


def markdown_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line[:1] == "|"
    ]


def test_results_written_before_the_seed_protocol_still_render(report):
    """A results file of the script before the seed protocol (no sd, no paired differences, no protocol,
    one seed list for every arm) still renders: kd_table must not need the new keys."""
    new = committed_results()
    arms = ("student_kd", "student_no_kd", "student_kd_shuffled")
    old = {key: value for key, value in new.items() if key not in ("paired", "protocol", "complete", "teacher_fit",
                                                                   "per_category")}  # fmt: skip
    old["runs"] = {arm: new["runs"][arm][:3] for arm in arms}
    old["summary"] = {
        arm: {
            metric: {k: v for k, v in values.items() if k != "sd"}
            for metric, values in new["summary"][arm].items()
        }
        for arm in arms
    }
    old["seeds"] = [0, 1, 2]
    table = report.kd_table(old)
    rows = {row[0]: row for row in markdown_rows(table)}
    kd_row = rows["student with KD"]
    srcc = [run["srcc"] for run in old["runs"]["student_kd"]]
    assert kd_row[1] == str(len(srcc)) and kd_row[3] == f"{np.std(srcc, ddof=1):.3f}"
    assert rows["teacher (3 backbones at full resolution + distiller)"][1] == "one run"
    assert "No paired differences yet" in table and "noise floor" not in table.lower()
    assert "did not finish" not in table  # the old format has no "complete"


def protocol_results(kd) -> dict:
    """Results as the protocol writes them, from fake runs (KD good, everything else noise)."""
    true_score = truth()
    planned = kd.protocol([0, 1, 2, 3, 4])["seeds"]
    outputs = fake_outputs(true_score, planned, good={"student_kd"})
    metrics = {"plcc": 0.5, "acc": 0.7, "emd": 0.08, "srcc_ci95": [0.1, 0.9]}
    runs = {
        arm: [{"seed": seed, **metrics, "srcc": 0.5 + 0.01 * seed} for seed in seeds]
        for arm, seeds in planned.items()
    }
    old = committed_results()
    return {
        **{key: old[key] for key in ("n_test", "n_train", "student_config", "noise_ceiling_srcc")},
        "teacher": old["teacher"],
        "constant_predictor": old["constant_predictor"],
        "seeds": [0, 1, 2, 3, 4],
        "protocol": kd.protocol([0, 1, 2, 3, 4]),
        "teacher_fit": {
            "train_in_fold": {"n": 382, "srcc": 0.94, "emd": 0.032},
            "train_out_of_fold": {"n": 382, "srcc": 0.70, "emd": 0.072},
            "val": {"n": 68, "srcc": 0.72, "emd": 0.074},
            "train_val_srcc_gap": 0.22,
            "train_out_of_fold_val_srcc_gap": -0.02,
            "folds": 5,
        },
        "runs": runs,
        "summary": {arm: kd.summarise(arm_runs) for arm, arm_runs in runs.items()},
        "paired": kd.paired_section(outputs, planned, SCORE, true_score, None),
        "complete": True,
    }


def test_the_protocol_results_show_every_arm_and_the_paired_differences_with_the_primary_marked(kd, report):
    results = protocol_results(kd)
    paper = json.loads((REPO_ROOT / "results" / "paper.json").read_text(encoding="utf-8"))
    from paper_beside import beside

    table = report.kd_table(results, beside("kd_comparison", paper))
    means, differences = table.split("\n\nPaired differences", 1)
    rows = {row[0]: row for row in markdown_rows(means)}
    header = markdown_rows(means)[0]
    labels = dict(report.ROWS)
    for arm, seeds in results["protocol"]["seeds"].items():
        assert rows[labels[arm]][1] == str(len(seeds)), arm  # every arm, with its number of seeds
    out_of_fold = rows[labels["student_kd_oof"]]
    assert out_of_fold[header.index("paper (AVA) row") :] == ["—"] * 4  # the paper has no such row
    assert rows["student with KD"][header.index("paper (AVA) row")].startswith("Table V")
    assert "in-fold" in means and "0.940" in means and "0.072" in means  # the teacher's fit to its training

    paired_rows = markdown_rows(differences)[2:]
    assert len(paired_rows) == len(kd.COMPARISONS)
    primary = [row for row in paired_rows if row[1] == "**primary**"]
    assert [row[0] for row in primary] == ["KD − no KD"]
    assert all(row[1] == "exploratory" for row in paired_rows if row not in primary)
    low = float(primary[0][4].strip("[]").split(",")[0])
    assert low > 0 and primary[0][5] == "100%"
    assert primary[0][2] == "5 / 5 paired"


def test_an_arm_the_table_has_no_label_for_is_still_shown(report):
    """A new arm in the results must not vanish from the README because ROWS lacks it."""
    results = committed_results()
    results["summary"]["student_kd_new"] = results["summary"]["student_kd"]
    results["runs"]["student_kd_new"] = results["runs"]["student_kd"]
    rows = [row[0] for row in markdown_rows(report.kd_table(results).split("\n\nPaired differences")[0])]
    assert rows.index("student_kd_new") == len(rows) - 2  # before the constant predictor


# ---- out-of-fold knowledge, on a fake pipeline (eight feature dimensions, distillers of one small layer)


class FakeMatrix(ArrayRows):
    """The pipeline's feature matrix, in memory: rows by image id."""

    def __init__(self, image_ids: list[str], array: np.ndarray) -> None:
        super().__init__(array)
        self.position = pd.Index(image_ids)

    def row_of(self, image_ids) -> np.ndarray:
        return self.position.get_indexer(pd.Index(list(image_ids)))


def fake_pipeline(n: int = 40) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    image_ids = [f"{i:03d}" for i in range(n)]
    votes = rng.integers(0, 20, (n, 10)) + 1
    split = ["train"] * (n - 12) + ["val"] * 6 + ["test"] * 6
    mean_score = (votes / votes.sum(1, keepdims=True)) @ np.arange(1, 11)
    frame = pd.DataFrame({"image_id": image_ids, "split": split, "votes": list(votes), "mean_score": mean_score,
                          "latent_score": mean_score + rng.normal(0, 0.1, n),
                          "path": [f"images/{i}.jpg" for i in image_ids]})  # fmt: skip
    matrix = FakeMatrix(image_ids, rng.normal(size=(n, 8)).astype(np.float32))
    # the pipeline's knowledge: marked so that a row taken from it is told from an out-of-fold one
    pipeline_output = np.full((n, 10), 0.1, np.float32)
    pipeline_feature = np.full((n, 4), -7.0, np.float32)

    def teacher_knowledge(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = matrix.row_of(ids)
        return pipeline_output[rows], pipeline_feature[rows]

    tables = SimpleNamespace(
        teacher_input=lambda _backbones: (matrix, []), teacher_knowledge=teacher_knowledge
    )
    return SimpleNamespace(
        frame=frame,
        task=DISTRIBUTION,
        params={"distiller": {"backbones": ["b"]}},
        tables=tables,
        matrix=matrix,
    )


@pytest.fixture
def folded(kd, tmp_path, monkeypatch):
    """The fake pipeline, its full distiller (patched in for models/distiller.pt), and a distiller
    configuration with three folds."""
    monkeypatch.chdir(tmp_path)  # no dvc.lock: no pipeline inputs
    pipeline = fake_pipeline()
    full = Distiller(8, [4], 0.0, 10, "softmax").eval()
    monkeypatch.setattr(kd, "load_distiller", lambda _path: (full, {"backbones": ["b"], "config": {}}))
    config = DistillerConfig(hidden=[4], dropout=0.0, epochs=2, batch_size=8, out_of_fold=3)
    return pipeline, full, config


def test_each_training_image_gets_the_knowledge_of_the_fold_distiller_that_did_not_see_it(
    kd, folded, tmp_path, monkeypatch
):
    """Out-of-fold rows must come from the distiller of the image's own fold (the one trained without it),
    f_t from the full distiller unless the fold's is asked for; other images keep the pipeline's."""
    pipeline, full, config = folded
    trained = {}

    def train_and_keep(*args, **kwargs):
        trained["folds"], trained["models"] = train_fold_distillers(*args, **kwargs)
        return trained["folds"], trained["models"]

    monkeypatch.setattr(kd, "train_fold_distillers", train_and_keep)
    oof = kd.out_of_fold(pipeline, config, tmp_path / "store")
    frame = pipeline.frame
    train = (frame["split"] == "train").to_numpy()
    assert oof.train_ids == frame["image_id"][train].tolist() and set(oof.folds) == {0, 1, 2}
    features = torch.from_numpy(pipeline.matrix.array[train])
    with torch.no_grad():
        full_output, full_feature = (part.numpy() for part in full(features))
        for k, model in enumerate(trained["models"]):
            mine = oof.folds == k
            output, feature = (part.numpy() for part in model(features[mine]))
            np.testing.assert_allclose(oof.output[mine], output, rtol=1e-5)
            np.testing.assert_allclose(oof.fold_feature[mine], feature, rtol=1e-5)
    np.testing.assert_allclose(oof.full_feature, full_feature, rtol=1e-5)
    assert not np.allclose(oof.output, full_output)

    knowledge = kd.out_of_fold_knowledge(pipeline, oof, fold_feature=False)
    output, feature = knowledge(frame["image_id"].tolist())
    np.testing.assert_allclose(output[train], oof.output)
    np.testing.assert_allclose(feature[train], oof.full_feature)
    assert (output[~train] == 0.1).all() and (feature[~train] == -7.0).all()  # the full distiller's
    _, fold_feature = kd.out_of_fold_knowledge(pipeline, oof, fold_feature=True)(oof.train_ids)
    np.testing.assert_allclose(fold_feature, oof.fold_feature)


def test_out_of_fold_knowledge_is_kept_and_a_rerun_does_not_train_the_fold_distillers_again(
    kd, folded, tmp_path, monkeypatch
):
    pipeline, _, config = folded
    first = kd.out_of_fold(pipeline, config, tmp_path / "store")
    monkeypatch.setattr(kd, "train_fold_distillers", never)
    again = kd.out_of_fold(pipeline, config, tmp_path / "store")
    assert np.array_equal(again.output, first.output) and np.array_equal(again.folds, first.folds)
    with pytest.raises(AssertionError, match="trained again"):  # --fresh, or another configuration
        kd.out_of_fold(pipeline, config, tmp_path / "store", fresh=True)
    with pytest.raises(AssertionError, match="trained again"):
        kd.out_of_fold(pipeline, dataclasses.replace(config, out_of_fold=4), tmp_path / "store")


def test_teacher_fit_sets_its_training_images_in_and_out_of_fold_beside_validation(kd, folded, tmp_path):
    """The gap the issue asks for: train (in-fold) against val SRCC, and out-of-fold EMD on training images."""
    pipeline, _, config = folded
    oof = kd.out_of_fold(pipeline, config, tmp_path / "store")
    rng = np.random.default_rng(1)
    oof = dataclasses.replace(oof, output=rng.dirichlet(np.ones(10), len(oof.train_ids)).astype(np.float32))
    fit = kd.teacher_fit(pipeline, oof)
    frame = pipeline.frame
    train = (frame["split"] == "train").to_numpy()
    truth = ground_truth(frame)
    expected = DISTRIBUTION.metrics(oof.output, frame["mean_score"].to_numpy()[train], truth[train])
    assert fit["train_out_of_fold"]["emd"] == pytest.approx(expected["emd"])
    assert fit["train_in_fold"]["n"] == train.sum() and fit["val"]["n"] == 6 and fit["folds"] == 3
    assert fit["train_in_fold"]["srcc"] is None  # the fake pipeline's knowledge is constant
    assert fit["train_val_srcc_gap"] is None


# ---- the whole script, with the fake pipeline and a fake trainer


class FakeRuns:
    """StudentRuns without training: a KD student's test outputs are near the truth, the others noise."""

    calls: list = []

    def __init__(self, pipeline, epochs=None, knowledge=None) -> None:
        self.base = StudentConfig(epochs=1)
        self.test = pipeline.part("test")
        train = pipeline.part("train")
        self.train = SimpleNamespace(paths=train["path"].tolist(), ground_truth=ground_truth(train))
        self.knowledge = knowledge

    def test_output(self, config: StudentConfig) -> np.ndarray:
        FakeRuns.calls.append((config.seed, config.kd, self.knowledge is not None))
        rng = np.random.default_rng([config.seed, len(FakeRuns.calls)])
        truth = ground_truth(self.test)
        noise = rng.dirichlet(np.ones(10), len(self.test))
        return 0.8 * truth + 0.2 * noise if config.kd.enabled and not config.kd.shuffle else noise


@pytest.fixture
def script(kd, folded, tmp_path, monkeypatch):
    """kd_comparison.main on the fake pipeline: returns a function that runs it with arguments."""
    fake, _, config = folded
    pipeline = kd.Pipeline(fake.params, DISTRIBUTION, fake.frame, fake.tables)
    monkeypatch.setattr(kd.Pipeline, "load", classmethod(lambda _cls: pipeline))
    monkeypatch.setattr(kd, "StudentRuns", FakeRuns)
    monkeypatch.setattr(kd, "distiller_base", lambda _params: config)
    monkeypatch.setattr(kd, "STORE", tmp_path / "store")
    monkeypatch.setattr(FakeRuns, "calls", [])

    def run(*args: str) -> tuple[dict, str]:
        out = tmp_path / "kd.json"
        monkeypatch.setattr("sys.argv", ["kd_comparison.py", *args, "--out", str(out)])
        kd.main()
        return json.loads(out.read_text()), out

    return run


def test_the_script_runs_every_arm_and_seed_and_a_rerun_loads_them_instead_of_training(kd, script, capsys):
    results, _ = script("--seeds", "0", "1")
    assert results["complete"] and len(FakeRuns.calls) == 7 * 2
    assert {arm: [run["seed"] for run in runs] for arm, runs in results["runs"].items()} == {
        arm.name: [0, 1] for arm in kd.ARMS
    }
    assert [(entry["a"], entry["b"]) for entry in results["paired"]] == [(a, b) for a, b, _ in kd.COMPARISONS]
    assert results["paired"][0]["primary"] and results["paired"][0]["metrics"]["emd"] is not None
    assert set(results["teacher_fit"]) >= {"train_in_fold", "train_out_of_fold", "val", "train_val_srcc_gap"}
    out_of_fold = [call for call in FakeRuns.calls if call[2]]
    assert len(out_of_fold) == 3 * 2  # the three out-of-fold arms get their own knowledge
    printed = capsys.readouterr().out
    assert (
        "--- student_kd, seed 0 (1/14)" in printed
        and "--- student_kd_oof_output_only, seed 1 (14/14)" in printed
    )
    assert (
        printed.strip()
        .splitlines()[-1]
        .startswith("primary comparison, SRCC(student_kd) - SRCC(student_no_kd)")
    )

    FakeRuns.calls.clear()
    again, _ = script("--seeds", "0", "1")
    assert FakeRuns.calls == [] and again["runs"] == results["runs"] and again["paired"] == results["paired"]
    assert "kept from an earlier run" in capsys.readouterr().out


def test_a_run_killed_midway_leaves_results_marked_incomplete_and_the_next_goes_on(
    kd, script, monkeypatch, tmp_path
):
    """After a kill the results file says it is not complete, holds no comparison of half-run arms, and the
    next run trains only what is missing."""
    real = FakeRuns.test_output

    def killed_at_the_third(self, config):
        if len(FakeRuns.calls) == 2:
            raise KeyboardInterrupt
        return real(self, config)

    monkeypatch.setattr(FakeRuns, "test_output", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        script("--seeds", "0", "1", "2")
    partial = json.loads((tmp_path / "kd.json").read_text())
    assert not partial["complete"] and [run["seed"] for run in partial["runs"]["student_kd"]] == [0, 1]
    assert partial["paired"] == []
    monkeypatch.setattr(FakeRuns, "test_output", real)
    FakeRuns.calls.clear()
    results, _ = script("--seeds", "0", "1", "2")
    assert results["complete"] and len(FakeRuns.calls) == 7 * 3 - 2


def test_per_category_gain_compares_kd_with_no_kd_on_that_categorys_images_only(kd, report):
    """Table IX's per-category gain: KD is good on one category's images and noise on the other's, so a
    gain computed on all images, or on the wrong rows, would not give one interval above 0 and one about 0;
    a category with too few test images is left out, and labels without tags say why there is nothing."""
    true_score = truth()
    tag = np.where(np.arange(N_IMAGES) < 70, 14, 19)  # Landscape, Animals
    tag[:4] = 38  # Floral: four images, too few for an interval
    test = pd.DataFrame({"tag1": tag, "tag2": 0})
    planned = {"student_kd": [0, 1, 2], "student_no_kd": [0, 1, 2]}
    outputs = fake_outputs(true_score, planned, good=set())
    for seed, rows in outputs["student_kd"].items():  # KD tracks the truth on the Landscape images only
        good = score_rows(true_score + np.random.default_rng(seed).normal(0.0, 0.3, N_IMAGES))
        rows[tag == 14] = good[tag == 14]
    gains = kd.per_category_gain(outputs, planned, test, SCORE, true_score, None)
    assert list(gains) == ["Landscape", "Animals", "Floral"]
    assert gains["Landscape"]["n"] == 66 and gains["Landscape"]["metrics"]["srcc"]["ci95_low"] > 0.5
    animals = gains["Animals"]["metrics"]["srcc"]
    assert animals["ci95_low"] < 0 < animals["ci95_high"]
    assert gains["Floral"] == {"n": 4, "left_out": f"fewer than {kd.MIN_CATEGORY_IMAGES} test images"}
    table = report.kd_category_table({"per_category": gains})
    assert "| Floral | 4 | n/a |" in table and "| Landscape | 66 |" in table

    untagged = kd.per_category_gain(outputs, planned, test.assign(tag1=0), SCORE, true_score, None)
    assert untagged == {"empty_because": NO_TAGS}
    # tagged, but with none of the eight categories' tags: another reason, not "no tags"
    uncategorised = kd.per_category_gain(outputs, planned, test.assign(tag1=1), SCORE, true_score, None)
    assert uncategorised == {"empty_because": NO_CATEGORY_TAGS}
    assert report.kd_category_table({"per_category": untagged}).startswith("No categories: no test image has")
    unfinished = {"student_kd": outputs["student_kd"], "student_no_kd": {0: outputs["student_no_kd"][0]}}
    assert kd.per_category_gain(unfinished, planned, test, SCORE, true_score, None) is None
