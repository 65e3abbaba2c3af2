"""Whole networks against PyTorch's: from the same initial weights and the
same batches, in float64, fastcnn's training loss follows PyTorch's twin
network (tests/_helpers/torch_twin.py) to 1e-9 relative over 30 steps of
SGD and of Adam, and the trained networks' scores agree in inference.

PyTorch is a benchmark-only dependency: without it these tests skip (they
run in the benchmarks' environment, ``pip install torch==2.13.0``).
"""
import math

import numpy as np
import pytest

from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Dropout, Flatten, MaxPool1D, MaxPool2D, ReLU,
                            Residual, SpatialDropout1D, SpatialDropout2D)
from fastcnn.layers import (GlobalAvgPool1D, GlobalAvgPool2D, GlobalMaxPool1D,
                            GlobalMaxPool2D, L2Pool1D, L2Pool2D)
from fastcnn.layers import ELU, GELU, LeakyReLU, Sigmoid, Tanh
from fastcnn.layers import BatchNorm1D, BatchNorm2D, LocalResponseNorm

torch = pytest.importorskip("torch")

from _helpers.torch_twin import Trainer, torch_twin, train_both  # noqa: E402
from fastcnn.functional import _correlation  # noqa: E402

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
    "resnet2d-identity-projection-nested": (
        [Conv2D(4, 3, padding=1), ReLU(),
         Residual([Conv2D(4, 3, padding=1), ReLU(), Conv2D(4, 3, padding=1)]), ReLU(),
         Residual([Conv2D(6, 3, stride=2, padding=1), ReLU(),
                   Residual([Conv2D(6, 3, padding=1)])]), ReLU(),
         MaxPool2D(2), Flatten()],
        (2, 12, 12), 8),
    "resnet1d-identity-projection": (
        [Conv1D(4, 5, padding=2), ReLU(),
         Residual([Conv1D(4, 3, padding=1), ReLU(), Conv1D(4, 3, padding=1)]), ReLU(),
         Residual([Conv1D(6, 3, stride=2, padding=1), ReLU(), Conv1D(6, 3, padding=1)]),
         ReLU(), Residual([Conv1D(6, 3, padding=1)], shortcut=[Conv1D(6, 1), ReLU()]),
         Flatten()],
        (3, 40), 8),
    # L2 pooling reads conv outputs, never a ReLU's: no window is all zero,
    # where PyTorch's LPPool gradient is NaN and fastcnn's 0
    "conv2d-l2pool-globalmax": (
        [Conv2D(4, 3, padding=1), L2Pool2D((3, 2), stride=(2, 1)), Conv2D(6, 3),
         ReLU(), GlobalMaxPool2D(), Dense(8), ReLU()],
        (2, 12, 12), 8),
    "conv2d-l2pool-globalavg": (
        [Conv2D(5, 3), L2Pool2D(2), ReLU(), Conv2D(4, 2), GlobalAvgPool2D()],
        (1, 11, 11), 6),
    "conv1d-l2pool-globalavg": (
        [Conv1D(4, 5, stride=2, padding=2), L2Pool1D(3, stride=2), Conv1D(6, 3),
         ReLU(), GlobalAvgPool1D()],
        (3, 40), 8),
    "conv1d-l2pool-globalmax": (
        [Conv1D(6, 3), L2Pool1D(2), Conv1D(5, 3, padding="same"), GlobalMaxPool1D()],
        (2, 25), 8),
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
# dropout at rate 0, which draws no mask in either library
NETWORKS.update({
    "dropout-rate-0": (
        [Conv2D(4, 3, padding=1), SpatialDropout2D(0.0), ReLU(), MaxPool2D(2),
         Flatten(), Dense(16), ReLU(), Dropout(0.0)],
        (2, 12, 12), 8),
    "spatial-dropout1d-rate-0": (
        [Conv1D(4, 5, padding=2), ReLU(), SpatialDropout1D(0.0), AvgPool1D(2),
         Flatten()],
        (3, 40), 8),
})
NETWORKS.update({
    "conv2d-tanh-sigmoid": (
        [Conv2D(4, 3, padding=1), Tanh(), MaxPool2D(2),
         Conv2D(6, 3, stride=2), Sigmoid(), Flatten(), Dense(16), Tanh()],
        (2, 12, 12), 8),
    "conv2d-leaky-relu-elu-gelu": (
        [Conv2D(5, 3, padding=1), LeakyReLU(0.1), MaxPool2D(2),
         Conv2D(6, 3), ELU(0.7), AvgPool2D(2), Flatten(), Dense(16), GELU()],
        (1, 12, 12), 6),
    "conv1d-gelu-tanh-elu-leaky-relu": (
        [Conv1D(4, 5, stride=2, padding=2), GELU("tanh"), AvgPool1D(2),
         Conv1D(6, 3, padding="same"), LeakyReLU(), MaxPool1D(2), ELU(),
         Flatten(), Dense(12), Sigmoid()],
        (3, 40), 8),
})
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
# 3 x 3 layers between 32 channels on 14 x 15 images: the second and third
# run as Winograd's F(4x4, 3x3), forward, input and kernel gradients
# (test_winograd checks that such shapes are sent there)
NETWORKS.update({
    "conv2d-winograd": (
        [Conv2D(32, 3, padding=1), ReLU(), Conv2D(32, 3, padding=1), ReLU(),
         Conv2D(32, 3, padding=1), ReLU(), MaxPool2D(2), Flatten()],
        (2, 14, 15), 8),
})
#: Networks where a bias feeds a batch normalization directly: the norm
#: subtracts it again, so its gradient is zero but for rounding, which
#: Adam (epsilon tiny here) turns into steps of the learning rate whose
#: signs differ between the libraries. The losses are unaffected; the
#: biases, and the running means that include them, are not, so under
#: Adam the inference scores of these are not comparable (the networks
#: above with the norm after a ReLU compare them).
BIAS_BEFORE_NORM = {"conv2d-batchnorm-relu-dense-batchnorm"}
#: Networks whose kernel gradients run as Winograd's F(4x4, 3x3): where the
#: data make a weight's gradient exactly zero (a ReLU channel zero but near
#: a border, whose taps reaching past it read only padding), the
#: transforms leave a rounding residue instead (1e-17 here), and Adam with
#: the negligible epsilon this comparison needs makes that a full step of
#: the learning rate. Under Adam these train with the direct kernel
#: gradient; test_winograd_gradients_follow_pytorch checks the Winograd
#: gradients themselves, residues included, and SGD trains with them.
WINOGRAD_GRADIENT = {"conv2d-winograd"}


def test_winograd_gradients_follow_pytorch():
    """One step's gradients of a network whose kernel gradients run as
    Winograd's: within 1e-13 of each array's largest against PyTorch's,
    and those PyTorch finds exactly zero at most a rounding residue."""
    specs, shape, batch_size = NETWORKS["conv2d-winograd"]
    X, y = images(shape=shape)
    trainer = Trainer(specs, X.shape[1:], int(y.max()) + 1, "sgd", 0.0)
    assert _correlation._winograd_gradient_is_faster(
        (32, 32, 3, 3), shape[1:], (1, 1), (1, 1), 2)
    trainer.fastcnn_step(X[:batch_size], y[:batch_size])
    trainer.torch_step(X[:batch_size], y[:batch_size])
    params, grads = trainer.network.params, trainer.network.grads
    compared = 0
    for ours, theirs in trainer.pairs:
        if theirs.grad is None:
            continue
        start = (ours.ctypes.data - params.ctypes.data) // params.itemsize
        grad = grads[start:start + ours.size].reshape(ours.shape)
        expected = theirs.grad.detach().numpy()
        largest = np.abs(expected).max()
        np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-13 * largest)
        assert np.all(np.abs(grad[expected == 0]) <= 1e-15 * largest)
        compared += 1
    assert compared == 2 * 4    # three convolutions and the output layer


@pytest.mark.parametrize("solver, learning_rate", [("sgd", 0.05), ("adam", 0.003)])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_training_loss_follows_pytorch(name, solver, learning_rate, monkeypatch):
    if solver == "adam" and name in WINOGRAD_GRADIENT:
        monkeypatch.setattr(_correlation, "_WINOGRAD_GRADIENT_MIN_USE", math.inf)
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


#: networks with dropout (PyTorch's masks are not fastcnn's): compared in
#: inference, after fastcnn trained them with masks
DROPOUT_NETWORKS = {
    "conv2d-spatial-dropout-dropout": (
        [Conv2D(4, 3, padding=1), SpatialDropout2D(0.3), ReLU(), MaxPool2D(2),
         Flatten(), Dense(16), ReLU(), Dropout(0.5)],
        (2, 12, 12)),
    "conv1d-spatial-dropout": (
        [Conv1D(4, 5, padding=2), SpatialDropout1D(0.4), ReLU(), AvgPool1D(2),
         Dropout(0.2), Flatten()],
        (3, 40)),
}


@pytest.mark.parametrize("name", list(DROPOUT_NETWORKS))
def test_networks_with_dropout_predict_as_pytorch_in_inference(name):
    specs, shape = DROPOUT_NETWORKS[name]
    X, y = images(shape=shape)
    trainer = Trainer(specs, shape, int(y.max()) + 1, "adam", 0.003)
    for start in range(0, 40, 8):
        trainer.fastcnn_step(X[start:start + 8], y[start:start + 8])
    trainer.model, _ = torch_twin(trainer.network)     # the trained weights
    scores, torch_scores = trainer.predict_scores(X)
    np.testing.assert_allclose(scores, torch_scores, rtol=1e-9,
                               atol=1e-9 * np.abs(torch_scores).max())
    # the twin does drop in training: inference is what agrees
    trainer.model.train()
    with torch.no_grad():
        dropped = trainer.model(torch.from_numpy(X)).numpy()
    assert not np.allclose(dropped, torch_scores)


# ===================================================== regression

def regression_images(n=48, shape=(1, 12, 12), n_outputs=3, seed=0):
    """Targets that are smooth functions of the images (means of bands of
    each sample, squashed), plus a little noise: a net fits them, so the
    losses move over the steps."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n,) + shape)
    bands = np.array_split(X.reshape(n, -1), n_outputs, axis=1)
    y = np.tanh(np.stack([3 * band.mean(axis=1) for band in bands], axis=1))
    return X, y + 0.05 * rng.standard_normal(y.shape)


#: the regression networks: convolutions, pooling and dense layers in 2-D
#: and 1-D, a residual block, and batch norm
REGRESSION_NETWORKS = ["conv2d-maxpool-relu-dense", "conv1d-maxpool-avgpool",
                       "resnet1d-identity-projection",
                       "conv2d-relu-batchnorm-lrn-dense-batchnorm"]


# SGD at 0.05 diverges on the residual net's initial loss (near 10)
@pytest.mark.parametrize("solver, learning_rate", [("sgd", 0.01), ("adam", 0.003)])
@pytest.mark.parametrize("name", REGRESSION_NETWORKS)
def test_squared_error_training_follows_pytorch(name, solver, learning_rate):
    """fastcnn's squared error (functional.squared_error, CNNRegressor's
    loss) against PyTorch's 0.5 * mse_loss(reduction='sum') / N, through
    whole networks with two outputs."""
    specs, shape, batch_size = NETWORKS[name]
    X, y = regression_images(shape=shape, n_outputs=2)
    ours, theirs, trainer = train_both(specs, X, y, solver, batch_size, STEPS,
                                       learning_rate, loss="squared_error")
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)
    assert abs(ours[-1] - ours[0]) > 1e-3 * ours[0]
    predictions, torch_predictions = trainer.predict_scores(X)
    np.testing.assert_allclose(predictions, torch_predictions, rtol=1e-9,
                               atol=1e-9 * np.abs(torch_predictions).max())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver, learning_rate", [("sgd", 0.05), ("adam", 0.003)])
def test_cnnregressor_fit_follows_pytorch(solver, learning_rate):
    """The estimator itself: CNNRegressor's fit (5 epochs of 6 batches, in
    order) records the epoch means of the losses PyTorch's twin has on the
    same batches from the same initial weights (both drawn from
    RandomState(0)), and predicts what the twin predicts."""
    from fastcnn import CNNRegressor
    specs, shape, batch_size = NETWORKS["conv2d-maxpool-relu-dense"]
    X, y = regression_images(shape=shape, n_outputs=3)
    epochs = 5
    regressor = CNNRegressor(
        layers=specs, input_shape=shape, solver=solver, learning_rate_init=learning_rate,
        batch_size=batch_size, max_iter=epochs, shuffle=False, alpha=0.0,
        epsilon=1e-30, early_stopping=False, dtype="float64", random_state=0,
        n_threads=2).fit(X, y)
    trainer = Trainer(specs, shape, 3, solver, learning_rate, seed=0,
                      loss="squared_error")
    losses = [trainer.torch_step(X[start:start + batch_size], y[start:start + batch_size])
              for _ in range(epochs) for start in range(0, len(X), batch_size)]
    epoch_means = np.array(losses).reshape(epochs, -1).mean(axis=1)
    assert regressor.n_iter_ == epochs
    np.testing.assert_allclose(regressor.loss_curve_, epoch_means, rtol=RTOL, atol=0)
    assert epoch_means[-1] < 0.9 * epoch_means[0]
    trainer.model.eval()
    with torch.no_grad():
        torch_predictions = trainer.model(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(regressor.predict(X), torch_predictions, rtol=1e-9,
                               atol=1e-9 * np.abs(torch_predictions).max())
