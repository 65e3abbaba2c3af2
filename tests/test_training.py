"""Tests of fastcnn._training, the training loop, through the estimator:
the profile of a fit (fastcnn.profile_training), divergence, Ctrl-C,
reproducibility, partial_fit, early stopping, warm start and verbose output.
test_interrupt.py tests Ctrl-C at every point of an epoch, test_threads.py
the loop under any thread count."""
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

import fastcnn
import fastcnn._network as network_module
from fastcnn import CNNClassifier, TrainingDivergedError
from _helpers.estimators import SMALL

# Most fits below stop at a deliberately small max_iter.
pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

PARAMS = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
              batch_size=40, random_state=0)


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:120] / 16.0, y[:120]


# ===================================================== profile of a fit

def test_profile_times_every_part_of_every_step(data):
    X, y = data
    clf = CNNClassifier(**PARAMS)
    with fastcnn.profile_training() as profile:
        clf.partial_fit(X, y, classes=np.arange(10))
    assert profile.steps == 3      # 120 samples in batches of 40
    layers = [(layer.position, layer.name) for layer in clf.network_.layers]
    expected = {key + (which,) for key in layers for which in ("forward", "backward")}
    expected |= {"batch copy", "loss", "optimizer"}
    assert set(profile.seconds) == expected
    assert all(seconds >= 0 for seconds in profile.seconds.values())
    # the network does not keep timing after the block
    assert clf.network_.profile is None


def test_fits_outside_the_block_are_not_profiled(data):
    X, y = data
    clf = CNNClassifier(**PARAMS)
    with fastcnn.profile_training() as profile:
        clf.partial_fit(X, y, classes=np.arange(10))
    steps, seconds = profile.steps, dict(profile.seconds)
    clf.partial_fit(X, y)
    assert profile.steps == steps and profile.seconds == seconds


def test_profiling_changes_no_result(data):
    X, y = data
    plain = CNNClassifier(**PARAMS, max_iter=2, early_stopping=False)
    with pytest.warns(ConvergenceWarning):
        plain.fit(X, y)
    profiled = CNNClassifier(**PARAMS, max_iter=2, early_stopping=False)
    with fastcnn.profile_training(), pytest.warns(ConvergenceWarning):
        profiled.fit(X, y)
    np.testing.assert_array_equal(plain.network_.params, profiled.network_.params)
    assert plain.loss_curve_ == profiled.loss_curve_


# =========================================================== divergence

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


# ==================================================== KeyboardInterrupt

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


# ====================================================== reproducibility

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


# ========================================================== partial_fit

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


# ======================================================= early stopping

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


# =========================================================== warm start

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


# ============================================================== verbose

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


# ================================================ the epoch's last check

def test_check_forward_leaves_state_and_random_draws_as_they_were():
    from fastcnn._network import Network
    from fastcnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, ReLU
    specs = [Conv2D(3, 3, padding=1), BatchNorm2D(), ReLU(), Flatten(),
             Dropout(0.5), Dense(4)]
    x = np.random.default_rng(0).standard_normal((6, 2, 5, 5))
    nets = []
    for _ in range(2):
        net = Network(specs, (2, 5, 5), np.float64)
        net.initialize(np.random.RandomState(0))
        net.allocate(6, training=True)
        nets.append(net)
    checked = nets[0].check_forward(x, 2).copy()
    np.testing.assert_array_equal(nets[0].state, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    first = nets[1].forward(x, 2).copy()
    np.testing.assert_array_equal(checked, first)    # what forward computes
    # the first step after the check sees the running statistics and draws
    # the masks it would have without it
    np.testing.assert_array_equal(nets[0].forward(x, 2), first)
    np.testing.assert_array_equal(nets[0].state, nets[1].state)


def test_running_statistics_are_those_of_the_training_steps_alone():
    """momentum 1: the running mean is the last training step's batch mean,
    computed with the weights before that step (not those the end-of-epoch
    check sees)."""
    from fastcnn import functional as F
    from fastcnn.layers import BatchNorm2D, Conv2D, ReLU
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 1, 6, 6))
    y = np.arange(40) % 2
    params = dict(layers=[Conv2D(3, 3), BatchNorm2D(momentum=1.0), ReLU()],
                  batch_size=40, max_iter=1, shuffle=False, early_stopping=False,
                  dtype="float64", random_state=0, alpha=0.0)
    # a step too small to change any weight: the initial ones
    initial = CNNClassifier(learning_rate_init=1e-300, **params).fit(X, y)
    clf = CNNClassifier(**params).fit(X, y)
    assert not np.array_equal(clf.coefs_[0], initial.coefs_[0])
    conv = F.correlate2d(X, initial.coefs_[0], initial.intercepts_[0])
    norm = next(layer for layer in clf.network_.layers if hasattr(layer, "running_mean"))
    np.testing.assert_allclose(norm.running_mean, conv.mean(axis=(0, 2, 3)),
                               rtol=1e-12, atol=1e-14)
