"""Tests of fastcnn.CNNClassifier as a scikit-learn estimator.

Every fit here is tiny (a few hundred 8x8 digits, one small convolution,
a handful of epochs), so the whole module runs in seconds. Equality checks
are bitwise wherever the estimator promises deterministic results.
"""
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (GridSearchCV, cross_val_score,
                                     train_test_split)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastcnn
import fastcnn._classifier as classifier_module
import fastcnn._network as network_module
from fastcnn import CNNClassifier, TrainingDivergedError
from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Flatten, MaxPool1D, MaxPool2D, ReLU)

# Most fits below stop at a deliberately small max_iter.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

#: a small, fast configuration; input_shape is added where X is flat
SMALL = dict(filters=(4,), hidden_layer_sizes=(16,), max_iter=3, random_state=0)

#: every fitted attribute the class docstring lists (feature_names_in_ only
#: exists for X with string column names, which needs pandas)
FITTED_ATTRIBUTES = ["classes_", "n_features_in_", "input_shape_", "network_",
                     "coefs_", "intercepts_", "loss_curve_", "best_loss_",
                     "validation_scores_", "best_validation_score_", "n_iter_",
                     "t_"]


# ================================================================= data

@pytest.fixture(scope="module")
def digits():
    """The first 300 digits, flat (n, 64), scaled to [0, 1] (exact in
    float32: multiples of 1/16)."""
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


@pytest.fixture(scope="module")
def small_digits(digits):
    X, y = digits
    return X[:120], y[:120]


def fit_proba(X, y, **params):
    clf = CNNClassifier(**{**SMALL, **params}).fit(X, y)
    return clf, clf.predict_proba(X)


@pytest.fixture
def no_training(monkeypatch):
    """Makes any forward or backward pass of a network an error: a
    ValueError raised under this fixture was raised before training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was validated")
    monkeypatch.setattr(network_module.Network, "forward", refuse)
    monkeypatch.setattr(network_module.Network, "backward", refuse)


# ============================================== 1. scikit-learn's checks

@parametrize_with_checks([CNNClassifier(filters=(8,), hidden_layer_sizes=(16,),
                                        max_iter=50, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ===================================================== 2. input forms

def test_image_forms_give_identical_predictions(small_digits):
    X, y = small_digits
    clf4, p4 = fit_proba(X.reshape(-1, 1, 8, 8), y)
    clf3, p3 = fit_proba(X.reshape(-1, 8, 8), y)
    clf2, p2 = fit_proba(X, y, input_shape=(1, 8, 8))
    assert clf4.input_shape_ == clf3.input_shape_ == clf2.input_shape_ == (1, 8, 8)
    assert clf4.n_features_in_ == clf3.n_features_in_ == clf2.n_features_in_ == 64
    np.testing.assert_array_equal(p3, p4)
    np.testing.assert_array_equal(p2, p4)
    # a fitted estimator accepts any of the equivalent forms
    np.testing.assert_array_equal(clf4.predict_proba(X), p4)
    np.testing.assert_array_equal(clf4.predict_proba(X.reshape(-1, 8, 8)), p4)
    np.testing.assert_array_equal(clf2.predict_proba(X.reshape(-1, 1, 8, 8)), p4)


@pytest.mark.parametrize("n_features", [1, 2, 3, 5, 13, 64])
def test_flat_X_is_a_one_channel_signal(n_features):
    rng = np.random.RandomState(n_features)
    X = rng.uniform(size=(60, n_features))
    y = (X.sum(axis=1) > n_features / 2).astype(int)
    y[:2] = [0, 1]
    clf = CNNClassifier(**SMALL).fit(X, y)
    assert clf.input_shape_ == (1, n_features)
    assert clf.n_features_in_ == n_features
    # a signal gets 1-D convolutions: weights (filters, channels, kernel)
    assert clf.coefs_[0].shape == (4, 1, 3)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 2)
    assert np.isfinite(proba).all()
    assert set(clf.predict(X)) <= {0, 1}


def test_signals_C_L(small_digits):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((60, 3, 10))
    y = (X[:, 0].mean(axis=1) > 0).astype(int)
    # declared (C, L)
    clf = CNNClassifier(input_shape=(3, 10), **SMALL).fit(X, y)
    assert clf.input_shape_ == (3, 10)
    assert clf.n_features_in_ == 30
    assert clf.coefs_[0].shape == (4, 3, 3)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 2) and np.isfinite(proba).all()
    # flat X of the same values predicts the same
    np.testing.assert_array_equal(clf.predict_proba(X.reshape(60, -1)), proba)
    # with explicit layers, a Conv1D first makes (n, C, L) a signal
    clf1d = CNNClassifier(layers=[Conv1D(4, 3, padding="same"), ReLU(), MaxPool1D(2)],
                          max_iter=3, random_state=0).fit(X, y)
    assert clf1d.input_shape_ == (3, 10)
    assert clf1d.coefs_[0].shape == (4, 3, 3)
    assert clf1d.predict(X).shape == (60,)


def _variants_float(X):
    """Forms of X (values exact in float32) that must predict as X does."""
    read_only = X.copy()
    read_only.flags.writeable = False
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    sliced = wide[:, ::2]
    assert not sliced.flags.c_contiguous
    return {
        "float32": X.astype(np.float32),
        "list": X.tolist(),
        "read-only": read_only,
        "fortran": np.asfortranarray(X),
        "sliced": sliced,
    }


@pytest.mark.parametrize("variant", ["float32", "list", "read-only", "fortran", "sliced"])
def test_input_variants_flat(small_digits, variant):
    X, y = small_digits
    _, expected = fit_proba(X, y, input_shape=(1, 8, 8))
    Xv = _variants_float(X)[variant]
    clf, proba = fit_proba(Xv, y, input_shape=(1, 8, 8))
    np.testing.assert_array_equal(proba, expected)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)


@pytest.mark.parametrize("variant", ["float32", "list", "read-only", "fortran", "sliced"])
def test_input_variants_images(small_digits, variant):
    X, y = small_digits
    X4 = X.reshape(-1, 1, 8, 8)
    _, expected = fit_proba(X4, y)
    read_only = X4.copy()
    read_only.flags.writeable = False
    wide = np.zeros((len(X4), 1, 8, 16))
    wide[..., ::2] = X4
    forms = {"float32": X4.astype(np.float32), "list": X4.tolist(),
             "read-only": read_only, "fortran": np.asfortranarray(X4),
             "sliced": wide[..., ::2]}
    clf, proba = fit_proba(forms[variant], y)
    assert clf.input_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(proba, expected)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.float32])
def test_input_integer_dtypes(small_digits, dtype):
    X, y = small_digits
    X_int = np.rint(X * 16)           # the raw 0..16 pixel values
    _, expected = fit_proba(X_int, y, input_shape=(1, 8, 8))
    _, proba = fit_proba(X_int.astype(dtype), y, input_shape=(1, 8, 8))
    np.testing.assert_array_equal(proba, expected)
    _, proba_list = fit_proba(X_int.astype(dtype).tolist(), y, input_shape=(1, 8, 8))
    np.testing.assert_array_equal(proba_list, expected)


# ========================================================= 3. targets

@pytest.mark.parametrize("kind", ["str", "bool", "int32", "float", "object"])
def test_label_types(small_digits, kind):
    X, y = small_digits
    y3 = y % 3
    labels = {
        "str": np.array(["b", "c", "a"])[y3],
        "bool": y3 > 0,
        "int32": y3.astype(np.int32),
        "float": y3.astype(np.float64),
        "object": np.array(["b", "c", "a"], dtype=object)[y3],
    }[kind]
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    assert clf.classes_.dtype == np.unique(labels).dtype
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype
    assert set(pred.tolist()) <= set(clf.classes_.tolist())
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(clf.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    # columns follow classes_: predict is the argmax column
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba),
                               rtol=1e-5, atol=1e-6)


def test_string_labels_same_model_as_integer_labels(small_digits):
    X, y = small_digits
    names = np.array([f"digit{d}" for d in range(10)])
    _, p_int = fit_proba(X, y, input_shape=(1, 8, 8))
    clf, p_str = fit_proba(X, names[y], input_shape=(1, 8, 8))
    # sorted string classes happen to follow the digits' order here
    np.testing.assert_array_equal(clf.classes_, names)
    np.testing.assert_array_equal(p_str, p_int)


# ================================================ 4. model selection

def test_pipeline_scores_well():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16, y, train_size=300, test_size=200, random_state=0, stratify=y)
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("cnn", CNNClassifier(input_shape=(1, 8, 8), filters=(4,),
                              hidden_layer_sizes=(16,), max_iter=10,
                              learning_rate_init=0.01, batch_size=32,
                              random_state=0)),
    ]).fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.8


def test_cross_val_score(digits):
    X, y = digits
    scores = cross_val_score(CNNClassifier(input_shape=(1, 8, 8), **SMALL), X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_grid_search_serial_and_parallel_agree(digits):
    X, y = digits
    X, y = X[:150], y[:150]
    custom = [Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2)]
    grid = {"filters": [(4,), (2,)], "kernel_size": [3, 1],
            "learning_rate_init": [0.01, 0.001], "layers": [None, custom]}
    base = CNNClassifier(input_shape=(1, 8, 8), hidden_layer_sizes=(16,),
                         max_iter=3, random_state=0)
    searches = [GridSearchCV(base, grid, cv=2, n_jobs=n_jobs).fit(X, y)
                for n_jobs in (1, 2)]
    serial, parallel = searches
    assert serial.best_params_ == parallel.best_params_
    np.testing.assert_array_equal(serial.cv_results_["mean_test_score"],
                                  parallel.cv_results_["mean_test_score"])
    # with layers given, filters and kernel_size are ignored: the scores
    # only depend on learning_rate_init
    results = serial.cv_results_
    by_rate = {}
    for params, score in zip(results["params"], results["mean_test_score"]):
        if params["layers"] is not None:
            by_rate.setdefault(params["learning_rate_init"], set()).add(score)
    assert len(by_rate) == 2
    assert all(len(scores) == 1 for scores in by_rate.values())


# ====================================================== 5. persistence

def test_clone_keeps_params_and_is_unfitted(small_digits):
    X, y = small_digits
    layers = [Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2)]
    clf = CNNClassifier(layers=layers, learning_rate_init=0.01, max_iter=2,
                        random_state=3, input_shape=(1, 8, 8)).fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.layers == layers
    assert not hasattr(copy, "network_")
    assert not hasattr(copy, "classes_")


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_round_trip_of_fitted_estimator(small_digits, tmp_path, how):
    X, y = small_digits
    clf, expected = fit_proba(X, y, input_shape=(1, 8, 8))
    if how == "pickle":
        loaded = pickle.loads(pickle.dumps(clf))
    else:
        path = tmp_path / "clf.joblib"
        joblib.dump(clf, path)
        loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.network_.params, clf.network_.params)
    assert loaded.input_shape_ == clf.input_shape_
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.loss_curve_ == clf.loss_curve_


def test_pickle_unfitted_estimator(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL)
    loaded = pickle.loads(pickle.dumps(clf))
    assert loaded.get_params() == clf.get_params()
    assert not hasattr(loaded, "network_")
    np.testing.assert_array_equal(loaded.fit(X, y).predict_proba(X),
                                  clf.fit(X, y).predict_proba(X))


ALL_SPECS = [Conv2D(4, 3, padding="same"), Conv2D(2, (3, 1), stride=(1, 2), padding=(1, 0)),
             Conv1D(2, 3, stride=2), MaxPool2D(2), MaxPool1D(2, stride=1),
             AvgPool2D((2, 1)), AvgPool1D(3), ReLU(), Flatten(), Dense(5)]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=repr)
def test_layer_specs_pickle_compare_and_hash(spec):
    loaded = pickle.loads(pickle.dumps(spec))
    assert loaded == spec
    assert hash(loaded) == hash(spec)
    assert {spec: 1}[loaded] == 1
    with pytest.raises(AttributeError):     # frozen
        spec.__setattr__("x", 1)


def test_layer_specs_compare_by_value():
    assert Conv2D(4, 3) == Conv2D(4, 3)
    assert Conv2D(4, 3) != Conv2D(5, 3)
    assert Dense(3) != Dense(4)
    assert MaxPool2D(2) != AvgPool2D(2)
    assert len({ReLU(), ReLU(), Flatten()}) == 2


def test_layer_spec_with_list_argument_is_hashable():
    spec = Conv2D(4, [3, 3])
    hash(spec)
    assert spec == Conv2D(4, (3, 3))


# ==================================================== 6. bad input

def test_nan_in_X(small_digits, no_training):
    X, y = small_digits
    X = X.copy()
    X[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        CNNClassifier(**SMALL).fit(X.reshape(-1, 1, 8, 8), y)


def test_inf_in_X(small_digits, no_training):
    X, y = small_digits
    X = X.copy()
    X[3, 5] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="infinity"):
        CNNClassifier(**SMALL).fit(X.reshape(-1, 1, 8, 8), y)


def test_y_of_wrong_length(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y[:-1])


def test_one_class(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="only one class"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, np.full(len(X), 7))


def test_fewer_than_two_samples(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="class|sample"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="sample"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X[:0], y[:0])


def test_input_shape_inconsistent_with_n_features(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match=r"input_shape=\(1, 8, 7\).*56.*64"):
        CNNClassifier(input_shape=(1, 8, 7), **SMALL).fit(X, y)


@pytest.mark.parametrize("shape", [(64,), (1, 1, 8, 8)])
def test_input_shape_of_wrong_length(small_digits, no_training, shape):
    X, y = small_digits
    with pytest.raises(ValueError, match="input_shape"):
        CNNClassifier(input_shape=shape, **SMALL).fit(X, y)


def test_predict_bad_input(small_digits):
    X, y = small_digits
    clf = CNNClassifier(**SMALL).fit(X.reshape(-1, 1, 8, 8), y)
    message = "X has 10 features, but CNNClassifier is expecting 64 features as input"
    with pytest.raises(ValueError, match=re.escape(message)):
        clf.predict(X[:, :10])
    with pytest.raises(ValueError, match=re.escape("(2, 4, 8)")):
        clf.predict(X.reshape(-1, 2, 4, 8))
    with pytest.raises(ValueError, match="1D array"):
        clf.predict(X[0])
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.where(X == 0, np.nan, X))
    # still fine afterwards
    assert clf.predict(X).shape == (len(X),)


def test_one_bad_row_gets_the_same_errors_as_a_batch(small_digits):
    # one-row predictions of float arrays take a quicker validation; what
    # it does not accept goes the general way, with its errors
    X, y = small_digits
    clf = CNNClassifier(**SMALL, input_shape=(1, 8, 8)).fit(X, y)
    row = X[:1].astype(np.float32)
    for bad, match in [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")]:
        broken = row.copy()
        broken[0, 7] = bad
        for method in (clf.predict, clf.predict_proba):
            with pytest.raises(ValueError, match=match):
                method(broken)
    with pytest.raises(ValueError, match="63 features"):
        clf.predict(row[:, :63])
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict(row[:0])
    with pytest.raises(ValueError, match="(?i)complex"):
        clf.predict(row.astype(np.complex64))
    # a huge but finite row overflows the quick check's sum: still predicted,
    # and without a warning about that sum
    huge = np.full((1, 64), np.finfo(np.float32).max, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert clf.predict(huge).shape == (1,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predictions_agree_whichever_way_x_is_validated(small_digits, dtype):
    X, y = small_digits
    clf = CNNClassifier(**SMALL, input_shape=(1, 8, 8), dtype=dtype).fit(X, y)
    general = clf.predict_proba(X.tolist())           # a list: the general way
    for quick in (X, X.astype(np.float32), X.astype(np.float16),
                  X.reshape(-1, 1, 8, 8), np.asfortranarray(X), X[::-1][::-1]):
        np.testing.assert_allclose(clf.predict_proba(quick), general,
                                   rtol=1e-3 if quick.dtype == np.float16 else 0)
    for i in range(3):   # one row at a time, as when serving
        np.testing.assert_array_equal(clf.predict_proba(X[i:i + 1]), general[i:i + 1])


BAD_PARAMS = [
    ("solver", "lbfgs", "solver"),
    ("learning_rate_init", 0, "learning_rate_init"),
    ("learning_rate_init", -1, "learning_rate_init"),
    ("momentum", 2, "momentum"),
    ("batch_size", 0, "batch_size"),
    ("batch_size", "big", "batch_size"),
    ("max_iter", 0, "max_iter"),
    ("alpha", -1, "alpha"),
    ("validation_fraction", 1.0, "validation_fraction"),
    ("n_iter_no_change", 0, "n_iter_no_change"),
    ("dtype", "float16", "dtype"),
    ("padding", "full", "padding"),
    ("filters", (0,), "filters"),
    ("kernel_size", 0, "kernel_size"),
    ("layers", [object()], re.escape("layers[0]")),
    ("layers", "conv", "layers"),
    ("n_threads", 0, "n_threads"),
    ("input_shape", (0, 8, 8), "input_shape"),
    ("pool_size", 0, "pool_size"),
    ("hidden_layer_sizes", (0,), "hidden_layer_sizes"),
    ("beta_1", 1.0, "beta_1"),
    ("beta_2", -0.1, "beta_2"),
    ("epsilon", 0, "epsilon"),
    ("tol", -1, "tol"),
    ("verbose", -1, "verbose"),
    ("shuffle", "yes", "shuffle"),
    ("early_stopping", "yes", "early_stopping"),
    ("early_stopping", None, "early_stopping"),
    ("max_iter", 2.0, "max_iter"),
    ("learning_rate_init", np.nan, "learning_rate_init"),
]


@pytest.mark.parametrize("name, value, match", BAD_PARAMS,
                         ids=[f"{n}={v!r}" for n, v, _ in BAD_PARAMS])
def test_bad_hyperparameter(small_digits, no_training, name, value, match):
    X, y = small_digits
    clf = CNNClassifier(**{**SMALL, "input_shape": (1, 8, 8), name: value})
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "network_")


@pytest.mark.parametrize("name", ["alpha", "learning_rate_init"])
def test_infinite_hyperparameter_rejected_before_training(small_digits, no_training, name):
    X, y = small_digits
    with pytest.raises(ValueError, match=name):
        CNNClassifier(**{**SMALL, "input_shape": (1, 8, 8), name: np.inf}).fit(X, y)


@pytest.mark.parametrize("make, match", [
    (lambda: Conv2D(0, 3), "filters"),
    (lambda: Conv2D(4, 0), "kernel_size"),
    (lambda: Conv2D(4, 2, padding="same"), "odd"),
    (lambda: Conv2D(4, 3, stride=0), "stride"),
    (lambda: Conv2D(4, 3, padding=-1), "padding"),
    (lambda: Conv1D(4, (3, 3)), "kernel_size"),
    (lambda: MaxPool2D(0), "pool_size"),
    (lambda: AvgPool1D(2, stride=0), "stride"),
    (lambda: Dense(0), "units"),
    (lambda: Dense(2.5), "units"),
], ids=["conv-filters", "conv-kernel", "even-same", "stride", "padding",
        "conv1d-tuple", "pool", "pool-stride", "dense", "dense-float"])
def test_layer_specs_validate_on_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_layer_kernel_larger_than_input(small_digits, no_training):
    X, y = small_digits
    clf = CNNClassifier(layers=[Conv2D(4, 9)], input_shape=(1, 8, 8),
                        max_iter=2, random_state=0)
    with pytest.raises(ValueError, match=re.escape("layers[0]")):
        clf.fit(X, y)
    clf = CNNClassifier(layers=[Dense(4), Conv2D(4, 3)], input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=re.escape("layers[1]")):
        clf.fit(X, y)


def test_simple_kernel_too_large_for_valid_padding(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="kernel_size"):
        CNNClassifier(input_shape=(1, 8, 8), kernel_size=9, padding="valid",
                      **SMALL).fit(X, y)


# ====================================================== 7. divergence

def _fit_then_diverge(X, y, lr, **params):
    clf = CNNClassifier(input_shape=(1, 8, 8), solver="sgd", max_iter=2,
                        filters=(4,), hidden_layer_sizes=(16,), random_state=0,
                        **params).fit(X, y)
    state = (clf.network_.params.copy(), list(clf.loss_curve_), clf.n_iter_, clf.t_)
    clf.set_params(warm_start=True, learning_rate_init=lr)
    with pytest.raises(TrainingDivergedError, match="learning_rate_init") as info:
        clf.fit(X, y)
    assert isinstance(info.value, ValueError)
    return clf, state


# one batch per epoch (all 120 samples) and six
@pytest.mark.parametrize("lr, batch_size", [(1e30, 120), (1e8, 20)])
def test_divergence_keeps_last_good_weights(small_digits, lr, batch_size):
    X, y = small_digits
    clf, (params, curve, n_iter, t) = _fit_then_diverge(X, y, lr, batch_size=batch_size)
    np.testing.assert_array_equal(clf.network_.params, params)
    assert clf.loss_curve_ == curve
    assert clf.n_iter_ == n_iter and clf.t_ == t
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    assert clf.predict(X).shape == (len(X),)


def test_divergence_detected_with_one_batch_per_epoch(small_digits):
    X, y = small_digits
    one_batch = dict(input_shape=(1, 8, 8), solver="sgd", filters=(4,),
                     hidden_layer_sizes=(16,), batch_size=len(X), random_state=0)
    clf = CNNClassifier(max_iter=2, **one_batch).fit(X, y)
    clf.set_params(warm_start=True, learning_rate_init=1e8, max_iter=50)
    with pytest.raises(TrainingDivergedError, match="learning_rate_init"):
        clf.fit(X, y)
    # the weights kept are those of the last completed epoch: replaying that
    # many epochs without divergence gives the same bits
    good_epochs = clf.n_iter_ - 2
    replay = CNNClassifier(max_iter=2, **one_batch).fit(X, y)
    if good_epochs:
        replay.set_params(warm_start=True, learning_rate_init=1e8,
                          max_iter=good_epochs).fit(X, y)
    np.testing.assert_array_equal(clf.network_.params, replay.network_.params)
    # the model it leaves predicts finite probabilities on what it was checked on
    assert np.isfinite(clf.predict_proba(X)).all()


def test_warm_start_continues_after_divergence(small_digits):
    X, y = small_digits
    clf, (params, curve, n_iter, t) = _fit_then_diverge(X, y, 1e30)
    clf.set_params(learning_rate_init=0.001)
    clf.fit(X, y)
    assert clf.n_iter_ == n_iter + 2
    assert np.isfinite(clf.network_.params).all()


# ================================================ 8. KeyboardInterrupt

def _interrupt_on_call(monkeypatch, k):
    original = network_module.Network.forward
    calls = [0]

    def forward(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)
    monkeypatch.setattr(network_module.Network, "forward", forward)
    return calls


INTERRUPTED = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
                   batch_size=40, random_state=0)   # 3 batches per epoch on 120


# each epoch makes 4 forward calls: 3 batches and the check of its last step
@pytest.mark.parametrize("k", [9, 10, 11, 12])   # within epoch 3
def test_keyboard_interrupt_keeps_last_epoch(small_digits, monkeypatch, k):
    X, y = small_digits
    reference = CNNClassifier(max_iter=2, **INTERRUPTED).fit(X, y)
    calls = _interrupt_on_call(monkeypatch, k)
    clf = CNNClassifier(max_iter=10, **INTERRUPTED)
    with pytest.warns(UserWarning, match="interrupted"):
        clf.fit(X, y)
    assert calls[0] == k
    monkeypatch.undo()
    assert clf.n_iter_ == 2
    assert len(clf.loss_curve_) == 2
    assert clf.loss_curve_ == reference.loss_curve_
    np.testing.assert_array_equal(clf.network_.params, reference.network_.params)
    np.testing.assert_array_equal(clf.predict_proba(X), reference.predict_proba(X))


def test_warm_start_after_interrupt_matches_uninterrupted(small_digits, monkeypatch):
    X, y = small_digits
    reference = CNNClassifier(max_iter=2, **INTERRUPTED).fit(X, y)
    reference.set_params(warm_start=True, max_iter=1).fit(X, y)
    _interrupt_on_call(monkeypatch, 10)
    clf = CNNClassifier(max_iter=10, **INTERRUPTED)
    with pytest.warns(UserWarning, match="interrupted"):
        clf.fit(X, y)
    monkeypatch.undo()
    clf.set_params(warm_start=True, max_iter=1).fit(X, y)
    np.testing.assert_array_equal(clf.network_.params, reference.network_.params)


# =================================================== 9. reproducibility

def test_results_identical_for_any_thread_count(small_digits):
    X, y = small_digits
    runs = []
    for n_threads in (1, 2, 4, 1, 2):
        clf = CNNClassifier(input_shape=(1, 8, 8), batch_size=40, n_threads=n_threads,
                            **SMALL).fit(X, y)
        runs.append((clf.network_.params.copy(), clf.loss_curve_, clf.predict_proba(X)))
    params, curve, proba = runs[0]
    for other_params, other_curve, other_proba in runs[1:]:
        np.testing.assert_array_equal(other_params, params)
        assert other_curve == curve
        np.testing.assert_array_equal(other_proba, proba)


def test_different_random_state_gives_different_weights(small_digits):
    X, y = small_digits
    a = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    b = CNNClassifier(input_shape=(1, 8, 8), **{**SMALL, "random_state": 1}).fit(X, y)
    assert not np.array_equal(a.network_.params, b.network_.params)
    assert a.loss_curve_ != b.loss_curve_


# ======================================================= 10. partial_fit

def test_partial_fit(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
                        random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    assert not hasattr(clf, "network_")
    clf.partial_fit(X[:60], y[:60], classes=np.arange(10))
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.n_iter_ == 1 and clf.t_ == 60
    params = clf.network_.params.copy()
    clf.partial_fit(X[60:], y[60:])
    assert clf.n_iter_ == 2 and clf.t_ == 120
    assert len(clf.loss_curve_) == 2
    assert not np.array_equal(clf.network_.params, params)
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 3
    assert clf.predict_proba(X).shape == (len(X), 10)


def test_partial_fit_classes_not_all_seen(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL)
    clf.partial_fit(X[:30], y[:30] % 2, classes=[0, 1, 2])
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    assert clf.predict_proba(X).shape == (len(X), 3)


def test_partial_fit_unknown_label_and_wrong_features(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL)
    clf.partial_fit(X, y, classes=np.arange(10))
    params = clf.network_.params.copy()
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X, np.where(y == 3, 42, y))
    with pytest.raises(ValueError, match="X has 10 features"):
        clf.partial_fit(X[:, :10], y)
    np.testing.assert_array_equal(clf.network_.params, params)
    assert clf.n_iter_ == 1


# ==================================================== 11. early stopping

def test_early_stopping_attributes(digits):
    X, y = digits
    clf = CNNClassifier(input_shape=(1, 8, 8), early_stopping=True,
                        **{**SMALL, "max_iter": 6}).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_ == 6
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert all(0 <= s <= 1 for s in clf.validation_scores_)
    assert clf.best_loss_ is None
    assert len(clf.loss_curve_) == clf.n_iter_
    # the weights of the best epoch are kept: those of a fit stopped there
    best = int(np.argmax(clf.validation_scores_)) + 1
    stopped = CNNClassifier(input_shape=(1, 8, 8), early_stopping=True,
                            **{**SMALL, "max_iter": best}).fit(X, y)
    np.testing.assert_array_equal(clf.network_.params, stopped.network_.params)


def test_without_early_stopping(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    assert clf.validation_scores_ is None
    assert clf.best_validation_score_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)


def _tiled_digits(X, y, n):
    repeats = -(-n // len(X))
    return np.tile(X, (repeats, 1))[:n], np.tile(y, repeats)[:n]


@pytest.mark.parametrize("n_samples, holds_out", [(10_000, False), (10_001, True)])
def test_auto_early_stopping_above_10000_samples(small_digits, n_samples, holds_out):
    """early_stopping='auto' (the default) holds out validation data only
    for a fit on more than 10000 samples, as HistGradientBoosting's 'auto'."""
    X, y = _tiled_digits(*small_digits, n_samples)
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(2,), hidden_layer_sizes=(),
                        batch_size=1000, max_iter=1, random_state=0)
    assert clf.early_stopping == "auto"
    clf.fit(X, y)
    assert (clf.validation_scores_ is not None) == holds_out
    assert (clf.best_loss_ is None) == holds_out
    # the held-out tenth is not trained on
    assert clf.t_ == (n_samples - -(-n_samples // 10) if holds_out else n_samples)


@pytest.mark.parametrize("early_stopping", [True, "auto"])
def test_partial_fit_never_holds_out(small_digits, early_stopping):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), early_stopping=early_stopping, **SMALL)
    clf.partial_fit(X, y, classes=np.arange(10))
    clf.partial_fit(X, y)
    assert clf.t_ == 2 * len(X)
    assert clf.validation_scores_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)
    # and after a fit that held data out, partial_fit trains on all of X
    clf = CNNClassifier(input_shape=(1, 8, 8), early_stopping=True, **SMALL).fit(X, y)
    t = clf.t_
    clf.partial_fit(X, y)
    assert clf.t_ == t + len(X)


@pytest.mark.parametrize("n_samples, batches", [(120, [32, 32, 32, 24]), (20, [20])])
def test_auto_batch_size_is_32(small_digits, monkeypatch, n_samples, batches):
    X, y = small_digits[0][:n_samples], small_digits[1][:n_samples]
    sizes = []
    original = network_module.Network.forward

    def forward(self, x, *args, **kwargs):
        sizes.append(len(x))
        return original(self, x, *args, **kwargs)
    monkeypatch.setattr(network_module.Network, "forward", forward)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # no clipping warning
        warnings.simplefilter("ignore", ConvergenceWarning)
        CNNClassifier(input_shape=(1, 8, 8), **{**SMALL, "max_iter": 1}).fit(X, y)
    # the batches, then the check of the epoch's last step on its last batch
    assert sizes == batches + batches[-1:]


@pytest.mark.parametrize("early_stopping", [False, True])
def test_huge_tol_stops_early(small_digits, early_stopping):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), tol=10, n_iter_no_change=2,
                        early_stopping=early_stopping, **{**SMALL, "max_iter": 30})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.n_iter_ < 30
    assert clf.n_iter_ <= 2 + 2   # at most one epoch more than documented
    assert len(clf.loss_curve_) == clf.n_iter_


@pytest.mark.parametrize("n_iter_no_change", [1, 3])
def test_huge_tol_stops_like_mlp_classifier(small_digits, n_iter_no_change):
    """Stopping follows MLPClassifier's rule: more than n_iter_no_change
    epochs in a row without an improvement of tol (the first epoch sets the
    best loss), so n_iter_no_change + 2 epochs when nothing counts as one."""
    from sklearn.neural_network import MLPClassifier
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), tol=10, n_iter_no_change=n_iter_no_change,
                        **{**SMALL, "max_iter": 30}).fit(X, y)
    mlp = MLPClassifier(tol=10, n_iter_no_change=n_iter_no_change, max_iter=30,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ == mlp.n_iter_ == n_iter_no_change + 2


def test_max_iter_reached_warns(small_digits):
    X, y = small_digits
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)


# ======================================================= 12. warm start

def test_warm_start_continues(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), warm_start=True,
                        **{**SMALL, "max_iter": 2}).fit(X, y)
    params, curve = clf.network_.params.copy(), list(clf.loss_curve_)
    network = clf.network_
    clf.fit(X, y)
    assert clf.n_iter_ == 4
    assert clf.t_ == 4 * len(X)
    assert len(clf.loss_curve_) == 4 and clf.loss_curve_[:2] == curve
    assert clf.network_ is network               # not rebuilt
    assert not np.array_equal(clf.network_.params, params)
    # not re-initialised: a cold fit with the same seed starts elsewhere
    cold = CNNClassifier(input_shape=(1, 8, 8), **{**SMALL, "max_iter": 2}).fit(X, y)
    assert not np.array_equal(clf.network_.params, cold.network_.params)
    # without warm_start, fit starts over
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.n_iter_ == 2
    np.testing.assert_array_equal(clf.network_.params, cold.network_.params)


def test_warm_start_with_different_classes(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), warm_start=True, **SMALL).fit(X, y)
    params = clf.network_.params.copy()
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, y % 5)
    np.testing.assert_array_equal(clf.network_.params, params)


@pytest.mark.parametrize("first", [False, True])
def test_warm_start_toggling_early_stopping(small_digits, first):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), early_stopping=first,
                        **{**SMALL, "max_iter": 2}).fit(X, y)
    clf.set_params(warm_start=True, early_stopping=not first)
    try:
        clf.fit(X, y)
    except ValueError:
        return      # a clear refusal would be acceptable
    assert clf.n_iter_ == 4
    if not first:
        assert len(clf.validation_scores_) >= 2


# ========================================================== 13. verbose

def test_verbose_1(small_digits, capsys):
    X, y = small_digits
    CNNClassifier(input_shape=(1, 8, 8), verbose=1, **SMALL).fit(X, y)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 3
    for i, line in enumerate(lines, start=1):
        assert f"Epoch {i}" in line
        assert "loss" in line and "s," in line and "images/s" in line
    assert "[" not in "".join(lines)


def test_verbose_2_progress_bar(small_digits, capsys):
    X, y = small_digits
    CNNClassifier(input_shape=(1, 8, 8), verbose=2, batch_size=40, **SMALL).fit(X, y)
    out = capsys.readouterr().out
    assert "[" in out and "=" in out
    assert "images/s" in out
    assert out.count("Epoch 3 [") == 3      # one update per batch


def test_verbose_0_is_silent(small_digits, capsys):
    X, y = small_digits
    CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    assert capsys.readouterr().out == ""


# =================================================== 14. batched predict

@pytest.mark.parametrize("buffer_bytes", [1, 3000])
def test_batched_prediction(small_digits, monkeypatch, buffer_bytes):
    X, y = small_digits
    clf, expected = fit_proba(X, y, input_shape=(1, 8, 8))
    monkeypatch.setattr(classifier_module, "_PREDICT_BUFFER_BYTES", buffer_bytes)
    calls = []
    original = network_module.Network.forward

    def forward(self, x, *args, **kwargs):
        calls.append(len(x))
        return original(self, x, *args, **kwargs)
    monkeypatch.setattr(network_module.Network, "forward", forward)
    np.testing.assert_array_equal(clf.predict_proba(X), expected)
    assert len(calls) > 1 and sum(calls) == len(X)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[expected.argmax(axis=1)])


def test_concurrent_predictions_agree(small_digits):
    from concurrent.futures import ThreadPoolExecutor
    X, y = small_digits
    clf, expected = fit_proba(X, y, input_shape=(1, 8, 8))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: clf.predict_proba(X), range(8)))
    for proba in results:
        np.testing.assert_array_equal(proba, expected)


def test_predictions_follow_partial_fit(small_digits):
    # predictions reuse an inference copy of the network; it must see the
    # weights of every later update
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    before = clf.predict_proba(X)
    clf.partial_fit(X, y)
    after = clf.predict_proba(X)
    assert not np.array_equal(before, after)
    fresh = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(fresh.predict_proba(X), after)


# ===================================================== 15. dtype, shapes

def test_float64(small_digits):
    X, y = small_digits
    clf, proba = fit_proba(X, y, input_shape=(1, 8, 8), dtype="float64")
    assert all(w.dtype == np.float64 for w in clf.coefs_)
    assert all(b.dtype == np.float64 for b in clf.intercepts_)
    assert proba.dtype == np.float64
    assert clf.predict_log_proba(X).dtype == np.float64


def test_float32_default(small_digits):
    X, y = small_digits
    clf, proba = fit_proba(X, y, input_shape=(1, 8, 8))
    assert all(w.dtype == np.float32 for w in clf.coefs_)
    assert all(b.dtype == np.float32 for b in clf.intercepts_)
    assert proba.dtype == np.float32


def test_coefs_shapes_follow_architecture(small_digits):
    X, y = small_digits
    clf = CNNClassifier(filters=(4, 8), kernel_size=3, hidden_layer_sizes=(16,),
                        max_iter=2, random_state=0).fit(X.reshape(-1, 1, 8, 8), y)
    assert [w.shape for w in clf.coefs_] == [(4, 1, 3, 3), (8, 4, 3, 3),
                                             (16, 8 * 2 * 2), (10, 16)]
    assert [b.shape for b in clf.intercepts_] == [(4,), (8,), (16,), (10,)]
    # views into the network's parameters
    for w in clf.coefs_:
        assert np.shares_memory(w, clf.network_.params)


def test_coefs_shapes_without_hidden_layers(small_digits):
    X, y = small_digits
    clf = CNNClassifier(filters=(), hidden_layer_sizes=(), max_iter=2,
                        random_state=0, input_shape=(1, 8, 8)).fit(X, y % 3)
    assert [w.shape for w in clf.coefs_] == [(3, 64)]
    assert [b.shape for b in clf.intercepts_] == [(3,)]
    assert np.isfinite(clf.predict_proba(X)).all()


# ============================================== 16. fitted attributes

def test_fitted_attributes(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL)
    public = [name for name in dir(clf) if name.endswith("_") and not name.startswith("_")]
    for name in FITTED_ATTRIBUTES + public:
        assert not hasattr(clf, name), name
    assert not [name for name in vars(clf) if name.endswith("_")]
    clf.fit(X, y)
    for name in FITTED_ATTRIBUTES:
        assert hasattr(clf, name), name
    assert clf.n_iter_ == 3 and clf.t_ == 3 * len(X)
    assert clf.n_features_in_ == 64
    assert clf.input_shape_ == (1, 8, 8)
    assert len(clf.coefs_) == len(clf.intercepts_) == 3
    assert not hasattr(clf, "feature_names_in_")   # X had no column names


def test_package_exports():
    assert fastcnn.CNNClassifier is CNNClassifier
    assert issubclass(fastcnn.TrainingDivergedError, ValueError)


# ============================================ threads seen by the kernels

def _record_kernel_threads(monkeypatch):
    """The n_threads every kernel call of a fit receives: the network's
    layers run calls prepared with functional.prepare, the fit loop calls
    functions."""
    seen = set()
    run = fastcnn.functional._calls.KernelCall.run

    def run_spy(self, n_threads):
        seen.add(n_threads)
        return run(self, n_threads)
    monkeypatch.setattr(fastcnn.functional._calls.KernelCall, "run", run_spy)
    for name in ("adam_update", "take_samples"):
        original = getattr(fastcnn.functional, name)

        def spy(*args, _original=original, **kwargs):
            bound = kwargs.get("n_threads")
            if bound is None:
                # n_threads may be positional
                import inspect
                names = list(inspect.signature(_original).parameters)
                index = names.index("n_threads")
                bound = args[index] if len(args) > index else None
            seen.add(bound)
            return _original(*args, **kwargs)
        monkeypatch.setattr(fastcnn.functional, name, spy)
    return seen


def test_threadpool_limits_around_fit_makes_it_single_threaded(small_digits, monkeypatch):
    from threadpoolctl import threadpool_limits
    X, y = small_digits
    seen = _record_kernel_threads(monkeypatch)
    with threadpool_limits(limits=1):
        limited = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    assert seen == {1}
    seen.clear()
    CNNClassifier(input_shape=(1, 8, 8), n_threads=2, **SMALL).fit(X, y)
    assert seen == {2}
    reference = CNNClassifier(input_shape=(1, 8, 8), n_threads=3, **SMALL).fit(X, y)
    np.testing.assert_array_equal(limited.network_.params, reference.network_.params)
