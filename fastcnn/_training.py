"""Training of the estimators (fastcnn._base.BaseCNN): the epochs and
steps of ``fit`` and ``partial_fit``, the optimizers and their state,
snapshots of the weights to go back to, and the profile of a training run.

The estimator says what is trained for: its ``_loss(scores, y, out,
sample_weight)`` gives a batch's (weighted) mean loss and gradient, its
``_validation_score(X, y, n_threads, sample_weight)`` the score early
stopping follows, its ``_stratify(y)`` how the held-out split is drawn; y
is encoded as those read it.

Sample weights follow MLPClassifier's convention: a batch's loss is the
weighted mean ``sum_i w_i l_i / sum_i w_i`` of its samples' losses, the L2
penalty of the step is ``alpha / (2 sum_i w_i) * ||W||^2`` (``alpha / (2
batch)`` without weights), and ``loss_curve_`` is the mean of the batches'
losses weighted by their sample counts. The weights follow the samples
through the shuffling and the validation split, and weight the validation
score. A batch whose weights are all zero is skipped (no step: it has no
loss to descend), where MLPClassifier would divide by zero.

An epoch is counted, recorded and snapshotted as one step (Ctrl-C during
it takes effect once it is done): a fit that diverges or is interrupted
keeps the weights of the last recorded epoch, and with early stopping the
best epoch's weights are kept as after a normal stop.
"""
import contextlib
import contextvars
import math
import signal
import sys
import threading
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from . import functional as F
from ._labels import index_dtype
from ._threads import ThreadGovernor, effective_n_threads

# early_stopping='auto' holds out validation data above this many training
# samples, the threshold of HistGradientBoostingClassifier's 'auto': there a
# tenth of the data is a validation set fine enough to rank epochs (600 of
# 6000 is 0.17%), and the training loss, which keeps falling long after the
# test accuracy has peaked, would run many slow epochs into overfitting.
AUTO_EARLY_STOPPING_SAMPLES = 10_000


class TrainingDivergedError(ValueError, FloatingPointError):
    """The loss or the weights became NaN or infinite during fit."""


# ------------------------------------------------------------- profiling

class TrainingProfile:
    """Where the time of training steps goes, filled in by the fits that
    run inside :func:`profile_training`.

    Attributes
    ----------
    seconds : dict
        Seconds summed over the steps: per layer of the network under the
        keys ``(position, name, 'forward')`` and ``(position, name,
        'backward')`` (position in the ``layers`` list, name of the layer's
        specification class; a layer inside a residual block has its path
        as position, ``(3, 'layers', 1)``, and the block's own keys time
        its sums alone), and under ``'batch copy'`` (gathering the
        batch's samples and labels), ``'loss'`` (the estimator's loss and the
        L2 penalty) and ``'optimizer'`` (the parameter update).
    steps : int
        Training steps (batches) timed.
    """

    def __init__(self):
        self.seconds = {}
        self.steps = 0

    def add(self, part, since):
        """Adds the seconds from ``since`` (a time.perf_counter reading) to now."""
        self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - since

    def count_step(self):
        self.steps += 1


class _NoProfile:
    """What a training run times when nothing profiles it: nothing."""
    seconds = None

    def add(self, part, since):
        pass

    def count_step(self):
        pass


_NO_PROFILE = _NoProfile()
_active_profile = contextvars.ContextVar("fastcnn_training_profile",
                                         default=_NO_PROFILE)


@contextlib.contextmanager
def profile_training():
    """Time the parts of every training step that ``fit`` and
    ``partial_fit`` run in this block (in the calling thread).

    Yields a :class:`TrainingProfile`, filled in as the fits run::

        with fastcnn.profile_training() as profile:
            clf.partial_fit(X, y)
        per_step = {part: s / profile.steps for part, s in profile.seconds.items()}

    Timing adds a clock reading around each layer's pass; outside such a
    block a fit reads no clock beyond its own.
    """
    profile = TrainingProfile()
    token = _active_profile.set(profile)
    try:
        yield profile
    finally:
        _active_profile.reset(token)


# -------------------------------------------------- snapshots, Ctrl-C

class Snapshot:
    """A copy of the network's parameters and non-trainable state and of
    the optimizer's state, to go back to."""

    def __init__(self, network, optimizer_state):
        self.state = optimizer_state
        self.arrays = [network.params, network.state] + optimizer_state["buffers"]
        self.saved = [a.copy() for a in self.arrays]
        self.saved_step = optimizer_state["step"]

    def save(self):
        for saved, array in zip(self.saved, self.arrays):
            np.copyto(saved, array)
        self.saved_step = self.state["step"]

    def restore(self):
        for saved, array in zip(self.saved, self.arrays):
            np.copyto(array, saved)
        self.state["step"] = self.saved_step


class InterruptDeferred:
    """Holds Ctrl-C back for the length of a ``with`` block and raises it as
    the block ends, so that the block runs whole (or, interrupted before it
    starts, not at all). Only the main thread receives signals, and only a
    Python handler (the default raises KeyboardInterrupt) runs in the
    interpreter: otherwise there is nothing to hold back."""

    def __enter__(self):
        self.handler, self.caught = None, None
        if (threading.current_thread() is threading.main_thread()
                and callable(signal.getsignal(signal.SIGINT))):
            self.handler = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        self.caught = (signum, frame)

    def __exit__(self, *exc_info):
        if self.handler is not None:
            signal.signal(signal.SIGINT, self.handler)
            if self.caught is not None:
                self.handler(*self.caught)


# ------------------------------------------- optimizers, thread counts

def optimizer_state(estimator, params):
    """The optimizer's state, kept on the estimator (``_optimizer_state``)
    so that partial_fit and warm_start continue: the step count, the
    moment buffers (Adam: two, SGD: the velocity) and the learning rate
    of 'adaptive'. A new solver or network starts from zero."""
    state = estimator._optimizer_state
    if (state is None or state["solver"] != estimator.solver
            or len(state["buffers"][0]) != len(params)):
        count = 2 if estimator.solver == "adam" else 1
        state = {"solver": estimator.solver, "step": 0,
                 "learning_rate": estimator.learning_rate_init,
                 "buffers": [np.zeros_like(params) for _ in range(count)]}
        estimator._optimizer_state = state
    return state


def optimizer_step(estimator, network, state):
    """A function taking one step on the network's gradients, given the
    learning rate in effect, the L2 penalty per sample and the threads."""
    params, grads = network.params, network.grads
    buffers, n_weights = state["buffers"], network.n_weights
    if estimator.solver == "adam":
        beta_1, beta_2, epsilon = estimator.beta_1, estimator.beta_2, estimator.epsilon

        def step(lr, l2, n_threads):
            state["step"] += 1
            F.adam_update(params, grads, buffers[0], buffers[1], state["step"],
                          lr, beta_1, beta_2, epsilon, l2, n_weights, n_threads)
        return step
    momentum, nesterov = estimator.momentum, estimator.nesterovs_momentum

    def step(lr, l2, n_threads):
        F.sgd_update(params, grads, buffers[0], lr, momentum, nesterov, l2,
                     n_weights, n_threads)
    return step


# ------------------------------------------------------ learning rates

#: the values of ``learning_rate``
LEARNING_RATE_SCHEDULES = ("constant", "invscaling", "adaptive", "cosine")
# MLPClassifier's 'adaptive' rule: the rate is divided by this where the
# stopping rule fires, and training stops there once the rate is at most
# ADAPTIVE_MIN_RATE
ADAPTIVE_DIVISOR = 5.0
ADAPTIVE_MIN_RATE = 1e-6


class LearningRateSchedule:
    """The learning rate of every step of one fit or partial_fit call, by
    the estimator's ``learning_rate``.

    'constant' is ``learning_rate_init``; 'invscaling' is MLPClassifier's
    ``learning_rate_init / (t_ + 1) ** power_t`` for the epoch, ``t_`` the
    samples trained on before it; 'adaptive' is the rate in the optimizer
    state, set to ``learning_rate_init`` at the start of every fit (kept
    by partial_fit) and divided by :meth:`decay`; 'cosine' anneals from
    ``learning_rate_init`` to 0 step by step over ``max_iter`` epochs of
    ``n_batches`` steps: ``learning_rate_init * (1 + cos(pi * s / S)) /
    2`` at step ``s`` of ``S = max_iter * n_batches``, counting from the
    fit's first epoch (a warm-start fit anneals again, a warm restart) or,
    for partial_fit, every ``max_iter`` epochs since initialisation.
    """

    def __init__(self, estimator, state, n_batches, incremental):
        self.estimator, self.state, self.n_batches = estimator, state, n_batches
        self.cycle_start = 0 if incremental else estimator.n_iter_
        if not incremental:
            state["learning_rate"] = estimator.learning_rate_init

    def epoch_rates(self):
        """A function giving the learning rate of each step of the epoch
        about to start, by its batch number in the epoch."""
        return getattr(self, "_" + self.estimator.learning_rate)()

    def _constant(self):
        rate = self.estimator.learning_rate_init
        return lambda batch: rate

    def _invscaling(self):
        estimator = self.estimator
        rate = (float(estimator.learning_rate_init)
                / (estimator.t_ + 1) ** estimator.power_t)
        return lambda batch: rate

    def _adaptive(self):
        rate = self.state["learning_rate"]
        return lambda batch: rate

    def _cosine(self):
        estimator, n_batches = self.estimator, self.n_batches
        rate, epochs = estimator.learning_rate_init, estimator.max_iter
        first = (estimator.n_iter_ - self.cycle_start) % epochs * n_batches
        steps = epochs * n_batches
        return lambda batch: rate * (1 + math.cos(math.pi * (first + batch) / steps)) / 2

    def decay(self):
        """Where the stopping rule fires: with 'adaptive', divide the rate
        by 5 and go on (True) unless it is at most 1e-6; otherwise stop
        (False)."""
        if (self.estimator.learning_rate != "adaptive"
                or self.state["learning_rate"] <= ADAPTIVE_MIN_RATE):
            return False
        self.state["learning_rate"] /= ADAPTIVE_DIVISOR
        return True


def thread_governor(estimator, n_threads):
    """The thread count of each training step: with n_threads=None, the
    count the machine runs fastest now, at most n_threads' resolution
    (kept on the estimator across partial_fit calls); a given n_threads
    is kept as is."""
    if estimator.n_threads is not None:
        return ThreadGovernor(n_threads, least=n_threads)
    governor = getattr(estimator, "_thread_governor", None)
    if governor is None or governor.most != n_threads:
        governor = estimator._thread_governor = ThreadGovernor(n_threads)
    return governor


# ------------------------------------------------------------ settings

def holds_out_validation(estimator, n_samples, incremental):
    """Whether a fit on n_samples holds out validation data (never
    partial_fit, which has no epochs of its own to stop)."""
    if incremental:
        return False
    if isinstance(estimator.early_stopping, str):
        return n_samples > AUTO_EARLY_STOPPING_SAMPLES
    return bool(estimator.early_stopping)


def batch_size_for(estimator, n_samples):
    if estimator.batch_size == "auto":
        return min(32, n_samples)
    if estimator.batch_size > n_samples:
        warnings.warn(f"Got batch_size larger than sample size. It is going "
                      f"to be clipped to {n_samples}")
    return min(estimator.batch_size, n_samples)


def validation_split(estimator, X, y, sample_weight, rng):
    """(X, X_val, y, y_val, sample_weight, sample_weight_val): the held-out
    share for early stopping, stratified as the estimator says; the weights
    are None without sample_weight."""
    # imported here: sklearn.model_selection costs memory and import
    # time that a fit without early stopping never needs
    from sklearn.model_selection import train_test_split
    arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
    try:
        split = train_test_split(*arrays, random_state=rng,
                                 test_size=estimator.validation_fraction,
                                 stratify=estimator._stratify(y))
    except ValueError as error:
        raise ValueError(
            f"early_stopping with validation_fraction="
            f"{estimator.validation_fraction} cannot split {len(y)} "
            f"samples: {error}") from None
    if len(split[0]) < 1:
        raise ValueError("too few samples left for training after the "
                         "validation split")
    if sample_weight is None:
        return split + [None, None]
    if not split[5].sum() > 0:
        raise ValueError(
            "The sample weights of the validation set (validation_fraction="
            f"{estimator.validation_fraction}) are all zero: early_stopping "
            "cannot score it; use another random_state or fewer zero weights")
    return split


# ------------------------------------------------------------ training

def train(estimator, X, y, sample_weight, rng, epochs, incremental):
    """Train ``estimator.network_`` for up to ``epochs`` epochs (one for
    partial_fit, ``incremental``) on X, y and the samples' weights (None:
    all equal) and update the estimator's fitted attributes; returns the
    estimator."""
    TrainingRun(estimator, X, y, sample_weight, rng, incremental).run(epochs)
    return estimator


class TrainingRun:
    """One call of fit or partial_fit, from the validation split to the
    warnings after the last epoch.

    The batch and the loss's gradient are the same arrays every step (and
    the same slices of them for a last, smaller batch), so that the
    network's layers run the calls they prepared for them
    (Layer.prepared).
    """

    def __init__(self, estimator, X, y, sample_weight, rng, incremental):
        self.estimator, self.rng, self.incremental = estimator, rng, incremental
        self.network = network = estimator.network_
        self.X_val = self.y_val = self.weight_val = None
        self.early_stopping = holds_out_validation(estimator, len(X), incremental)
        if self.early_stopping:
            X, self.X_val, y, self.y_val, sample_weight, self.weight_val = (
                validation_split(estimator, X, y, sample_weight, rng))
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self._start_records()
        self.n_samples = n_samples = len(X)
        self.batch_size = batch_size = batch_size_for(estimator, n_samples)
        network.allocate(batch_size, training=True)
        batch = np.empty((batch_size,) + X.shape[1:], dtype=network.dtype)
        grad_scores = np.empty((batch_size,) + network.output_shape,
                               dtype=network.dtype)
        last = n_samples % batch_size or batch_size
        self.batches = {batch_size: (batch, grad_scores),
                        last: (batch[:last], grad_scores[:last])}
        state = optimizer_state(estimator, network.params)
        self.optimizer = optimizer_step(estimator, network, state)
        self.n_batches = -(-n_samples // batch_size)
        self.schedule = LearningRateSchedule(estimator, state, self.n_batches,
                                             incremental)
        self.rates = None           # the current epoch's, by batch number
        self.decayed = False        # 'adaptive' divided the rate this epoch
        self.governor = thread_governor(estimator, effective_n_threads(estimator.n_threads))
        # the weights and optimizer state of the last recorded epoch, put
        # back when training diverges or is interrupted
        self.last_good = Snapshot(network, state)
        self.order = np.arange(n_samples, dtype=index_dtype(n_samples))
        # (epoch, parameters, state) of the best validation score
        self.best = None

    def _start_records(self):
        """The records of the stopping rule this fit uses (warm_start may
        follow a fit with the other early_stopping setting)."""
        estimator = self.estimator
        if self.early_stopping and estimator.validation_scores_ is None:
            estimator.validation_scores_ = []
            estimator.best_validation_score_ = -np.inf
        if not self.early_stopping and estimator.best_loss_ is None:
            estimator.best_loss_ = np.inf

    def run(self, epochs):
        self.profile = _active_profile.get()
        self.network.profile = self.profile.seconds
        try:
            stopped_by = self._run_epochs(epochs)
        except KeyboardInterrupt:
            self.last_good.restore()
            stopped_by = "interrupt"
        finally:
            self.network.release()
            self.network.profile = None
        self._finish(stopped_by)

    def _run_epochs(self, epochs):
        """Why the epochs stopped before ``epochs``: 'no improvement', or
        None when they all ran."""
        estimator = self.estimator
        for _ in range(epochs):
            self._run_epoch()
            if (not self.incremental
                    and estimator._no_improvement_count > estimator.n_iter_no_change):
                return "no improvement"
        return None

    def _run_epoch(self):
        start = time.perf_counter()
        if self.estimator.shuffle:
            # a uniform random order whatever the order before
            self.rng.shuffle(self.order)
        self.rates = self.schedule.epoch_rates()
        total_loss, n_threads = self._run_steps()
        epoch_loss = total_loss / self.n_samples
        seconds = time.perf_counter() - start
        score = (self.estimator._validation_score(self.X_val, self.y_val, n_threads,
                                                  self.weight_val)
                 if self.early_stopping else None)
        # Counting, recording and snapshotting the epoch is one step: an
        # interrupt before it puts back the last recorded epoch.
        with InterruptDeferred():
            if self._record_epoch(epoch_loss, score):
                self.best = (self.estimator.n_iter_, self.network.params.copy(),
                             self.network.state.copy())
            self.last_good.save()
        if self.estimator.verbose:
            self._report(epoch_loss, seconds)

    def _run_steps(self):
        """One pass over the samples; (summed loss, threads of the last
        step)."""
        total_loss, batch_size, n_samples = 0.0, self.batch_size, self.n_samples
        progress = self.estimator.verbose >= 2
        for batch_start in range(0, n_samples, batch_size):
            index = self.order[batch_start:batch_start + batch_size]
            n_threads = self.governor.threads()
            loss, xb, yb = self._step(index, n_threads, batch_start // batch_size)
            total_loss += loss * len(index)
            if progress:
                self._progress(batch_start + len(index))
        # The epoch's last step is checked too: the loss of the new weights
        # on the last batch (NaN or overflowing weights give a non-finite
        # loss), without updating running statistics or drawing dropout
        # masks that training would then see.
        after, _ = self.estimator._loss(self.network.check_forward(xb, n_threads), yb,
                                        None, None)
        if not math.isfinite(after):
            self._diverged(None)
        return total_loss, n_threads

    def _step(self, index, n_threads, batch_number):
        """One optimizer step on the samples ``index``; (loss, batch, targets)."""
        network, profile, clock = self.network, self.profile, time.perf_counter
        n = len(index)
        batch, grad_scores = self.batches[n]
        tick = step_start = clock()
        xb = F.take_samples(self.X, index, n_threads, out=batch)
        yb = self.y[index]
        wb = None if self.sample_weight is None else self.sample_weight[index]
        # MLPClassifier's scale of the penalty: per unit of weight
        weight_sum = n if wb is None else float(wb.sum())
        profile.add("batch copy", tick)
        if weight_sum == 0:
            return 0.0, xb, yb
        logits = network.forward(xb, n_threads)
        tick = clock()
        loss, grad = self.estimator._loss(logits, yb, grad_scores, wb)
        alpha = self.estimator.alpha
        l2 = alpha / weight_sum
        if alpha:
            weights = network.params[:network.n_weights]
            loss += 0.5 * l2 * float(np.dot(weights, weights))
        if not math.isfinite(loss):
            self._diverged(batch_number)
        profile.add("loss", tick)
        network.backward(grad, n_threads)
        tick = clock()
        self.optimizer(self.rates(batch_number), l2, n_threads)
        if n == self.batch_size:
            self.governor.record(clock() - step_start, n)
        profile.add("optimizer", tick)
        profile.count_step()
        return loss, xb, yb

    # ---------------------------------------------------- records

    def _record_epoch(self, loss, score):
        """Counts a completed epoch and records its loss, validation score
        (None without early stopping) and whether it improved; True when
        its weights are the best on the validation data so far."""
        estimator = self.estimator
        estimator.n_iter_ += 1
        estimator.t_ += self.n_samples
        estimator.loss_curve_.append(loss)
        best = False
        if score is None:
            improved = loss <= estimator.best_loss_ - estimator.tol
            estimator.best_loss_ = min(estimator.best_loss_, loss)
        else:
            estimator.validation_scores_.append(score)
            best = score > estimator.best_validation_score_
            improved = score >= estimator.best_validation_score_ + estimator.tol
            estimator.best_validation_score_ = max(estimator.best_validation_score_, score)
        if not self.incremental:
            self._update_no_improvement_count(improved)
        return best

    def _update_no_improvement_count(self, improved):
        """The count of epochs without improvement; where it passes
        n_iter_no_change, 'adaptive' divides the learning rate and the
        count starts again (MLPClassifier's rule) instead of the fit
        stopping."""
        estimator = self.estimator
        count = 0 if improved else estimator._no_improvement_count + 1
        self.decayed = count > estimator.n_iter_no_change and self.schedule.decay()
        estimator._no_improvement_count = 0 if self.decayed else count

    def _diverged(self, batch):
        """Puts back the last recorded epoch and raises; ``batch``: the
        index of the step whose loss diverged, None for the check after the
        epoch's last step."""
        self.last_good.restore()
        estimator = self.estimator
        where = f"epoch {estimator.n_iter_ + 1}" + (
            " after its last step" if batch is None else f", batch {batch + 1}")
        raise TrainingDivergedError(
            f"Training diverged: the loss became NaN or infinite in {where}. "
            f"learning_rate_init={estimator.learning_rate_init} is probably too "
            "high (or the input needs scaling, e.g. with StandardScaler). The "
            f"weights of the last completed epoch ({estimator.n_iter_}) are kept.")

    def _finish(self, stopped_by):
        """The best epoch's weights with early stopping, and what the
        estimator says about the stop."""
        estimator = self.estimator
        if self.best is not None:
            np.copyto(self.network.params, self.best[1])
            np.copyto(self.network.state, self.best[2])
        if stopped_by == "interrupt":
            self._warn_interrupted()
        elif stopped_by is None and not self.incremental:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({estimator.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning)
        if estimator.verbose and stopped_by == "no improvement":
            print(f"{self._no_improvement()} Stopping.")

    def _no_improvement(self):
        estimator = self.estimator
        what = "Validation score" if self.early_stopping else "Training loss"
        return (f"{what} did not improve more than tol={estimator.tol} for "
                f"{estimator.n_iter_no_change} consecutive epochs.")

    def _warn_interrupted(self):
        """The warning of an interrupted fit, naming the epoch whose weights
        are kept: the last recorded one, or with early stopping the best."""
        n_iter = self.estimator.n_iter_
        if self.best is not None:
            kept = (f"the weights of epoch {self.best[0]}, the best on the "
                    "validation data, are kept")
        elif n_iter:
            kept = f"the weights of epoch {n_iter}, the last completed, are kept"
        else:
            kept = "the initial weights are kept"
        done = f"after epoch {n_iter}" if n_iter else "before an epoch completed"
        warnings.warn(f"fit was interrupted {done}: {kept}", UserWarning)

    # ---------------------------------------------------- verbose

    def _report(self, loss, seconds):
        estimator = self.estimator
        line = f"Epoch {estimator.n_iter_}: loss = {loss:.6f}"
        if estimator.validation_scores_:
            line += f", validation score = {estimator.validation_scores_[-1]:.4f}"
        if estimator.learning_rate != "constant":
            # the rate of the epoch's last step
            line += f", learning rate = {self.rates(self.n_batches - 1):.4g}"
        line += (f", {seconds:.2f} s, "
                 f"{self.n_samples / max(seconds, 1e-9):,.0f} images/s")
        if estimator.verbose >= 2:
            sys.stdout.write("\r" + " " * 60 + "\r")
        print(line, flush=True)
        if self.decayed:
            print(f"{self._no_improvement()} Setting learning rate to "
                  f"{self.schedule.state['learning_rate']:.4g}.", flush=True)

    def _progress(self, done):
        width, total = 30, self.n_samples
        filled = width * done // total
        sys.stdout.write(f"\rEpoch {self.estimator.n_iter_ + 1} [{'=' * filled}"
                         f"{'.' * (width - filled)}] {done}/{total}")
        sys.stdout.flush()
