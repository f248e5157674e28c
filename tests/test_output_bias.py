"""Each output layer starts at the training targets (Table XV's score head): the bias is Task.output_bias of
the targets, so an untrained head predicts their mean instead of whatever its random bias says."""

import numpy as np
import pytest
import torch

from iaakd.models import Distiller
from iaakd.models.heads import ACTIVATIONS, start_output_at
from iaakd.student import KDConfig, StudentConfig, StudentData, train_student
from iaakd.tasks import Task
from iaakd.teacher import DistillerConfig, train_distiller

TASKS = {
    "score": (Task("score"), lambda rng, n: rng.uniform(0.55, 1.0, (n, 1))),
    "binary": (Task("binary"), lambda rng, n: (rng.random((n, 1)) < 0.8).astype(float)),
    "distribution": (Task(), lambda rng, n: rng.dirichlet(np.arange(1.0, 11.0), n)),
}


@pytest.mark.parametrize("output", TASKS)
def test_head_with_zero_weights_predicts_the_training_mean(output):
    """With the weights at zero, the head's output is the activation of its bias alone: the targets' mean
    exactly (softmax of the log of the mean distribution is that distribution)."""
    task, draw = TASKS[output]
    targets = draw(np.random.default_rng(0), 64)
    layer = torch.nn.Linear(8, task.output_size)
    torch.nn.init.zeros_(layer.weight)
    start_output_at(layer, task.output_bias(targets))
    predicted = ACTIVATIONS[task.activation](layer(torch.randn(5, 8))).detach().numpy()
    assert predicted == pytest.approx(np.repeat(targets.mean(axis=0, keepdims=True), 5, axis=0), abs=1e-6)


def test_empty_bin_or_class_keeps_a_finite_bias():
    """A score bin (or a class) that no training image has: log(0) would be -inf and the softmax NaN."""
    distributions = np.zeros((4, 10))
    distributions[:, 4] = 1.0
    assert np.isfinite(Task().output_bias(distributions)).all()
    assert np.isfinite(Task("binary").output_bias(np.ones((4, 1)))).all()


def test_score_distiller_with_usual_initialisation_starts_near_the_mean():
    """Usual (random) weights beside the bias: the first predictions' mean is within 0.2 of the targets'
    mean (in the [0, 1] units of the score head; 20 initialisations measured at most 0.15 off); without the
    bias it is about 0.8 off, since the targets' mean is near 0.78 and a random bias near 0."""
    task, draw = TASKS["score"]
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.normal(size=(200, 300)).astype(np.float32))
    targets = draw(rng, 200)
    off = {}
    for start in (False, True):
        torch.manual_seed(3)
        model = Distiller(300, (512, 256), 0.0, 1, "identity").eval()
        if start:
            start_output_at(model.output, task.output_bias(targets))
        with torch.no_grad():
            off[start] = abs(float(model(features)[0].mean()) - float(targets.mean()))
    assert off[True] < 0.2 < 0.5 < off[False]


def test_training_starts_the_distiller_and_the_student_at_the_targets(tiny_demo):
    """train_distiller and train_student set the bias before training: after one step at a learning rate
    too small to move it, the bias is still Task.output_bias of the training targets (the student's: the
    labelled ground truth, with KD as without, so the KD and no-KD arms start alike)."""
    from iaakd.data.ava import AvaLayout, load_ava

    task = Task("score")
    rng = np.random.default_rng(2)
    features, targets = rng.normal(size=(40, 30)).astype(np.float32), draw_scores(rng, 40)
    config = DistillerConfig(hidden=[16, 8], epochs=1, lr=1e-12, batch_size=40, dropout=0.0)
    distiller, _ = train_distiller(features, targets, features[:8], targets[:8], config, task, progress=False)
    assert distiller.output.bias.detach().numpy() == pytest.approx(task.output_bias(targets), abs=1e-6)

    labels, _ = load_ava(AvaLayout(tiny_demo), tiny_demo)
    paths = [str(tiny_demo / path) for path in labels["path"]][:16]
    scores = task.targets(None, labels["mean_score"].to_numpy()[:16])
    student_config = StudentConfig(
        backbone="tf_efficientnet_lite0", input_size=32, epochs=1, lr=1e-12, kd=KDConfig(enabled=False)
    )
    student, *_ = train_student(
        student_config,
        StudentData(paths, scores),
        StudentData(paths[:4], scores[:4]),
        8,
        task,
        progress=False,
    )
    assert student.output.bias.detach().numpy() == pytest.approx(task.output_bias(scores), abs=1e-6)


def draw_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.55, 1.0, (n, 1)).astype(np.float32)
