"""CSKD phase 2, semi-supervised KD: the student also learns the teacher's knowledge of unlabelled images
(student.unlabeled.*). Labelled images keep today's loss; with weight 0 and the unlabelled images in their
own forward pass, nothing of the labelled run moves; with weight > 0 the student follows the teacher on
the unlabelled images; their rows come from the withheld training images and the pool, never val/test."""

import copy
import shutil
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
import torch

from iaakd.config import build_config
from iaakd.data.tables import ground_truth
from iaakd.errors import UserError
from iaakd.features import PartWriter, make_table
from iaakd.losses import emd, student_loss, unlabeled_loss
from iaakd.metrics import mean_score
from iaakd.student import (
    StudentConfig,
    StudentData,
    UnlabeledConfig,
    _checkpoint,
    _UnlabeledBatches,
    predict,
    train_student,
    unlabeled_schedule,
)
from iaakd.tasks import DISTRIBUTION, Task

FEATURE_DIM = 8
BASE = StudentConfig(weights="random", input_size=32, epochs=2, batch_size=8, lr=1e-3)


def semi_supervised(weight: float, batchnorm: str = "separate", **changes) -> StudentConfig:
    unlabeled = UnlabeledConfig(enabled=True, weight=weight, batchnorm=batchnorm)
    return replace(BASE, unlabeled=unlabeled, **changes)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.fixture(scope="module")
def data(tiny_demo) -> tuple[StudentData, StudentData, StudentData]:
    """24 labelled training images (the teacher near their ground truth), 8 validation images, and 16
    unlabelled ones whose teacher output leans to the high bins: far from what the labels teach."""
    from iaakd.data.ava import AvaLayout, load_ava

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    truth = ground_truth(labels)
    paths = [str(tiny_demo / path) for path in labels["path"]]
    rng = np.random.default_rng(0)
    train = StudentData(
        paths[:24], truth[:24], truth[:24], rng.normal(size=(24, FEATURE_DIM)).astype(np.float32)
    )
    val = StudentData(paths[24:32], truth[24:32])
    unlabeled = StudentData(
        paths[32:48],
        np.zeros((16, 0), np.float32),
        rng.dirichlet(np.linspace(0.2, 6.0, 10), size=16).astype(np.float32),
        (rng.normal(size=(16, FEATURE_DIM)) + 1.0).astype(np.float32),
    )
    return train, val, unlabeled


@pytest.fixture(scope="module")
def runs(data) -> dict:
    """The trained students, each run once: without the pool, and with it under three settings."""
    train, val, unlabeled = data
    settings = {
        "no pool": (BASE, None),
        "weight 0, separate": (semi_supervised(0.0), unlabeled),
        "weight 1, separate": (semi_supervised(1.0), unlabeled),
        "weight 0, joint": (semi_supervised(0.0, "joint"), unlabeled),
    }
    return {
        name: train_student(config, train, val, FEATURE_DIM, progress=False, unlabeled=pool)
        for name, (config, pool) in settings.items()
    }


def test_weight_zero_in_a_separate_pass_trains_exactly_the_student_without_the_pool(runs):
    (model, _, _, history), (reference, _, _, reference_history) = runs["weight 0, separate"], runs["no pool"]
    assert history.rows == reference_history.rows
    assert state_equal(model, reference)  # weights and BatchNorm's running statistics, bit for bit


def test_the_unlabelled_pass_is_live_weight_one_and_a_joint_pass_change_the_student(runs):
    """The control the equality above needs: the same data reach the model and do change it."""
    reference = runs["no pool"][0]
    assert not state_equal(runs["weight 1, separate"][0], reference)
    joint = runs["weight 0, joint"][0]  # weight 0, but BatchNorm normalised over both kinds of image
    running = [name for name in reference.state_dict() if name.endswith("running_mean")]
    assert any(not torch.equal(joint.state_dict()[name], reference.state_dict()[name]) for name in running)


def test_a_separate_unlabelled_pass_leaves_the_random_stream_and_batchnorm_as_the_labelled_pass_left_them():
    """The default student has no dropout, so the run above cannot see its random stream: a student with
    dropout and BatchNorm shows that the separate pass draws from its own stream and leaves the running
    statistics, and the joint pass (the control) moves both."""
    from iaakd.data.images import Preprocess
    from iaakd.models import Student
    from iaakd.student import _forward

    class Backbone(torch.nn.Sequential):
        num_features = 6

    torch.manual_seed(0)
    backbone = Backbone(torch.nn.Conv2d(3, 6, 3), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.5))  # fmt: skip
    initial = Student(backbone, 4).train()
    preprocess = Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3, size=16)
    generator = torch.Generator().manual_seed(1)
    images, extra = (
        torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=generator) for n in (4, 3)
    )

    def forward(unlabeled, batchnorm="separate", seed=0):
        model = copy.deepcopy(initial)
        torch.manual_seed(5)
        labelled, unlabelled = _forward(model, preprocess, images, None, unlabeled, batchnorm, seed)
        return labelled, unlabelled, torch.get_rng_state(), model.state_dict()

    alone, _, stream, state = forward(None)
    labelled, unlabelled, stream_after, state_after = forward(extra)
    assert torch.equal(labelled.output, alone.output) and torch.equal(stream_after, stream)
    assert all(torch.equal(state[name], state_after[name]) for name in state)  # running stats, batch count
    assert torch.equal(forward(extra, seed=0)[1].output, unlabelled.output)  # its own stream, reproducible
    assert not torch.equal(forward(extra, seed=1)[1].output, unlabelled.output)  # dropout is live
    joint, _, joint_stream, joint_state = forward(extra, "joint")
    assert not torch.equal(joint_state["backbone.1.running_mean"], state["backbone.1.running_mean"])
    assert not torch.equal(joint_stream, stream)  # dropout drew for all seven images


def share_of_the_way_to_the_teacher(output: np.ndarray, reference: np.ndarray, teacher: np.ndarray) -> float:
    """How far ``output``'s mean predicted score has moved from ``reference``'s toward the teacher's, as a
    share of the distance between them (0: not at all, 1: all the way). The heads start at the labelled
    mean (their output bias), and the teacher leans about 1.6 points higher on the unlabelled images: the
    mean score shows the direction of 6 steps where a distance between whole distributions hardly moves."""
    start, target = mean_score(reference).mean(), mean_score(teacher).mean()
    return float((mean_score(output).mean() - start) / (target - start))


def test_unlabelled_kd_moves_the_outputs_on_unlabelled_images_toward_the_teacher(runs, data):
    """Measured in train mode (BatchNorm on the batch's statistics), the outputs the KD term trained: after
    6 steps from a random backbone, BatchNorm's running averages are still far from the batches'."""
    _, _, unlabeled = data

    def outputs(name: str) -> np.ndarray:
        model, preprocess, *_ = runs[name]
        images = preprocess.normalise(torch.stack([preprocess.load(path) for path in unlabeled.paths]))
        with torch.no_grad():  # a copy: a forward in train mode moves the running statistics
            return copy.deepcopy(model).train()(images).output.numpy()

    moved = share_of_the_way_to_the_teacher(
        outputs("weight 1, separate"), outputs("weight 0, separate"), unlabeled.teacher_output
    )
    assert moved > 0.04, moved  # measured: 0.077 of the way (5.53 -> 5.66, the teacher at 7.18)


def test_unlabelled_kd_moves_the_scored_outputs_toward_the_teacher(data):
    """The same through predict() (eval mode), with the backbone frozen so that its BatchNorm statistics
    are the same in training and in scoring: only the head learns, and it learns the teacher's leaning."""
    train, val, unlabeled = data
    scored = []
    for weight in (0.0, 1.0):
        config = semi_supervised(weight, freeze_backbone=True, lr=3e-3)
        model, preprocess, *_ = train_student(
            config, train, val, FEATURE_DIM, progress=False, unlabeled=unlabeled
        )
        scored.append(predict(model, unlabeled.paths, preprocess))
    moved = share_of_the_way_to_the_teacher(scored[1], scored[0], unlabeled.teacher_output)
    assert moved > 0.04, moved  # measured: 0.088 of the way (5.53 -> 5.68)


def test_unlabelled_loss_is_the_kd_terms_of_student_loss_without_ground_truth():
    rng = np.random.default_rng(1)
    student, teacher = (torch.from_numpy(rng.dirichlet(np.ones(10), size=4)).float() for _ in range(2))
    f_s, f_t = (torch.from_numpy(rng.normal(size=(4, 6))).float() for _ in range(2))
    kd = student_loss(student, f_s, torch.full((4, 10), 0.1), teacher, f_t, feature_weight=0.5)
    assert torch.equal(unlabeled_loss(student, f_s, teacher, f_t, feature_weight=0.5), kd)
    assert float(unlabeled_loss(student, f_s, teacher, f_t, feature_weight=0.0)) == pytest.approx(
        float(emd(teacher, student))
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"unlabeled": {"enabled": True}, "kd": {"enabled": False}},
         r"student\.unlabeled\.enabled=true needs student\.kd\.enabled=true"),
        ({"unlabeled": {"enabled": True}, "kd": {"mix": "loss"}},
         r"student\.unlabeled\.enabled=true needs student\.kd\.target=teacher and student\.kd\.mix=none"),
        ({"unlabeled": {"enabled": True}, "kd": {"target": "ground_truth"}},
         r"student\.unlabeled\.enabled=true needs student\.kd\.target=teacher"),
        ({"unlabeled": {"enabled": True}, "semantic": "input"},
         r"student\.unlabeled\.enabled=true does not work with student\.semantic=input"),
        ({"unlabeled": {"share": 1.0}}, r"student\.unlabeled\.share=1\.0 must be in \(0, 1\)"),
        ({"unlabeled": {"share": 0}}, r"student\.unlabeled\.share=0\.0 must be in \(0, 1\)"),
        ({"unlabeled": {"batchnorm": "mixed"}}, r"student\.unlabeled\.batchnorm='mixed' is not one of"),
        ({"unlabeled": {"weight": -1.0}}, r"student\.unlabeled\.weight=-1\.0 is too small"),
    ],
)  # fmt: skip
def test_a_bad_unlabelled_setting_is_one_line_naming_the_key(section, message):
    with pytest.raises(UserError, match=message) as caught:
        build_config(StudentConfig, section, "student")
    assert "\n" not in str(caught.value)


def test_the_defaults_switch_semi_supervised_kd_off_and_accept_a_share():
    assert build_config(StudentConfig, {}, "student").unlabeled == UnlabeledConfig(enabled=False)
    config = build_config(StudentConfig, {"unlabeled": {"enabled": True, "share": 0.5}}, "student")
    assert config.unlabeled.share == 0.5 and config.unlabeled.batchnorm == "joint"


def test_switched_on_without_unlabelled_images_is_refused(data):
    train, val, unlabeled = data
    for missing in (
        None,
        StudentData([], np.zeros((0, 0), np.float32), *(np.zeros((0, n)) for n in (10, 8))),
    ):
        with pytest.raises(UserError, match="student.unlabeled.enabled is true but no unlabelled images"):
            train_student(semi_supervised(1.0), train, val, FEATURE_DIM, progress=False, unlabeled=missing)


def test_share_none_draws_each_unlabelled_image_about_once_per_epoch_and_a_share_sets_the_batch():
    schedule = unlabeled_schedule(semi_supervised(1.0), labeled_count=24, unlabeled_count=16)
    assert (schedule.steps, schedule.per_step) == (3, 5)  # round(8 * 16 / 24): 15 of 16 images per epoch
    assert schedule.images_used == 16  # 30 draws over two epochs: every image at least once
    half = unlabeled_schedule(replace(BASE, unlabeled=UnlabeledConfig(enabled=True, share=0.5)), 24, 1000)
    assert half.per_step == 8 and half.images_used == 48  # half of every batch; 48 of the 1000 drawn
    few = unlabeled_schedule(replace(BASE, unlabeled=UnlabeledConfig(enabled=True, share=0.01)), 24, 16)
    assert few.per_step == 1  # at least one
    assert unlabeled_schedule(BASE, 24, 16).images_used == 0  # switched off: none used


def test_unlabelled_batches_go_through_every_image_before_repeating_and_continue_across_epochs():
    batches = _UnlabeledBatches(count=16, per_step=5, steps=3, seed=0)
    epochs = []
    for epoch in (1, 2, 3):
        batches.set_epoch(epoch)
        epochs.append([index for batch in batches for index in batch])
        assert len(list(batches)) == 3 and all(len(batch) == 5 for batch in batches)
    stream = sum(epochs, [])
    assert sorted(stream[:16]) == list(range(16)) and sorted(stream[16:32]) == list(range(16))  # passes
    assert stream[:16] != stream[16:32]  # each pass in its own order
    again = _UnlabeledBatches(count=16, per_step=5, steps=3, seed=0)
    again.set_epoch(2)  # a resumed run draws epoch 2 as the uninterrupted one did
    assert [index for batch in again for index in batch] == epochs[1]
    other = _UnlabeledBatches(count=16, per_step=5, steps=3, seed=1)
    other.set_epoch(1)
    assert [index for batch in other for index in batch] != epochs[0]


def test_a_resumed_semi_supervised_run_ends_where_an_uninterrupted_one_ends(data, runs, tmp_path):
    train, val, unlabeled = data
    config = semi_supervised(1.0)

    @dataclass(frozen=True)
    class StopInEpochTwo(Task):  # an interruption: 3 steps of 2 losses and 1 validation per epoch
        def loss(self, target, predicted):
            if CALLS.append(1) or len(CALLS) > 7 + 2:
                raise KeyboardInterrupt
            return super().loss(target, predicted)

    CALLS: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        train_student(config, train, val, FEATURE_DIM, StopInEpochTwo(), progress=False, work_root=tmp_path,
                      unlabeled=unlabeled)  # fmt: skip
    (checkpoint,) = tmp_path.glob("*/last.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    model, _, _, history = train_student(config, train, val, FEATURE_DIM, progress=False, work_root=tmp_path,
                                         unlabeled=unlabeled)  # fmt: skip
    reference, _, _, reference_history = runs["weight 1, separate"]
    assert history.rows == reference_history.rows and state_equal(model, reference)


def test_the_checkpoint_fingerprint_changes_with_the_unlabelled_images_and_their_knowledge(data, tmp_path):
    train, val, unlabeled = data
    config, weights = semi_supervised(1.0), {"source": "random"}

    def folder(pool: StudentData | None):
        return _checkpoint(tmp_path, config, DISTRIBUTION, weights, train, val, pool).folder

    other_images = replace(unlabeled, paths=unlabeled.paths[::-1])
    other_output = replace(unlabeled, teacher_output=unlabeled.teacher_output[::-1].copy())
    other_feature = replace(unlabeled, teacher_feature=unlabeled.teacher_feature + 1)
    folders = [folder(pool) for pool in (unlabeled, None, other_images, other_output, other_feature)]
    assert len(set(folders)) == 5
    assert folder(replace(unlabeled)) == folders[0]  # the same data: the same run, resumable


# --- the unlabelled images' table: withheld training images and the pool, never validation or test ---


def write_teacher(
    folder, ids: list[str], labelled: list[bool], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    output = rng.dirichlet(np.ones(10), size=len(ids)).astype(np.float32)
    feature = rng.normal(size=(len(ids), 4)).astype(np.float32)
    writer = PartWriter(folder)
    order = np.arange(len(ids))[::-1]  # rows in another order than asked for: the join is on image_id
    writer.write(make_table({"image_id": [ids[i] for i in order], "teacher_feature": feature[order],
                             "teacher_output": output[order], "fold": np.full(len(ids), -1)[order],
                             "labelled": np.array(labelled)[order]}, {}))  # fmt: skip
    writer.commit()
    return output, feature


def write_pool(path, ids: list[str]) -> None:
    pd.DataFrame({"image_id": pd.Series(ids, dtype=str), "path": [f"data/pool/images/{i}.png" for i in ids],
                  "width": 64, "height": 48, "file_hash": "0" * 64, "source": "demo"}).to_parquet(path)  # fmt: skip


@pytest.fixture
def tables(tmp_path):
    from iaakd.data.tables import PipelineTables

    splits = ["train"] * 4 + ["unlabeled"] * 3 + ["val"] * 2 + ["test"] * 2
    frame = pd.DataFrame({"image_id": [str(100 + i) for i in range(len(splits))],
                          "path": [f"images/{100 + i}.jpg" for i in range(len(splits))], "split": splits})  # fmt: skip
    pool_ids = ["pool-000002", "pool-000001"]
    ids = frame["image_id"].tolist() + pool_ids
    labelled = [split != "unlabeled" for split in splits] + [False, False]
    labelled[ids.index("107")] = False  # a stale teacher: a validation image marked unlabelled
    output, feature = write_teacher(tmp_path / "teacher", ids, labelled)
    write_pool(tmp_path / "manifest.parquet", pool_ids)
    pipeline = PipelineTables(tmp_path / "labels.parquet", tmp_path / "split.parquet", tmp_path / "teacher",
                              tmp_path / "features", tmp_path / "work", progress=False)  # fmt: skip
    return pipeline, frame, dict(zip(ids, output, strict=True)), dict(zip(ids, feature, strict=True))


def test_unlabelled_images_are_the_withheld_training_images_and_the_pool_with_knowledge(tables, tmp_path):
    pipeline, frame, output_of, feature_of = tables
    data = pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet")
    expected = ["104", "105", "106", "pool-000001", "pool-000002"]
    assert data.paths == ["images/104.jpg", "images/105.jpg", "images/106.jpg",
                          "data/pool/images/pool-000001.png", "data/pool/images/pool-000002.png"]  # fmt: skip
    np.testing.assert_array_equal(data.teacher_output.to_numpy(), np.stack([output_of[i] for i in expected]))
    np.testing.assert_array_equal(
        data.teacher_feature.to_numpy(), np.stack([feature_of[i] for i in expected])
    )
    assert data.ground_truth.shape == (5, 0) and data.tags is None  # no labels: a zero-width target


def test_a_stale_teacher_that_marks_a_withheld_image_labelled_is_refused(tables, tmp_path):
    """A teacher written for another split (104 was a training image there) would hand the student
    knowledge it learnt from 104's labels as if it were unlabelled."""
    pipeline, frame, *_ = tables
    ids = frame["image_id"].tolist() + ["pool-000002", "pool-000001"]
    labelled = [split in ("train", "val", "test") for split in frame["split"]] + [False, False]
    labelled[ids.index("104")] = True
    shutil.rmtree(tmp_path / "teacher")
    write_teacher(tmp_path / "teacher", ids, labelled)
    with pytest.raises(UserError, match=r"marks 1 unlabelled images labelled, for example '104'"):
        pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet")


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_pool_image_that_is_a_held_out_image_under_a_pool_id_is_refused(tables, tmp_path, split):
    """A pool folder that holds the test images themselves (unlabeled.source=folders on the wrong folder):
    the same file under a pool id. Copies with other bytes are the pool stage's copy detector's to find."""
    pipeline, frame, *_ = tables
    held_out = frame.loc[frame["split"] == split].iloc[0]
    pool = pd.DataFrame({"image_id": ["pool-000001", "pool-000002"],
                         "path": ["data/pool/images/pool-000001.png", f"./{held_out['path']}"]})  # fmt: skip
    pool.to_parquet(tmp_path / "manifest.parquet")
    with pytest.raises(UserError, match=rf"pool-000002.*{held_out['path']}.*split {split}"):
        pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet")


def test_a_pool_id_that_is_a_labelled_image_id_is_refused(tables, tmp_path):
    """A hand-made manifest whose id is a test image's: its teacher row is the test image's knowledge."""
    pipeline, frame, *_ = tables
    write_pool(tmp_path / "manifest.parquet", ["pool-000001", "109"])
    with pytest.raises(UserError, match=r"manifest\.parquet: .*'109'.* test"):
        pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet")


def test_without_a_pool_only_the_withheld_images_are_unlabelled(tables, tmp_path):
    pipeline, frame, *_ = tables
    assert pipeline.unlabeled_student_data(frame, tmp_path / "absent.parquet").paths == [
        "images/104.jpg", "images/105.jpg", "images/106.jpg"
    ]  # fmt: skip
    write_pool(tmp_path / "manifest.parquet", [])  # unlabeled.source=none: an empty manifest
    assert len(pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet").paths) == 3


def test_a_pool_image_without_teacher_knowledge_names_the_teacher_stage(tables, tmp_path):
    pipeline, frame, *_ = tables
    write_pool(tmp_path / "manifest.parquet", ["pool-000001", "pool-000009"])
    with pytest.raises(UserError, match=r"pool-000009.*rerun teacher"):
        pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet")


def test_the_training_knowledge_stays_readable_once_the_unlabelled_knowledge_is_built(tables, tmp_path):
    """Both are row matrices in work/; the second must not remove the first as a stale one."""
    pipeline, frame, output_of, _ = tables
    train_output, _ = pipeline.teacher_knowledge_rows(["100", "101"])
    pipeline.unlabeled_student_data(frame, tmp_path / "manifest.parquet")
    np.testing.assert_array_equal(train_output.to_numpy(), np.stack([output_of["100"], output_of["101"]]))
