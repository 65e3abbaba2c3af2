"""sample_weight (CNNClassifier, CNNRegressor) and class_weight
(CNNClassifier): the fits weights must give, compared with fits on repeated
or removed rows, with scikit-learn's class weights and with scikit-learn's
weighted scores; and their way through scikit-learn's meta-estimators.

The losses' weighted kernels are tested in test_loss.py.
"""
import inspect
import warnings

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.ensemble import AdaBoostClassifier
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_validate
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
from sklearn.utils.estimator_checks import (
    check_sample_weight_equivalence_on_dense_data)

from fastcnn import CNNClassifier, CNNRegressor
from fastcnn._base import BaseCNN

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
             max_iter=3, random_state=0)
ESTIMATORS = [CNNClassifier, CNNRegressor]


def _targets(estimator_class, X, y):
    """y for a classifier, a smooth real target of X for a regressor."""
    if estimator_class is CNNClassifier:
        return y
    return np.stack([X[:, 27:29].mean(axis=1), X[:, :32].mean(axis=1)], axis=1)


def _assert_same_model(a, b):
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    np.testing.assert_array_equal(a.network_.state, b.network_.state)
    assert a.loss_curve_ == b.loss_curve_


def _assert_close_model(a, b, rtol):
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=rtol)


# ============================================== equivalences of weights

@pytest.mark.parametrize("estimator_class", ESTIMATORS)
@pytest.mark.parametrize("early_stopping", [False, True])
def test_unit_weights_give_bitwise_the_model_of_no_weights(estimator_class,
                                                           early_stopping, digits):
    """Several batches, shuffled, with the L2 penalty, and with the
    validation split: the same bits as without weights."""
    X, y = digits
    y = _targets(estimator_class, X, y)
    params = dict(SMALL, alpha=0.01, early_stopping=early_stopping)
    plain = estimator_class(**params).fit(X, y)
    unit = estimator_class(**params).fit(X, y, sample_weight=np.ones(len(X)))
    _assert_same_model(plain, unit)
    assert plain.validation_scores_ == unit.validation_scores_
    plain.partial_fit(X, y)
    unit.partial_fit(X, y, sample_weight=np.ones(len(X)))
    _assert_same_model(plain, unit)


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_integer_weights_equal_repeated_rows(estimator_class, solver, small_digits):
    """On one batch covering the data (float64), weight w equals the row
    repeated w times, zero weights included (the rows removed); the L2
    penalty is scaled by the sum of the weights as by the rows' count."""
    X, y = small_digits
    X, y = X[:40], _targets(estimator_class, X[:40], y[:40])
    counts = np.random.default_rng(0).integers(0, 4, len(X))
    X_repeated, y_repeated = np.repeat(X, counts, axis=0), np.repeat(y, counts, axis=0)
    params = dict(SMALL, dtype="float64", solver=solver, alpha=0.01, max_iter=6)
    weighted = estimator_class(**params, batch_size=len(X)).fit(X, y, sample_weight=counts)
    repeated = estimator_class(**params, batch_size=len(X_repeated)).fit(X_repeated, y_repeated)
    assert weighted.n_iter_ == repeated.n_iter_ == 6
    _assert_close_model(weighted, repeated, rtol=1e-9)


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_zero_weights_equal_removing_the_rows(estimator_class, small_digits):
    X, y = small_digits
    X, y = X[:50], _targets(estimator_class, X[:50], y[:50])
    keep = np.arange(len(X)) % 3 != 0
    params = dict(SMALL, dtype="float64", alpha=0.01, max_iter=6)
    weighted = estimator_class(**params, batch_size=len(X)).fit(
        X, y, sample_weight=keep.astype(float))
    removed = estimator_class(**params, batch_size=int(keep.sum())).fit(X[keep], y[keep])
    _assert_close_model(weighted, removed, rtol=1e-9)


def test_weights_change_the_model(small_digits):
    """Not a no-op: other weights, another model."""
    X, y = small_digits
    weights = np.where(y < 5, 3.0, 1.0)
    plain = CNNClassifier(**SMALL).fit(X, y)
    weighted = CNNClassifier(**SMALL).fit(X, y, sample_weight=weights)
    assert not np.array_equal(plain.network_.params, weighted.network_.params)


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_weighted_fits_are_bitwise_identical_across_thread_counts(estimator_class,
                                                                  digits):
    X, y = digits
    y = _targets(estimator_class, X, y)
    weights = np.random.default_rng(1).uniform(0, 2, len(X))
    fits = [estimator_class(**SMALL, n_threads=n).fit(X, y, sample_weight=weights)
            for n in (1, 2)]
    _assert_same_model(*fits)


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
def test_scikit_learns_equivalence_check_passes_in_float64(estimator_class):
    """check_sample_weight_equivalence_on_dense_data, expected to fail in
    float32 only (see EXPECTED_FAILED_CHECKS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_sample_weight_equivalence_on_dense_data(
            estimator_class.__name__,
            estimator_class(filters=(8,), hidden_layer_sizes=(16,), max_iter=50,
                            random_state=0, dtype="float64"))


def test_a_batch_of_zero_weights_takes_no_step(small_digits):
    """With batch_size=10, only the first batch has non-zero weights
    (shuffle=False): the same model as a fit on that batch alone."""
    X, y = small_digits
    X, y = X[:40], y[:40]
    weights = np.zeros(len(X))
    weights[:10] = 1
    params = dict(SMALL, shuffle=False, batch_size=10, dtype="float64")
    weighted = CNNClassifier(**params).fit(X, y, sample_weight=weights)
    alone = CNNClassifier(**params).fit(X[:10], y[:10])
    np.testing.assert_array_equal(weighted.network_.params, alone.network_.params)
    # loss_curve_, as MLPClassifier's: batch losses weighted by batch sizes
    np.testing.assert_allclose(np.array(weighted.loss_curve_) * 4, alone.loss_curve_,
                               rtol=1e-12)


# ===================================== weights follow the samples, scores

def test_weights_follow_the_samples_and_weight_the_validation_score(monkeypatch):
    """Each sample's weight reaches the loss with its own target, through
    shuffling, batching and the validation split; the validation score is
    r2_score weighted by the held-out samples' weights."""
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(90, 1, 8, 8))
    y = rng.permutation(90).astype(float)       # a sample's target names it
    weights = np.arange(1.0, 91.0)              # and so does its weight
    y = y / 90
    batches, scores = [], []
    loss, score = CNNRegressor._loss, CNNRegressor._validation_score

    def loss_spy(self, predictions, targets, out, sample_weight):
        if sample_weight is not None:
            batches.append((targets[:, 0].copy(), sample_weight.copy()))
        return loss(self, predictions, targets, out, sample_weight)

    def score_spy(self, X_val, targets, n_threads, sample_weight):
        value = score(self, X_val, targets, n_threads, sample_weight)
        predictions = self.predict(X_val)
        scores.append((targets[:, 0].copy(), sample_weight.copy(), value,
                       r2_score(targets[:, 0], predictions, sample_weight=sample_weight),
                       r2_score(targets[:, 0], predictions)))
        return value
    monkeypatch.setattr(CNNRegressor, "_loss", loss_spy)
    monkeypatch.setattr(CNNRegressor, "_validation_score", score_spy)
    CNNRegressor(**dict(SMALL, input_shape=None), dtype="float64", batch_size=16,
                 early_stopping=True,
                 validation_fraction=0.2).fit(X, y, sample_weight=weights)
    owner = {target: w for target, w in zip(y, weights)}
    seen = np.concatenate([b[0] for b in batches])
    assert len(batches) == 3 * 5 and len(seen) == 3 * 72
    for targets, w in batches + [s[:2] for s in scores]:
        np.testing.assert_array_equal(w, [owner[t] for t in targets])
    held_out = set(scores[0][0])
    assert len(held_out) == 18 and held_out.isdisjoint(batches[0][0])
    for _, _, value, weighted, unweighted in scores:
        assert value == pytest.approx(weighted, rel=1e-6)
        assert abs(weighted - unweighted) > 1e-6    # the weights mattered


def test_early_stopping_follows_the_weighted_accuracy(digits, monkeypatch):
    """The classifier's validation score is accuracy_score with the
    held-out weights, and picks the epoch whose weights are kept."""
    X, y = digits
    weights = np.where(y % 2 == 0, 5.0, 0.2)
    seen = []
    score = CNNClassifier._validation_score

    def spy(self, X_val, y_index, n_threads, sample_weight):
        value = score(self, X_val, y_index, n_threads, sample_weight)
        predicted = self.predict(X_val)
        seen.append((value, accuracy_score(self.classes_[y_index], predicted,
                                           sample_weight=sample_weight),
                     accuracy_score(self.classes_[y_index], predicted)))
        return value
    monkeypatch.setattr(CNNClassifier, "_validation_score", spy)
    clf = CNNClassifier(**dict(SMALL, max_iter=6), early_stopping=True,
                        validation_fraction=0.3).fit(X, y, sample_weight=weights)
    assert [s[0] for s in seen] == clf.validation_scores_
    assert all(value == pytest.approx(weighted) for value, weighted, _ in seen)
    assert any(weighted != unweighted for _, weighted, unweighted in seen)


def test_all_zero_weights_on_the_validation_split_are_refused(small_digits):
    X, y = small_digits
    clf = CNNClassifier(**SMALL, early_stopping=True, validation_fraction=0.5)
    with pytest.raises(ValueError, match=r"validation set \(validation_fraction=0.5\) are all zero"):
        clf.fit(X[:4], [0, 0, 1, 1], sample_weight=[1, 0, 0, 0])


@pytest.mark.parametrize("estimator_class", ESTIMATORS)
@pytest.mark.parametrize("weights, match", [
    (-np.ones(120), "Negative values in data passed to `sample_weight`"),
    (np.ones(119), r"sample_weight.shape == \(119,\), expected \(120,\)"),
    (np.ones((120, 2)), "Sample weights must be 1D array"),
    (np.zeros(120), "weight.*zero"),
], ids=["negative", "short", "2d", "all-zero"])
def test_bad_sample_weight_is_refused(estimator_class, weights, match, small_digits,
                                      no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match=match):
        estimator_class(**SMALL).fit(X, _targets(estimator_class, X, y),
                                     sample_weight=weights)


# ============================================================ class_weight

def test_balanced_class_weight_equals_its_sample_weights(small_digits):
    X, y = small_digits
    y = np.where(y < 7, y, 9)       # unbalanced: 9 takes three digits
    balanced = CNNClassifier(**SMALL, class_weight="balanced").fit(X, y)
    weighted = CNNClassifier(**SMALL).fit(
        X, y, sample_weight=compute_sample_weight("balanced", y))
    _assert_same_model(balanced, weighted)


def test_dict_class_weight_multiplies_sample_weight(small_digits):
    X, y = small_digits
    labels = np.array(["zero", "one", "two", "three", "four", "five", "six",
                       "seven", "eight", "nine"])[y]
    class_weight = {"three": 4.0, "seven": 0.5, "nine": 0.0}
    sample_weight = np.random.default_rng(0).uniform(0.5, 2, len(y))
    expected = sample_weight * compute_sample_weight(class_weight, labels)
    by_class = CNNClassifier(**SMALL, class_weight=class_weight).fit(
        X, labels, sample_weight=sample_weight)
    by_sample = CNNClassifier(**SMALL).fit(X, labels, sample_weight=expected)
    _assert_same_model(by_class, by_sample)


def test_partial_fit_with_class_weight(small_digits):
    X, y = small_digits
    classes = np.arange(10)
    class_weight = dict(zip(classes, compute_class_weight("balanced", classes=classes,
                                                          y=y)))
    by_class = CNNClassifier(**SMALL, class_weight=class_weight)
    by_sample = CNNClassifier(**SMALL)
    for part in (slice(0, 60), slice(60, 120)):
        by_class.partial_fit(X[part], y[part], classes=classes)
        by_sample.partial_fit(X[part], y[part], classes=classes,
                              sample_weight=compute_sample_weight(class_weight, y[part]))
    _assert_same_model(by_class, by_sample)
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        CNNClassifier(**SMALL, class_weight="balanced").partial_fit(X, y, classes=classes)


def test_class_weight_for_an_unknown_class_is_refused(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match=r"class_weight has weights for \[11\], which "
                                         r"are not classes of y"):
        CNNClassifier(**SMALL, class_weight={1: 2.0, 11: 3.0}).fit(X, y)


def test_class_weights_zero_for_every_sample_are_refused(small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match="class_weight gives every sample of y weight zero"):
        CNNClassifier(**SMALL, class_weight={0: 0.0, 1: 0.0}).fit(X[y < 2], y[y < 2])


@pytest.mark.parametrize("class_weight", ["auto", {1: -1.0}, {1: np.nan}, [1, 2], {1: "a"}])
def test_bad_class_weight_is_refused(class_weight, small_digits, no_training):
    X, y = small_digits
    with pytest.raises(ValueError, match=r"class_weight must be 'balanced' or a dict "
                                         r"\{class_label: weight\}"):
        CNNClassifier(**SMALL, class_weight=class_weight).fit(X, y)


def test_class_weight_is_a_parameter_of_the_classifier_only():
    """CNNClassifier's __init__ lists BaseCNN's parameters, with the same
    defaults, and class_weight."""
    base = inspect.signature(BaseCNN.__init__).parameters
    classifier = inspect.signature(CNNClassifier.__init__).parameters
    assert list(classifier) == list(base) + ["class_weight"]
    assert all(classifier[name].default == base[name].default for name in base)
    assert classifier["class_weight"].default is None
    assert "class_weight" not in CNNRegressor().get_params()
    assert clone(CNNClassifier(class_weight={0: 2.0})).class_weight == {0: 2.0}


# ================================================ scikit-learn integration

def test_adaboost_fits_with_weights(digits):
    X, y = digits
    boost = AdaBoostClassifier(CNNClassifier(**SMALL), n_estimators=3,
                               random_state=0).fit(X, y)
    assert len(boost.estimators_) >= 2
    # the second network learnt from other weights than the first
    first, second = boost.estimators_[:2]
    assert not np.allclose(first.network_.params, second.network_.params)
    assert boost.score(X, y) > 0.3      # chance: 0.1


@pytest.fixture
def metadata_routing():
    sklearn.set_config(enable_metadata_routing=True)
    yield
    sklearn.set_config(enable_metadata_routing=False)


def test_cross_validate_routes_sample_weight(digits, metadata_routing):
    X, y = digits
    weights = np.random.default_rng(0).uniform(0.1, 3, len(y))
    cv = KFold(3)
    clf = (CNNClassifier(**SMALL).set_fit_request(sample_weight=True)
           .set_score_request(sample_weight=False))
    result = cross_validate(clf, X, y, cv=cv, params={"sample_weight": weights},
                            return_estimator=True)
    for (train, _), fitted in zip(cv.split(X), result["estimator"]):
        direct = CNNClassifier(**SMALL).fit(X[train], y[train],
                                            sample_weight=weights[train])
        _assert_same_model(fitted, direct)
    with pytest.raises(sklearn.exceptions.UnsetMetadataPassedError):
        cross_validate(CNNClassifier(**SMALL), X, y, cv=cv,
                       params={"sample_weight": weights})


def test_grid_search_routes_sample_weight(digits, metadata_routing):
    X, y = digits
    weights = np.random.default_rng(1).uniform(0.1, 3, len(y))
    regressor = (CNNRegressor(**SMALL).set_fit_request(sample_weight=True)
                 .set_score_request(sample_weight=False))
    search = GridSearchCV(regressor, {"alpha": [1e-4, 1e-2]}, cv=2)
    y = _targets(CNNRegressor, X, y)
    search.fit(X, y, sample_weight=weights)
    direct = CNNRegressor(**SMALL, alpha=search.best_params_["alpha"]).fit(
        X, y, sample_weight=weights)
    _assert_same_model(search.best_estimator_, direct)


def test_metadata_routing_is_off_again():
    assert not sklearn.get_config()["enable_metadata_routing"]
