"""Tests of the learning-rate schedules (``learning_rate``, ``power_t``;
fastcnn._training.LearningRateSchedule): the rate of every step, as the
optimizer kernel receives it, against scikit-learn's MLP optimizers and
closed forms in NumPy; against PyTorch's schedulers over whole networks;
and bitwise reproducibility across thread counts."""
import math

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.neural_network._stochastic_optimizers import SGDOptimizer

import fastcnn.functional as F
from fastcnn import CNNClassifier
from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")

PARAMS = dict(input_shape=(1, 8, 8), filters=(4,), hidden_layer_sizes=(16,),
              batch_size=32, random_state=0, early_stopping=False)
SCHEDULES = ["constant", "invscaling", "adaptive", "cosine"]


@pytest.fixture
def kernel_calls(monkeypatch):
    """Records every optimizer kernel call of the estimator's fits: the
    learning rate it got, and the parameters before the first update."""
    calls = {"rates": [], "initial": None}

    def spy(name, rate_position):
        original = getattr(F, name)

        def call(params, *args, **kwargs):
            if calls["initial"] is None:
                calls["initial"] = params.copy()
            calls["rates"].append(args[rate_position])
            return original(params, *args, **kwargs)
        monkeypatch.setattr(F, name, call)
    # positions after params: sgd_update(grads, velocity, learning_rate, ...),
    # adam_update(grads, m, v, step, learning_rate, ...)
    spy("sgd_update", 2)
    spy("adam_update", 4)
    return calls


def n_batches(n_samples, batch_size):
    return -(-n_samples // batch_size)


# ============================================================ constant

@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_constant_gives_every_step_learning_rate_init(small_digits, kernel_calls, solver):
    X, y = small_digits
    clf = CNNClassifier(solver=solver, learning_rate_init=0.0123, max_iter=3,
                        **PARAMS).fit(X, y)
    assert CNNClassifier().learning_rate == "constant"
    assert len(kernel_calls["rates"]) == clf.n_iter_ * n_batches(len(X), 32)
    # the same float as before schedules existed, so the same bits
    assert all(type(rate) is float and rate == 0.0123 for rate in kernel_calls["rates"])


# ========================================================== invscaling

@pytest.mark.parametrize("power_t", [0.5, 0.25])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_invscaling_follows_mlps_optimizer(small_digits, kernel_calls, solver, power_t):
    """Each epoch's rate is what scikit-learn's SGDOptimizer sets at the
    end of the epoch before, given the samples seen so far (t_)."""
    X, y = small_digits
    clf = CNNClassifier(solver=solver, learning_rate="invscaling", power_t=power_t,
                        learning_rate_init=0.05, max_iter=4, **PARAMS).fit(X, y)
    mlp = SGDOptimizer([np.zeros(1)], 0.05, "invscaling", power_t=power_t)
    expected = []
    for epoch in range(clf.n_iter_):
        expected += [mlp.learning_rate] * n_batches(len(X), 32)
        mlp.iteration_ends((epoch + 1) * len(X))
    assert clf.n_iter_ == 4
    assert kernel_calls["rates"] == expected
    assert len(set(expected)) == 4


def test_invscaling_continues_over_partial_fit(small_digits, kernel_calls):
    X, y = small_digits
    clf = CNNClassifier(solver="sgd", learning_rate="invscaling",
                        learning_rate_init=0.05, **PARAMS)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    t = np.repeat(np.arange(3) * len(X) + 1.0, n_batches(len(X), 32))
    np.testing.assert_allclose(kernel_calls["rates"], 0.05 / t ** 0.5, rtol=1e-15)


# ============================================================== cosine

def cosine_reference(rate, epochs, batches):
    """PyTorch's CosineAnnealingLR in closed form, one value per step."""
    steps = np.arange(epochs * batches)
    return rate * (1 + np.cos(np.pi * steps / (epochs * batches))) / 2


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_cosine_anneals_step_by_step_over_max_iter(small_digits, kernel_calls,
                                                   solver, early_stopping):
    X, y = small_digits
    clf = CNNClassifier(solver=solver, learning_rate="cosine", learning_rate_init=0.01,
                        max_iter=5, n_iter_no_change=5,
                        **{**PARAMS, "early_stopping": early_stopping}).fit(X, y)
    assert clf.n_iter_ == 5
    n_train = len(X) - (math.ceil(0.1 * len(X)) if early_stopping else 0)
    expected = cosine_reference(0.01, 5, n_batches(n_train, 32))
    np.testing.assert_allclose(kernel_calls["rates"], expected, rtol=1e-14, atol=0)
    # from the initial rate down to one step short of 0 (20 steps here)
    assert kernel_calls["rates"][0] == 0.01
    assert 0 < kernel_calls["rates"][-1] < 0.01 * 0.01


def test_cosine_restarts_with_a_warm_start_fit_and_cycles_over_partial_fit(
        small_digits, kernel_calls):
    X, y = small_digits
    batches = n_batches(len(X), 32)
    one_cycle = cosine_reference(0.01, 2, batches)
    clf = CNNClassifier(learning_rate="cosine", learning_rate_init=0.01, max_iter=2,
                        n_iter_no_change=2, warm_start=True, **PARAMS)
    clf.fit(X, y).fit(X, y)
    np.testing.assert_allclose(kernel_calls["rates"], np.tile(one_cycle, 2), rtol=1e-14)
    kernel_calls["rates"].clear()
    clf = CNNClassifier(learning_rate="cosine", learning_rate_init=0.01, max_iter=2,
                        **PARAMS)
    for _ in range(5):
        clf.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_allclose(kernel_calls["rates"],
                               np.tile(one_cycle, 3)[:5 * batches], rtol=1e-14)


# ============================================================ adaptive

def adaptive_reference(scores, rate, tol, n_iter_no_change, higher_is_better):
    """MLPClassifier's rule on the recorded losses (or validation scores):
    its no-improvement count and its SGDOptimizer's trigger_stopping.
    (rate of each epoch, the epoch after which training stops or None)."""
    optimizer = SGDOptimizer([np.zeros(1)], rate, "adaptive")
    best, count, rates = (-np.inf if higher_is_better else np.inf), 0, []
    for epoch, score in enumerate(scores, start=1):
        rates.append(optimizer.learning_rate)
        if higher_is_better:
            count = count + 1 if score < best + tol else 0
            best = max(best, score)
        else:
            count = count + 1 if score > best - tol else 0
            best = min(best, score)
        if count > n_iter_no_change:
            if optimizer.trigger_stopping("", False):
                return rates, epoch
            count = 0
    return rates, None


@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("early_stopping, tol, rate", [
    (False, 10.0, 1e-5),     # nothing improves: divided until at most 1e-6
    (False, 0.1, None),      # the loss stalls now and then
    (True, 0.05, None),      # so does the validation accuracy
])
def test_adaptive_divides_by_5_where_the_stopping_rule_fires(
        digits, kernel_calls, solver, early_stopping, tol, rate):
    X, y = digits
    rate = rate or {"sgd": 0.1, "adam": 0.01}[solver]
    clf = CNNClassifier(solver=solver, learning_rate="adaptive", learning_rate_init=rate,
                        tol=tol, n_iter_no_change=1, max_iter=15,
                        **{**PARAMS, "early_stopping": early_stopping}).fit(X, y)
    scores = clf.validation_scores_ if early_stopping else clf.loss_curve_
    epoch_rates, stop = adaptive_reference(scores, rate, tol, 1,
                                           higher_is_better=early_stopping)
    assert clf.n_iter_ == (stop or 15)
    n_train = len(X) - (math.ceil(0.1 * len(X)) if early_stopping else 0)
    assert kernel_calls["rates"] == list(np.repeat(epoch_rates, n_batches(n_train, 32)))
    # the rate was divided at least twice: the test covers the rule
    assert epoch_rates[-1] < rate / 20


def test_adaptive_stops_as_mlp_classifier_when_nothing_improves(small_digits):
    """With nothing counting as an improvement, both divide 1e-5 by 5 twice
    and stop where the rate is at most 1e-6: epoch 1 sets the best loss,
    then each division waits n_iter_no_change + 1 epochs."""
    X, y = small_digits
    for n_iter_no_change in (1, 2):
        clf = CNNClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=1e-5,
                            tol=10, n_iter_no_change=n_iter_no_change, max_iter=30,
                            **PARAMS).fit(X, y)
        mlp = MLPClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=1e-5,
                            tol=10, n_iter_no_change=n_iter_no_change, max_iter=30,
                            random_state=0).fit(X, y)
        assert clf.n_iter_ == mlp.n_iter_ == 1 + 3 * (n_iter_no_change + 1)
        assert clf._optimizer_state["learning_rate"] == mlp._optimizer.learning_rate


def test_each_fit_starts_adaptive_at_learning_rate_init(small_digits, kernel_calls):
    X, y = small_digits
    clf = CNNClassifier(learning_rate="adaptive", learning_rate_init=1e-3, tol=10,
                        n_iter_no_change=1, max_iter=4, warm_start=True, **PARAMS)
    clf.fit(X, y)
    assert clf._optimizer_state["learning_rate"] == pytest.approx(1e-3 / 5)
    kernel_calls["rates"].clear()
    clf.fit(X, y)
    assert kernel_calls["rates"][0] == 1e-3


def test_adaptive_prints_the_new_rate(small_digits, capsys):
    X, y = small_digits
    CNNClassifier(learning_rate="adaptive", learning_rate_init=1e-3, tol=10,
                  n_iter_no_change=1, max_iter=4, verbose=1, **PARAMS).fit(X, y)
    out = capsys.readouterr().out
    assert "Setting learning rate to 0.0002" in out
    assert "learning rate = 0.001," in out


# ===================================================== reproducibility

@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_give_the_same_bits_for_any_thread_count(small_digits, schedule):
    X, y = small_digits
    runs = [CNNClassifier(learning_rate=schedule, n_threads=n_threads, max_iter=4,
                          tol=0.05, n_iter_no_change=1, **PARAMS).fit(X, y)
            for n_threads in (1, 2, 3)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.network_.params, runs[0].network_.params)
        assert other.loss_curve_ == runs[0].loss_curve_


@pytest.mark.parametrize("name, value", [("learning_rate", "step"),
                                         ("learning_rate", None),
                                         ("power_t", -0.5), ("power_t", "half")])
def test_bad_schedule_parameters(small_digits, no_training, name, value):
    X, y = small_digits
    with pytest.raises(ValueError, match=f"^{name} must be"):
        CNNClassifier(**{**PARAMS, name: value}).fit(X, y)


# ============================================================= PyTorch

TORCH_NET = [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(12), ReLU()]


def torch_scheduler(torch, optimizer, schedule, epochs, batches, n_samples):
    """(scheduler, stepped after every batch?) of PyTorch's equivalent."""
    lr_scheduler = torch.optim.lr_scheduler
    if schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * batches), True
    # invscaling, power_t = 0.5: 1 / sqrt(samples seen + 1), per epoch
    return lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1 / (epoch * n_samples + 1) ** 0.5), False


@pytest.mark.parametrize("solver, schedule", [("adam", "cosine"), ("adam", "invscaling"),
                                              ("sgd", "cosine"), ("sgd", "invscaling")])
def test_fit_follows_pytorch_with_its_scheduler(digits, kernel_calls, solver, schedule):
    """The estimator's fit against the PyTorch twin of its network from the
    same initial weights on the same batches, with the scheduler of the same
    schedule; float64. SGD without momentum: scikit-learn's velocity
    holds each step's rate, PyTorch's momentum buffer does not, so under a
    changing rate their momentum differs (the README says so)."""
    torch = pytest.importorskip("torch")
    from _helpers.torch_twin import torch_twin
    X, y = digits[0][:100], digits[1][:100]
    epochs, batch_size, rate = 4, 32, 0.01 if solver == "adam" else 0.1
    clf = CNNClassifier(layers=TORCH_NET, input_shape=(1, 8, 8), dtype="float64",
                        solver=solver, learning_rate=schedule, learning_rate_init=rate,
                        momentum=0.0, epsilon=1e-30, alpha=0.0, shuffle=False,
                        batch_size=batch_size, max_iter=epochs, n_iter_no_change=epochs,
                        early_stopping=False, random_state=0).fit(X, y)
    network, final = clf.network_, clf.network_.params.copy()
    network.params[:] = kernel_calls["initial"]
    model, pairs = torch_twin(network)
    network.params[:] = final

    if solver == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=rate, eps=1e-30)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=rate)
    batches = n_batches(len(X), batch_size)
    scheduler, per_step = torch_scheduler(torch, optimizer, schedule, epochs, batches, len(X))
    losses, rates = [], []
    images = X.reshape(-1, 1, 8, 8)
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(X), batch_size):
            xb = torch.from_numpy(images[start:start + batch_size])
            yb = torch.from_numpy(y[start:start + batch_size].astype(np.int64))
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            total += loss.item() * len(yb)
            if per_step:
                scheduler.step()
        if not per_step:
            scheduler.step()
        losses.append(total / len(X))

    np.testing.assert_allclose(kernel_calls["rates"], rates, rtol=1e-12)
    assert len(set(np.round(rates, 12))) > epochs - 1      # the rate did change
    np.testing.assert_allclose(clf.loss_curve_, losses, rtol=1e-9)
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-7, atol=1e-9)
