"""Tests of fastcnn._base, what CNNClassifier and CNNRegressor share:
``transform`` (every layer's output against the layers computed step by
step in NumPy from the fitted parameters), its use in a Pipeline, the
MLP-style fitted attributes (n_layers_, n_outputs_, out_activation_, the
layout of coefs_) and the error for X whose feature count does not fit
input_shape (BaggingClassifier's feature subsets).

The rest of the shared behaviour is tested through CNNClassifier in
test_classifier.py and the modules it names, and through CNNRegressor in
test_regressor.py.
"""
import re

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.datasets import load_digits
from sklearn.ensemble import BaggingClassifier, BaggingRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

import fastcnn._base as base_module
import fastcnn._network as network_module
from fastcnn import CNNClassifier, CNNRegressor
from fastcnn import layers as L
from _helpers.estimators import SMALL

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


# =============================================== a reference, step by step

def _conv2d(x, weight, bias, padding):
    """Correlation, NumPy only: weight (F, C, KH, KW), PyTorch's layout."""
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(padded, weight.shape[2:], axis=(2, 3))
    return (np.einsum("nchwab,fcab->nfhw", windows, weight)
            + bias[:, None, None])


def _max_pool2d(x, size):
    size = size[0] if isinstance(size, tuple) else size
    n, c, h, w = x.shape
    return x.reshape(n, c, h // size, size, w // size, size).max(axis=(3, 5))


def _batch_norm(x, weight, bias, layer):
    """Inference: the running statistics (per channel, axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = weight / np.sqrt(layer.running_var + layer.spec.eps)
    return ((x - layer.running_mean.reshape(shape)) * scale.reshape(shape)
            + bias.reshape(shape))


def reference_outputs(estimator, X):
    """The output of every layer as n_layers_ counts them: X, then the
    output of each of network_.specs in turn, each flattened per sample,
    computed in NumPy from coefs_, intercepts_ and the batch norms'
    running statistics."""
    network = estimator.network_
    parameters = iter(zip(estimator.coefs_, estimator.intercepts_))
    norms = iter(layer for layer in network.all_layers
                 if isinstance(layer.spec, (L.BatchNorm1D, L.BatchNorm2D)))
    x = np.asarray(X, dtype=np.float64).reshape((len(X),) + estimator.input_shape_)
    outputs = [x]
    for spec in network.specs:
        if isinstance(spec, L.Conv2D):
            assert spec.padding == "same" and spec.kernel_size in (3, (3, 3))
            x = _conv2d(x, *next(parameters), padding=1)
        elif isinstance(spec, (L.BatchNorm1D, L.BatchNorm2D)):
            x = _batch_norm(x, *next(parameters), next(norms))
        elif isinstance(spec, L.Dense):
            weight, bias = next(parameters)
            x = x.reshape(len(x), -1) @ weight.T + bias     # weight (out, in)
        elif isinstance(spec, L.MaxPool2D):
            x = _max_pool2d(x, spec.pool_size)
        else:
            x = {L.ReLU: lambda v: np.maximum(v, 0), L.Tanh: np.tanh,
                 L.Dropout: lambda v: v, L.Flatten: lambda v: v.reshape(len(v), -1)
                 }[type(spec)](x)
        outputs.append(x)
    return [output.reshape(len(X), -1) for output in outputs]


def _check_every_layer(estimator, X):
    expected = reference_outputs(estimator, X)
    assert len(expected) == estimator.n_layers_
    for layer, reference in enumerate(expected):
        for index in (layer, layer - estimator.n_layers_):     # and from the end
            got = estimator.transform(X, layer=index)
            assert got.shape == reference.shape, (layer, got.shape, reference.shape)
            np.testing.assert_allclose(got, reference, rtol=1e-10,
                                       atol=1e-12 * np.abs(reference).max(),
                                       err_msg=f"layer {layer}")
    return expected


# ============================================================ transform

def test_transform_gives_every_layer_of_the_simple_family(small_digits):
    """Convolution, batch norm, ReLU (fused into the batch norm in the
    network, so it is computed by a shorter network here), max pooling,
    dropout (the identity in inference), dense layers and the output."""
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(8,),
                        batch_norm=True, dropout=0.2, dtype="float64", max_iter=3,
                        random_state=0).fit(X, y)
    assert [type(spec).__name__ for spec in clf.network_.specs] == [
        "Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D", "Dropout", "Dense",
        "BatchNorm1D", "ReLU", "Dropout", "Dense"]
    assert clf.n_layers_ == 11
    expected = _check_every_layer(clf, X[:50])
    # by default, what enters the output layer: the last hidden layer's output
    np.testing.assert_array_equal(clf.transform(X[:50]), clf.transform(X[:50], layer=9))
    assert clf.transform(X[:50]).shape == (50, 8)
    # the output layer's scores are those predict_proba takes the softmax of
    scores = expected[-1]
    reference = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X[:50]),
                               reference / reference.sum(axis=1, keepdims=True),
                               rtol=1e-9, atol=1e-12)


def test_transform_gives_every_layer_of_a_layer_list(small_digits):
    """A regressor from a list whose ReLU runs after the max pooling in the
    network: its own output (before pooling) is still what layer 2 gives."""
    X, _ = small_digits
    y = X[:, 27:29].mean(axis=1)
    specs = [L.Conv2D(3, 3, padding="same"), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
             L.Dense(6), L.Tanh()]
    reg = CNNRegressor(layers=specs, input_shape=(1, 8, 8), dtype="float64",
                       max_iter=3, random_state=0).fit(X, y)
    # the network runs the pooling and the ReLU after it as one layer
    assert reg.network_.layers[1].spec is specs[2]
    assert not any(layer.spec is specs[1] for layer in reg.network_.layers)
    assert reg.n_layers_ == len(specs) + 2
    expected = _check_every_layer(reg, X[:40])
    np.testing.assert_allclose(reg.predict(X[:40]), expected[-1].ravel(), rtol=1e-10)


def test_transform_without_hidden_layers_is_the_input(small_digits):
    X, y = small_digits
    clf = CNNClassifier(filters=(), hidden_layer_sizes=(), input_shape=(1, 8, 8),
                        max_iter=2, random_state=0).fit(X, y)
    assert clf.n_layers_ == 2
    np.testing.assert_array_equal(clf.transform(X), X.astype(np.float32))


@pytest.mark.parametrize("layer", [11, -12, 1.0, True, "dense", None])
def test_transform_refuses_a_layer_out_of_range(small_digits, layer):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    assert clf.n_layers_ == 7     # conv, relu, pool, dense, relu, output
    with pytest.raises(ValueError, match=re.escape("layer must be an int in [-7, 7)")):
        clf.transform(X, layer=layer)


def test_transform_in_batches(small_digits, monkeypatch):
    """transform runs in batches of bounded memory, as predict does, with
    the same result as one batch."""
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    whole = clf.transform(X)
    monkeypatch.setattr(base_module, "_PREDICT_BUFFER_BYTES", 3000)
    sizes = []
    original = network_module.Network.forward

    def forward(self, x, *args, **kwargs):
        sizes.append(len(x))
        return original(self, x, *args, **kwargs)
    monkeypatch.setattr(network_module.Network, "forward", forward)
    np.testing.assert_array_equal(clf.transform(X), whole)
    assert len(sizes) > 1 and sum(sizes) == len(X) and max(sizes) < len(X)


def test_transform_follows_training(small_digits):
    """transform keeps the shorter networks it builds; they must see the
    weights and running statistics of every later update."""
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(8,),
                        batch_norm=True, dtype="float64", max_iter=2,
                        random_state=0).fit(X, y)
    before = [clf.transform(X, layer=layer) for layer in (1, 2, -2)]
    clf.partial_fit(X, y)
    after = _check_every_layer(clf, X)
    for got, layer in zip(before, (1, 2, -2)):
        assert not np.allclose(got, after[layer])


def test_transform_before_fit():
    with pytest.raises(NotFittedError):
        CNNRegressor().transform(np.zeros((2, 64)))


def test_transform_in_a_pipeline():
    """CNNClassifier as a learned feature extractor for LogisticRegression."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, train_size=600,
                                                        random_state=0, stratify=y)
    pipe = make_pipeline(
        CNNClassifier(input_shape=(1, 8, 8), filters=(8,), hidden_layer_sizes=(32,),
                      max_iter=10, random_state=0),
        LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    features = pipe[0].transform(X_test)
    assert features.shape == (len(X_test), 32)
    assert pipe.score(X_test, y_test) > 0.9


def test_feature_names_out_name_the_default_layer(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    names = clf.get_feature_names_out()
    assert list(names) == [f"cnnclassifier{i}" for i in range(16)]
    assert len(names) == clf.transform(X).shape[1]
    pd = pytest.importorskip("pandas")
    frame = clf.set_output(transform="pandas").transform(X)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)


# =================================================== fitted attributes

def test_n_layers_counts_as_mlpclassifier_does(small_digits):
    """Input, hidden layers (every specification of the list), output."""
    X, y = small_digits
    default = CNNClassifier(input_shape=(1, 8, 8), max_iter=1, random_state=0).fit(X, y)
    # conv, relu, pool, conv, relu, pool, dense, relu, then output and input
    assert default.n_layers_ == 10
    specs = [L.Conv2D(4, 3), L.ReLU(),
             L.Residual([L.Conv2D(4, 3, padding=1), L.ReLU()]), L.Flatten()]
    listed = CNNClassifier(layers=specs, input_shape=(1, 8, 8), max_iter=1,
                           random_state=0).fit(X, y)
    assert listed.n_layers_ == len(specs) + 2
    assert len(listed.coefs_) == 3     # the two convolutions and the output
    with pytest.raises(NotFittedError):
        CNNClassifier().n_layers_


@pytest.mark.parametrize("estimator, n_outputs, out_activation", [
    (CNNClassifier, 10, "softmax"), (CNNRegressor, 1, "identity")])
def test_n_outputs_and_out_activation(small_digits, estimator, n_outputs, out_activation):
    X, y = small_digits
    unfitted = estimator(input_shape=(1, 8, 8), **SMALL)
    assert not hasattr(unfitted, "n_outputs_")
    assert not hasattr(unfitted, "out_activation_")
    fitted = unfitted.fit(X, y)
    assert fitted.n_outputs_ == n_outputs == fitted.coefs_[-1].shape[0]
    assert fitted.out_activation_ == out_activation


def test_a_binary_classifier_has_two_softmax_outputs(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y % 2)
    assert clf.n_outputs_ == 2 and clf.predict_proba(X).shape == (len(X), 2)


def test_coefs_are_laid_out_outputs_first(small_digits):
    """(out, in) for dense layers, (filters, channels, KH, KW) for
    convolutions: the output layer's scores are coefs_[-1] @ h + b for h
    what enters it."""
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
                        dtype="float64", max_iter=2, random_state=0).fit(X, y)
    assert [w.shape for w in clf.coefs_] == [(4, 1, 3, 3), (16, 64), (10, 16)]
    hidden = clf.transform(X)
    np.testing.assert_allclose(clf.transform(X, layer=-1),
                               hidden @ clf.coefs_[-1].T + clf.intercepts_[-1],
                               rtol=1e-12, atol=1e-12)
    # the first convolution's filter 2 at pixel (4, 4) of a sample
    image = X[0].reshape(8, 8)
    patch = image[3:6, 3:6]
    value = (clf.coefs_[0][2, 0] * patch).sum() + clf.intercepts_[0][2]
    conv = clf.transform(X[:1], layer=1).reshape(4, 8, 8)
    assert conv[2, 4, 4] == pytest.approx(value, rel=1e-12)


# ================================ feature counts that do not fit the shape

@pytest.mark.parametrize("bagging, target", [(BaggingClassifier, "classes"),
                                             (BaggingRegressor, "values")])
def test_a_subset_of_the_features_names_what_to_change(small_digits, no_training,
                                                       bagging, target):
    X, y = small_digits
    estimator = (CNNClassifier if target == "classes" else CNNRegressor)(
        input_shape=(1, 8, 8), **SMALL)
    with pytest.raises(ValueError) as error:
        bagging(estimator, max_features=0.5, n_estimators=2, random_state=0).fit(X, y)
    message = str(error.value)
    assert "input_shape=(1, 8, 8) holds 64 values per sample, but X has 32" in message
    assert "Set input_shape" in message
    assert "max_features=1.0" in message and "bootstrap_features=False" in message


def test_all_the_features_bag_fine(small_digits):
    X, y = small_digits
    bag = BaggingClassifier(CNNClassifier(input_shape=(1, 8, 8), **SMALL),
                            n_estimators=2, max_features=1.0, random_state=0).fit(X, y)
    assert bag.predict(X).shape == (len(X),)


def test_predicting_on_other_features_names_the_fitted_shape(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    with pytest.raises(ValueError, match=re.escape(
            "X has 32 features, but CNNClassifier is expecting 64 features as "
            "input: samples of shape input_shape_=(1, 8, 8)")) as error:
        clf.predict(X[:, :32])
    assert "bootstrap_features=False" in str(error.value)
