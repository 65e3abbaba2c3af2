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
from fastcnn.layers import BatchNorm1D, BatchNorm2D, LocalResponseNorm

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
}
NETWORKS.update({
    "conv2d-batchnorm-relu-dense-batchnorm": (
        [Conv2D(4, 3, padding=1), BatchNorm2D(), ReLU(), MaxPool2D(2),
         Conv2D(6, 3), BatchNorm2D(momentum=0.3, eps=1e-3), ReLU(), Flatten(),
         Dense(16), BatchNorm1D(), ReLU()],
        (2, 12, 12), 8),
    "conv2d-relu-batchnorm-lrn-dense-batchnorm": (
        [Conv2D(4, 3, padding=1), ReLU(), BatchNorm2D(momentum=0.2),
         LocalResponseNorm(3, alpha=0.5, k=1.5), AvgPool2D(2), Flatten(),
         Dense(12), ReLU(), BatchNorm1D(eps=1e-3)],
        (2, 10, 10), 8),
    "conv1d-batchnorm-lrn": (
        [Conv1D(4, 5, padding=2), ReLU(), BatchNorm1D(momentum=0.5),
         LocalResponseNorm(3, alpha=0.1), MaxPool1D(2), Conv1D(6, 3),
         LocalResponseNorm(2, alpha=0.5, beta=0.6, k=2.0), Flatten()],
        (3, 40), 8),
    "conv2d-lrn": (
        [Conv2D(5, 3, padding=1), ReLU(), LocalResponseNorm(4, alpha=0.3, k=1.5),
         AvgPool2D(2), Flatten()],
        (2, 10, 10), 6),
})
#: Networks where a bias feeds a batch normalization directly: the norm
#: subtracts it again, so its gradient is zero but for rounding, which
#: Adam (epsilon tiny here) turns into steps of the learning rate whose
#: signs differ between the libraries. The losses are unaffected; the
#: biases, and the running means that include them, are not, so under
#: Adam the inference scores of these are not comparable (the networks
#: above with the norm after a ReLU compare them).
BIAS_BEFORE_NORM = {"conv2d-batchnorm-relu-dense-batchnorm"}


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
    if solver == "adam" and name in BIAS_BEFORE_NORM:
        return
    scores, torch_scores = trainer.predict_scores(X)
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-9,
                               atol=1e-9 * np.abs(torch_scores).max())
