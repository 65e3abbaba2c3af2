"""Inspecting a fitted network: a table of its layers with their shapes,
parameter counts and floating-point operations, and plots of its training
curve and of its first convolution's filters.

Everything here reads a fitted estimator's ``network_`` (its runtime
layers, shapes and parameters), ``loss_curve_`` and ``validation_scores_``
only. :class:`SummaryMixin` gives an estimator ``summary()`` and puts the
same table in its notebook (HTML) representation. The Displays follow
scikit-learn's conventions (``from_estimator``, ``plot(ax=None, ...)``,
attributes ending in ``_``); matplotlib is imported when they plot, and is
installed with fastcnn's ``plot`` extra (``pip install "fastcnn[plot]"``).

Counting floating-point operations
----------------------------------
Counts are per sample, of the layers as they run: a ReLU right before max
pooling runs after it, on the pooled values, and a ReLU right after a batch
norm or a dense layer inside it (the table shows ``MaxPool2D(2)+ReLU``).

Forward pass, by layer:

- convolution and dense: 2 per multiply-add, ``2 * fan_in`` per output
  value (``fan_in = C_in * kernel size`` or the input's size), padding
  included; the bias additions are not counted (PyTorch's
  ``torch.utils.flop_counter`` counts the same);
- pooling over a window of ``k`` values, per output value: max ``k - 1``
  comparisons, average ``k`` (``k - 1`` additions and a scaling), L2
  ``2k`` (``k`` squares, ``k - 1`` additions and a square root); global
  pooling alike with the window all of a channel;
- activations (any function), a ReLU taken on by a pooling, a batch norm
  or a dense layer, and a residual block's sum of its two paths: 1 per
  output value;
- batch norm: 2 per value (a scale and a shift: the inference form);
- local response norm: ``size + 4`` per value (a square, ``size - 1``
  additions, ``k + alpha / size * sum``, a power and a division);
- dropout (the identity in inference) and flatten (a view): 0.

A training step adds the backward pass, counted as one forward pass for
each gradient it computes: that of the layer's parameters (layers that
have any) and that of its input, which every layer computes but the
network's first (its input is the data); so a convolution or dense layer
costs three forward passes in training, two as the first layer. A ReLU
taken on by another layer counts as it would on its own: its forward pass,
and one more for its gradient where the layer computes any. The loss, the
optimizer step and the batch norm's statistics in training are not
counted.
"""
import html
import math
import numbers
from dataclasses import MISSING, dataclass, fields

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from . import _network as N
from . import layers as L

__all__ = ["SummaryMixin", "flop_counts", "TrainingCurveDisplay", "FilterDisplay"]


# ------------------------------------------------------------ FLOP counts

def _outputs(layer):
    return math.prod(layer.output_shape)


def _multiply_adds_flops(layer):
    """A convolution's or a dense layer's: fan_in multiply-adds an output."""
    return 2 * layer.fan_in * _outputs(layer)


def _window(layer):
    return math.prod(layer.size)


def _global_window(layer):
    """Values of one channel: a global pooling's window."""
    return math.prod(layer.input_shape[1:])


# Forward FLOPs per sample of each runtime layer class (the module's
# docstring gives the reasons); a class not here inherits its base's rule.
_FORWARD_FLOPS = {
    N.Conv: _multiply_adds_flops,
    N.Dense: lambda layer: _multiply_adds_flops(layer) + _outputs(layer) * layer.relu,
    N.MaxPool: lambda layer: _outputs(layer) * (_window(layer) - 1 + layer.relu),
    N.AvgPool: lambda layer: _outputs(layer) * _window(layer),
    N.L2Pool: lambda layer: _outputs(layer) * 2 * _window(layer),
    N.GlobalPool: lambda layer: _outputs(layer) * (_global_window(layer) - layer.is_max),
    N.ReLU: _outputs,
    N._Activation: _outputs,
    N.BatchNorm: lambda layer: _outputs(layer) * (2 + layer.relu),
    N.LocalResponseNorm: lambda layer: _outputs(layer) * (layer.spec.size + 4),
    N.Dropout: lambda layer: 0,
    N.Flatten: lambda layer: 0,
    N.Residual: _outputs,
}


def _forward_flops(layer):
    for cls in type(layer).__mro__:
        rule = _FORWARD_FLOPS.get(cls)
        if rule is not None:
            return int(rule(layer))
    raise TypeError(
        f"{layer.where()}: fastcnn.inspection has no FLOP count for "
        f"{type(layer).__name__} layers")


@dataclass(frozen=True)
class _Row:
    """A runtime layer as the summary shows it: how deep in residual
    blocks, whether on a block's shortcut, and whether its backward pass
    computes its input's gradient."""
    layer: object
    depth: int
    on_shortcut: bool
    input_gradient: bool

    @property
    def forward_flops(self):
        return _forward_flops(self.layer)

    @property
    def training_flops(self):
        gradients = bool(self.layer.parameters) + self.input_gradient
        flops = self.forward_flops * (1 + gradients)
        if getattr(self.layer, "relu", False) and gradients > 1:
            # a ReLU taken on has one gradient pass, whatever the layer's
            flops -= _outputs(self.layer) * (gradients - 1)
        return flops


def _rows(layers, input_gradient=False, depth=0, on_shortcut=False):
    """Every runtime layer of a sequence in the order they run, each
    block's path and then its shortcut right after the block (the order of
    ``Network.all_layers``). ``input_gradient``: whether the sequence's
    input needs a gradient (the network's does not), as the backward pass
    decides it."""
    for layer in layers:
        needs = input_gradient or not layer.first
        yield _Row(layer, depth, on_shortcut, needs)
        if isinstance(layer, N.Residual):
            yield from _rows(layer.main, needs, depth + 1)
            yield from _rows(layer.shortcut, needs, depth + 1, on_shortcut=True)


def flop_counts(network):
    """Floating-point operations per sample of each layer of a network.

    Parameters
    ----------
    network : fastcnn network
        A fitted estimator's ``network_``.

    Returns
    -------
    list of (layer, forward, training) tuples
        One per runtime layer, in the order of ``network.all_layers`` (a
        residual block's own count is its addition of its two paths; its
        layers follow it): the layer, its forward pass's FLOPs and a training
        step's (forward and backward), per sample, counted as the module's
        docstring says.
    """
    return [(row.layer, row.forward_flops, row.training_flops)
            for row in _rows(network.layers)]


# ----------------------------------------------------------- the summary

def _spec_text(spec):
    """A specification as written, without its defaults: Conv2D(16, 3,
    padding='same'). A block's contents are rows of their own."""
    if isinstance(spec, L.Residual):
        return "Residual"
    arguments = []
    for field in fields(spec):
        value = getattr(spec, field.name)
        if field.default is MISSING:
            arguments.append(repr(value))
        elif value != field.default:
            arguments.append(f"{field.name}={value!r}")
    return f"{type(spec).__name__}({', '.join(arguments)})"


def _layer_text(row):
    layer = row.layer
    text = _spec_text(layer.spec)
    if getattr(layer, "relu", False):
        text += "+ReLU"     # a ReLU this layer runs in its own passes
    if isinstance(layer, N.Residual) and not layer.shortcut:
        text += " (identity shortcut)"
    return ("shortcut: " if row.on_shortcut else "") + text


def _sizes(declarations):
    return sum(math.prod(d.shape) for d in declarations)


_COLUMNS = ("layer", "output shape", "params", "state", "FLOPs")


def _table(network):
    """(rows, totals): per layer (depth, text, output shape, parameters,
    state values, forward FLOPs) as strings but the depth, and the totals."""
    rows, totals = [], np.zeros(4, dtype=np.int64)
    for row in _rows(network.layers):
        layer = row.layer
        counts = (_sizes(layer.parameters), _sizes(layer.states),
                  row.forward_flops, row.training_flops)
        totals += counts
        rows.append((row.depth, _layer_text(row), str(layer.output_shape))
                    + tuple(f"{count:,}" for count in counts[:3]))
    return rows, [int(total) for total in totals]


def _totals_lines(totals):
    params, state, forward, training = totals
    return (f"Total: {params:,} trainable parameters, {state:,} non-trainable "
            "state values (running statistics).",
            f"FLOPs per sample: {forward:,} in the forward pass, {training:,} "
            "in a training step (forward and backward).")


def _header_line(network):
    return f"Input {network.input_shape}, {network.dtype.name}."


def _summary_text(network):
    """The summary of a network as a text table (see SummaryMixin.summary)."""
    rows, totals = _table(network)
    cells = [_COLUMNS] + [("  " * depth + text, *rest) for depth, text, *rest in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]

    def line(row):
        # the text columns to the left, the counts to the right
        return "  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
    lines = [_header_line(network), line(cells[0]),
             line(tuple("-" * width for width in widths))]
    lines += [line(row) for row in cells[1:]]
    return "\n".join(lines + [""] + list(_totals_lines(totals)))


def _summary_html(network):
    """The summary of a network as an HTML table, every text escaped."""
    rows, totals = _table(network)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in _COLUMNS)
    body = []
    for depth, text, *rest in rows:
        cells = [f'<td style="text-align: left; padding-left: {0.5 + 1.5 * depth}em">'
                 f"{html.escape(text)}</td>",
                 f'<td style="text-align: left">{html.escape(rest[0])}</td>']
        cells += [f'<td style="text-align: right">{html.escape(cell)}</td>'
                  for cell in rest[1:]]
        body.append(f"<tr>{''.join(cells)}</tr>")
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in _totals_lines(totals))
    return (f'<div class="fastcnn-summary"><p>{html.escape(_header_line(network))}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"</table>{notes}</div>")


class SummaryMixin:
    """Gives an estimator with a fitted ``network_`` :meth:`summary` and
    shows that table below scikit-learn's diagram in its HTML (notebook)
    representation."""

    def summary(self):
        """A table of the fitted network's layers, one row each.

        Columns: the layer (its specification without its defaults; the
        layers of a residual block indented below it, those of its
        shortcut marked ``shortcut:``), its output shape per sample, its
        trainable parameters, its non-trainable state values (batch norm's
        running statistics) and the floating-point operations of its
        forward pass per sample. Rows follow the order the layers run in:
        a ReLU right before max pooling runs after it, inside it
        (``MaxPool2D(2)+ReLU``). Below, the totals, and the FLOPs of a
        training step per sample. FLOPs count 2 per multiply-add; the
        backward pass counts one forward pass per gradient it computes (of
        the parameters, and of the input but in the first layer), so 2
        forward passes for a convolution or a dense layer; the
        :mod:`fastcnn.inspection` docstring has the rule for every layer.

        Returns
        -------
        str
            The table, lines separated by newlines: ``print(clf.summary())``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        """
        check_is_fitted(self)
        return _summary_text(self.network_)

    def _html_repr(self):
        """scikit-learn's HTML representation (ReprHTMLMixin's
        ``_repr_html_`` and ``_repr_mimebundle_`` call this), with the
        summary below its diagram once fitted."""
        diagram = super()._html_repr()
        try:
            check_is_fitted(self)
        except NotFittedError:
            return diagram
        head, end, tail = diagram.rpartition("</body>")
        if not end:
            return diagram + _summary_html(self.network_)
        return head + _summary_html(self.network_) + end + tail


# --------------------------------------------------------------- Displays

def _pyplot(caller):
    """matplotlib.pyplot, or an ImportError saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f"{caller} needs matplotlib, which fastcnn's 'plot' extra "
            "installs: pip install \"fastcnn[plot]\" (or pip install "
            "matplotlib)") from error
    return plt


class TrainingCurveDisplay:
    """The training loss of each epoch and, on a second y axis, the
    validation score of each epoch when early stopping recorded them.

    Create it with :meth:`from_estimator`; the constructor takes the
    curves themselves.

    Parameters
    ----------
    loss_curve : array-like of shape (n_epochs,)
        The mean training loss of each epoch (``loss_curve_``).
    validation_scores : array-like of shape (n_validated_epochs,) or None
        The validation score after each epoch (``validation_scores_``),
        plotted from epoch 1 on; None: no validation curve.

    Attributes
    ----------
    ax_ : matplotlib Axes
        The axes of the loss, epochs on the x axis.
    validation_ax_ : matplotlib Axes or None
        The second y axis (``ax_.twinx()``) of the validation scores.
    figure_ : matplotlib Figure
    loss_line_ : matplotlib Line2D
    validation_line_ : matplotlib Line2D or None
    """

    def __init__(self, loss_curve, validation_scores=None):
        self.loss_curve = _curve(loss_curve, "loss_curve")
        self.validation_scores = (None if validation_scores is None
                                  else _curve(validation_scores, "validation_scores"))

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, validation_kw=None, **kwargs):
        """Plot a fitted estimator's ``loss_curve_`` and, when not None,
        its ``validation_scores_``.

        Parameters
        ----------
        estimator : fitted estimator
            A fastcnn estimator (or any with ``loss_curve_``, as
            MLPClassifier); for a Pipeline, pass its last step.
        ax, validation_kw, **kwargs
            As for :meth:`plot`.

        Returns
        -------
        TrainingCurveDisplay
        """
        _pyplot(f"{cls.__name__}.from_estimator")
        check_is_fitted(estimator)
        if not hasattr(estimator, "loss_curve_"):
            raise ValueError(
                f"estimator must have a loss_curve_ (a fitted fastcnn "
                f"estimator; for a Pipeline, its last step), got "
                f"{type(estimator).__name__}")
        display = cls(estimator.loss_curve_, getattr(estimator, "validation_scores_", None))
        return display.plot(ax=ax, validation_kw=validation_kw, **kwargs)

    def plot(self, ax=None, *, validation_kw=None, **kwargs):
        """Plot the curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Where to plot; None: a new figure.
        validation_kw : dict, default=None
            Keyword arguments of the validation curve's ``Axes.plot``.
        **kwargs
            Keyword arguments of the loss curve's ``Axes.plot``.

        Returns
        -------
        self
        """
        plt = _pyplot(f"{type(self).__name__}.plot")
        from matplotlib.ticker import MaxNLocator
        if ax is None:
            _, ax = plt.subplots(layout="constrained")
        epochs = np.arange(1, len(self.loss_curve) + 1)
        (self.loss_line_,) = ax.plot(epochs, self.loss_curve,
                                     **{"label": "training loss", **kwargs})
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss")
        self.validation_ax_ = self.validation_line_ = None
        lines = [self.loss_line_]
        if self.validation_scores is not None:
            self.validation_ax_ = ax.twinx()
            scores = self.validation_scores
            (self.validation_line_,) = self.validation_ax_.plot(
                np.arange(1, len(scores) + 1), scores,
                **{"color": "C1", "label": "validation score", **(validation_kw or {})})
            self.validation_ax_.set_ylabel("validation score")
            lines.append(self.validation_line_)
        # the loss falls and the score rises: the middle right is free
        ax.legend(handles=lines, loc="center right")
        self.ax_, self.figure_ = ax, ax.figure
        return self


def _curve(values, name):
    curve = np.asarray(values, dtype=float)
    if curve.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per epoch), got shape {curve.shape}")
    return curve


class FilterDisplay:
    """A convolution's learned filters, one small plot per output channel
    in a grid: for a 2-D convolution an image of its kernel, the mean over
    the input channels (one shared colour scale, symmetric about 0, with a
    colour bar); for a 1-D convolution its taps as curves, one per input
    channel.

    Create it with :meth:`from_estimator`; the constructor takes the
    weights themselves.

    Parameters
    ----------
    weights : ndarray of shape (F, C, KH, KW) or (F, C, K)
        The kernels of a 2-D or 1-D convolution, output channels first.
    layer_name : str, default=None
        Shown as the figure's title.

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes
        The grid (the given axes, or a new figure's ``(rows, columns)``);
        filter ``f`` is in ``axes_.flat[f]``, the axes left over are
        hidden.
    images_ : list of matplotlib AxesImage or None
        The images of a 2-D convolution's filters, one per output channel.
    lines_ : ndarray of matplotlib Line2D of shape (F, C), or None
        The curves of a 1-D convolution's filters.
    colorbar_ : matplotlib Colorbar or None
        The colour scale of the images.
    figure_ : matplotlib Figure
    """

    def __init__(self, weights, layer_name=None):
        weights = np.asarray(weights, dtype=float)
        if weights.ndim not in (3, 4):
            raise ValueError(
                "weights must be a convolution's kernels, of shape (F, C, KH, KW) "
                f"or (F, C, K), got shape {weights.shape}")
        self.weights, self.layer_name = weights, layer_name

    @classmethod
    def from_estimator(cls, estimator, *, layer=None, ax=None, **kwargs):
        """Plot the filters of one of a fitted estimator's convolutions.

        Parameters
        ----------
        estimator : fitted fastcnn estimator
        layer : int, default=None
            Which convolution: its index among the network's convolutions
            in the order they run (0 the first; those of residual blocks,
            their shortcuts' projections included, counted where the
            summary lists them). None: the first.
        ax, **kwargs
            As for :meth:`plot`.

        Returns
        -------
        FilterDisplay
        """
        _pyplot(f"{cls.__name__}.from_estimator")
        check_is_fitted(estimator)
        convolutions = [layer for layer in estimator.network_.all_layers
                        if isinstance(layer, N.Conv)]
        conv = convolutions[_convolution_index(layer, len(convolutions))]
        display = cls(np.array(conv.weight), layer_name=_spec_text(conv.spec))
        return display.plot(ax=ax, **kwargs)

    def plot(self, ax=None, **kwargs):
        """Plot the filters.

        Parameters
        ----------
        ax : array-like of matplotlib Axes, default=None
            At least one per filter, filled in order; None: a new figure
            with a grid of about as many rows as columns.
        **kwargs
            Keyword arguments of ``Axes.imshow`` (2-D) or ``Axes.plot``
            (1-D), for every filter.

        Returns
        -------
        self
        """
        plt = _pyplot(f"{type(self).__name__}.plot")
        n_filters = len(self.weights)
        if ax is None:
            columns = math.ceil(math.sqrt(n_filters))
            rows = math.ceil(n_filters / columns)
            _, ax = plt.subplots(rows, columns, squeeze=False, sharex=True, sharey=True,
                                 figsize=(1.3 * columns + 1.5, 1.3 * rows + 0.8),
                                 layout="constrained")
        self.axes_ = np.asarray(ax, dtype=object)
        axes = self.axes_.ravel()
        if len(axes) < n_filters:
            raise ValueError(
                f"ax must hold at least one Axes per filter ({n_filters}), "
                f"got {len(axes)}")
        self.figure_ = axes[0].figure
        self.images_ = self.lines_ = self.colorbar_ = None
        if self.weights.ndim == 4:
            self._plot_images(axes[:n_filters], kwargs)
        else:
            self._plot_curves(axes[:n_filters], kwargs)
        for index, axis in enumerate(axes):
            axis.set_visible(index < n_filters)
            axis.set_title(str(index), fontsize="small")
        if self.layer_name is not None:
            self.figure_.suptitle(f"{self.layer_name}: filters")
        return self

    def _plot_images(self, axes, kwargs):
        images = self.weights.mean(axis=1)
        bound = float(np.abs(images).max()) or 1.0
        style = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound, **kwargs}
        self.images_ = [axis.imshow(image, **style) for axis, image in zip(axes, images)]
        for axis in axes:
            axis.set_xticks([])
            axis.set_yticks([])
        self.colorbar_ = self.figure_.colorbar(self.images_[0], ax=list(axes))

    def _plot_curves(self, axes, kwargs):
        taps = np.arange(self.weights.shape[2])
        labels = [f"input {c}" for c in range(self.weights.shape[1])]
        self.lines_ = np.array([axis.plot(taps, kernel.T, **{"label": labels, **kwargs})
                                for axis, kernel in zip(axes, self.weights)], dtype=object)


def _convolution_index(layer, n_convolutions):
    if n_convolutions == 0:
        raise ValueError("the estimator's network has no convolution to show")
    if layer is None:
        return 0
    if not isinstance(layer, numbers.Integral) or isinstance(layer, bool):
        raise TypeError(f"layer must be an int or None, got {layer!r}")
    if not 0 <= layer < n_convolutions:
        raise ValueError(
            f"layer must index one of the network's {n_convolutions} "
            f"convolutions (0 to {n_convolutions - 1}), got {layer}")
    return int(layer)
