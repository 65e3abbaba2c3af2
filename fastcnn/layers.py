"""Layer specifications: what a network is made of, not its weights.

Each class here is a small immutable record (a frozen dataclass) that
describes one layer. It validates its own arguments when created, compares
by value, and is safe to clone, deep-copy and pickle, so a list of them can
be given as ``CNNClassifier(layers=[...])`` and searched over by
``GridSearchCV``. Weights never live here: a fitted estimator keeps them in
its fitted attributes (``network_``, ``coefs_``, ``intercepts_``).

Images are channels-first ``(C, H, W)``, signals ``(C, L)``. The output
layer (a ``Dense`` with one unit per class) is added by the estimator.

Example
-------
>>> from fastcnn.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense
>>> lenet5 = [Conv2D(6, 5, padding=2), ReLU(), MaxPool2D(2),
...           Conv2D(16, 5), ReLU(), MaxPool2D(2),
...           Flatten(), Dense(120), ReLU(), Dense(84), ReLU()]
"""
import math
import numbers
from dataclasses import dataclass

__all__ = ["Conv2D", "Conv1D", "MaxPool2D", "MaxPool1D", "AvgPool2D",
           "AvgPool1D", "ReLU", "Flatten", "Dense", "LayerSpec",
           "Residual", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
           "GlobalAvgPool2D", "GlobalAvgPool1D", "GlobalMaxPool2D",
           "GlobalMaxPool1D", "L2Pool2D", "L2Pool1D",
           "Tanh", "Sigmoid", "LeakyReLU", "ELU", "GELU",
           "BatchNorm2D", "BatchNorm1D", "LocalResponseNorm"]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_per_axis(layer, name, value, ndim, minimum, allow_none=False):
    """An int, or a tuple of ``ndim`` ints, each >= minimum."""
    if value is None and allow_none:
        return
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if (len(values) not in (1, ndim) or not all(_is_int(v) for v in values)
            or min(values) < minimum):
        shape = "an int" if ndim == 1 else f"an int or a tuple of {ndim} ints"
        raise ValueError(
            f"{layer}: {name} must be {shape} >= {minimum}, got {value!r}")


class LayerSpec:
    """Base of all layer specifications."""

    #: number of spatial axes the layer works on (None: any)
    spatial_ndim = None

    def _freeze(self, *names):
        """Store list arguments as tuples: the spec stays hashable and cannot
        change after validation."""
        for name in names:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class _Conv(LayerSpec):
    filters: int
    kernel_size: object
    stride: object = 1
    padding: object = 0
    dilation: object = 1

    def __post_init__(self):
        self._freeze("kernel_size", "stride", "padding", "dilation")
        name, ndim = type(self).__name__, self.spatial_ndim
        if not _is_int(self.filters) or self.filters < 1:
            raise ValueError(
                f"{name}: filters must be a positive int, got {self.filters!r}")
        _check_per_axis(name, "kernel_size", self.kernel_size, ndim, 1)
        _check_per_axis(name, "stride", self.stride, ndim, 1)
        _check_per_axis(name, "dilation", self.dilation, ndim, 1)
        if isinstance(self.padding, str):
            self._check_padding_name(name)
        else:
            _check_per_axis(name, "padding", self.padding, ndim, 0)

    def _check_padding_name(self, name):
        if self.padding not in ("same", "valid"):
            raise ValueError(
                f"{name}: padding must be 'same', 'valid' or an int, "
                f"got {self.padding!r}")
        kernel = (self.kernel_size if isinstance(self.kernel_size, (tuple, list))
                  else (self.kernel_size,))
        stride = self.stride if isinstance(self.stride, tuple) else (self.stride,)
        # An even kernel is padded one more after than before; at a stride
        # above 1 PyTorch refuses 'same' outright, and so do we there.
        if (self.padding == "same" and any(k % 2 == 0 for k in kernel)
                and max(stride) > 1):
            raise ValueError(
                f"{name}: padding='same' with an even kernel_size "
                f"{self.kernel_size!r} needs stride 1, got {self.stride!r}")


@dataclass(frozen=True)
class Conv2D(_Conv):
    """2-D convolution (correlation) of images, ``(C, H, W) -> (filters, Ho, Wo)``.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int, (int, int), 'same' or 'valid', default 0
        Zeros added on each side. 'valid' is 0; 'same' keeps the size at
        stride 1, as PyTorch's: ``d*(k - 1)`` zeros per axis (d the
        dilation), half before, the odd one after (below, right) for an
        even kernel. An even kernel with 'same' needs stride 1.
    dilation : int or (int, int), default 1
        Step between the taps of a window: element (a, b) of the window at
        output (i, j) reads input ``(i*sh + a*dh - ph, j*sw + b*dw - pw)``.
        Output size per axis: ``(W + 2p - d*(k - 1) - 1) // s + 1``.
    """
    spatial_ndim = 2


@dataclass(frozen=True)
class Conv1D(_Conv):
    """1-D convolution (correlation) of signals, ``(C, L) -> (filters, Lo)``.

    Parameters as for :class:`Conv2D`, with ints for the one axis.
    """
    spatial_ndim = 1


@dataclass(frozen=True)
class _Pool(LayerSpec):
    pool_size: object
    stride: object = None

    def __post_init__(self):
        self._freeze("pool_size", "stride")
        name, ndim = type(self).__name__, self.spatial_ndim
        _check_per_axis(name, "pool_size", self.pool_size, ndim, 1)
        _check_per_axis(name, "stride", self.stride, ndim, 1, allow_none=True)


@dataclass(frozen=True)
class MaxPool2D(_Pool):
    """Maximum over windows of ``pool_size``; stride defaults to the size."""
    spatial_ndim = 2


@dataclass(frozen=True)
class MaxPool1D(_Pool):
    """Maximum over windows of a signal; stride defaults to the size."""
    spatial_ndim = 1


@dataclass(frozen=True)
class AvgPool2D(_Pool):
    """Mean over windows of ``pool_size``; stride defaults to the size."""
    spatial_ndim = 2


@dataclass(frozen=True)
class AvgPool1D(_Pool):
    """Mean over windows of a signal; stride defaults to the size."""
    spatial_ndim = 1


@dataclass(frozen=True)
class ReLU(LayerSpec):
    """``max(x, 0)``, elementwise, any shape."""


@dataclass(frozen=True)
class Flatten(LayerSpec):
    """``(C, ...) -> (C * ...,)``. A :class:`Dense` layer flattens its input
    itself, so this is optional; it costs nothing (no copy)."""


@dataclass(frozen=True)
class Dense(LayerSpec):
    """Fully connected layer with ``units`` outputs; flattens its input.

    Parameters
    ----------
    units : int
    """
    units: int

    def __post_init__(self):
        if not _is_int(self.units) or self.units < 1:
            raise ValueError(
                f"Dense: units must be a positive int, got {self.units!r}")


def _check_specs(name, argument, value, allow_empty):
    if (not isinstance(value, tuple) or not (value or allow_empty)
            or not all(isinstance(spec, LayerSpec) for spec in value)):
        what = "a list" if allow_empty else "a non-empty list"
        raise ValueError(
            f"{name}: {argument} must be {what} of fastcnn.layers "
            f"specifications, got {value!r}")


@dataclass(frozen=True)
class Residual(LayerSpec):
    """A residual block, ``layers(x) + shortcut(x)`` (He et al., 2016).

    Parameters
    ----------
    layers : list of layer specifications
        The block's path, run in order; it may hold blocks itself.
    shortcut : list of layer specifications or None, default None
        The path added to it. None: the identity where ``layers`` keep the
        input's shape, otherwise a projection, a 1x1 convolution (with a
        bias) to the output's channels with the stride that maps the
        input's spatial size to the output's; a ValueError names the block
        when no stride does, or the shapes differ in their axes. An empty
        list is the identity.

    Example
    -------
    >>> block = Residual([Conv2D(16, 3, stride=2, padding=1), ReLU(),
    ...                   Conv2D(16, 3, padding=1)])
    """
    layers: tuple
    shortcut: tuple = None

    def __post_init__(self):
        self._freeze("layers", "shortcut")
        _check_specs("Residual", "layers", self.layers, allow_empty=False)
        if self.shortcut is not None:
            _check_specs("Residual", "shortcut", self.shortcut, allow_empty=True)

    @property
    def spatial_ndim(self):
        """That of the first layer of the block's path that has one."""
        return next((spec.spatial_ndim for spec in self.layers
                     if spec.spatial_ndim is not None), None)


@dataclass(frozen=True)
class _Dropout(LayerSpec):
    rate: float

    def __post_init__(self):
        rate = self.rate
        if (not isinstance(rate, numbers.Real) or isinstance(rate, bool)
                or not 0 <= rate < 1):
            raise ValueError(
                f"{type(self).__name__}: rate must be a real number in [0, 1), "
                f"got {rate!r}")


@dataclass(frozen=True)
class Dropout(_Dropout):
    """Inverted dropout, any shape: in training each value is zeroed with
    probability ``rate`` and the others are scaled by ``1 / (1 - rate)``;
    in inference (prediction) the identity.

    Parameters
    ----------
    rate : float in [0, 1)
        The fraction of values dropped; 0 drops none.
    """


@dataclass(frozen=True)
class SpatialDropout2D(_Dropout):
    """Channel-wise dropout of images ``(C, H, W)``: in training each
    channel of each sample is zeroed whole with probability ``rate`` and
    the others are scaled by ``1 / (1 - rate)`` (PyTorch's Dropout2d);
    in inference the identity. Parameters as for :class:`Dropout`."""
    spatial_ndim = 2


@dataclass(frozen=True)
class SpatialDropout1D(_Dropout):
    """Channel-wise dropout of signals ``(C, L)`` (PyTorch's Dropout1d),
    as :class:`SpatialDropout2D`."""
    spatial_ndim = 1


@dataclass(frozen=True)
class GlobalAvgPool2D(LayerSpec):
    """Mean of each channel over all positions, ``(C, H, W) -> (C,)``: a
    :class:`Dense` can follow without :class:`Flatten`."""
    spatial_ndim = 2


@dataclass(frozen=True)
class GlobalAvgPool1D(LayerSpec):
    """Mean of each channel over the signal, ``(C, L) -> (C,)``."""
    spatial_ndim = 1


@dataclass(frozen=True)
class GlobalMaxPool2D(LayerSpec):
    """Maximum of each channel over all positions, ``(C, H, W) -> (C,)``;
    the gradient goes to the (first) position of the maximum."""
    spatial_ndim = 2


@dataclass(frozen=True)
class GlobalMaxPool1D(LayerSpec):
    """Maximum of each channel over the signal, ``(C, L) -> (C,)``."""
    spatial_ndim = 1


@dataclass(frozen=True)
class L2Pool2D(_Pool):
    """``sqrt(sum x**2)`` over windows of ``pool_size``; stride defaults to
    the size. A window of zeros passes no gradient (the norm has no
    derivative at 0)."""
    spatial_ndim = 2


@dataclass(frozen=True)
class L2Pool1D(_Pool):
    """``sqrt(sum x**2)`` over windows of a signal; stride defaults to the
    size."""
    spatial_ndim = 1


def _check_real(layer, name, value, low, low_included):
    """A finite real number (not a bool) >= low, or > low."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or not math.isfinite(value) or value < low
            or (value == low and not low_included)):
        bound = ">=" if low_included else ">"
        raise ValueError(
            f"{layer}: {name} must be a finite number {bound} {low}, got {value!r}")


@dataclass(frozen=True)
class Tanh(LayerSpec):
    """``tanh(x)``, elementwise, any shape."""


@dataclass(frozen=True)
class Sigmoid(LayerSpec):
    """The logistic function ``1 / (1 + exp(-x))``, elementwise, any shape."""


@dataclass(frozen=True)
class LeakyReLU(LayerSpec):
    """``x`` where ``x > 0``, ``negative_slope * x`` elsewhere, elementwise.

    Parameters
    ----------
    negative_slope : float, default 0.01
        A finite number >= 0 (the gradient is told from the sign of the
        output, which is the input's only for a slope >= 0).
    """
    negative_slope: float = 0.01

    def __post_init__(self):
        _check_real("LeakyReLU", "negative_slope", self.negative_slope, 0, True)


@dataclass(frozen=True)
class ELU(LayerSpec):
    """``x`` where ``x > 0``, ``alpha * (exp(x) - 1)`` elsewhere, elementwise.

    Parameters
    ----------
    alpha : float, default 1.0
        A finite number > 0 (the gradient ``y + alpha`` below zero is taken
        from the output, negative exactly where the input is; alpha = 0 would
        be a ReLU).
    """
    alpha: float = 1.0

    def __post_init__(self):
        _check_real("ELU", "alpha", self.alpha, 0, False)


@dataclass(frozen=True)
class GELU(LayerSpec):
    """``x * Phi(x)``, Phi the standard normal distribution function,
    elementwise, as PyTorch's ``GELU``.

    Parameters
    ----------
    approximate : {'none', 'tanh'}, default 'none'
        'none': the exact erf form. 'tanh': ``0.5 * x * (1 + tanh(sqrt(2 /
        pi) * (x + 0.044715 * x**3)))``, within about 5e-4 of it (for
        networks trained with that form).
    """
    approximate: str = "none"

    def __post_init__(self):
        if self.approximate not in ("none", "tanh"):
            raise ValueError("GELU: approximate must be 'none' or 'tanh', "
                             f"got {self.approximate!r}")


def _is_real(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass(frozen=True)
class _BatchNorm(LayerSpec):
    momentum: float = 0.1
    eps: float = 1e-5

    def __post_init__(self):
        name = type(self).__name__
        if not _is_real(self.momentum) or not 0 <= self.momentum <= 1:
            raise ValueError(
                f"{name}: momentum must be a number in [0, 1], got {self.momentum!r}")
        if not _is_real(self.eps) or self.eps <= 0:
            raise ValueError(
                f"{name}: eps must be a positive number, got {self.eps!r}")


@dataclass(frozen=True)
class BatchNorm2D(_BatchNorm):
    """Batch normalization of images ``(C, H, W)``, per channel.

    In training each channel is normalised with the mean and (biased)
    variance of the batch over samples and positions, then scaled by a
    learned ``weight`` (initially 1) and shifted by a learned ``bias``
    (initially 0), neither L2-penalised; ``running_mean`` and
    ``running_var`` follow the batches' mean and unbiased variance,
    ``running = (1 - momentum) * running + momentum * batch``, and
    inference normalises with them. As PyTorch's BatchNorm2d.

    Parameters
    ----------
    momentum : float in [0, 1], default 0.1
    eps : float > 0, default 1e-5
        Added to the variance.
    """
    spatial_ndim = 2


@dataclass(frozen=True)
class BatchNorm1D(_BatchNorm):
    """Batch normalization of signals ``(C, L)`` or flat features ``(F,)``
    (after a Dense), per channel or feature: as :class:`BatchNorm2D`, as
    PyTorch's BatchNorm1d. A feature with a single value in a batch (a
    batch of one sample on flat features) normalises to 0, its output is
    ``bias``, and its running variance is kept."""


@dataclass(frozen=True)
class LocalResponseNorm(LayerSpec):
    """Local response normalization across channels, of images or signals,
    as PyTorch's LocalResponseNorm:
    ``y = x / (k + alpha / size * sum(x^2 over size neighbouring channels))^beta``,
    the window from ``c - size // 2`` to ``c + (size - 1) // 2``, channels
    beyond the edges counting as zeros.

    Parameters
    ----------
    size : int >= 1
    alpha : float >= 0, default 1e-4
    beta : float, default 0.75
    k : float > 0, default 1.0
    """
    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    def __post_init__(self):
        if not _is_int(self.size) or self.size < 1:
            raise ValueError(
                f"LocalResponseNorm: size must be a positive int, got {self.size!r}")
        if not _is_real(self.alpha) or self.alpha < 0:
            raise ValueError(
                f"LocalResponseNorm: alpha must be a number >= 0, got {self.alpha!r}")
        if not _is_real(self.beta):
            raise ValueError(
                f"LocalResponseNorm: beta must be a finite number, got {self.beta!r}")
        if not _is_real(self.k) or self.k <= 0:
            raise ValueError(
                f"LocalResponseNorm: k must be a positive number, got {self.k!r}")
