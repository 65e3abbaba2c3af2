"""What CNNClassifier and CNNRegressor share: :class:`BaseCNN`, a
scikit-learn estimator that trains a convolutional network.

BaseCNN holds the parameters and their constraints, the validation of X,
the simple family's architecture, the network, ``fit`` and ``partial_fit``
(training itself is fastcnn._training), prediction in batches of bounded
memory, ``transform`` and the fitted attributes. A subclass says what
differs between a classifier and a regressor, through these hooks:

- ``_encode_targets(y, X, dtype, reset, incremental)``: y validated and
  encoded as the loss reads it (class indices, or float targets of shape
  (n_samples, n_outputs)), setting or checking the fitted attributes that
  describe y (``classes_``; the regressor's output count);
- ``_output_width(y)``: the units of the output layer, given encoded y;
- ``_loss(scores, y, out, sample_weight)``: ``(mean loss, gradient with
  respect to the scores)`` of a batch, the gradient written into ``out``
  (None: a new array), the mean weighted by ``sample_weight`` (None: all
  equal);
- ``_validation_score(X, y, n_threads, sample_weight)``: the score early
  stopping maximises, on held-out encoded data, weighted as scikit-learn's
  scorers weight it;
- ``_training_weights(sample_weight, y)``: the weights of the samples
  (validated, with a classifier's ``class_weight`` applied), or None;
- ``_stratify(y)``: the labels to stratify the held-out split by, or None;
- ``OUT_ACTIVATION``: the name of what turns scores into predictions
  (``out_activation_``), and ``predict`` and its relatives.

The training loop calls the hooks alone, never asks which kind of
estimator it trains.
"""
import math
import numbers
import warnings

import numpy as np
from scipy.sparse import issparse
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin,
                          TransformerMixin)
from sklearn.utils import check_random_state
from sklearn.utils.validation import (_check_sample_weight, check_array,
                                      check_is_fitted, validate_data)

from . import functional as F
from . import layers as L
from ._labels import check_y_passed
from ._network import Network, layer_output_shape
from ._parameters import (Boolean, Either, FloatDtype, Integer, IntTuple,
                          LayerSpecs, NoneOr, Real, StrOptions, ThreadCount,
                          check_parameters, float_dtype_name, int_tuple)
from ._threads import effective_n_threads
from ._layer_params import LayerParamsMixin
from ._training import LEARNING_RATE_SCHEDULES, holds_out_validation, train
from .inspection import SummaryMixin

_DTYPES = {"float32": np.float32, "float64": np.float64}
# the simple family's activations, by MLPClassifier's names where it has them
_ACTIVATIONS = {"relu": L.ReLU, "tanh": L.Tanh, "logistic": L.Sigmoid,
                "leaky_relu": L.LeakyReLU, "elu": L.ELU}
# 'auto' global pooling above this many values a sample out of the blocks
_AUTO_GLOBAL_POOL_VALUES = 4096
# Memory for the activations of one prediction batch: small enough that a
# layer's output is still in the last-level cache when the next layer reads
# it.
_PREDICT_BUFFER_BYTES = 16 * 2**20
_MAX_PREDICT_BATCH = 4096


# What a feature-count error adds: a meta-estimator that hands the
# estimator a subset of the columns breaks the images they form.
_SUBSET_ADVICE = (
    "if a meta-estimator passes this estimator a subset of X's columns, "
    "make it pass them all, e.g. BaggingClassifier(..., max_features=1.0, "
    "bootstrap_features=False): a convolution reads the columns in place as "
    "the pixels or time steps of input_shape, so a subset of them is no "
    "image or signal.")


class InputShapeWarning(UserWarning):
    """3-D X whose reading (images or signals) nothing declared."""


def _as_array(X):
    """np.asarray(X), with a clear error for samples of different shapes
    (series of unequal length, as time-series loaders return them)."""
    try:
        return np.asarray(X)
    except ValueError:
        shapes = sorted({np.shape(sample) for sample in X}, key=str)
        if len(shapes) < 2:
            raise
    raise ValueError(
        f"X holds samples of different shapes ({', '.join(map(str, shapes[:3]))}"
        f"{', ...' if len(shapes) > 3 else ''}): "
        "every sample must have the same shape. Resample the series to one "
        "length (scipy.signal.resample) or pad them (numpy.pad, with zeros or "
        "each series' last value) before fitting.")




#: The parameters' documentation, shared by the estimators' docstrings.
PARAMETERS_DOC = """    filters : tuple of int, default=(16, 32)
        Output channels of each convolution block. ``()`` gives none.
        Two blocks of 16 and 32 channels cost under half the time per epoch
        of (32, 64) for little accuracy on small images; widen them for
        harder images.
    kernel_size : int or tuple of int, default=3
        Kernel of every convolution (per axis when a tuple).
    pool_size : int, tuple of int or None, default=2
        Max-pooling window after each convolution; None for no pooling.
        A window larger than its input is cut to the input's size, so the
        blocks work on any input size (a signal of 3 features, say).
    padding : {'same', 'valid'} or int, default='same'
        Padding of every convolution.
    hidden_layer_sizes : tuple of int, default=(128,)
        Dense layers after the convolution blocks, each followed by the
        activation.
    activation : {'relu', 'tanh', 'logistic', 'leaky_relu', 'elu'}, default='relu'
        The activation after every convolution and hidden dense layer
        (MLPClassifier's names; 'leaky_relu' has slope 0.01, 'elu' alpha 1).
    batch_norm : bool, default=False
        Batch normalisation after every convolution and hidden dense layer,
        before the activation.
    dropout : float, default=0.0
        Rate of a Dropout before every dense layer (the hidden ones and the
        output), in [0, 1); 0 for none.
    global_pool : {'auto', 'avg', 'max'} or None, default='auto'
        How the convolution blocks' output reaches the dense layers: None
        flattens it; 'avg' and 'max' pool each channel over all positions
        (global pooling), so the dense layers get one value per channel
        whatever the input size. 'auto' is 'avg' when the blocks' output
        has more than 4096 values a sample (a long series, a large image)
        and None otherwise: flattened, such an output would give the first
        dense layer more weights than the rest of the network together.
    layers : list of fastcnn.layers specifications or None, default=None
        When given, these are the hidden layers and the nine parameters
        above are ignored.
    solver : {'adam', 'sgd'}, default='adam'
    learning_rate : {'constant', 'invscaling', 'adaptive', 'cosine'}, default='constant'
        The learning rate schedule, for both solvers (MLPClassifier's apply
        to 'sgd' only; here, as with PyTorch's schedulers, the rate also
        scales Adam's steps).

        - 'constant': ``learning_rate_init`` at every step.
        - 'invscaling': ``learning_rate_init / t ** power_t`` in each
          epoch, ``t`` one more than the samples trained on before it
          (``t_ + 1``, MLPClassifier's ``t``).
        - 'adaptive': ``learning_rate_init`` for as long as the stopping
          rule (``tol``, ``n_iter_no_change``, on the training loss or with
          early stopping the validation score) does not fire; where it
          fires the rate is divided by 5 and the count of epochs without
          improvement starts again, and training stops there only once
          the rate is at most 1e-6 (MLPClassifier's rule). Every ``fit``
          starts at ``learning_rate_init``; ``partial_fit``, which never
          stops, keeps the rate it finds.
        - 'cosine': cosine annealing from ``learning_rate_init`` towards 0
          over ``max_iter`` epochs, step by step (PyTorch's
          CosineAnnealingLR stepped every batch with ``T_max`` the fit's
          steps): ``learning_rate_init * (1 + cos(pi * s / S)) / 2`` at
          step ``s`` of ``S = max_iter * batches per epoch``. Per step
          rather than per epoch because these fits run few epochs, where
          a per-epoch staircase is coarse and never gets below
          ``(1 + cos(pi (max_iter - 1) / max_iter)) / 2`` of the initial
          rate. The stopping rule still applies (``n_iter_no_change=max_iter``
          runs the whole anneal); a warm-start fit anneals again from
          ``learning_rate_init``, and successive ``partial_fit`` calls, an
          epoch each, anneal over ``max_iter`` of them and start again.
    learning_rate_init : float, default=0.003
        Adam's customary 0.001 makes these small networks take more epochs
        to reach the stopping rule for no better accuracy; 0.003 is still
        stable with batches of 32.
    power_t : float, default=0.5
        The exponent of 'invscaling', >= 0.
    momentum : float, default=0.9
        SGD momentum, in [0, 1].
    nesterovs_momentum : bool, default=True
    beta_1, beta_2, epsilon : float, defaults 0.9, 0.999, 1e-8
        Adam's parameters.
    batch_size : int or 'auto', default='auto'
        'auto' is ``min(32, n_samples)``. MLPClassifier's 200 gives a small
        data set a handful of steps per epoch, so the stopping rule waits
        through many cheap but unproductive epochs; 32, the usual batch of
        CNN recipes, needs fewer epochs than larger batches at some cost
        per image on large data sets.
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
        score: accuracy, or R^2 for CNNRegressor) has not improved by at
        least ``tol`` for more than ``n_iter_no_change`` consecutive epochs
        (the rule of MLPClassifier; with ``learning_rate='adaptive'`` the
        rate is divided there instead).
        A CNN drives the training loss of small image sets towards zero,
        ever more slowly: MLPClassifier's 1e-4 trains the default network
        many more epochs for no better test accuracy. As an accuracy or R^2
        (early stopping), 1e-3 is 0.1%.
    early_stopping : bool or 'auto', default='auto'
        Hold out ``validation_fraction`` of the training data (stratified by
        class for CNNClassifier) and stop when its score (accuracy, or R^2
        for CNNRegressor) stops improving; the weights of the best
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
        It also says how 3-D X is read: ``(C, L)`` makes X of shape
        ``(n, C, L)`` signals (the time-series convention, ``(n_cases,
        n_channels, n_timepoints)``), ``(1, H, W)`` makes ``(n, H, W)``
        one-channel images. Without it, 3-D X is read as images unless the
        first spatial layer of ``layers`` is 1-D, with an
        :class:`~fastcnn.InputShapeWarning` when ``layers`` does not decide.
        A mismatch with X's feature count is an error naming both: a
        meta-estimator that hands the estimator a subset of X's columns
        (BaggingClassifier's ``max_features`` < 1.0 or
        ``bootstrap_features=True``) must pass them all, as a convolution
        reads the columns as pixels in place."""

#: The fitted attributes every estimator has, for their docstrings.
ATTRIBUTES_DOC = """    n_features_in_ : int
        Number of values per sample (``C * H * W`` for images).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X had string column names.
    input_shape_ : tuple
        Shape of one sample as the network sees it.
    network_ : fastcnn network
        The fitted layers, in the order they run (a ReLU before max
        pooling runs inside the pooling); use ``coefs_`` and
        ``intercepts_`` for the parameters. ``network_.specs`` is the list
        of layer specifications the network was built from: ``layers`` (or
        what the simple parameters describe) followed by the output
        ``Dense``.
    coefs_, intercepts_ : lists of ndarray
        Weights and biases of each layer that has them, in the order of the
        network (a residual block's layers after the block; views into the
        network's parameters). A weight array is laid out as PyTorch's,
        outputs first: ``(out, in)`` for a dense layer (MLPClassifier's
        ``coefs_`` are ``(in, out)``, its transpose), ``(filters, channels,
        KH, KW)`` for a Conv2D and ``(filters, channels, K)`` for a Conv1D;
        a batch norm's are its per-channel scale and shift.
    n_layers_ : int
        Layers, counted as MLPClassifier counts them: the input, the hidden
        layers and the output layer. Every specification of
        ``network_.specs`` but the last is a hidden layer, an activation,
        pooling or dropout as much as a convolution (a ``Residual`` block is
        one), so ``n_layers_ = len(network_.specs) + 1``: 10 for the default
        simple family (two blocks of convolution, ReLU and pooling, a dense
        layer and its ReLU), ``len(layers) + 2`` for ``layers``. These are
        the layers :meth:`transform` takes. (Unlike MLPClassifier's,
        ``len(coefs_)`` is not ``n_layers_ - 1``: layers without weights have
        no entry there.)
    n_outputs_ : int
        Units of the output layer.
    out_activation_ : str
        What turns the output layer's scores into predictions.
    loss_curve_ : list of float
        Mean training loss of each epoch; with ``sample_weight``, as
        MLPClassifier's, the mean of the batches' weighted mean losses
        weighted by their sample counts.
    best_loss_ : float or None
        Lowest training loss (None when the fit used early stopping).
    validation_scores_ : list of float or None
        The score on the held-out data after each epoch, with early
        stopping.
    best_validation_score_ : float or None
    n_iter_ : int
        Epochs run.
    t_ : int
        Training samples seen."""


def forward_in_batches(network, X, n_threads):
    """The output of ``network`` for X (validated), in batches of bounded
    memory."""
    # The capacity does not depend on len(X), so that predictions of
    # any size reuse the same buffers; pages a small prediction never
    # touches are never mapped.
    per_sample = max(1, network.per_sample_bytes())
    capacity = int(max(1, min(_MAX_PREDICT_BATCH, _PREDICT_BUFFER_BYTES // per_sample)))
    predictor = network.borrow_predictor(capacity)
    # the kernels split a batch by samples: more threads would only wait
    n_threads = min(n_threads, len(X))
    try:
        out = np.empty((len(X),) + network.output_shape, dtype=network.dtype)
        for start in range(0, len(X), capacity):
            chunk = X[start:start + capacity]   # copied in by forward
            out[start:start + len(chunk)] = predictor.forward(chunk, n_threads)
    finally:
        network.return_predictor(predictor)
    return out


class BaseCNN(LayerParamsMixin, SummaryMixin, ClassNamePrefixFeaturesOutMixin,
              TransformerMixin, BaseEstimator):
    """A convolutional network trained as a scikit-learn estimator; the base
    of CNNClassifier and CNNRegressor (see the module's docstring for what
    a subclass defines)."""

    #: what turns scores into predictions (out_activation_)
    OUT_ACTIVATION = None

    def __init__(self, filters=(16, 32), kernel_size=3, pool_size=2,
                 padding="same", hidden_layer_sizes=(128,), activation="relu",
                 batch_norm=False, dropout=0.0, global_pool="auto", layers=None,
                 solver="adam", learning_rate="constant",
                 learning_rate_init=0.003, power_t=0.5, momentum=0.9,
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
        self.activation = activation
        self.batch_norm = batch_norm
        self.dropout = dropout
        self.global_pool = global_pool
        self.layers = layers
        self.solver = solver
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
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

    # Checked in this order by _check_params; the architecture's simple
    # parameters only when ``layers`` is None (otherwise they are ignored).
    _parameter_constraints = {
        "solver": StrOptions("adam", "sgd"),
        "learning_rate": StrOptions(*LEARNING_RATE_SCHEDULES),
        "learning_rate_init": Real(0, low_open=True),
        "power_t": Real(0),
        "momentum": Real(0, 1),
        "beta_1": Real(0, 1, high_open=True),
        "beta_2": Real(0, 1, high_open=True),
        "epsilon": Real(0, low_open=True),
        "alpha": Real(0),
        "tol": Real(0),
        "validation_fraction": Real(0, 1, low_open=True, high_open=True),
        "max_iter": Integer(1),
        "n_iter_no_change": Integer(1),
        "verbose": Integer(0),
        "batch_size": Either(StrOptions("auto"), Integer(1, "a positive int")),
        "early_stopping": Either(Boolean(), StrOptions("auto")),
        "shuffle": Boolean(),
        "nesterovs_momentum": Boolean(),
        "warm_start": Boolean(),
        "dtype": FloatDtype(),
        "n_threads": ThreadCount(),
        "input_shape": NoneOr(IntTuple(lengths=(2, 3), shapes="(C, H, W) or (C, L)")),
        "layers": NoneOr(LayerSpecs()),
    }
    _simple_architecture_constraints = {
        "filters": IntTuple(),
        "kernel_size": IntTuple(),
        "pool_size": NoneOr(IntTuple()),
        "hidden_layer_sizes": IntTuple(),
        "padding": Either(StrOptions("same", "valid"), Integer(0)),
        "activation": StrOptions(*_ACTIVATIONS),
        "batch_norm": Boolean(),
        "dropout": Real(0, 1, high_open=True),
        "global_pool": NoneOr(StrOptions("auto", "avg", "max")),
    }

    def _check_params(self):
        """Every hyperparameter, with a ValueError naming the one at fault;
        returns the NumPy dtype of the weights."""
        check_parameters(self, self._parameter_constraints)
        if self.layers is None:
            check_parameters(self, self._simple_architecture_constraints)
        return _DTYPES[float_dtype_name(self.dtype)]

    def _validate_X(self, X, reset, dtype):
        """X as a C-ordered array of shape (n, *input_shape_) and ``dtype``."""
        if not reset:
            checked = self._validate_float_ndarray(X, dtype)
            if checked is not None:
                return checked
        if not hasattr(X, "ndim") and not issparse(X) and not isinstance(X, str):
            X = _as_array(X)     # lists and other array-likes
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
            if not reset:
                self._check_feature_count(X)
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

    def _check_feature_count(self, X):
        """A ValueError for flat X (without column names, which scikit-learn
        checks first) whose feature count is not the fitted one, naming
        what to change."""
        shape = getattr(X, "shape", None)
        if (shape is None or len(shape) != 2 or shape[1] == self.n_features_in_
                or hasattr(X, "columns") or issparse(X)):
            return
        raise ValueError(
            f"X has {shape[1]} features, but {type(self).__name__} is expecting "
            f"{self.n_features_in_} features as input: samples of shape "
            f"input_shape_={self.input_shape_}, the shape fit saw. Pass X with "
            "all the columns it was fitted on, in their order; "
            + _SUBSET_ADVICE)

    def _validate_float_ndarray(self, X, dtype):
        """What _validate_X returns, for a fitted estimator and the common
        case of a finite float NumPy array of the fitted shape, checked
        without scikit-learn's general validation, which is most of the
        time of a one-row prediction; None for anything else, which takes
        the general way (and gets its errors)."""
        if (type(X) is not np.ndarray or X.dtype.kind != "f" or X.size == 0
                or "feature_names_in_" in self.__dict__):
            return None
        shape = X.shape[1:]
        if shape != self.input_shape_ and shape != (self.n_features_in_,):
            return None
        X = np.ascontiguousarray(X.astype(dtype, copy=False).reshape(
            (len(X),) + self.input_shape_))
        # NaN or infinity: the general way, with its errors
        return X if F.all_finite(X) else None

    def _resolve_input_shape(self, shape):
        n_features = int(np.prod(shape[1:]))
        if self.input_shape is not None:
            declared = tuple(int(v) for v in self.input_shape)
            if int(np.prod(declared)) != n_features:
                raise ValueError(
                    f"input_shape={declared} holds {int(np.prod(declared))} "
                    f"values per sample, but X has {n_features} "
                    f"(X.shape = {tuple(shape)}). Set input_shape to the shape "
                    "of X's samples (or None to take X's own shape); "
                    + _SUBSET_ADVICE)
            return declared
        if len(shape) == 2:
            return (1, shape[1])              # a one-channel signal
        if len(shape) == 3 and self.layers is None:
            warnings.warn(
                f"X of shape {tuple(shape)} is read as one-channel images (1, "
                f"{shape[1]}, {shape[2]}); for {shape[1]} series (channels) of "
                f"length {shape[2]}, pass input_shape=({shape[1]}, {shape[2]}); "
                f"input_shape=(1, {shape[1]}, {shape[2]}) keeps images and "
                "silences this warning", InputShapeWarning, stacklevel=5)
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
        specs, shape = self._conv_blocks(tuple(input_shape))
        return specs + self._dense_part()

    def _per_axis(self, name, ndim, input_shape):
        """The simple parameter ``name`` as a tuple of ndim ints."""
        values = int_tuple(getattr(self, name), name)
        values = values * ndim if len(values) == 1 else values
        if len(values) != ndim:
            raise ValueError(
                f"{name} {getattr(self, name)!r} does not fit inputs of "
                f"{ndim} spatial axes {input_shape}")
        return values

    def _activation(self):
        return _ACTIVATIONS[self.activation]()

    def _conv_blocks(self, input_shape):
        """[CONV -> (BATCH NORM) -> ACTIVATION -> (POOL)] per filter count,
        then the global pooling; (specs, output shape of one sample)."""
        ndim = len(input_shape) - 1
        two_d = ndim == 2
        kernel = self._per_axis("kernel_size", ndim, input_shape)
        pool_size = (None if self.pool_size is None
                     else self._per_axis("pool_size", ndim, input_shape))
        specs, shape = [], input_shape
        filters = () if self.filters == () else int_tuple(self.filters, "filters")
        for n_filters in filters:
            # the spec checks padding='same' against an even kernel
            conv = (L.Conv2D if two_d else L.Conv1D)(
                n_filters, kernel if two_d else kernel[0], padding=self.padding)
            try:
                shape = layer_output_shape(conv, shape, len(specs))
            except ValueError:
                raise ValueError(
                    f"kernel_size {self.kernel_size!r} with padding "
                    f"{self.padding!r} is too large for inputs of shape "
                    f"{input_shape}") from None
            specs.append(conv)
            if self.batch_norm:
                specs.append(L.BatchNorm2D() if two_d else L.BatchNorm1D())
            specs.append(self._activation())
            window = (() if pool_size is None else
                      tuple(min(p, s) for p, s in zip(pool_size, shape[1:])))
            if window and max(window) > 1:
                pool = (L.MaxPool2D if two_d else L.MaxPool1D)(
                    window if two_d else window[0])
                shape = layer_output_shape(pool, shape, len(specs))
                specs.append(pool)
        if filters and self._global_pool(shape) is not None:
            kinds = {"avg": (L.GlobalAvgPool2D, L.GlobalAvgPool1D),
                     "max": (L.GlobalMaxPool2D, L.GlobalMaxPool1D)}
            pool = kinds[self._global_pool(shape)][0 if two_d else 1]()
            shape = layer_output_shape(pool, shape, len(specs))
            specs.append(pool)
        return specs, shape

    def _global_pool(self, shape):
        """global_pool with 'auto' resolved for blocks' output ``shape``."""
        if self.global_pool != "auto":
            return self.global_pool
        return "avg" if math.prod(shape) > _AUTO_GLOBAL_POOL_VALUES else None

    def _dense_part(self):
        """[(DROPOUT) -> DENSE -> (BATCH NORM) -> ACTIVATION] per hidden
        size, and the dropout before the output layer."""
        specs = []
        sizes = () if self.hidden_layer_sizes == () else int_tuple(
            self.hidden_layer_sizes, "hidden_layer_sizes")
        for units in sizes:
            if self.dropout:
                specs.append(L.Dropout(self.dropout))
            specs.append(L.Dense(units))
            if self.batch_norm:
                specs.append(L.BatchNorm1D())
            specs.append(self._activation())
        if self.dropout:
            specs.append(L.Dropout(self.dropout))
        return specs


    def _build_network(self, dtype, n_outputs):
        specs = self._hidden_specs(self.input_shape_)
        specs.append(L.Dense(n_outputs))
        return Network(specs, self.input_shape_, dtype)

    # ------------------------------------------------------------ fit

    def fit(self, X, y, sample_weight=None):
        """Train the network on X, y.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W), (n_samples, H, W),
            (n_samples, C, L) or (n_samples, n_features)
            Any real dtype. Flat X is reshaped to ``input_shape``. 3-D X is
            read as one-channel images (n, H, W) unless ``input_shape`` is
            (C, L) or the first spatial layer of ``layers`` is 1-D, which
            make it signals (n, C, L).
        y : array-like of shape (n_samples,) or, for CNNRegressor, (n_samples, n_outputs)
            Class labels of any type (CNNClassifier) or real targets
            (CNNRegressor).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples; None weighs them equally.
            Each batch's loss is the mean of its samples' losses weighted
            by them, as in MLPClassifier (see the "Sample and class
            weights" section of the README); the weights follow the samples
            through the shuffling and the early-stopping split, whose score
            they weight too. Batch norm's statistics and dropout's masks
            are unweighted.

        Returns
        -------
        self
        """
        dtype = self._check_params()
        warm = self.warm_start and hasattr(self, "network_")
        X, y, sample_weight = self._validate_training_data(
            X, y, sample_weight, not warm, dtype, incremental=False)
        rng = check_random_state(self.random_state)
        self._rng = rng    # partial_fit after fit goes on drawing from it
        if not warm:
            self._initialize(dtype, rng, holds_out_validation(self, len(X), False),
                             self._output_width(y))
        return train(self, X, y, sample_weight, rng, epochs=self.max_iter,
                     incremental=False)

    def _partial_fit(self, X, y, sample_weight, first):
        """One epoch over X, y; ``first``: from new weights."""
        dtype = self._check_params()
        if first and hasattr(self, "network_"):
            del self.network_
        X, y, sample_weight = self._validate_training_data(
            X, y, sample_weight, first, dtype, incremental=True)
        if first:
            self._rng = check_random_state(self.random_state)
            self._initialize(dtype, self._rng, False, self._output_width(y))
        return train(self, X, y, sample_weight, self._rng, epochs=1, incremental=True)

    def _validate_training_data(self, X, y, sample_weight, reset, dtype, incremental):
        """(X, y, sample_weight): X validated as for prediction, y as the
        loss reads it, the samples' weights as training reads them (None:
        all equal)."""
        check_y_passed(y, type(self).__name__)
        X = self._validate_X(X, reset=reset, dtype=dtype)
        y = self._encode_targets(y, X, dtype, reset, incremental)
        return X, y, self._training_weights(sample_weight, y)

    def _training_weights(self, sample_weight, y):
        """sample_weight as float64 non-negative weights, one per sample of
        y, not all zero (scikit-learn's checks and messages); None stays
        None."""
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, y, dtype=np.float64,
                                    ensure_non_negative=True)

    def _initialize(self, dtype, rng, early_stopping, n_outputs):
        network = self._build_network(dtype, n_outputs)
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

    # -------------------------------------------------------- predict

    def _network_outputs(self, X, n_threads):
        """The output layer's scores for X (already validated)."""
        return forward_in_batches(self.network_, X, n_threads)

    def _predict_outputs(self, X):
        """The output layer's scores for X, validated here."""
        if "network_" not in self.__dict__:
            # scikit-learn's check, which costs a prediction of one row
            # several percent, only where it raises
            check_is_fitted(self, "network_")
        X = self._validate_X(X, reset=False, dtype=self.network_.dtype)
        return self._network_outputs(X, effective_n_threads(self.n_threads))

    # ------------------------------------------------------ transform

    def transform(self, X, layer=-2):
        """The activations of a layer: by default those that enter the
        output layer (the last hidden layer's output), one row per sample.

        Computed in batches of bounded memory, as predictions are; in a
        Pipeline, the estimator is then a learned feature extractor (e.g.
        CNNClassifier followed by LogisticRegression).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            As for :meth:`fit`.
        layer : int, default=-2
            Which layer's output, numbered as ``n_layers_`` counts them: 0
            is the input, ``i`` in 1 to ``n_layers_ - 2`` is the output of
            hidden layer ``network_.specs[i - 1]`` (as in inference: dropout
            passes its input through, batch norm uses its running
            statistics), ``n_layers_ - 1`` is the output layer's scores
            (before the softmax of CNNClassifier). Negative values count
            from the end: -1 is the output layer, -2 what enters it.

        Returns
        -------
        activations : ndarray of shape (n_samples, n_features_out)
            That layer's output for each sample, flattened (channels first,
            as the layer computes it), in the network's dtype.
            ``get_feature_names_out`` names the columns of the default layer.
        """
        check_is_fitted(self)
        n_specs = self._specs_up_to(layer)
        X = self._validate_X(X, reset=False, dtype=self.network_.dtype)
        head = self.network_.head(n_specs)
        outputs = forward_in_batches(head, X, effective_n_threads(self.n_threads))
        return outputs.reshape(len(X), -1)

    def _specs_up_to(self, layer):
        """How many of ``network_.specs`` compute layer number ``layer``."""
        n_layers = self.n_layers_
        if (not isinstance(layer, numbers.Integral) or isinstance(layer, bool)
                or not -n_layers <= layer < n_layers):
            raise ValueError(
                f"layer must be an int in [-{n_layers}, {n_layers}) (n_layers_ = "
                f"{n_layers}: the input, {n_layers - 2} hidden layers and the "
                f"output layer), got {layer!r}")
        return int(layer) % n_layers

    @property
    def _n_features_out(self):
        """Columns of :meth:`transform`'s default output (for
        get_feature_names_out): the values that enter the output layer."""
        return math.prod(self.network_.layers[-1].input_shape)

    # ----------------------------------------------------- attributes

    @property
    def coefs_(self):
        check_is_fitted(self)
        return [layer.weight for layer in self.network_.parametric_layers]

    @property
    def intercepts_(self):
        check_is_fitted(self)
        return [layer.bias for layer in self.network_.parametric_layers]

    @property
    def n_layers_(self):
        check_is_fitted(self)
        return len(self.network_.specs) + 1

    @property
    def n_outputs_(self):
        check_is_fitted(self)
        return self.network_.output_shape[0]

    @property
    def out_activation_(self):
        check_is_fitted(self)
        return self.OUT_ACTIVATION

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform keeps X's dtype when it is the network's
        dtype = float_dtype_name(self.dtype)
        tags.transformer_tags.preserves_dtype = (
            [dtype] if dtype in ("float32", "float64") else [])
        return tags
