"""Training loops: the same seeds give the same results; a NaN stops the run and keeps the last good
epoch; a run resumed from its checkpoint ends exactly where an uninterrupted one ends."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from iaakd.data.tables import ground_truth
from iaakd.errors import UserError
from iaakd.tasks import Task
from iaakd.teacher import DistillerConfig, train_distiller

CONFIG = DistillerConfig(hidden=[16, 8], dropout=0.3, epochs=4, batch_size=8, lr=1e-3, lr_step_epochs=2)


def synthetic_features(seed: int = 0, n: int = 64, dim: int = 12):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim)).astype(np.float32)
    logits = features[:, :10] * 2
    targets = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return features[:48], targets[:48].astype(np.float32), features[48:], targets[48:].astype(np.float32)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_same_seed_same_distiller_different_seed_different(tmp_path):
    data = synthetic_features()
    first, first_history = train_distiller(*data, CONFIG, progress=False)
    second, second_history = train_distiller(*data, CONFIG, progress=False)
    assert first_history.rows == second_history.rows and state_equal(first, second)
    other, _ = train_distiller(*data, DistillerConfig(**{**CONFIG.__dict__, "seed": 1}), progress=False)
    assert not state_equal(first, other)


def test_resumed_distiller_equals_uninterrupted(tmp_path):
    data = synthetic_features()
    reference, reference_history = train_distiller(*data, CONFIG, progress=False)

    @dataclass(frozen=True)
    class StopAfterTwoEpochs(Task):  # an interruption: the run dies during epoch 3
        def loss(self, target, predicted):
            if CALLS.append(1) or len(CALLS) > 2 * (6 + 2):  # 6 batches and 2 evaluations per epoch
                raise KeyboardInterrupt
            return super().loss(target, predicted)

    CALLS: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        train_distiller(*data, CONFIG, StopAfterTwoEpochs(), progress=False, work_root=tmp_path)
    (checkpoint,) = tmp_path.glob("*/last.pt")
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2

    resumed, resumed_history = train_distiller(*data, CONFIG, progress=False, work_root=tmp_path)
    assert resumed_history.rows == reference_history.rows and state_equal(resumed, reference)
    assert not list(tmp_path.glob("*/last.pt"))  # cleared once the run is complete


def test_changed_params_do_not_resume_a_checkpoint(tmp_path):
    data = synthetic_features()
    train_distiller(*data, CONFIG, progress=False, work_root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    # A checkpoint of another configuration lives in another folder and is not picked up.
    (tmp_path / "0123456789abcdef").mkdir()
    torch.save({"epoch": 3}, tmp_path / "0123456789abcdef" / "last.pt")
    model, history = train_distiller(*data, CONFIG, progress=False, work_root=tmp_path)
    assert [row["epoch"] for row in history.rows] == [1, 2, 3, 4]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_epoch(tmp_path):
    data = synthetic_features()

    @dataclass(frozen=True)
    class NaNFromEpochThree(Task):
        def loss(self, target, predicted):
            CALLS.append(1)
            value = super().loss(target, predicted)
            return value * float("nan") if len(CALLS) > 2 * (6 + 2) else value

    CALLS: list[int] = []
    with pytest.raises(
        UserError, match=r"distiller: loss became nan in epoch 3; the last good epoch is kept in"
    ):
        train_distiller(*data, CONFIG, NaNFromEpochThree(), progress=False, work_root=tmp_path)
    (checkpoint,) = tmp_path.glob("*/last.pt")
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 2
    assert all(torch.isfinite(value).all() for value in state["model"].values() if value.is_floating_point())


def test_student_training_is_deterministic_on_cpu(tiny_demo):
    from iaakd.data.ava import AvaLayout, load_ava
    from iaakd.student import StudentConfig, StudentData, train_student

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    distributions = ground_truth(labels)
    paths = [str(tiny_demo / path) for path in labels["path"]]
    rng = np.random.default_rng(0)
    train = StudentData(
        paths[:32], distributions[:32], distributions[:32], rng.normal(size=(32, 8)).astype(np.float32)
    )
    val = StudentData(paths[32:], distributions[32:])
    config = StudentConfig(weights="random", input_size=32, epochs=2, batch_size=8)
    runs = [train_student(config, train, val, feature_dim=8, progress=False) for _ in range(2)]
    assert runs[0][3].rows == runs[1][3].rows
    assert state_equal(runs[0][0], runs[1][0])


def test_distiller_on_rows_read_from_disk_equals_the_in_memory_one(tmp_path):
    from iaakd.feature_rows import RowSubset, build_feature_matrix
    from iaakd.features import PartWriter, make_table
    from iaakd.teacher import iter_knowledge, predict_output

    train_x, train_y, val_x, val_y = synthetic_features()
    features = np.concatenate([train_x, val_x]).astype(np.float16)
    ids = [f"{i:03d}" for i in range(len(features))]
    writer = PartWriter(tmp_path / "features")
    for start in range(0, len(ids), 20):  # parts in another order than the rows asked for
        writer.write(
            make_table(
                {"image_id": ids[start : start + 20][::-1], "feature": features[start : start + 20][::-1]}, {}
            )
        )
    writer.commit()
    matrix, _ = build_feature_matrix([tmp_path / "features"], ids, tmp_path / "work")
    from_disk, disk_history = train_distiller(
        RowSubset(matrix, np.arange(48)),
        train_y,
        RowSubset(matrix, np.arange(48, 64)),
        val_y,
        CONFIG,
        progress=False,
    )
    in_memory, memory_history = train_distiller(
        features[:48].astype(np.float32),
        train_y,
        features[48:].astype(np.float32),
        val_y,
        CONFIG,
        progress=False,
    )
    assert disk_history.rows == memory_history.rows and state_equal(from_disk, in_memory)
    streamed = np.concatenate([output for output, _ in iter_knowledge(from_disk, matrix, batch_size=7)])
    np.testing.assert_allclose(
        streamed, predict_output(in_memory, features.astype(np.float32)), rtol=1e-5, atol=1e-6
    )


def test_student_on_knowledge_read_from_disk_equals_the_in_memory_one(tiny_demo, tmp_path):
    """The student stage leaves its teacher knowledge on disk (float32 rows, read item by item): the same
    weights and curves as with the knowledge in memory, shuffled control included."""
    from iaakd.checkpoints import fingerprint
    from iaakd.data.ava import AvaLayout, load_ava
    from iaakd.feature_rows import VectorRows, build_row_matrix
    from iaakd.features import PartWriter, make_table
    from iaakd.student import KDConfig, StudentConfig, StudentData, train_student

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    distributions = ground_truth(labels)
    paths = [str(tiny_demo / path) for path in labels["path"]]
    rng = np.random.default_rng(0)
    teacher_output = rng.dirichlet(np.ones(10), size=len(paths)).astype(np.float32)
    teacher_feature = rng.normal(size=(len(paths), 8)).astype(np.float32)
    ids = labels["image_id"].tolist()
    writer = PartWriter(tmp_path / "teacher")
    for start in range(0, len(ids), 20):  # parts in reverse row order: the join is on image_id
        rows = slice(start, start + 20)
        writer.write(
            make_table(
                {
                    "image_id": ids[rows][::-1],
                    "teacher_output": teacher_output[rows][::-1],
                    "teacher_feature": teacher_feature[rows][::-1],
                },
                {},
            )
        )
    writer.commit()
    train_ids = ids[:32]
    matrix = build_row_matrix(
        [(tmp_path / "teacher", "teacher_output"), (tmp_path / "teacher", "teacher_feature")],
        train_ids,
        tmp_path / "work",
        np.float32,
        "knowledge",
    )
    on_disk = (VectorRows(matrix, 0, 10), VectorRows(matrix, 10, 18))
    np.testing.assert_array_equal(on_disk[1].to_numpy(), teacher_feature[:32])  # float32, exact
    np.testing.assert_array_equal(on_disk[0][5], teacher_output[5])
    assert on_disk[1].shape == (32, 8) and on_disk[1][np.array([3, 1])].to_numpy().shape == (2, 8)
    assert fingerprint({}, on_disk[1]) != fingerprint({}, on_disk[1][np.arange(32)[::-1]])

    val = StudentData(paths[32:], distributions[32:])
    for shuffle in (False, True):
        config = StudentConfig(
            weights="random", input_size=32, epochs=2, batch_size=8, kd=KDConfig(shuffle=shuffle)
        )
        memory = StudentData(paths[:32], distributions[:32], teacher_output[:32], teacher_feature[:32])
        disk = StudentData(paths[:32], distributions[:32], *on_disk)
        from_memory = train_student(config, memory, val, feature_dim=8, progress=False)
        from_disk = train_student(config, disk, val, feature_dim=8, progress=False)
        assert from_memory[3].rows == from_disk[3].rows and state_equal(from_memory[0], from_disk[0])
