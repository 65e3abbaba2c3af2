"""Tests of fastcnn._classifier: CNNClassifier as a scikit-learn estimator.

scikit-learn's own checks, the forms X may take, model selection,
persistence, the validation of X, predictions in batches, dtypes and the
fitted attributes. What the estimator delegates is tested by module: the
training loop in test_training.py and test_interrupt.py, labels in
test_labels.py, hyperparameters in test_parameters.py, layer specifications
in test_layers.py, thread counts in test_threads.py.

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
from sklearn.model_selection import (GridSearchCV, cross_val_score,
                                     train_test_split)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastcnn
import fastcnn._base as base_module
import fastcnn._network as network_module
from fastcnn import CNNClassifier, InputShapeWarning
from fastcnn.layers import Conv1D, Conv2D, Dense, MaxPool1D, MaxPool2D, ReLU
from _helpers.estimators import EXPECTED_FAILED_CHECKS, SMALL, fit_proba

# Most fits below stop at a deliberately small max_iter.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

#: every fitted attribute the class docstring lists (feature_names_in_ only
#: exists for X with string column names, which needs pandas)
FITTED_ATTRIBUTES = ["classes_", "n_features_in_", "input_shape_", "network_",
                     "coefs_", "intercepts_", "loss_curve_", "best_loss_",
                     "validation_scores_", "best_validation_score_", "n_iter_",
                     "t_"]


# ============================================= 1. scikit-learn's checks

@parametrize_with_checks([CNNClassifier(filters=(8,), hidden_layer_sizes=(16,),
                                        max_iter=50, random_state=0)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ======================================================= 2. input forms

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


def test_ambiguous_3d_X_warns_and_input_shape_decides():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((40, 3, 12))
    y = np.arange(40) % 2
    with pytest.warns(InputShapeWarning, match=r"input_shape=\(3, 12\)"):
        clf = CNNClassifier(**SMALL).fit(X, y)
    assert clf.input_shape_ == (1, 3, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputShapeWarning)
        # declared either way, or decided by a 1-D first layer: no warning
        as_series = CNNClassifier(input_shape=(3, 12), **SMALL).fit(X, y)
        as_images = CNNClassifier(input_shape=(1, 3, 12), **SMALL).fit(X, y)
        CNNClassifier(layers=[Conv1D(4, 3)], max_iter=2, random_state=0).fit(X, y)
        as_series.predict(X)
    assert as_series.input_shape_ == (3, 12) and as_series.coefs_[0].ndim == 3
    assert as_images.input_shape_ == (1, 3, 12) and as_images.coefs_[0].ndim == 4


def test_series_of_unequal_length_get_a_clear_error(no_training):
    X = [np.zeros((2, 30)), np.zeros((2, 30)), np.zeros((2, 28))]
    with pytest.raises(ValueError, match=r"different shapes.*\(2, 28\).*\(2, 30\)"
                       r".*[Rr]esample.*pad"):
        CNNClassifier(**SMALL).fit(X, [0, 1, 0])


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


# =================================================== 3. model selection

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


# ======================================================= 4. persistence

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


# ========================================================= 5. bad input

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


# =================================================== 6. batched predict

@pytest.mark.parametrize("buffer_bytes", [1, 3000])
def test_batched_prediction(small_digits, monkeypatch, buffer_bytes):
    X, y = small_digits
    clf, expected = fit_proba(X, y, input_shape=(1, 8, 8))
    monkeypatch.setattr(base_module, "_PREDICT_BUFFER_BYTES", buffer_bytes)
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


# ===================================================== 7. dtype, shapes

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


# ================================================= 8. fitted attributes

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


def test_even_kernel_with_same_padding_keeps_the_size(small_digits):
    """The simple family at padding='same' with an even kernel pads one
    more zero after than before, as PyTorch does; a dilated layer trains
    in a given architecture."""
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **{**SMALL, "kernel_size": 2}).fit(X, y)
    conv = clf.network_.layers[0]
    assert conv.padding == ((0, 1), (0, 1)) and conv.output_shape[1:] == (8, 8)
    dilated = CNNClassifier(input_shape=(1, 8, 8), layers=[
        Conv2D(4, 3, padding="same", dilation=2), ReLU()], **SMALL).fit(X, y)
    assert dilated.network_.layers[0].output_shape == (4, 8, 8)


# ================================================ the simple family's switches

def _spec_names(clf):
    return [type(spec).__name__ for spec in clf.network_.specs]


def test_activation_batch_norm_dropout_switches_build_the_layers(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(8,),
                        activation="tanh", batch_norm=True, dropout=0.25,
                        max_iter=2, random_state=0).fit(X, y)
    assert _spec_names(clf) == ["Conv2D", "BatchNorm2D", "Tanh", "MaxPool2D", "Dropout",
                                "Dense", "BatchNorm1D", "Tanh", "Dropout", "Dense"]
    assert {spec.rate for spec in clf.network_.specs if type(spec).__name__ == "Dropout"} == {0.25}
    signals = CNNClassifier(filters=(4,), hidden_layer_sizes=(), activation="elu",
                            batch_norm=True, max_iter=2, random_state=0).fit(X, y)
    assert _spec_names(signals) == ["Conv1D", "BatchNorm1D", "ELU", "MaxPool1D", "Dense"]


@pytest.mark.parametrize("name, layer", [("relu", "ReLU"), ("tanh", "Tanh"),
                                         ("logistic", "Sigmoid"), ("leaky_relu", "LeakyReLU"),
                                         ("elu", "ELU")])
def test_activation_names_are_mlpclassifiers(small_digits, name, layer):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), filters=(3,), hidden_layer_sizes=(5,),
                        activation=name, max_iter=1, random_state=0).fit(X, y)
    assert _spec_names(clf).count(layer) == 2


def test_global_pool_auto_takes_over_long_series():
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((20, 2, 1460)), np.arange(20) % 2
    auto = CNNClassifier(input_shape=(2, 1460), max_iter=1, random_state=0).fit(X, y)
    flat = CNNClassifier(input_shape=(2, 1460), max_iter=1, random_state=0,
                         global_pool=None).fit(X, y)
    assert "GlobalAvgPool1D" in _spec_names(auto) and "GlobalAvgPool1D" not in _spec_names(flat)
    # 365 x 32 values a series out of the blocks: flattened, the first
    # dense layer alone has 1.5 million weights
    assert auto.network_.params.size < 10_000 < 1_000_000 < flat.network_.params.size
    as_max = CNNClassifier(input_shape=(2, 1460), max_iter=1, random_state=0,
                           global_pool="max").fit(X, y)
    assert "GlobalMaxPool1D" in _spec_names(as_max)


def test_global_pool_auto_keeps_small_images_flat(small_digits):
    X, y = small_digits
    clf = CNNClassifier(input_shape=(1, 8, 8), **SMALL).fit(X, y)
    assert not any(name.startswith("Global") for name in _spec_names(clf))


def test_switches_are_ignored_with_explicit_layers(small_digits):
    X, y = small_digits
    clf = CNNClassifier(layers=[Conv2D(3, 3), ReLU()], input_shape=(1, 8, 8),
                        activation="tanh", batch_norm=True, dropout=0.5,
                        global_pool="max", max_iter=1, random_state=0).fit(X, y)
    assert _spec_names(clf) == ["Conv2D", "ReLU", "Dense"]


def test_grid_search_over_the_switches(small_digits):
    X, y = small_digits
    search = GridSearchCV(CNNClassifier(input_shape=(1, 8, 8), filters=(4,),
                                        hidden_layer_sizes=(8,), max_iter=2, random_state=0),
                          {"activation": ["relu", "tanh"], "batch_norm": [False, True]}, cv=2)
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
