"""Whole networks against PyTorch's: from the same initial weights and the
same batches, in float64, fastcnn's training loss follows PyTorch's twin
network (tests/_helpers/torch_twin.py) to 1e-9 relative over 30 steps of
SGD and of Adam, and the trained networks' scores agree in inference.

PyTorch is a benchmark-only dependency: without it these tests skip (they
run in the benchmarks' environment, ``pip install torch==2.13.0``).
"""
import numpy as np
import pytest

from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Flatten, MaxPool1D, MaxPool2D, ReLU)

torch = pytest.importorskip("torch")

from _helpers.torch_twin import train_both  # noqa: E402

STEPS = 30
RTOL = 1e-9


def images(n=48, shape=(1, 12, 12), n_classes=4, seed=0):
    """Class-dependent smooth patterns plus noise: a net learns them, so
    the losses move over the 30 steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    patterns = rng.standard_normal((n_classes,) + shape)
    X = patterns[y] + 0.5 * rng.standard_normal((n,) + shape)
    return X.astype(np.float64), y


#: name -> (specs, input shape, batch size); each net ends in the output
#: Dense the harness adds
NETWORKS = {
    "conv2d-maxpool-relu-dense": (
        [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2),
         Conv2D(6, 3, stride=2), ReLU(), Flatten(), Dense(16), ReLU()],
        (2, 12, 12), 8),
    "conv2d-avgpool": (
        [Conv2D(5, (3, 2), padding=(1, 0)), AvgPool2D(2, stride=1), ReLU(), Flatten()],
        (1, 9, 8), 6),
    "conv1d-maxpool-avgpool": (
        [Conv1D(4, 5, stride=2, padding=2), ReLU(), MaxPool1D(3, stride=2),
         Conv1D(6, 3, padding="same"), AvgPool1D(2), ReLU(), Flatten()],
        (3, 40), 8),
    "dilated-conv2d-conv1d": (
        [Conv2D(4, 3, padding=2, dilation=2), ReLU(), MaxPool2D(2),
         Conv2D(5, (2, 3), stride=(2, 1), dilation=(1, 2)), ReLU(), Flatten()],
        (2, 12, 12), 8),
    "dilated-conv1d": (
        [Conv1D(4, 3, padding="same", dilation=4), ReLU(),
         Conv1D(5, 3, stride=2, padding=1, dilation=3), ReLU(), AvgPool1D(2), Flatten()],
        (3, 40), 8),
    "even-kernel-same-padding": (
        [Conv2D(4, 2, padding="same"), ReLU(), Conv2D(5, (4, 3), padding="same",
                                                      dilation=(1, 2)),
         ReLU(), MaxPool2D(2), Flatten()],
        (2, 11, 12), 8),
    "even-kernel-same-padding-1d": (
        [Conv1D(4, 4, padding="same"), ReLU(), Conv1D(3, 2, padding="same", dilation=3),
         ReLU(), Flatten()],
        (3, 30), 6),
}


@pytest.mark.parametrize("solver, learning_rate", [("sgd", 0.05), ("adam", 0.003)])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_training_loss_follows_pytorch(name, solver, learning_rate):
    specs, shape, batch_size = NETWORKS[name]
    X, y = images(shape=shape)
    ours, theirs, trainer = train_both(specs, X, y, solver, batch_size, STEPS,
                                       learning_rate)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)
    # the comparison means something only if training moved the loss
    assert abs(ours[-1] - ours[0]) > 1e-3 * ours[0]
    scores, torch_scores = trainer.predict_scores(X)
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-9,
                               atol=1e-9 * np.abs(torch_scores).max())
