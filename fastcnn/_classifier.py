"""CNNClassifier: a scikit-learn classifier that trains a convolutional network."""
import math
import numbers
import signal
import sys
import threading
import time
import warnings

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                      check_classification_targets)
from sklearn.utils.validation import (check_array, check_consistent_length,
                                      check_is_fitted, column_or_1d,
                                      validate_data)

from . import functional as F
from . import layers as L
from ._network import Network, layer_output_shape
from ._threads import ThreadGovernor, effective_n_threads

_DTYPES = {"float32": np.float32, "float64": np.float64}
# Memory for the activations of one prediction batch: small enough that a
# layer's output is still in the last-level cache when the next layer reads
# it (LeNet-5 predicts about twice as fast in batches of 16 MiB as of 64).
_PREDICT_BUFFER_BYTES = 16 * 2**20
_MAX_PREDICT_BATCH = 4096
# early_stopping='auto' holds out validation data above this many training
# samples, the threshold of HistGradientBoostingClassifier's 'auto': there a
# tenth of the data is a validation set fine enough to rank epochs (600 of
# 6000 is 0.17%), and the training loss, which keeps falling long after the
# test accuracy has peaked, would run many slow epochs into overfitting.
_AUTO_EARLY_STOPPING_SAMPLES = 10_000


class TrainingDivergedError(ValueError, FloatingPointError):
    """The loss or the weights became NaN or infinite during fit."""


class _Snapshot:
    """A copy of the parameters and the optimizer's state, to go back to."""

    def __init__(self, params, optimizer_state):
        self.params, self.state = params, optimizer_state
        self.saved_params = params.copy()
        self.saved_buffers = [b.copy() for b in optimizer_state["buffers"]]
        self.saved_step = optimizer_state["step"]

    def save(self):
        np.copyto(self.saved_params, self.params)
        for saved, buffer in zip(self.saved_buffers, self.state["buffers"]):
            np.copyto(saved, buffer)
        self.saved_step = self.state["step"]

    def restore(self):
        np.copyto(self.params, self.saved_params)
        for saved, buffer in zip(self.saved_buffers, self.state["buffers"]):
            np.copyto(buffer, saved)
        self.state["step"] = self.saved_step


class _InterruptDeferred:
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


def _encode_by_counting(y):
    """``np.unique(y, return_inverse=True)`` for integer labels spanning no
    more values than there are labels, by counting instead of sorting: linear
    time, and no temporary copies of y, whose freed memory a sort leaves in
    the process's heap. Labels 0 to K - 1, every one present, are their
    own indices: y itself is returned, not copied. None for any other y."""
    if y.dtype.kind not in "iu" or len(y) == 0:
        return None
    low, high = int(y.min()), int(y.max())
    if high - low > len(y) or high > np.iinfo(np.intp).max:
        return None
    if low == 0 and y.dtype == np.intp:
        present = np.bincount(y, minlength=high + 1) > 0
        if present.all():
            return np.arange(high + 1, dtype=y.dtype), np.ascontiguousarray(y)
    # In the index type, y and low may wrap around, but their difference,
    # between 0 and len(y), comes out right (arithmetic modulo 2**bits).
    y_index = np.subtract(y, y.dtype.type(low), dtype=_index_dtype(len(y) + 1),
                          casting="unsafe")
    present = np.bincount(y_index, minlength=high - low + 1) > 0
    classes = (np.flatnonzero(present) + low).astype(y.dtype)
    position = np.cumsum(present, dtype=y_index.dtype) - 1
    np.take(position, y_index, out=y_index)
    return classes, y_index


def _index_dtype(n):
    """int32 for indices below n when they fit (half the memory of intp for
    a large training set; the kernels take both), else intp."""
    return np.int32 if n <= np.iinfo(np.int32).max else np.intp


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_tuple(value, name):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not all(_is_int(v) and v >= 1 for v in values):
        raise ValueError(
            f"{name} must be a positive int or a tuple of positive ints, "
            f"got {value!r}")
    return values


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """Convolutional neural network classifier.

    Trains ``INPUT -> [CONV -> RELU -> POOL] * M -> [DENSE -> RELU] * K ->
    DENSE`` with softmax cross-entropy, on all cores through fastcnn's
    OpenMP kernels. The hidden layers come either from the simple parameters
    (``filters``, ``kernel_size``, ``pool_size``, ``padding``,
    ``hidden_layer_sizes``) or from ``layers``, a list of
    :mod:`fastcnn.layers` specifications; the output layer (one unit per
    class) is always added. Results are bitwise identical for any number of
    threads given the same ``random_state``.

    The defaults are chosen to fit small data sets in well under a second
    and large ones without training long past their best. On the 8x8
    digits (75% for training, 10 splits) they reach 0.988 mean test
    accuracy in about 0.4 s on 2 cores, about 22 epochs; MLPClassifier's
    training settings (batch 200, tol 1e-4, n_iter_no_change 10) with
    filters (32, 64) reach 0.989 in 75-99 epochs and about 2.3 s. On
    Fashion-MNIST they hold out a tenth of the images and stop 6 epochs
    after the best validation score (0.912 test accuracy, 11 epochs, about
    25 s). ``benchmarks/bench_defaults.py`` measures them.

    Parameters
    ----------
    filters : tuple of int, default=(16, 32)
        Output channels of each convolution block. ``()`` gives none.
        Two blocks of 16 and 32 channels cost under half the time per epoch
        of (32, 64) (2.2-3.5 s against 7-8.6 s on Fashion-MNIST) for a few
        tenths of a percent of accuracy on digits; widen them for harder
        images.
    kernel_size : int or tuple of int, default=3
        Kernel of every convolution (per axis when a tuple).
    pool_size : int, tuple of int or None, default=2
        Max-pooling window after each convolution; None for no pooling.
        A window larger than its input is cut to the input's size, so the
        blocks work on any input size (a signal of 3 features, say).
    padding : {'same', 'valid'} or int, default='same'
        Padding of every convolution.
    hidden_layer_sizes : tuple of int, default=(128,)
        Dense ReLU layers after the convolution blocks.
    layers : list of fastcnn.layers specifications or None, default=None
        When given, these are the hidden layers and the five parameters
        above are ignored.
    solver : {'adam', 'sgd'}, default='adam'
    learning_rate_init : float, default=0.003
        Adam's customary 0.001 makes these small networks take about 1.7x
        the epochs to reach the stopping rule (37 against 22 on digits) for
        no better accuracy; 0.003 is still stable with batches of 32.
    momentum : float, default=0.9
        SGD momentum, in [0, 1].
    nesterovs_momentum : bool, default=True
    beta_1, beta_2, epsilon : float, defaults 0.9, 0.999, 1e-8
        Adam's parameters.
    batch_size : int or 'auto', default='auto'
        'auto' is ``min(32, n_samples)``. MLPClassifier's 200 gives a small
        data set a handful of steps per epoch (7 on 1347 digits), so the
        stopping rule waits through many cheap but unproductive epochs; 32,
        the usual batch of CNN recipes, takes fewer epochs than 64 (22
        against 29 on digits) and costs about a third more per image than
        200 on Fashion-MNIST.
    max_iter : int, default=200
        Epochs (passes over the training data).
    alpha : float, default=0.0001
        L2 penalty on the weights (not the biases), scaled by the batch size
        as in MLPClassifier: ``loss += alpha / (2 * batch) * ||W||^2``.
    shuffle : bool, default=True
        Shuffle the samples before each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the validation split.
    tol : float, default=1e-3
        Training stops when the loss (or, with early stopping, the validation
        accuracy) has not improved by at least ``tol`` for more than
        ``n_iter_no_change`` consecutive epochs (the rule of MLPClassifier).
        A CNN drives the training loss of small image sets towards zero,
        ever more slowly: MLPClassifier's 1e-4 trains the default network
        36 epochs on digits instead of 22, for 0.989 mean test accuracy
        instead of 0.988. As an accuracy (early stopping), 1e-3 is 0.1%.
    early_stopping : bool or 'auto', default='auto'
        Hold out ``validation_fraction`` of the training data (stratified)
        and stop when its accuracy stops improving; the weights of the best
        epoch are kept. 'auto' does so when ``fit`` gets more than 10000
        samples (as HistGradientBoostingClassifier's 'auto'): a tenth of them
        ranks epochs finely enough, and on such data the training loss goes
        on falling for dozens of epochs after the test accuracy has peaked.
        Smaller sets keep all their samples for training and stop on the
        training loss. ``partial_fit`` never holds data out.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
        Five epochs ride out the noise of minibatch losses; MLPClassifier's
        10 adds about 6 epochs to every fit (28 against 22 on digits).
    warm_start : bool, default=False
        Continue from the weights of the previous ``fit``.
    verbose : int, default=0
        1: one line per epoch (loss, validation score, seconds, images/s);
        2: also a progress bar within each epoch.
    n_threads : int or None, default=None
        Threads for the kernels. None: up to the physical cores, within the
        limits of ``OMP_NUM_THREADS`` and threadpoolctl, and while training
        as many of them as run fastest at the moment (on a busy machine,
        one thread can be much faster than several); an int: that many;
        negative values count back from all cores (-1: all).
    dtype : {'float32', 'float64'}, default='float32'
        Precision of the weights and computations.
    input_shape : tuple of int or None, default=None
        Shape of one sample, ``(C, H, W)`` or ``(C, L)``, for flat X of shape
        ``(n_samples, n_features)``. None: X's own shape; flat X is then a
        one-channel signal of length n_features (never a guessed image).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of values per sample (``C * H * W`` for images).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X had string column names.
    input_shape_ : tuple
        Shape of one sample as the network sees it.
    network_ : fastcnn network
        The fitted layers, in the order they run (a ReLU before max
        pooling runs inside the pooling); use ``coefs_`` and
        ``intercepts_`` for the parameters.
    coefs_, intercepts_ : lists of ndarray
        Weights and biases of each layer that has them (views into the
        network's parameters).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    best_loss_ : float or None
        Lowest training loss (None when the fit used early stopping).
    validation_scores_ : list of float or None
        Accuracy on the held-out data after each epoch, with early stopping.
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastcnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = CNNClassifier(input_shape=(1, 8, 8), random_state=0).fit(X / 16, y)
    """

    def __init__(self, filters=(16, 32), kernel_size=3, pool_size=2,
                 padding="same", hidden_layer_sizes=(128,), layers=None,
                 solver="adam", learning_rate_init=0.003, momentum=0.9,
                 nesterovs_momentum=True, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, batch_size="auto", max_iter=200, alpha=0.0001,
                 shuffle=True, random_state=None, tol=1e-3,
                 early_stopping="auto", validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, verbose=0,
                 n_threads=None, dtype="float32", input_shape=None):
        self.filters = filters
        self.kernel_size = kernel_size
        self.pool_size = pool_size
        self.padding = padding
        self.hidden_layer_sizes = hidden_layer_sizes
        self.layers = layers
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.alpha = alpha
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.verbose = verbose
        self.n_threads = n_threads
        self.dtype = dtype
        self.input_shape = input_shape

    # ------------------------------------------------------ validation

    def _check_params(self):
        """Every hyperparameter, with a ValueError naming the one at fault."""
        def number(name, low, high=None, low_open=False, high_open=False):
            value = getattr(self, name)
            ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and np.isfinite(value))
            if ok:
                ok = (value > low if low_open else value >= low)
                if high is not None:
                    ok = ok and (value < high if high_open else value <= high)
            if not ok:
                bounds = (("(" if low_open else "[") + f"{low}, "
                          + (f"{high}" if high is not None else "inf")
                          + (")" if high_open or high is None else "]"))
                raise ValueError(
                    f"{name} must be a finite number in {bounds}, got {value!r}")

        def integer(name, low):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"solver must be 'adam' or 'sgd', got {self.solver!r}")
        number("learning_rate_init", 0, low_open=True)
        number("momentum", 0, 1)
        number("beta_1", 0, 1, high_open=True)
        number("beta_2", 0, 1, high_open=True)
        number("epsilon", 0, low_open=True)
        number("alpha", 0)
        number("tol", 0)
        number("validation_fraction", 0, 1, low_open=True, high_open=True)
        integer("max_iter", 1)
        integer("n_iter_no_change", 1)
        integer("verbose", 0)
        if not (self.batch_size == "auto" or (_is_int(self.batch_size)
                                              and self.batch_size >= 1)):
            raise ValueError(
                f"batch_size must be 'auto' or a positive int, got {self.batch_size!r}")
        if not (isinstance(self.early_stopping, (bool, np.bool_))
                or (isinstance(self.early_stopping, str) and self.early_stopping == "auto")):
            raise ValueError(f"early_stopping must be True, False or 'auto', "
                             f"got {self.early_stopping!r}")
        for name in ("shuffle", "nesterovs_momentum", "warm_start"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.dtype, str) and self.dtype in (np.float32, np.float64):
            dtype = np.dtype(self.dtype).name
        else:
            dtype = self.dtype
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        try:
            effective_n_threads(self.n_threads)
        except ValueError as error:
            raise ValueError(str(error)) from None
        if self.input_shape is not None:
            shape = _int_tuple(self.input_shape, "input_shape")
            if len(shape) not in (2, 3):
                raise ValueError(
                    f"input_shape must be (C, H, W) or (C, L), got {self.input_shape!r}")
        if self.layers is None:
            if self.filters != ():
                _int_tuple(self.filters, "filters")
            _int_tuple(self.kernel_size, "kernel_size")
            if self.pool_size is not None:
                _int_tuple(self.pool_size, "pool_size")
            if self.hidden_layer_sizes != ():
                _int_tuple(self.hidden_layer_sizes, "hidden_layer_sizes")
            if not (self.padding in ("same", "valid")
                    or (_is_int(self.padding) and self.padding >= 0)):
                raise ValueError(
                    f"padding must be 'same', 'valid' or an int >= 0, got {self.padding!r}")
        else:
            if not isinstance(self.layers, (list, tuple)):
                raise ValueError(
                    f"layers must be a list of fastcnn.layers specifications, "
                    f"got {self.layers!r}")
            for i, spec in enumerate(self.layers):
                if not isinstance(spec, L.LayerSpec):
                    raise ValueError(
                        f"layers[{i}] must be a layer specification from "
                        f"fastcnn.layers (Conv2D, Dense, ...), got {spec!r}")
        return _DTYPES[dtype]

    def _validate_X(self, X, reset, dtype):
        """X as a C-ordered array of shape (n, *input_shape_) and ``dtype``."""
        if not reset:
            checked = self._validate_float_ndarray(X, dtype)
            if checked is not None:
                return checked
        if not hasattr(X, "ndim") and not issparse(X) and not isinstance(X, str):
            X = np.asarray(X)    # lists and other array-likes
        ndim = getattr(X, "ndim", 2)
        if ndim >= 3:
            if ndim > 4:
                raise ValueError(
                    f"X must have 2 to 4 dimensions ((n, C, H, W), (n, H, W), "
                    f"(n, C, L) or (n, n_features)), got {ndim}")
            X = check_array(X, allow_nd=True, dtype=dtype, order="C",
                            estimator=self, input_name="X")
            validate_data(self, X.reshape(len(X), -1), reset=reset,
                          skip_check_array=True)
        else:
            X = validate_data(self, X, reset=reset, dtype=dtype, order="C")
        if reset:
            self.input_shape_ = self._resolve_input_shape(X.shape)
        elif X.ndim > 2:
            # flat X of the right length is reshaped; an image of another
            # shape with as many values is a mistake
            accepted = [self.input_shape_]
            if len(self.input_shape_) == 3 and self.input_shape_[0] == 1:
                accepted.append(self.input_shape_[1:])
            if X.shape[1:] not in accepted:
                raise ValueError(
                    f"X has samples of shape {X.shape[1:]}, but "
                    f"{type(self).__name__} is expecting samples of shape "
                    f"{self.input_shape_} ({self.n_features_in_} features) as input.")
        return np.ascontiguousarray(X.reshape((len(X),) + self.input_shape_))

    def _validate_float_ndarray(self, X, dtype):
        """What _validate_X returns, for a fitted estimator and the common
        case of a finite float NumPy array of the fitted shape, checked
        without scikit-learn's general validation, which is most of the
        time of a one-row prediction; None for anything else, which takes
        the general way (and gets its errors)."""
        if (type(X) is not np.ndarray or X.dtype.kind != "f" or X.size == 0
                or hasattr(self, "feature_names_in_")):
            return None
        shape = X.shape[1:]
        if shape != self.input_shape_ and shape != (self.n_features_in_,):
            return None
        X = X.astype(dtype, copy=False)
        # a finite sum has finite terms; an infinite one may only overflow
        if not math.isfinite(X.sum()):
            return None
        return np.ascontiguousarray(X.reshape((len(X),) + self.input_shape_))

    def _resolve_input_shape(self, shape):
        n_features = int(np.prod(shape[1:]))
        if self.input_shape is not None:
            declared = tuple(int(v) for v in self.input_shape)
            if int(np.prod(declared)) != n_features:
                raise ValueError(
                    f"input_shape={declared} holds {int(np.prod(declared))} "
                    f"values per sample, but X has {n_features} "
                    f"(X.shape = {tuple(shape)})")
            return declared
        if len(shape) == 2:
            return (1, shape[1])              # a one-channel signal
        if len(shape) == 3 and self.layers is None:
            return (1,) + tuple(shape[1:])    # (n, H, W): one-channel images
        if len(shape) == 3:
            # with explicit layers, (n, H, W) vs (n, C, L) follows the first
            # spatial layer
            first = next((s for s in self.layers if s.spatial_ndim), None)
            if first is not None and first.spatial_ndim == 1:
                return tuple(shape[1:])
            return (1,) + tuple(shape[1:])
        return tuple(shape[1:])

    # ---------------------------------------------------- architecture

    def _hidden_specs(self, input_shape):
        """The hidden layers: ``layers``, or those the simple parameters
        describe for inputs of ``input_shape``."""
        if self.layers is not None:
            return list(self.layers)
        ndim = len(input_shape) - 1
        conv = L.Conv2D if ndim == 2 else L.Conv1D
        pool = L.MaxPool2D if ndim == 2 else L.MaxPool1D
        kernel = _int_tuple(self.kernel_size, "kernel_size")
        kernel = kernel * ndim if len(kernel) == 1 else kernel
        if len(kernel) != ndim:
            raise ValueError(
                f"kernel_size {self.kernel_size!r} does not fit inputs of "
                f"{ndim} spatial axes {input_shape}")
        pool_size = None
        if self.pool_size is not None:
            pool_size = _int_tuple(self.pool_size, "pool_size")
            pool_size = pool_size * ndim if len(pool_size) == 1 else pool_size
            if len(pool_size) != ndim:
                raise ValueError(
                    f"pool_size {self.pool_size!r} does not fit inputs of "
                    f"{ndim} spatial axes {input_shape}")
        specs, shape = [], tuple(input_shape)
        filters = () if self.filters == () else _int_tuple(self.filters, "filters")
        for n_filters in filters:
            # the spec checks padding='same' against an even kernel
            spec = conv(n_filters, kernel if ndim == 2 else kernel[0],
                        padding=self.padding)
            try:
                shape = layer_output_shape(spec, shape, len(specs))
            except ValueError:
                raise ValueError(
                    f"kernel_size {self.kernel_size!r} with padding "
                    f"{self.padding!r} is too large for inputs of shape "
                    f"{input_shape}") from None
            specs += [spec, L.ReLU()]
            if pool_size is not None:
                window = tuple(min(p, s) for p, s in zip(pool_size, shape[1:]))
                if max(window) > 1:
                    spec = pool(window if ndim == 2 else window[0])
                    shape = layer_output_shape(spec, shape, len(specs))
                    specs.append(spec)
        sizes = () if self.hidden_layer_sizes == () else _int_tuple(
            self.hidden_layer_sizes, "hidden_layer_sizes")
        for units in sizes:
            specs += [L.Dense(units), L.ReLU()]
        return specs

    def _build_network(self, dtype):
        specs = self._hidden_specs(self.input_shape_)
        specs.append(L.Dense(len(self.classes_)))
        return Network(specs, self.input_shape_, dtype)

    # ------------------------------------------------------------ fit

    def fit(self, X, y):
        """Train the network on X, y.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W),
            (n_samples, C, L) or (n_samples, n_features)
            Any real dtype. Flat X is reshaped to ``input_shape``. 3-D X is
            read as one-channel images (n, H, W) unless ``input_shape`` is
            (C, L) or the first spatial layer of ``layers`` is 1-D, which
            make it signals (n, C, L).
        y : array-like of shape (n_samples,)
            Class labels of any type (ints, strings, bools).

        Returns
        -------
        self
        """
        dtype = self._check_params()
        warm = self.warm_start and hasattr(self, "network_")
        X, y_index, classes = self._validate_training_data(X, y, not warm, dtype)
        if warm and (len(classes) != len(self.classes_)
                     or np.any(classes != self.classes_)):
            raise ValueError(
                "warm_start can only be used where y has the same classes as "
                f"in the previous call to fit. Previously got {self.classes_}, "
                f"y has {classes}")
        rng = check_random_state(self.random_state)
        self._rng = rng    # partial_fit after fit goes on drawing from it
        if not warm:
            self.classes_ = classes
            self._initialize(dtype, rng, self._early_stopping_for(len(X), False))
        return self._train(X, y_index, rng, epochs=self.max_iter, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y, continuing from the current weights.

        Parameters
        ----------
        X, y
            As for :meth:`fit`.
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole problem; required on the first call,
            ignored afterwards.

        Returns
        -------
        self
        """
        first = _check_partial_fit_first_call(self, classes)
        dtype = self._check_params()
        if first and hasattr(self, "network_"):
            del self.network_
        X, y_index, seen = self._validate_training_data(
            X, y, first, dtype, classes=self.classes_)
        if first:
            self._rng = check_random_state(self.random_state)
            self._initialize(dtype, self._rng, False)
        rng = self._rng
        return self._train(X, y_index, rng, epochs=1, incremental=True)

    def _validate_training_data(self, X, y, reset, dtype, classes=None):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = self._validate_X(X, reset=reset, dtype=dtype)
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        counted = _encode_by_counting(y) if classes is None else None
        if counted is None and (reset or classes is None):
            # later partial_fit calls check y against classes_ below; the
            # type check costs more than a small batch's training step.
            # Labels encoded by counting are integers: always valid classes.
            check_classification_targets(y)
        if len(X) < 2 and classes is None:
            raise ValueError(
                f"n_samples = {len(X)}: at least 2 samples are needed to train")
        if classes is None:
            classes, y_index = (np.unique(y, return_inverse=True)
                                if counted is None else counted)
            if len(classes) < 2:
                raise ValueError(
                    f"y has only one class ({classes[0]!r}); a classifier needs "
                    "at least 2 classes")
        else:
            y_index = np.searchsorted(classes, y)
            y_index[y_index >= len(classes)] = 0
            unknown = classes[y_index] != y
            if np.any(unknown):
                raise ValueError(
                    f"y contains labels not in classes: {np.unique(y[unknown])}")
        return X, y_index, classes    # int32 or intp: the kernels take both

    def _early_stopping_for(self, n_samples, incremental):
        """Whether a fit on n_samples holds out validation data (never
        partial_fit, which has no epochs of its own to stop)."""
        if incremental:
            return False
        if isinstance(self.early_stopping, str):
            return n_samples > _AUTO_EARLY_STOPPING_SAMPLES
        return bool(self.early_stopping)

    def _initialize(self, dtype, rng, early_stopping):
        network = self._build_network(dtype)
        network.initialize(rng)
        self.network_ = network
        self._optimizer_state = None
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.best_loss_ = None if early_stopping else np.inf
        self.validation_scores_ = [] if early_stopping else None
        self.best_validation_score_ = -np.inf if early_stopping else None
        self._no_improvement_count = 0

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(32, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(f"Got batch_size larger than sample size. It is going "
                          f"to be clipped to {n_samples}")
        return min(self.batch_size, n_samples)

    def _train(self, X, y_index, rng, epochs, incremental):
        network = self.network_
        n_threads = effective_n_threads(self.n_threads)
        X_val = y_val = None
        early_stopping = self._early_stopping_for(len(X), incremental)
        if early_stopping:
            # imported here: sklearn.model_selection costs memory and import
            # time that a fit without early stopping never needs
            from sklearn.model_selection import train_test_split
            stratify = y_index if np.bincount(y_index).min() >= 2 else None
            try:
                X, X_val, y_index, y_val = train_test_split(
                    X, y_index, random_state=rng, test_size=self.validation_fraction,
                    stratify=stratify)
            except ValueError as error:
                raise ValueError(
                    f"early_stopping with validation_fraction="
                    f"{self.validation_fraction} cannot split {len(y_index)} "
                    f"samples: {error}") from None
            if len(X) < 1:
                raise ValueError("too few samples left for training after the "
                                 "validation split")
        # warm_start may follow a fit with the other early_stopping setting
        if early_stopping and self.validation_scores_ is None:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
        if not early_stopping and self.best_loss_ is None:
            self.best_loss_ = np.inf
        n_samples = len(X)
        batch_size = self._batch_size(n_samples)
        network.allocate(batch_size, training=True)
        batch = np.empty((batch_size,) + X.shape[1:], dtype=network.dtype)
        # the batch and the loss's gradient are the same arrays every step
        # (and the same slices of them for a last, smaller batch), so that
        # the network's layers run the calls they prepared for them
        # (Layer.prepared)
        grad_scores = np.empty((batch_size,) + network.output_shape,
                               dtype=network.dtype)
        last = n_samples % batch_size or batch_size
        batches = {batch_size: (batch, grad_scores),
                   last: (batch[:last], grad_scores[:last])}
        params = network.params
        optimizer, optimizer_state = self._optimizer(network)
        governor = self._governor(n_threads)
        # the weights and optimizer state of the last recorded epoch, put
        # back when training diverges or is interrupted
        last_good = _Snapshot(params, optimizer_state)
        order = np.arange(n_samples, dtype=_index_dtype(n_samples))
        best = None    # (epoch, weights) of the best validation score
        stopped_by = None
        # benchmarks/bench_training.py --profile sets _profile to a dict
        timings = getattr(self, "_profile", None)
        network.profile = timings
        clock = time.perf_counter
        try:
            for epoch in range(epochs):
                start = time.perf_counter()
                if self.shuffle:
                    # a uniform random order whatever the order before
                    rng.shuffle(order)
                total_loss = 0.0
                for batch_start in range(0, n_samples, batch_size):
                    index = order[batch_start:batch_start + batch_size]
                    n = len(index)
                    n_threads = governor.threads()
                    tick = step_start = clock()
                    xb = F.take_samples(X, index, n_threads,
                                        out=batches[n][0])
                    yb = y_index[index]
                    if timings is not None:
                        timings["batch copy"] = timings.get("batch copy", 0.0) + clock() - tick
                    logits = network.forward(xb, n_threads)
                    tick = clock()
                    loss, grad = F.softmax_cross_entropy(
                        logits, yb,
                        out=batches[n][1])
                    l2 = self.alpha / n
                    if self.alpha:
                        weights = params[:network.n_weights]
                        loss += 0.5 * l2 * float(np.dot(weights, weights))
                    if not math.isfinite(loss):
                        self._diverged(last_good, "loss", epoch, batch_start // batch_size)
                    if timings is not None:
                        timings["loss"] = timings.get("loss", 0.0) + clock() - tick
                    network.backward(grad, n_threads)
                    tick = clock()
                    optimizer(l2, n_threads)
                    if n == batch_size:
                        governor.record(clock() - step_start, n)
                    if timings is not None:
                        timings["optimizer"] = timings.get("optimizer", 0.0) + clock() - tick
                    total_loss += loss * n
                    if self.verbose >= 2:
                        self._progress(epoch, batch_start + n, n_samples)
                # The epoch's last step is checked too: the loss of the new
                # weights on the last batch (NaN or overflowing weights give
                # a non-finite loss).
                after, _ = F.softmax_cross_entropy(network.forward(xb, n_threads), yb)
                if not math.isfinite(after):
                    self._diverged(last_good, "loss", epoch, None)
                epoch_loss = total_loss / n_samples
                seconds = time.perf_counter() - start
                score = self._accuracy(X_val, y_val, n_threads) if early_stopping else None
                # Counting, recording and snapshotting the epoch is one step:
                # an interrupt before it puts back the last recorded epoch.
                with _InterruptDeferred():
                    if self._record_epoch(epoch_loss, score, n_samples, incremental):
                        best = (self.n_iter_, params.copy())
                    last_good.save()
                if self.verbose:
                    self._report(epoch_loss, seconds, n_samples)
                if not incremental and self._no_improvement_count > self.n_iter_no_change:
                    stopped_by = "no improvement"
                    break
        except KeyboardInterrupt:
            last_good.restore()
            stopped_by = "interrupt"
        finally:
            network.release()
            network.profile = None
        if best is not None:    # early stopping keeps the best epoch
            np.copyto(params, best[1])
        if stopped_by == "interrupt":
            self._warn_interrupted(best[0] if best is not None else None)
        elif stopped_by is None and not incremental:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                "reached and the optimization hasn't converged yet.",
                ConvergenceWarning)
        if self.verbose and stopped_by == "no improvement":
            what = "Validation score" if early_stopping else "Training loss"
            print(f"{what} did not improve more than tol={self.tol} for "
                  f"{self.n_iter_no_change} consecutive epochs. Stopping.")
        return self

    def _record_epoch(self, loss, score, n_samples, incremental):
        """Counts a completed epoch and records its loss, validation score
        (None without early stopping) and whether it improved; True when
        its weights are the best on the validation data so far."""
        self.n_iter_ += 1
        self.t_ += n_samples
        self.loss_curve_.append(loss)
        best = False
        if score is None:
            improved = loss <= self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, loss)
        else:
            self.validation_scores_.append(score)
            best = score > self.best_validation_score_
            improved = score >= self.best_validation_score_ + self.tol
            self.best_validation_score_ = max(self.best_validation_score_, score)
        if not incremental:
            self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
        return best

    def _warn_interrupted(self, best_epoch):
        """The warning of an interrupted fit, naming the epoch whose weights
        are kept: the last recorded one, or with early stopping the best."""
        if best_epoch is not None:
            kept = (f"the weights of epoch {best_epoch}, the best on the "
                    "validation data, are kept")
        elif self.n_iter_:
            kept = f"the weights of epoch {self.n_iter_}, the last completed, are kept"
        else:
            kept = "the initial weights are kept"
        done = f"after epoch {self.n_iter_}" if self.n_iter_ else "before an epoch completed"
        warnings.warn(f"fit was interrupted {done}: {kept}", UserWarning)

    def _governor(self, n_threads):
        """The thread count of each training step: with n_threads=None, the
        count the machine runs fastest now, at most n_threads' resolution
        (kept across partial_fit calls); a given n_threads is kept as is."""
        if self.n_threads is not None:
            return ThreadGovernor(n_threads, least=n_threads)
        governor = getattr(self, "_thread_governor", None)
        if governor is None or governor.most != n_threads:
            governor = self._thread_governor = ThreadGovernor(n_threads)
        return governor

    def _optimizer(self, network):
        """A function taking one step on the network's gradients (given the
        L2 penalty and the threads), with state kept on the estimator so
        that partial_fit and warm_start continue."""
        params, grads = network.params, network.grads
        state = self._optimizer_state
        if (state is None or state["solver"] != self.solver
                or len(state["buffers"][0]) != len(params)):
            count = 2 if self.solver == "adam" else 1
            state = {"solver": self.solver, "step": 0,
                     "buffers": [np.zeros_like(params) for _ in range(count)]}
            self._optimizer_state = state
        buffers, n_weights = state["buffers"], network.n_weights

        if self.solver == "adam":
            def step(l2, n_threads):
                state["step"] += 1
                F.adam_update(params, grads, buffers[0], buffers[1], state["step"],
                              self.learning_rate_init, self.beta_1, self.beta_2,
                              self.epsilon, l2, n_weights, n_threads)
        else:
            def step(l2, n_threads):
                F.sgd_update(params, grads, buffers[0], self.learning_rate_init,
                             self.momentum, self.nesterovs_momentum, l2,
                             n_weights, n_threads)
        return step, state

    def _diverged(self, last_good, what, epoch, batch):
        last_good.restore()
        where = f"epoch {self.n_iter_ + 1}" + (" after its last step" if batch is None
                                        else f", batch {batch + 1}")
        raise TrainingDivergedError(
            f"Training diverged: the {what} became NaN or infinite in {where}. "
            f"learning_rate_init={self.learning_rate_init} is probably too "
            "high (or the input needs scaling, e.g. with StandardScaler). The "
            f"weights of the last completed epoch ({self.n_iter_}) are kept.")

    def _report(self, loss, seconds, n_samples):
        line = f"Epoch {self.n_iter_}: loss = {loss:.6f}"
        if self.validation_scores_:
            line += f", validation score = {self.validation_scores_[-1]:.4f}"
        line += f", {seconds:.2f} s, {n_samples / max(seconds, 1e-9):,.0f} images/s"
        if self.verbose >= 2:
            sys.stdout.write("\r" + " " * 60 + "\r")
        print(line, flush=True)

    def _progress(self, epoch, done, total):
        width = 30
        filled = width * done // total
        sys.stdout.write(f"\rEpoch {self.n_iter_ + 1} [{'=' * filled}"
                         f"{'.' * (width - filled)}] {done}/{total}")
        sys.stdout.flush()

    # -------------------------------------------------------- predict

    def _logits(self, X, n_threads):
        """Scores for X (already validated), in batches of bounded memory."""
        # The capacity does not depend on len(X), so that predictions of
        # any size reuse the same buffers; pages a small prediction never
        # touches are never mapped.
        per_sample = max(1, self.network_.per_sample_bytes())
        capacity = int(max(1, min(_MAX_PREDICT_BATCH, _PREDICT_BUFFER_BYTES // per_sample)))
        network = self.network_.borrow_predictor(capacity)
        # the kernels split a batch by samples: more threads would only wait
        n_threads = min(n_threads, len(X))
        try:
            scores = np.empty((len(X), len(self.classes_)), dtype=network.dtype)
            for start in range(0, len(X), capacity):
                chunk = X[start:start + capacity]   # copied in by forward
                scores[start:start + len(chunk)] = network.forward(chunk, n_threads)
        finally:
            self.network_.return_predictor(network)
        return scores

    def _accuracy(self, X, y_index, n_threads):
        return float(np.mean(self._logits(X, n_threads).argmax(axis=1) == y_index))

    def _predict_scores(self, X):
        check_is_fitted(self)
        X = self._validate_X(X, reset=False, dtype=self.network_.dtype)
        return self._logits(X, effective_n_threads(self.n_threads))

    def predict_log_proba(self, X):
        """Log of the class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            As for :meth:`fit`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return F.log_softmax(self._predict_scores(X))

    def predict_proba(self, X):
        """Class probabilities (softmax of the network's scores).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        return F.softmax(self._predict_scores(X))

    def predict(self, X):
        """Predicted class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        scores = self._predict_scores(X)
        return self.classes_[scores.argmax(axis=1)]

    # ----------------------------------------------------- attributes

    @property
    def coefs_(self):
        check_is_fitted(self)
        return [layer.weight for layer in self.network_.parametric_layers]

    @property
    def intercepts_(self):
        check_is_fitted(self)
        return [layer.bias for layer in self.network_.parametric_layers]

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")
