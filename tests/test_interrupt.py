"""Ctrl-C during fit: an epoch is counted, recorded and snapshotted as one step.

Whatever point of an epoch a KeyboardInterrupt hits (a batch, the
validation pass, the per-epoch report, the bookkeeping itself), the
interrupted estimator must be indistinguishable from an uninterrupted fit
of as many epochs as it reports: same n_iter_, t_, loss_curve_,
validation_scores_, best scores, no-improvement count, optimizer state and,
bitwise, the same weights; and the warning names the epoch whose weights
are kept. Fits are deterministic for a given random_state, so the
reference is simply ``fit`` with ``max_iter`` set to that epoch count.
"""
import re
import signal

import numpy as np
import pytest
from sklearn.datasets import load_digits

import fastcnn._network as network_module
import fastcnn._training as training_module
from fastcnn import CNNClassifier

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

#: 120 digits in batches of 40: 3 batches an epoch (108 training samples,
#: also 3 batches, with early stopping's validation split of 12)
PARAMS = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
              batch_size=40, random_state=0)

#: validation scores given to the epochs in turn: epoch 2 is the best
SCORES = [0.5, 0.9, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3]


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:120] / 16.0, y[:120]


@pytest.fixture
def scripted_scores(monkeypatch):
    """The validation pass of early stopping returns SCORES[epoch - 1],
    so that the best epoch is known (epoch 2) and not the last."""
    def accuracy(self, X, y_index, n_threads, sample_weight):
        return SCORES[len(self.validation_scores_)]
    monkeypatch.setattr(CNNClassifier, "_validation_score", accuracy)


def interrupt_on_call(monkeypatch, owner, name, k):
    """The k-th call of owner.name raises KeyboardInterrupt."""
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
    return calls


def interrupted_fit(clf, X, y, calls=None, k=None):
    """Fits clf, expecting the interrupt; returns the warning's text."""
    with pytest.warns(UserWarning, match="interrupted") as record:
        clf.fit(X, y)
    if calls is not None:
        assert calls[0] == k, "the interrupt was not injected"
    messages = [str(w.message) for w in record if "interrupted" in str(w.message)]
    assert len(messages) == 1
    return messages[0]


def assert_same_fit(clf, reference):
    """clf is, attribute for attribute and bit for bit, the reference."""
    assert clf.n_iter_ == reference.n_iter_
    assert len(clf.loss_curve_) == clf.n_iter_
    assert clf.loss_curve_ == reference.loss_curve_
    assert clf.t_ == reference.t_
    assert clf.best_loss_ == reference.best_loss_
    assert clf.validation_scores_ == reference.validation_scores_
    if clf.validation_scores_ is not None:
        assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == reference.best_validation_score_
    assert clf._no_improvement_count == reference._no_improvement_count
    np.testing.assert_array_equal(clf.network_.params, reference.network_.params)
    for got, expected in zip(clf.coefs_ + clf.intercepts_,
                             reference.coefs_ + reference.intercepts_):
        np.testing.assert_array_equal(got, expected)
    state, expected = clf._optimizer_state, reference._optimizer_state
    assert state["step"] == expected["step"]
    for got, want in zip(state["buffers"], expected["buffers"]):
        np.testing.assert_array_equal(got, want)


def assert_names_kept_epoch(message, kept):
    assert re.search(rf"\bweights of epoch {kept}\b", message), message
    others = set(re.findall(r"weights of epoch (\d+)", message)) - {str(kept)}
    assert not others, message


# each epoch makes 4 forward calls: 3 batches and the check of its last
# step; call 10 is the second batch of epoch 3
@pytest.mark.parametrize("early_stopping, kept", [(False, 2), (True, 2)])
def test_interrupt_in_a_batch(data, monkeypatch, scripted_scores,
                              early_stopping, kept):
    X, y = data
    params = dict(PARAMS, early_stopping=early_stopping)
    reference = CNNClassifier(max_iter=2, **params).fit(X, y)
    calls = interrupt_on_call(monkeypatch, network_module.Network, "forward", 10)
    clf = CNNClassifier(max_iter=10, **params)
    message = interrupted_fit(clf, X, y, calls, 10)
    assert clf.n_iter_ == 2
    assert_same_fit(clf, reference)
    assert_names_kept_epoch(message, kept)


def test_interrupt_in_a_batch_keeps_the_best_epoch_with_early_stopping(
        data, monkeypatch, scripted_scores):
    # Epoch 2 is the best; interrupted in epoch 4, fit keeps epoch 2's
    # weights (as a stop by max_iter=3 would) and must say so, not "3".
    X, y = data
    params = dict(PARAMS, early_stopping=True)
    reference = CNNClassifier(max_iter=3, **params).fit(X, y)
    calls = interrupt_on_call(monkeypatch, network_module.Network, "forward", 14)
    clf = CNNClassifier(max_iter=10, **params)
    message = interrupted_fit(clf, X, y, calls, 14)
    assert clf.n_iter_ == 3
    assert_same_fit(clf, reference)
    np.testing.assert_array_equal(
        clf.network_.params, CNNClassifier(max_iter=2, **params).fit(X, y).network_.params)
    assert_names_kept_epoch(message, 2)


@pytest.mark.parametrize("early_stopping, kept", [(False, 3), (True, 2)])
def test_interrupt_in_the_epoch_report(data, monkeypatch, scripted_scores, capsys,
                                       early_stopping, kept):
    # The report of epoch 3 comes after epoch 3 was counted: its weights
    # (or, with early stopping, the best epoch's) must be those kept.
    X, y = data
    params = dict(PARAMS, early_stopping=early_stopping, verbose=1)
    reference = CNNClassifier(max_iter=3, **params).fit(X, y)
    calls = interrupt_on_call(monkeypatch, training_module.TrainingRun, "_report", 3)
    clf = CNNClassifier(max_iter=10, **params)
    message = interrupted_fit(clf, X, y, calls, 3)
    assert clf.n_iter_ == 3
    assert_same_fit(clf, reference)
    assert_names_kept_epoch(message, kept)


def test_interrupt_in_the_validation_pass(data, monkeypatch, scripted_scores):
    # The validation score of epoch 3 is part of epoch 3: interrupted while
    # computing it, fit records two epochs and two scores.
    X, y = data
    params = dict(PARAMS, early_stopping=True)
    reference = CNNClassifier(max_iter=2, **params).fit(X, y)
    calls = interrupt_on_call(monkeypatch, CNNClassifier, "_validation_score", 3)
    clf = CNNClassifier(max_iter=10, **params)
    message = interrupted_fit(clf, X, y, calls, 3)
    assert clf.n_iter_ == 2
    assert len(clf.validation_scores_) == 2
    assert_same_fit(clf, reference)
    assert_names_kept_epoch(message, 2)


class _SignalOnAppend(list):
    """A loss curve whose n-th entry sends the process a real SIGINT, i.e.
    Ctrl-C in the middle of the epoch's bookkeeping."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def append(self, value):
        if len(self) + 1 == self.n:
            signal.raise_signal(signal.SIGINT)
        super().append(value)


@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
                    reason="Ctrl-C does not raise KeyboardInterrupt here")
@pytest.mark.parametrize("early_stopping, kept", [(False, 3), (True, 2)])
def test_ctrl_c_during_the_bookkeeping(data, monkeypatch, scripted_scores,
                                       early_stopping, kept):
    # The bookkeeping of an epoch is one step: Ctrl-C in it takes effect
    # once it is done, so epoch 3 is then counted, recorded and kept whole.
    X, y = data
    params = dict(PARAMS, early_stopping=early_stopping)
    reference = CNNClassifier(max_iter=3, **params).fit(X, y)
    initialize = CNNClassifier._initialize

    def initialize_with_signal(self, *args, **kwargs):
        initialize(self, *args, **kwargs)
        self.loss_curve_ = _SignalOnAppend(3)
    monkeypatch.setattr(CNNClassifier, "_initialize", initialize_with_signal)
    clf = CNNClassifier(max_iter=10, **params)
    message = interrupted_fit(clf, X, y)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert clf.n_iter_ == 3
    assert_same_fit(clf, reference)
    assert_names_kept_epoch(message, kept)


def test_interrupt_in_the_report_of_partial_fit(data, monkeypatch, capsys):
    # partial_fit's one epoch is counted before its report: interrupted
    # there, it keeps the epoch's weights rather than the initial ones.
    X, y = data
    params = dict(PARAMS, verbose=1)
    reference = CNNClassifier(**params).partial_fit(X, y, classes=np.unique(y))
    interrupt_on_call(monkeypatch, training_module.TrainingRun, "_report", 1)
    clf = CNNClassifier(**params)
    with pytest.warns(UserWarning, match="interrupted") as record:
        clf.partial_fit(X, y, classes=np.unique(y))
    assert clf.n_iter_ == 1
    assert_same_fit(clf, reference)
    assert_names_kept_epoch(str(record[0].message), 1)
