"""Tests of fastcnn._regressor: CNNRegressor as a scikit-learn estimator.

scikit-learn's own checks, a fit on a real regression problem, several
outputs, reproducibility across thread counts, partial_fit and warm_start,
early stopping on the validation R^2, and the errors for bad targets. The
loss is tested in test_loss.py (NumPy reference, finite differences) and
against PyTorch's, through whole networks and CNNRegressor's own fit, in
test_torch_equivalence.py; transform and the fitted attributes it shares
with CNNClassifier in test_base.py.
"""
import math

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastcnn
from _helpers.estimators import EXPECTED_FAILED_CHECKS
from fastcnn import CNNRegressor

# Most fits below stop at a deliberately small max_iter.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
             max_iter=3, random_state=0)


@pytest.fixture(scope="module")
def centres():
    """The digits (pixels in [0, 1]) and the centre of each digit's ink,
    (row, column): a smooth, nonlinear function of the pixels."""
    X, _ = load_digits(return_X_y=True)
    X = X / 16
    images = X.reshape(-1, 8, 8)
    ink = images.sum(axis=(1, 2))
    rows = (images.sum(axis=2) * np.arange(8)).sum(axis=1) / ink
    columns = (images.sum(axis=1) * np.arange(8)).sum(axis=1) / ink
    return X, np.stack([rows, columns], axis=1)


# ============================================= 1. scikit-learn's checks

@parametrize_with_checks([CNNRegressor(filters=(8,), hidden_layer_sizes=(16,),
                                       max_iter=50, random_state=0)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_package_exports():
    assert fastcnn.CNNRegressor is CNNRegressor
    assert "CNNRegressor" in fastcnn.__all__


# ============================================ 2. a real regression problem

def test_fits_the_centre_of_the_ink(centres):
    """Both coordinates of the ink's centre, on a held-out quarter of the
    digits: R^2 above 0.9 each (0 is the mean's)."""
    X, y = centres
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25,
                                                        random_state=0)
    regressor = CNNRegressor(input_shape=(1, 8, 8), filters=(8,), pool_size=None,
                             hidden_layer_sizes=(32,), max_iter=30,
                             random_state=0).fit(X_train, y_train)
    predictions = regressor.predict(X_test)
    assert predictions.shape == y_test.shape and predictions.dtype == np.float64
    per_output = r2_score(y_test, predictions, multioutput="raw_values")
    assert (per_output > 0.9).all(), per_output
    assert regressor.score(X_test, y_test) == pytest.approx(per_output.mean(), rel=1e-12)
    # the loss curve is the squared error's: half the mean squared residual
    # summed over the outputs, which the training ends well below the
    # targets' own spread
    assert regressor.loss_curve_[-1] < 0.1 * 0.5 * y_train.var(axis=0).sum()


# ====================================================== 3. several outputs

@pytest.mark.parametrize("shape", [(None,), (None, 1), (None, 2), (None, 5)], ids=str)
def test_predict_has_the_dimensions_of_y(centres, shape):
    X, y = centres
    X, y = X[:150], y[:150]
    if len(shape) == 1:
        targets = y[:, 0]
    else:
        targets = np.column_stack([y[:, 0] * (k + 1) - k for k in range(shape[1])])
    regressor = CNNRegressor(**SMALL).fit(X, targets)
    predictions = regressor.predict(X)
    assert predictions.shape == targets.shape
    assert predictions.dtype == np.float64
    assert regressor.n_outputs_ == (1 if targets.ndim == 1 else targets.shape[1])
    assert regressor.coefs_[-1].shape == (regressor.n_outputs_, 16)


def test_each_output_is_its_own_target(centres):
    """Two outputs trained together predict each its own coordinate: the
    rows' predictions fit the rows better than the columns, and so on."""
    X, y = centres
    regressor = CNNRegressor(input_shape=(1, 8, 8), filters=(8,), pool_size=None,
                             hidden_layer_sizes=(32,), max_iter=10,
                             random_state=0).fit(X, y)
    predictions = regressor.predict(X)
    assert r2_score(y[:, 0], predictions[:, 0]) > 0.7
    assert r2_score(y[:, 1], predictions[:, 1]) > 0.7
    assert r2_score(y[:, 1], predictions[:, 0]) < 0.2
    assert r2_score(y[:, 0], predictions[:, 1]) < 0.2


def test_a_column_of_y_is_one_output(centres):
    """y of shape (n, 1) trains what y of shape (n,) trains, bit for bit."""
    X, y = centres
    flat = CNNRegressor(**SMALL).fit(X[:200], y[:200, 0])
    column = CNNRegressor(**SMALL).fit(X[:200], y[:200, :1])
    np.testing.assert_array_equal(flat.network_.params, column.network_.params)
    np.testing.assert_array_equal(column.predict(X[:5]).ravel(), flat.predict(X[:5]))


# ===================================================== 4. reproducibility

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_same_bits_for_one_and_two_threads(centres, dtype):
    X, y = centres
    fits = [CNNRegressor(**{**SMALL, "max_iter": 2}, dtype=dtype, batch_norm=True,
                         dropout=0.2, n_threads=n_threads).fit(X[:300], y[:300])
            for n_threads in (1, 2)]
    np.testing.assert_array_equal(fits[0].network_.params, fits[1].network_.params)
    np.testing.assert_array_equal(fits[0].network_.state, fits[1].network_.state)
    assert fits[0].loss_curve_ == fits[1].loss_curve_
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))


# ================================================ 5. partial_fit, warm_start

def test_partial_fit_continues_and_starts_as_fit(centres):
    X, y = centres
    X, y = X[:300], y[:300]
    once = CNNRegressor(**{**SMALL, "max_iter": 1}).fit(X, y)
    incremental = CNNRegressor(**SMALL).partial_fit(X, y)
    np.testing.assert_array_equal(incremental.network_.params, once.network_.params)
    for _ in range(4):
        incremental.partial_fit(X, y)
    assert incremental.n_iter_ == 5 and incremental.t_ == 5 * len(X)
    assert incremental.loss_curve_[-1] < incremental.loss_curve_[0]


def test_warm_start_continues(centres):
    X, y = centres
    X, y = X[:300], y[:300]
    regressor = CNNRegressor(**{**SMALL, "max_iter": 2}, warm_start=True).fit(X, y)
    first = regressor.network_.params.copy()
    regressor.fit(X, y)
    assert regressor.n_iter_ == 4 and len(regressor.loss_curve_) == 4
    assert not np.array_equal(regressor.network_.params, first)
    fresh = CNNRegressor(**{**SMALL, "max_iter": 2}).fit(X, y)
    assert not np.array_equal(regressor.network_.params, fresh.network_.params)


def test_another_number_of_outputs_is_refused_when_continuing(centres):
    X, y = centres
    X, y = X[:100], y[:100]
    regressor = CNNRegressor(**SMALL, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"y has 1 outputs, but CNNRegressor was "
                                         r"fitted with 2 \(n_outputs_\)"):
        regressor.fit(X, y[:, 0])
    with pytest.raises(ValueError, match="y has 3 outputs"):
        regressor.partial_fit(X, np.column_stack([y, y[:, 0]]))
    # a new fit (no warm start) takes any number
    regressor.set_params(warm_start=False).fit(X, y[:, 0])
    assert regressor.n_outputs_ == 1 and regressor.predict(X).shape == (100,)


# ================================================= 6. early stopping on R^2

def test_early_stopping_follows_the_validation_r2(centres, monkeypatch):
    """Each epoch's validation score is the R^2 of the held-out samples'
    predictions (recomputed here from predict), and the weights kept are
    those of the best epoch."""
    X, y = centres
    seen = []
    original = CNNRegressor._validation_score

    def spy(self, X_val, y_val, n_threads, sample_weight):
        score = original(self, X_val, y_val, n_threads, sample_weight)
        seen.append((X_val, y_val, r2_score(y_val, self.predict(X_val))))
        return score
    monkeypatch.setattr(CNNRegressor, "_validation_score", spy)
    regressor = CNNRegressor(input_shape=(1, 8, 8), filters=(8,), pool_size=None,
                             hidden_layer_sizes=(32,), max_iter=15,
                             early_stopping=True, validation_fraction=0.2,
                             random_state=0).fit(X, y)
    assert len(seen) == regressor.n_iter_ == len(regressor.validation_scores_)
    X_val, y_val = seen[0][0], seen[0][1]
    assert len(X_val) == math.ceil(0.2 * len(X))     # train_test_split rounds up
    np.testing.assert_allclose(regressor.validation_scores_, [r2 for *_, r2 in seen],
                               rtol=1e-6)
    assert regressor.best_validation_score_ == max(regressor.validation_scores_) > 0.8
    assert regressor.best_loss_ is None
    kept = r2_score(y_val, regressor.predict(X_val.reshape(len(X_val), -1)))
    assert kept == pytest.approx(regressor.best_validation_score_, rel=1e-6)


# ======================================================== 7. bad targets

@pytest.mark.parametrize("bad, match", [
    ("nan", "Input y contains NaN"),
    ("inf", "Input y contains infinity"),
    ("huge", "y has values too large for dtype float32"),
    ("short", "inconsistent numbers of samples"),
    ("strings", "CNNRegressor needs numeric targets y.*dtype <U.*CNNClassifier"),
    ("objects", "CNNRegressor needs numeric targets y.*dtype object"),
    ("complex", "CNNRegressor needs numeric targets y.*complex"),
    ("3-D", r"y must have shape \(n_samples,\) or \(n_samples, n_outputs\), got shape \(40, 2, 2\)"),
    ("no outputs", r"got shape \(40, 0\)"),
    ("None", "requires y to be passed"),
])
def test_bad_targets_are_refused_before_training(centres, no_training, bad, match):
    X, y = centres
    X, y = X[:40], y[:40, 0].copy()
    targets = {
        "nan": np.where(np.arange(40) == 7, np.nan, y),
        "inf": np.where(np.arange(40) == 7, np.inf, y),
        "huge": np.where(np.arange(40) == 7, 1e300, y),
        "short": y[:39],
        "strings": np.array(["a"] * 40),
        "objects": np.array([{"a": 1}] * 40, dtype=object),
        "complex": y + 1j,
        "3-D": np.zeros((40, 2, 2)),
        "no outputs": np.zeros((40, 0)),
        "None": None,
    }[bad]
    with pytest.raises(ValueError, match=match):
        CNNRegressor(**SMALL).fit(X, targets)


def test_numeric_targets_of_any_type_train_alike(centres):
    """Integers, bools, lists and object arrays of numbers are numbers."""
    X, y = centres
    X, y = X[:100], np.round(4 * y[:100, 0])
    reference = CNNRegressor(**SMALL).fit(X, y).predict(X)
    for targets in (y.astype(np.int64), y.astype(np.int32), y.tolist(), y.astype(object)):
        np.testing.assert_array_equal(CNNRegressor(**SMALL).fit(X, targets).predict(X),
                                      reference)
    assert CNNRegressor(**SMALL).fit(X, y > 4).predict(X).dtype == np.float64
