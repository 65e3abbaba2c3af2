"""fastcnn.onnx: exported graphs run by onnxruntime against the fitted
estimator's own predict_proba and predict.

Each network is small, one or two layer types at a time, fitted for two
epochs on the digits (as images (1, 8, 8), or as signals of 8 channels and
8 steps) so that its weights and running statistics are trained values,
not their initial ones.
"""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import fastcnn.onnx as fastcnn_onnx
from fastcnn import CNNClassifier
from fastcnn import layers as L
from fastcnn._network import _RUNTIME, Network, Residual, _walk

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

IMAGES, SIGNALS = (1, 8, 8), (8, 8)
EXACT = dict(rtol=0, atol=1e-5)


def _activations(activation):
    return dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3), activation, L.Dense(16), activation])


#: CNNClassifier parameters, one network per layer type and option
NETWORKS = {
    "conv2d_stride_padding": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3, stride=2, padding=1), L.ReLU()]),
    "conv2d_per_axis": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, (3, 2), stride=(1, 2), padding=(2, 0), dilation=(2, 1)), L.ReLU()]),
    "conv2d_valid_dilation": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3, padding="valid", dilation=2), L.ReLU()]),
    # an even kernel pads one more after (below, right) than before
    "conv2d_same_even_kernel": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 2, padding="same"), L.ReLU(),
        L.Conv2D(4, (4, 3), padding="same", dilation=(1, 2)), L.ReLU()]),
    "conv2d_padding_beyond_kernel": dict(input_shape=IMAGES, layers=[
        L.Conv2D(3, 2, padding=3), L.ReLU()]),
    "conv1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3, stride=2, padding=2, dilation=2), L.ReLU()]),
    "conv1d_same_even_kernel": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 4, padding="same"), L.ReLU()]),
    # the ReLU before the first pooling runs inside it; the second is not fused
    "max_pool2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3, padding=1), L.ReLU(), L.MaxPool2D(2),
        L.MaxPool2D((2, 1), stride=(1, 2))]),
    "max_pool1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3), L.ReLU(), L.MaxPool1D(3, stride=2)]),
    "avg_pool2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3, padding=1), L.ReLU(), L.AvgPool2D(3, stride=2)]),
    "avg_pool1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3), L.ReLU(), L.AvgPool1D(2)]),
    "l2_pool2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3, padding=1), L.L2Pool2D((3, 2), stride=(2, 1))]),
    "l2_pool1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3), L.L2Pool1D(3, stride=2)]),
    "global_avg_pool2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(8, 3), L.ReLU(), L.GlobalAvgPool2D()]),
    "global_max_pool2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(8, 3), L.ReLU(), L.GlobalMaxPool2D()]),
    "global_avg_pool1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(8, 3), L.ReLU(), L.GlobalAvgPool1D()]),
    "global_max_pool1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(8, 3), L.ReLU(), L.GlobalMaxPool1D()]),
    # the first norm takes on the ReLU after it, the second has none
    "batch_norm2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3), L.BatchNorm2D(), L.ReLU(),
        L.Conv2D(4, 3), L.BatchNorm2D(eps=1e-3), L.Tanh()]),
    "batch_norm1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3), L.BatchNorm1D(), L.ReLU(),
        L.Dense(16), L.BatchNorm1D(momentum=0.3), L.Sigmoid()]),
    # odd and even windows, large alpha so that the norm is far from x
    "local_response_norm2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(6, 3, padding=1), L.ReLU(),
        L.LocalResponseNorm(3, alpha=1.0, beta=0.75, k=2.0),
        L.LocalResponseNorm(4, alpha=0.5, beta=1.2, k=1.0)]),
    "local_response_norm1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3), L.LocalResponseNorm(2, alpha=2.0, beta=0.5, k=1.5),
        L.LocalResponseNorm(7, alpha=1.0)]),
    "dropout": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3), L.ReLU(), L.SpatialDropout2D(0.3), L.Flatten(),
        L.Dropout(0.5), L.Dense(16), L.ReLU(), L.Dropout(0.2)]),
    "spatial_dropout1d": dict(input_shape=SIGNALS, layers=[
        L.Conv1D(6, 3), L.ReLU(), L.SpatialDropout1D(0.3)]),
    "tanh": _activations(L.Tanh()),
    "sigmoid": _activations(L.Sigmoid()),
    "leaky_relu": _activations(L.LeakyReLU(0.2)),
    "elu": _activations(L.ELU(0.7)),
    "gelu": _activations(L.GELU()),
    "gelu_tanh": _activations(L.GELU("tanh")),
    "flatten_dense": dict(input_shape=IMAGES, layers=[
        L.Flatten(), L.Dense(32), L.ReLU(), L.Dense(16), L.ReLU()]),
    # identity and projection shortcuts, a block in a block, a given shortcut
    "residual2d": dict(input_shape=IMAGES, layers=[
        L.Conv2D(4, 3, padding=1), L.ReLU(),
        L.Residual([L.Conv2D(4, 3, padding=1), L.ReLU(), L.Conv2D(4, 3, padding=1)]),
        L.ReLU(),
        L.Residual([L.Conv2D(8, 3, stride=2, padding=1), L.ReLU(),
                    L.Residual([L.Conv2D(8, 3, padding=1)])]),
        L.Residual([L.Conv2D(6, 3, padding=1)],
                   shortcut=[L.Conv2D(6, 1), L.BatchNorm2D()]),
        L.ReLU()]),
    "residual1d": dict(input_shape=SIGNALS, layers=[
        L.Residual([L.Conv1D(8, 3, padding=1), L.ReLU(), L.Conv1D(8, 3, padding=1)]),
        L.ReLU(), L.Residual([L.Conv1D(8, 3, padding=1)], shortcut=[])]),
    "simple_family": dict(input_shape=IMAGES, batch_norm=True, dropout=0.2,
                          global_pool="max", activation="elu"),
}


def fit(X, y, **params):
    return CNNClassifier(**{"max_iter": 2, "random_state": 0, **params}).fit(X, y)


def run(model, X):
    """The outputs of onnxruntime running ``model`` on X as float32."""
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _runtime_layers(params):
    specs = (params["layers"] if "layers" in params
             else CNNClassifier(**params)._hidden_specs(params["input_shape"]))
    network = Network(list(specs) + [L.Dense(10)], params["input_shape"], np.float32)
    return list(_walk(network.layers))


def test_the_networks_cover_every_layer_and_variant():
    """The networks above hold every specification of fastcnn.layers, every
    runtime layer class, the ReLUs fused into pooling and batch norm, and
    each kind of residual shortcut; and every runtime class has an export."""
    layers = [layer for params in NETWORKS.values() for layer in _runtime_layers(params)]
    used_specs = {type(layer.spec) for layer in layers}
    all_specs = {getattr(L, name) for name in L.__all__} - {L.LayerSpec}
    assert all_specs - used_specs == set()
    # other test modules declare runtime layers of their own
    runtime_classes = {cls for cls in _RUNTIME.values() if cls.__module__ == "fastcnn._network"}
    assert {type(layer) for layer in layers} == runtime_classes
    assert set(fastcnn_onnx._LAYER_EXPORTS) == runtime_classes
    fused = {(type(layer).__name__, layer.relu) for layer in layers if hasattr(layer, "relu")}
    assert fused == {("MaxPool", True), ("MaxPool", False),
                     ("BatchNorm", True), ("BatchNorm", False),
                     ("Dense", True), ("Dense", False)}
    blocks = [layer for layer in layers if isinstance(layer, Residual)]
    assert any(block.spec.shortcut is None and block.shortcut for block in blocks)
    assert any(not block.shortcut for block in blocks)
    assert any(block.spec.shortcut for block in blocks)
    assert any(isinstance(inner, Residual) for block in blocks for inner in block.main)
    assert any(isinstance(layer.padding[0], tuple) for layer in layers
               if type(layer).__name__ == "Conv")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_onnxruntime_gives_predict_proba_and_predict(name, dtype, digits):
    """float64 estimators too, whose graphs compute in float32."""
    X, y = digits
    clf = fit(X, y, dtype=dtype, **NETWORKS[name])
    label, proba = run(fastcnn_onnx.to_onnx(clf), X.astype(np.float32))
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba, clf.predict_proba(X), **EXACT)
    np.testing.assert_array_equal(label, clf.predict(X))


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return fit(X, y, **NETWORKS["residual2d"])


def test_the_graph_declares_skl2onnx_names_and_shapes(fitted):
    model = fastcnn_onnx.to_onnx(fitted)
    assert [o.domain for o in model.opset_import] == [""]
    assert model.opset_import[0].version == fastcnn_onnx.DEFAULT_OPSET == 18
    assert model.producer_name == "fastcnn"

    def declared(value):
        tensor = value.type.tensor_type
        return (value.name, tensor.elem_type,
                [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim])
    assert [declared(v) for v in model.graph.input] == [("X", onnx.TensorProto.FLOAT, [None, 64])]
    assert [declared(v) for v in model.graph.output] == [
        ("label", onnx.TensorProto.INT64, [None]),
        ("probabilities", onnx.TensorProto.FLOAT, [None, 10])]
    # no float64 kernel is needed anywhere
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert all(v.type.tensor_type.elem_type != onnx.TensorProto.DOUBLE
               for v in inferred.graph.value_info)


def test_shaped_input_and_any_batch_size(fitted, digits):
    X, _ = digits
    model = fastcnn_onnx.to_onnx(fitted, flat_input=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [1, 8, 8]
    images = X.reshape(-1, 1, 8, 8).astype(np.float32)
    for rows in (slice(0, 1), slice(0, 7), slice(None)):
        label, proba = run(model, images[rows])
        np.testing.assert_allclose(proba, fitted.predict_proba(X[rows]), **EXACT)
        np.testing.assert_array_equal(label, fitted.predict(X[rows]))


# 20: the newest of onnx 1.15 and onnxruntime 1.17, the extra's minimal versions
@pytest.mark.parametrize("opset", [fastcnn_onnx.MIN_OPSET, 20])
def test_other_opsets(fitted, digits, opset):
    X, _ = digits
    model = fastcnn_onnx.to_onnx(fitted, target_opset=opset)
    assert model.opset_import[0].version == opset
    label, proba = run(model, X.astype(np.float32))
    np.testing.assert_allclose(proba, fitted.predict_proba(X), **EXACT)


@pytest.mark.parametrize("opset", [12, 10**6, 18.0, True, "18"])
def test_a_bad_opset_is_refused(fitted, opset):
    with pytest.raises(ValueError, match="target_opset"):
        fastcnn_onnx.to_onnx(fitted, target_opset=opset)


def test_a_bad_flat_input_is_refused(fitted):
    with pytest.raises(ValueError, match="flat_input"):
        fastcnn_onnx.to_onnx(fitted, flat_input="no")


@pytest.mark.parametrize("labels, as_int64", [
    (np.array(["zero", "one", "two"]), False),
    (np.array([True, False, True]), True),
    (np.array([-3.0, 2.0, 7.0]), True),
])
def test_class_labels(digits, labels, as_int64):
    """Strings stay strings; bools and integral floats become int64, as in
    skl2onnx."""
    X, y = digits
    clf = fit(X, labels[y % 3], input_shape=IMAGES, filters=(4,), hidden_layer_sizes=())
    label, proba = run(fastcnn_onnx.to_onnx(clf), X.astype(np.float32))
    expected = clf.predict(X)
    if as_int64:
        assert label.dtype == np.int64
        expected = expected.astype(np.int64)
    np.testing.assert_array_equal(label, expected)
    np.testing.assert_allclose(proba, clf.predict_proba(X), **EXACT)


def test_labels_beyond_int64_are_refused(digits):
    X, y = digits
    labels = np.uint64(2**63) + (y % 2).astype(np.uint64)
    clf = fit(X, labels, input_shape=IMAGES, filters=(4,), hidden_layer_sizes=())
    with pytest.raises(ValueError, match="classes_"):
        fastcnn_onnx.to_onnx(clf)


def test_an_unfitted_estimator_is_refused():
    with pytest.raises(NotFittedError):
        fastcnn_onnx.to_onnx(CNNClassifier())


def test_other_estimators_are_refused(digits):
    X, y = digits
    with pytest.raises(TypeError, match="LogisticRegression"):
        fastcnn_onnx.to_onnx(LogisticRegression(max_iter=20).fit(X, y))
    with pytest.raises(TypeError, match="StandardScaler"):
        fastcnn_onnx.to_onnx(StandardScaler().fit(X))


def test_without_onnx_the_error_names_the_extra(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)     # import onnx fails
    with pytest.raises(ImportError, match=r"fastcnn\[onnx\]"):
        fastcnn_onnx.to_onnx(fitted)


def test_importing_fastcnn_onnx_imports_no_onnx_package():
    code = ("import sys, fastcnn, fastcnn.onnx; "
            "print(sorted({'onnx', 'onnxruntime', 'skl2onnx'} & set(sys.modules)))")
    package_root = Path(fastcnn_onnx.__file__).resolve().parents[1]
    output = subprocess.run([sys.executable, "-c", code], cwd=package_root,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert output.strip() == "[]"


# ------------------------------------------------------------ skl2onnx

@pytest.fixture(scope="module")
def skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx")
    fastcnn_onnx.register_skl2onnx()
    return skl2onnx


@pytest.fixture(scope="module")
def pipeline(digits):
    X, y = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six",
                      "seven", "eight", "nine"])
    steps = [("scale", StandardScaler()),
             ("cnn", CNNClassifier(**NETWORKS["batch_norm2d"], max_iter=2, random_state=0))]
    return Pipeline(steps).fit(X * 16, names[y])


def test_a_pipeline_through_skl2onnx_with_zipmap(skl2onnx, pipeline, digits):
    X = digits[0] * 16
    model = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32))
    label, probabilities = run(model, X.astype(np.float32))
    np.testing.assert_array_equal(label, pipeline.predict(X))
    classes = pipeline.classes_
    proba = np.array([[row[c] for c in classes] for row in probabilities])
    np.testing.assert_allclose(proba, pipeline.predict_proba(X), **EXACT)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_pipeline_through_skl2onnx_without_zipmap(skl2onnx, pipeline, digits, dtype):
    X = digits[0] * 16
    model = skl2onnx.to_onnx(pipeline, X[:1].astype(dtype),
                             options={CNNClassifier: {"zipmap": False}})
    label, proba = run(model, X.astype(dtype))
    assert proba.dtype == dtype and proba.shape == (len(X), 10)
    np.testing.assert_array_equal(label, pipeline.predict(X))
    np.testing.assert_allclose(proba, pipeline.predict_proba(X), **EXACT)


def test_skl2onnx_options_columns_and_nocl(skl2onnx, pipeline, digits):
    X = digits[0][:50] * 16
    expected = pipeline.predict_proba(X)
    model = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32),
                             options={CNNClassifier: {"zipmap": "columns"}})
    label, *columns = run(model, X.astype(np.float32))
    np.testing.assert_array_equal(label, pipeline.predict(X))
    np.testing.assert_allclose(np.stack(columns, axis=1), expected, **EXACT)
    model = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32),
                             options={CNNClassifier: {"zipmap": False, "nocl": True}})
    label, _ = run(model, X.astype(np.float32))
    np.testing.assert_array_equal(label, expected.argmax(axis=1))


def test_a_converter_below_the_minimal_opset_is_refused(skl2onnx, pipeline, digits):
    with pytest.raises(ValueError, match="opset 13"):
        skl2onnx.to_onnx(pipeline, digits[0][:1].astype(np.float32), target_opset=12,
                         options={CNNClassifier: {"zipmap": False}})


# ------------------------------------------------------------ regressors

class NetworkRegressor(RegressorMixin, BaseEstimator):
    """A stand-in for a fastcnn regressor, whose predict is its network's
    output (an identity output layer, Dense(n_outputs)), of shape (n,) for
    one output: the network is initialised, not trained, and its batch
    norms get running statistics drawn away from their initial 0 and 1."""

    def __init__(self, layers=(), n_outputs=1, input_shape=IMAGES):
        self.layers = layers
        self.n_outputs = n_outputs
        self.input_shape = input_shape

    def fit(self, X, y=None):
        self.input_shape_ = tuple(self.input_shape)
        self.n_features_in_ = math.prod(self.input_shape_)
        specs = list(self.layers) + [L.Dense(self.n_outputs)]
        self.network_ = Network(specs, self.input_shape_, np.float32)
        rng = np.random.RandomState(0)
        self.network_.initialize(rng)
        for layer in self.network_.all_layers:
            if hasattr(layer, "running_var"):
                layer.running_mean[...] = rng.normal(size=layer.running_mean.shape)
                layer.running_var[...] = rng.uniform(0.5, 2, size=layer.running_var.shape)
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=np.float32).reshape((len(X),) + self.input_shape_)
        self.network_.allocate(len(X), training=False)
        scores = self.network_.forward(X, n_threads=1).copy()
        return scores[:, 0] if self.n_outputs == 1 else scores


REGRESSOR_LAYERS = [L.Conv2D(4, 3, padding="same"), L.BatchNorm2D(), L.ReLU(),
                    L.MaxPool2D(2), L.Flatten(), L.Dense(8), L.GELU()]


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_a_regressor_exports_its_network_output(digits, n_outputs):
    X = digits[0]
    regressor = NetworkRegressor(REGRESSOR_LAYERS, n_outputs).fit(X)
    model = fastcnn_onnx.to_onnx(regressor)
    assert [o.name for o in model.graph.output] == ["variable"]
    (variable,) = run(model, X.astype(np.float32))
    assert variable.shape == (len(X), n_outputs)
    expected = regressor.predict(X).reshape(len(X), n_outputs)
    assert np.ptp(expected) > 0.1
    np.testing.assert_allclose(variable, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_regressor_in_a_pipeline_through_skl2onnx(skl2onnx, digits, dtype):
    X = digits[0]
    fastcnn_onnx._register(NetworkRegressor)
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("net", NetworkRegressor(REGRESSOR_LAYERS, 2))]).fit(X)
    model = skl2onnx.to_onnx(pipeline, X[:1].astype(dtype))
    (variable,) = run(model, X.astype(dtype))
    assert variable.dtype == dtype and variable.shape == (len(X), 2)
    np.testing.assert_allclose(variable, pipeline.predict(X), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def cnn_regressor_class():
    from fastcnn import CNNRegressor
    return CNNRegressor


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_a_fitted_cnn_regressor(cnn_regressor_class, skl2onnx, digits, n_outputs):
    """CNNRegressor alone (to_onnx) and in a Pipeline (skl2onnx): the
    graph's variable is predict's values, (n, n_outputs)."""
    X = digits[0]
    y = X[:, [27, 36]].reshape(len(X), 2)[:, :n_outputs]
    y = y.ravel() if n_outputs == 1 else y
    params = dict(input_shape=IMAGES, layers=REGRESSOR_LAYERS, max_iter=2, random_state=0)
    regressor = cnn_regressor_class(**params).fit(X, y)
    (variable,) = run(fastcnn_onnx.to_onnx(regressor), X.astype(np.float32))
    assert variable.shape == (len(X), n_outputs)
    np.testing.assert_allclose(variable, regressor.predict(X).reshape(len(X), -1),
                               rtol=1e-5, atol=1e-5)
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("cnn", cnn_regressor_class(**params))]).fit(X, y)
    model = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32))
    (variable,) = run(model, X.astype(np.float32))
    np.testing.assert_allclose(variable, pipeline.predict(X).reshape(len(X), -1),
                               rtol=1e-5, atol=1e-5)
