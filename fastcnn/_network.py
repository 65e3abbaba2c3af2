"""The network the estimator trains: runtime layers built from the
specifications in :mod:`fastcnn.layers`.

A runtime layer owns its shapes, views of its parameters and of their
gradients, and the buffers its forward and backward passes write into.
Buffers are allocated for a batch capacity once and reused: a smaller batch
(the last of an epoch) uses the leading samples of each buffer, which stay
C-contiguous. Every computation goes through :mod:`fastcnn.functional` with
``out=``, so a training step allocates nothing of the size of a batch;
each layer keeps the calls it prepared (``functional.prepare``) while the
same buffers come back, so a step validates nothing twice. A ReLU before
max pooling runs inside the pooling's passes, after it: the same values
and gradients, on a quarter of the values; a ReLU after a batch norm or a
dense layer runs inside that layer's passes.

The layer contract
------------------
A runtime class is a subclass of :class:`Layer` that names the
specifications it runs (``SPECS``) and declares, besides its shapes:

- ``parameters``: a tuple of :class:`Parameter` (name, shape, initialiser,
  whether the L2 penalty applies). The network binds ``layer.<name>`` and
  ``layer.grad_<name>`` to views of its flat arrays.
- ``states``: a tuple of :class:`State`, non-trainable arrays (running
  statistics) bound as ``layer.<name>``: kept by pickling, by warm_start
  and by the snapshots a fit goes back to, never touched by the optimizer.
- ``TRAINING_DIFFERS``: whether its forward pass computes something else
  in training than in inference; ``layer.training`` says which it runs.
- ``DRAWS_RANDOM``: whether it needs random numbers; it then gets
  ``layer.random``, a numpy Generator seeded from the estimator's
  ``random_state`` when the network is initialised, and draws from it in
  Python, never inside a kernel's threads, so that a fit is reproducible
  and the same for any number of threads.
- ``dataflow``: a :class:`Dataflow`, what its passes read and where they may
  write. :func:`plan_buffers`, the one place where buffers are shared,
  decides from these declarations alone which arrays each layer writes.

All parameters of a network live in one flat array, the L2-penalised ones
(weights) first and then the others (biases), and their gradients in
another of the same layout: the optimizer updates everything in one pass,
and the L2 penalty covers exactly the leading ``n_weights`` entries.

A residual block (:class:`Residual`) is one layer of its sequence, with
its own input, output and input gradient placed by the sequence's plan;
each of its two paths is a sequence of its own, planned and allocated
with it. ``Network.all_layers`` lists every runtime layer, a block's after
the block: that is the order of the flat arrays, of ``parametric_layers``
(the estimator's ``coefs_``) and of the random generators.
"""
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from . import functional as F
from . import layers as L
from .functional._checks import empty_aligned


def _per_axis(value, ndim):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim


def _position_text(position):
    """'layers[3]', or for a layer inside a block, its path from the
    network's list: 'layers[3].layers[1]', 'layers[3].shortcut[0]'."""
    if not isinstance(position, tuple):
        return f"layers[{position}]"
    return f"layers[{position[0]}]" + "".join(
        f".{kind}[{index}]" for kind, index in zip(position[1::2], position[2::2]))


def _describe(shape):
    return "(C, H, W) = " if len(shape) == 3 else "(C, L) = " if len(shape) == 2 else ""


# ------------------------------------------------------- declarations

def zeros(rng, shape, output):
    """All zeros; draws nothing from ``rng``."""
    return np.zeros(shape)


def ones(rng, shape, output):
    """All ones; draws nothing from ``rng``."""
    return np.ones(shape)


def he_glorot_uniform(rng, shape, output):
    """Uniform in ``±sqrt(6 / fan)``, drawn in float64: He's fan (fan_in,
    for a layer that feeds a ReLU) in hidden layers, Glorot's (fan_in +
    fan_out) in the output layer, which feeds the softmax. fan_in is the
    product of the shape's trailing axes, fan_out its first."""
    fan_in = math.prod(shape[1:])
    fan = fan_in + shape[0] if output else fan_in
    bound = np.sqrt(6.0 / fan)
    return rng.uniform(-bound, bound, shape)


@dataclass(frozen=True)
class Parameter:
    """A trainable array of a layer.

    ``init(rng, shape, output)`` returns its initial values (an array, or a
    scalar to broadcast); ``rng`` is the estimator's RandomState, shared by
    every initialiser in layer order, and ``output`` whether the layer is
    the network's last with parameters. ``l2_penalty``: whether ``alpha``
    penalises it.
    """
    name: str
    shape: tuple
    init: object
    l2_penalty: bool


@dataclass(frozen=True)
class State:
    """A non-trainable array of a layer (a running statistic), initialised
    as a Parameter is."""
    name: str
    shape: tuple
    init: object


# What a pass does with its result: writes it into an array of its own
# (BUFFER), may write it over the array it reads (OVER_INPUT: an
# elementwise kernel that accepts out= its own input; the plan decides
# whether it does), or returns a view of what it reads (VIEW, no kernel).
BUFFER, OVER_INPUT, VIEW = "buffer", "over input", "view"


@dataclass(frozen=True)
class Dataflow:
    """What a layer's passes read and write, for :func:`plan_buffers`.

    output : BUFFER, OVER_INPUT or VIEW
        The forward pass's result, with respect to the layer's input.
    grad_input : BUFFER, OVER_INPUT or VIEW
        The backward pass's result, the input's gradient, with respect to
        the gradient it receives (the output's).
    backward_reads : frozenset of 'input', 'output'
        The activations the backward pass reads besides the gradient it
        receives (and the layer's own parameters and private buffers).

    A declaration that claims less than the passes do lets the plan
    overwrite what a later step reads: ``tests/test_layer_contract.py``
    checks every layer's against what its passes actually read.
    """
    output: str = BUFFER
    grad_input: str = BUFFER
    backward_reads: frozenset = frozenset({"input"})


# ------------------------------------------------------------- layers

_RUNTIME = {}


class Layer:
    """A layer at run time; subclasses fill in shapes, declarations and
    passes (see the module's docstring for the contract).

    Attributes
    ----------
    input_shape, output_shape : tuple
        Shape of one sample, without the batch axis.
    parameters, states : tuple of Parameter, tuple of State
    training : bool
        Whether the buffers are for training (set by Network.allocate).
    buf_y, buf_grad_x : arrays or None
        The output's and the input gradient's arrays that the plan gives
        the layer (None: it writes over what it reads, or returns a view).
    in_place, grad_in_place : bool
        Whether the plan lets the forward pass write over its input, and
        the backward pass over the gradient it receives.
    """
    #: the specification classes this runtime class runs
    SPECS = ()
    TRAINING_DIFFERS = False
    DRAWS_RANDOM = False
    dataflow = Dataflow()
    parameters = ()
    states = ()
    # prepared calls kept per pass: the full batch's and a last batch's
    KEPT_CALLS = 2

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for spec in cls.SPECS:
            _RUNTIME[spec] = cls

    def __init__(self, spec, input_shape, position):
        self.spec = spec
        self.position = position
        self.input_shape = tuple(input_shape)
        self.output_shape = self.input_shape
        self.training = False
        self.random = None
        self.in_place = self.grad_in_place = False
        self.buf_y = self.buf_grad_x = None
        # first to run (Network may run layers in another order than their
        # positions): its input is the caller's batch, and its input's
        # gradient is never needed
        self.first = position == 0
        self.forget_calls()

    def where(self):
        return f"{_position_text(self.position)} {type(self.spec).__name__}"

    def nested_layers(self):
        """The runtime layers this one runs inside itself (a block's)."""
        return ()

    @property
    def name(self):
        """What the layer computes, for profiles: its specification's class."""
        return type(self.spec).__name__

    def check_spatial_ndim(self):
        """The spec's number of spatial axes, which the input must have."""
        ndim = self.spec.spatial_ndim
        if len(self.input_shape) != ndim + 1:
            kind = "images (C, H, W)" if ndim == 2 else "signals (C, L)"
            raise ValueError(
                f"{self.where()} works on {kind} but receives samples of "
                f"shape {self.input_shape}")
        return ndim

    def allocate(self, capacity, dtype):
        """The layer's private buffers for batches of up to ``capacity``
        samples (its output and input gradient are given by the network)."""

    def forward(self, x, n_threads):
        raise NotImplementedError

    def backward(self, grad_y, need_grad_x, n_threads):
        """Parameter gradients into grad_<name>; returns the gradient with
        respect to the input when need_grad_x."""
        raise NotImplementedError

    def drop_buffers(self):
        for name in list(vars(self)):
            if name.startswith("buf_") or name in ("x", "y"):
                setattr(self, name, None)
        self.forget_calls()

    def forget_calls(self):
        """Drop the prepared calls and the views they were prepared on."""
        self.prepared_calls = {}
        self.output_views = {}

    def output_rows(self, n):
        """The first n samples of buf_y, the same view object while the
        buffer is: the next layer's calls, prepared on it, are then kept
        (prepared) even when this layer's own call is made anew."""
        view = self.output_views.get(n)
        if view is None:
            view = self.output_views[n] = self.buf_y[:n]
        return view

    def prepared(self, name, arrays, build):
        """What ``build()`` returns (a functional call prepared with
        F.prepare, or a view), kept under ``name`` while the same array
        objects come back in ``arrays``: a training step passes each layer
        the same buffers as the step before, so their checks are done once.
        Other arrays get a new one; the last KEPT_CALLS are kept, so that an
        epoch's last, smaller batch does not cost the next epoch's first
        batch its calls."""
        # the ids of arrays that are kept alive here are theirs alone
        ids = tuple(map(id, arrays))
        kept = self.prepared_calls.setdefault(name, {})
        if ids in kept:
            return kept[ids][1]
        value = build()
        kept[ids] = (arrays, value)
        if len(kept) > self.KEPT_CALLS:
            del kept[next(iter(kept))]
        return value


def _weight_and_bias(weight_shape):
    """The parameters of a convolution or dense layer."""
    return (Parameter("weight", weight_shape, he_glorot_uniform, l2_penalty=True),
            Parameter("bias", weight_shape[:1], zeros, l2_penalty=False))


class Conv(Layer):
    SPECS = (L.Conv2D, L.Conv1D)

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        ndim = self.check_spatial_ndim()
        channels, spatial = self.input_shape[0], self.input_shape[1:]
        kernel = _per_axis(spec.kernel_size, ndim)
        self.dilation = _per_axis(spec.dilation, ndim)
        self.stride = _per_axis(spec.stride, ndim)
        self.padding = self._padding(spec, kernel)
        pairs = [p if isinstance(p, tuple) else (p, p) for p in self.padding]
        if any(k > s + sum(p) for k, s, p in zip(kernel, spatial, pairs)):
            raise ValueError(
                f"{self.where()}: kernel_size {kernel} is larger than its "
                f"padded input {_describe(self.input_shape)}{self.input_shape} "
                f"with padding {self.padding}")
        if any(d * (k - 1) + 1 > s + sum(p) for k, d, s, p
               in zip(kernel, self.dilation, spatial, pairs)):
            raise ValueError(
                f"{self.where()}: dilation {self.dilation} leaves no output: "
                f"kernel_size {kernel} then spans more than its padded input "
                f"{_describe(self.input_shape)}{self.input_shape} with padding "
                f"{self.padding}")
        out = tuple(F.output_size(s, k, st, p, d) for s, k, st, p, d
                    in zip(spatial, kernel, self.stride, pairs, self.dilation))
        self.output_shape = (spec.filters,) + out
        self.weight_shape = (spec.filters, channels) + kernel
        self.fan_in = channels * int(np.prod(kernel))
        self.parameters = _weight_and_bias(self.weight_shape)
        if ndim == 2:
            self._forward = F.correlate2d
            self._backward_input = F.correlate2d_backward_input
            self._backward_kernel = F.correlate2d_backward_kernel
        else:
            self._forward = F.correlate1d
            self._backward_input = F.correlate1d_backward_input
            self._backward_kernel = F.correlate1d_backward_kernel

    def _padding(self, spec, kernel):
        """Per axis an int (both sides), or a (before, after) pair where
        padding='same' pads one more after (PyTorch's rule: d*(k - 1) in
        all, half of it before)."""
        if spec.padding == "valid":
            return (0,) * len(kernel)
        if spec.padding != "same":
            return _per_axis(spec.padding, len(kernel))
        padding = []
        for k, d in zip(kernel, self.dilation):
            total = d * (k - 1)
            before = total // 2
            padding.append(before if total % 2 == 0 else (before, total - before))
        return tuple(padding)

    def forward(self, x, n_threads):
        self.x = x
        return self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, self.weight, self.bias, self.stride,
            self.padding, self.dilation,
            out=self.output_rows(len(x)))).run(n_threads)

    def backward(self, grad_y, need_grad_x, n_threads):
        x = self.x
        self.prepared("backward_kernel", (x, grad_y), lambda: F.prepare(
            self._backward_kernel, x, grad_y, self.weight_shape, self.stride,
            self.padding, self.dilation,
            out=(self.grad_weight, self.grad_bias))).run(n_threads)
        if need_grad_x:
            return self.prepared("backward_input", (grad_y,), lambda: F.prepare(
                self._backward_input, grad_y, self.weight, x.shape, self.stride,
                self.padding, self.dilation,
                out=self.buf_grad_x[:len(x)])).run(n_threads)
        return None


class Pooling(Layer):
    """The windows and shapes of max, average and L2 pooling."""
    dataflow = Dataflow(backward_reads=frozenset())

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        ndim = self.check_spatial_ndim()
        spatial = self.input_shape[1:]
        self.size = _per_axis(spec.pool_size, ndim)
        self.stride = (self.size if spec.stride is None
                       else _per_axis(spec.stride, ndim))
        if any(k > s for k, s in zip(self.size, spatial)):
            raise ValueError(
                f"{self.where()}: pool_size {self.size} is larger than its "
                f"input {_describe(self.input_shape)}{self.input_shape}")
        out = tuple(F.output_size(s, k, st) for s, k, st
                    in zip(spatial, self.size, self.stride))
        self.output_shape = self.input_shape[:1] + out


class MaxPool(Pooling):
    """The gradient is routed through the index of each window's maximum."""
    SPECS = (L.MaxPool2D, L.MaxPool1D)

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        self.relu = False
        two_d = len(self.input_shape) == 3
        self._forward = F.max_pool2d if two_d else F.max_pool1d
        self._backward = F.max_pool2d_backward if two_d else F.max_pool1d_backward

    def allocate(self, capacity, dtype):
        # inference has no gradient to route: the maxima alone
        self.buf_argmax = (np.empty((capacity,) + self.output_shape, dtype=np.int32)
                           if self.training else None)

    @property
    def name(self):
        return type(self.spec).__name__ + ("+ReLU" if self.relu else "")

    def fuse_relu(self):
        """Take on the ReLU that runs right after this max pooling: the
        pooling then returns relu(y), and its backward pass lets through
        only the gradients where that is positive (functional's relu and
        relu_output), the two layers' bits in one pass each way."""
        self.relu = True
        self.dataflow = replace(self.dataflow, backward_reads=frozenset({"output"}))

    def forward(self, x, n_threads):
        n = len(x)
        self.x_shape = x.shape
        if not self.training:
            return self.prepared("predict", (x,), lambda: F.prepare(
                self._forward, x, self.size, self.stride, out=self.output_rows(n),
                relu=self.relu, return_argmax=False)).run(n_threads)
        self.y, self.argmax = self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, self.size, self.stride,
            out=(self.output_rows(n), self.buf_argmax[:n]), relu=self.relu)
        ).run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        return self.prepared("backward", (grad_y, self.argmax, self.y), lambda: F.prepare(
            self._backward, grad_y, self.argmax, self.x_shape,
            out=self.buf_grad_x[:self.x_shape[0]],
            relu_output=self.y if self.relu else None)).run(n_threads)


class AvgPool(Pooling):
    """The gradient depends on the shapes alone."""
    SPECS = (L.AvgPool2D, L.AvgPool1D)

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        two_d = len(self.input_shape) == 3
        self._forward = F.avg_pool2d if two_d else F.avg_pool1d
        self._backward = F.avg_pool2d_backward if two_d else F.avg_pool1d_backward

    def forward(self, x, n_threads):
        self.x_shape = x.shape
        return self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, self.size, self.stride, out=self.output_rows(len(x)))
        ).run(n_threads)

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        return self.prepared("backward", (grad_y,), lambda: F.prepare(
            self._backward, grad_y, self.x_shape, self.size, self.stride,
            out=self.buf_grad_x[:self.x_shape[0]])).run(n_threads)


class ReLU(Layer):
    """Elementwise both ways: in place on its input, and on the gradient it
    receives, wherever the plan allows."""
    SPECS = (L.ReLU,)
    dataflow = Dataflow(output=OVER_INPUT, grad_input=OVER_INPUT,
                        backward_reads=frozenset({"output"}))    # the sign of y

    def forward(self, x, n_threads):
        self.y = self.prepared("forward", (x,), lambda: F.prepare(
            F.relu, x, out=x if self.in_place else self.output_rows(len(x)))
        ).run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        return self.prepared("backward", (grad_y, self.y), lambda: F.prepare(
            F.relu_backward, grad_y, self.y,
            out=grad_y if self.grad_in_place else self.buf_grad_x[:len(grad_y)])
        ).run(n_threads)


class Flatten(Layer):
    SPECS = (L.Flatten,)
    dataflow = Dataflow(output=VIEW, grad_input=VIEW, backward_reads=frozenset())

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        self.output_shape = (int(np.prod(self.input_shape)),)

    def forward(self, x, n_threads):
        # a view (buffers are C-contiguous), the same one while x is
        return self.prepared("forward", (x,), lambda: x.reshape(len(x), -1))

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        return self.prepared("backward", (grad_y,), lambda: grad_y.reshape(
            (len(grad_y),) + self.input_shape))


class Dense(Layer):
    SPECS = (L.Dense,)

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        self.relu = False
        self.fan_in = int(np.prod(self.input_shape))
        self.output_shape = (spec.units,)
        self.weight_shape = (spec.units, self.fan_in)
        self.parameters = _weight_and_bias(self.weight_shape)

    @property
    def name(self):
        return type(self.spec).__name__ + ("+ReLU" if self.relu else "")

    def fuse_relu(self):
        """Take on the ReLU right after: the forward pass returns relu(y)
        (functional's linear with relu), and the backward pass first keeps
        the gradients where that is positive (relu_backward) in a buffer of
        its own, since the gradient received may be read elsewhere (a
        residual block's other path): the unfused layers' bits, with one
        layer call less each way."""
        self.relu = True
        self.dataflow = replace(self.dataflow, backward_reads=frozenset({"input", "output"}))

    def allocate(self, capacity, dtype):
        self.buf_grad_relu = (np.empty((capacity,) + self.output_shape, dtype=dtype)
                              if self.relu and self.training else None)

    def forward(self, x, n_threads):
        def build():
            rows = x.reshape(len(x), -1)
            return rows, F.prepare(F.linear, rows, self.weight, self.bias,
                                   out=self.output_rows(len(x)), relu=self.relu)
        self.x, call = self.prepared("forward", (x,), build)
        self.y = call.run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if self.relu:
            grad_y = self.prepared("backward_relu", (grad_y, self.y), lambda: F.prepare(
                F.relu_backward, grad_y, self.y,
                out=self.buf_grad_relu[:len(grad_y)])).run(n_threads)
        self.prepared("backward_weight", (self.x, grad_y), lambda: F.prepare(
            F.linear_backward_weight, self.x, grad_y,
            out=(self.grad_weight, self.grad_bias))).run(n_threads)
        if not need_grad_x:
            return None

        def build():
            grad_x = self.buf_grad_x[:len(grad_y)]
            return grad_x, F.prepare(F.linear_backward_input, grad_y, self.weight,
                                     out=grad_x.reshape(len(grad_y), -1))
        grad_x, call = self.prepared("backward_input", (grad_y,), build)
        call.run(n_threads)
        return grad_x


class Residual(Layer):
    """``layers(x) + shortcut(x)``: each path a sequence of runtime layers
    of its own, planned (plan_buffers) and run as a network's are, on the
    block's input; the sum goes into the block's output, and backward the
    gradient received goes down both paths, whose input gradients are
    summed into the block's. Both paths read the input in their backward
    passes, so the block declares it; what a path reads inside itself is in
    arrays of its own, which nothing outside the block writes."""
    SPECS = (L.Residual,)
    dataflow = Dataflow(backward_reads=frozenset({"input"}))
    # the network's profile dict, which the paths' layers add to (Network.profile)
    profile = None

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        path = position if isinstance(position, tuple) else (position,)
        self.main, self.output_shape = _build_sequence(
            spec.layers, self.input_shape, lambda i: path + ("layers", i))
        shortcut = self._projection() if spec.shortcut is None else spec.shortcut
        self.shortcut, shape = _build_sequence(
            shortcut, self.input_shape, lambda i: path + ("shortcut", i))
        if shape != self.output_shape:
            raise ValueError(
                f"{self.where()}: its shortcut gives samples of shape {shape}, "
                f"its layers {self.output_shape}; they cannot be added")

    def _projection(self):
        """The default shortcut: the identity where the shapes are the
        same, else a 1x1 convolution to the output's channels, with the
        stride that maps each spatial size of the input to the output's."""
        x_shape, y_shape = self.input_shape, self.output_shape
        if x_shape == y_shape:
            return ()
        strides = None
        if len(x_shape) == len(y_shape) and len(x_shape) in (2, 3):
            strides = [next((s for s in range(1, size + 1)
                             if F.output_size(size, 1, s) == wanted), None)
                       for size, wanted in zip(x_shape[1:], y_shape[1:])]
        if strides is None or None in strides:
            raise ValueError(
                f"{self.where()}: its layers turn samples of shape "
                f"{_describe(x_shape)}{x_shape} into {_describe(y_shape)}{y_shape}, "
                "which no shortcut adds to them: the identity needs the same "
                "shape, a projection (a 1x1 convolution of some stride) the "
                "same spatial axes with each output size reachable by a "
                "stride; pass shortcut= explicitly")
        conv = L.Conv2D if len(x_shape) == 3 else L.Conv1D
        return (conv(y_shape[0], 1, stride=strides[0] if len(set(strides)) == 1
                     else tuple(strides)),)

    @property
    def TRAINING_DIFFERS(self):     # noqa: N802 (the class attribute of others)
        return any(layer.TRAINING_DIFFERS for layer in self.nested_layers())

    def nested_layers(self):
        return list(_walk(self.main)) + list(_walk(self.shortcut))

    def allocate(self, capacity, dtype):
        for path in (self.main, self.shortcut):
            _allocate_sequence(path, capacity, dtype, self.training,
                               self.share_buffers, inside_block=True)

    def drop_buffers(self):
        super().drop_buffers()
        for layer in self.nested_layers():
            layer.drop_buffers()

    def forward(self, x, n_threads):
        main = _forward_sequence(self.main, x, n_threads, self.profile)
        side = _forward_sequence(self.shortcut, x, n_threads, self.profile)
        return self._sum("forward", main, side, self.output_rows(len(x)))

    def backward(self, grad_y, need_grad_x, n_threads):
        main = _backward_sequence(self.main, grad_y, need_grad_x, n_threads, self.profile)
        side = _backward_sequence(self.shortcut, grad_y, need_grad_x, n_threads,
                                  self.profile)
        if not need_grad_x:
            return None
        # the same view while the paths' gradients are: the calls of the
        # layer before, prepared on it, are kept
        grad_x = self.prepared("backward_sum", (main, side),
                               lambda: self.buf_grad_x[:len(grad_y)])
        return self._sum("backward", main, side, grad_x)

    def _sum(self, kind, a, b, out):
        # np.add with out= allocates nothing, and sums each element alone
        return _timed(self.profile, (self.position, self.name, kind), np.add, a, b, out)
class Dropout(Layer):
    """Inverted dropout of each value (Dropout) or of each channel of a
    sample (SpatialDropout1D/2D); the identity in inference and at rate 0.

    A training step draws uniforms from ``self.random`` into a buffer of
    the layer's own, in Python, before the kernel runs: the mask is then the
    same for any number of threads, and the same again in a fit from the
    same random_state. The backward pass reads those uniforms, not the
    activations, so both passes may work over the arrays they read.
    """
    SPECS = (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D)
    TRAINING_DIFFERS = True
    DRAWS_RANDOM = True
    dataflow = Dataflow(output=OVER_INPUT, grad_input=OVER_INPUT,
                        backward_reads=frozenset())

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        channel_wise = spec.spatial_ndim is not None
        if channel_wise:
            self.check_spatial_ndim()
        self.rate = float(spec.rate)
        # one uniform per channel of a sample, or one per value
        self.mask_shape = self.input_shape[:1] if channel_wise else self.input_shape
        self.uniforms = None

    @property
    def masks(self):
        """Whether the passes mask (in training, at a rate above 0)."""
        return self.training and self.rate > 0

    def allocate(self, capacity, dtype):
        self.buf_uniforms = (np.empty((capacity,) + self.mask_shape, dtype=dtype)
                             if self.masks else None)

    def drop_buffers(self):
        super().drop_buffers()
        self.uniforms = None

    def forward(self, x, n_threads):
        out = x if self.in_place else self.output_rows(len(x))
        if not self.masks:
            if out is not x:
                np.copyto(out, x)
            return out

        def build():
            uniforms = self.buf_uniforms[:len(x)]
            return uniforms, F.prepare(F.dropout, x, uniforms, self.rate, out=out)
        self.uniforms, call = self.prepared("forward", (x,), build)
        self.random.random(out=self.uniforms, dtype=self.uniforms.dtype)
        return call.run(n_threads)

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        if not self.masks:
            if self.grad_in_place:
                return grad_y
            grad_x = self.buf_grad_x[:len(grad_y)]
            np.copyto(grad_x, grad_y)
            return grad_x
        return self.prepared("backward", (grad_y, self.uniforms), lambda: F.prepare(
            F.dropout_backward, grad_y, self.uniforms, self.rate,
            out=grad_y if self.grad_in_place else self.buf_grad_x[:len(grad_y)])
        ).run(n_threads)


class GlobalPool(Layer):
    """The mean or the maximum of every channel over all its positions:
    ``(C, H, W)`` or ``(C, L)`` to ``(C,)``. The average's gradient depends
    on the shapes alone, the maximum's on its argmax buffer: neither reads
    an activation."""
    SPECS = (L.GlobalAvgPool2D, L.GlobalAvgPool1D,
             L.GlobalMaxPool2D, L.GlobalMaxPool1D)
    dataflow = Dataflow(backward_reads=frozenset())

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        ndim = self.check_spatial_ndim()
        self.output_shape = self.input_shape[:1]
        self.is_max = isinstance(spec, (L.GlobalMaxPool2D, L.GlobalMaxPool1D))
        kind = "max" if self.is_max else "avg"
        self._forward = getattr(F, f"global_{kind}_pool{ndim}d")
        self._backward = getattr(F, f"global_{kind}_pool{ndim}d_backward")

    def allocate(self, capacity, dtype):
        if self.is_max:
            self.buf_argmax = np.empty((capacity,) + self.output_shape, dtype=np.int32)

    def forward(self, x, n_threads):
        n = len(x)
        self.x_shape = x.shape
        if not self.is_max:
            return self.prepared("forward", (x,), lambda: F.prepare(
                self._forward, x, out=self.output_rows(n))).run(n_threads)
        y, self.argmax = self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, out=(self.output_rows(n), self.buf_argmax[:n]))
        ).run(n_threads)
        return y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        out = self.buf_grad_x[:self.x_shape[0]]
        if not self.is_max:
            return self.prepared("backward", (grad_y,), lambda: F.prepare(
                self._backward, grad_y, self.x_shape, out=out)).run(n_threads)
        return self.prepared("backward", (grad_y, self.argmax), lambda: F.prepare(
            self._backward, grad_y, self.argmax, self.x_shape, out=out)
        ).run(n_threads)


class L2Pool(Pooling):
    """The gradient ``grad_y * x / y`` reads the input and the output."""
    SPECS = (L.L2Pool2D, L.L2Pool1D)
    dataflow = Dataflow(backward_reads=frozenset({"input", "output"}))

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        two_d = len(self.input_shape) == 3
        self._forward = F.l2_pool2d if two_d else F.l2_pool1d
        self._backward = F.l2_pool2d_backward if two_d else F.l2_pool1d_backward

    def forward(self, x, n_threads):
        self.x = x
        self.y = self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, self.size, self.stride, out=self.output_rows(len(x)))
        ).run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        return self.prepared("backward", (grad_y, self.x, self.y), lambda: F.prepare(
            self._backward, grad_y, self.x, self.y, self.size, self.stride,
            out=self.buf_grad_x[:len(self.x)])).run(n_threads)


class _Activation(Layer):
    """An elementwise activation, both ways through fastcnn.functional: its
    forward pass over its input and its backward pass over the gradient it
    receives, wherever the plan allows. Subclasses name the functions
    (``FORWARD``, ``BACKWARD``), the spec's parameters they take
    (``ARGUMENTS``), the activation BACKWARD reads (``GRADIENT_FROM``,
    'output' or 'input'), and declare that read in ``dataflow``."""
    FORWARD = BACKWARD = None
    ARGUMENTS = ()
    GRADIENT_FROM = "output"

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        self.arguments = {name: getattr(spec, name) for name in self.ARGUMENTS}

    def forward(self, x, n_threads):
        self.x = x      # GELU's backward pass reads it
        self.y = self.prepared("forward", (x,), lambda: F.prepare(
            type(self).FORWARD, x, **self.arguments,
            out=x if self.in_place else self.output_rows(len(x)))
        ).run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        activation = self.y if self.GRADIENT_FROM == "output" else self.x
        return self.prepared("backward", (grad_y, activation), lambda: F.prepare(
            type(self).BACKWARD, grad_y, activation, **self.arguments,
            out=grad_y if self.grad_in_place else self.buf_grad_x[:len(grad_y)])
        ).run(n_threads)


# the derivative is a function of the output: the input may be overwritten
_FROM_OUTPUT = Dataflow(output=OVER_INPUT, grad_input=OVER_INPUT,
                        backward_reads=frozenset({"output"}))


class Tanh(_Activation):
    """tanh' = 1 - y^2."""
    SPECS = (L.Tanh,)
    FORWARD, BACKWARD = F.tanh, F.tanh_backward
    dataflow = _FROM_OUTPUT


class Sigmoid(_Activation):
    """sigmoid' = y (1 - y)."""
    SPECS = (L.Sigmoid,)
    FORWARD, BACKWARD = F.sigmoid, F.sigmoid_backward
    dataflow = _FROM_OUTPUT


class LeakyReLU(_Activation):
    """1 or the slope, by the output's sign (the input's: slope >= 0)."""
    SPECS = (L.LeakyReLU,)
    FORWARD, BACKWARD = F.leaky_relu, F.leaky_relu_backward
    ARGUMENTS = ("negative_slope",)
    dataflow = _FROM_OUTPUT


class ELU(_Activation):
    """1 above zero, y + alpha below (alpha > 0: y's sign is x's)."""
    SPECS = (L.ELU,)
    FORWARD, BACKWARD = F.elu, F.elu_backward
    ARGUMENTS = ("alpha",)
    dataflow = _FROM_OUTPUT


class GELU(_Activation):
    """GELU is not monotonic, so its derivative needs the input x: in
    training the plan keeps x (the forward pass then writes an array of its
    own); in inference it may still run in place."""
    SPECS = (L.GELU,)
    FORWARD, BACKWARD = F.gelu, F.gelu_backward
    ARGUMENTS = ("approximate",)
    GRADIENT_FROM = "input"
    dataflow = Dataflow(output=OVER_INPUT, grad_input=OVER_INPUT,
                        backward_reads=frozenset({"input"}))


class BatchNorm(Layer):
    """Batch normalization. Training normalises with the batch's
    statistics, which the forward pass saves (mean, 1/std) for the backward
    pass, which also reads the input; inference with the running ones."""
    SPECS = (L.BatchNorm2D, L.BatchNorm1D)
    TRAINING_DIFFERS = True

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        self.relu = False
        if isinstance(spec, L.BatchNorm2D):
            self.check_spatial_ndim()
        elif len(self.input_shape) not in (1, 2):
            raise ValueError(
                f"{self.where()} works on signals (C, L) or flat features (F,) "
                f"but receives samples of shape {self.input_shape}")
        channels = (self.input_shape[0],)
        self.parameters = (Parameter("weight", channels, ones, l2_penalty=False),
                           Parameter("bias", channels, zeros, l2_penalty=False))
        self.states = (State("running_mean", channels, zeros),
                       State("running_var", channels, ones))

    @property
    def name(self):
        return type(self.spec).__name__ + ("+ReLU" if self.relu else "")

    def fuse_relu(self):
        """Take on the ReLU right after: the forward pass returns relu(y)
        and the backward pass lets through only the gradients where that is
        positive, the unfused layers' bits with one pass each way less."""
        self.relu = True
        self.dataflow = replace(self.dataflow, backward_reads=frozenset({"input", "output"}))

    def allocate(self, capacity, dtype):
        self.buf_mean = np.empty(self.input_shape[0])
        self.buf_invstd = np.empty(self.input_shape[0])

    def forward(self, x, n_threads):
        self.x = x
        spec, y = self.spec, self.output_rows(len(x))
        if not self.training:
            return self.prepared("predict", (x,), lambda: F.prepare(
                F.batch_norm, x, self.weight, self.bias, self.running_mean,
                self.running_var, eps=spec.eps, out=y, relu=self.relu)).run(n_threads)
        self.y = self.prepared("forward", (x,), lambda: F.prepare(
            F.batch_norm, x, self.weight, self.bias, self.running_mean,
            self.running_var, training=True, momentum=spec.momentum, eps=spec.eps,
            out=(y, self.buf_mean, self.buf_invstd), relu=self.relu)).run(n_threads)[0]
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        grad_x = self.buf_grad_x[:len(grad_y)] if need_grad_x else None
        return self.prepared("backward", (grad_y, self.x, self.y), lambda: F.prepare(
            F.batch_norm_backward, grad_y, self.x, self.weight, self.buf_mean,
            self.buf_invstd, out=(grad_x, self.grad_weight, self.grad_bias),
            grad_input=need_grad_x, relu_output=self.y if self.relu else None)
        ).run(n_threads)[0]


class LocalResponseNorm(Layer):
    """Local response normalization across channels. In training the
    forward pass keeps each value's scale (the window's k + alpha/size *
    sum of squares) in a buffer of its own for the backward pass, which
    reads the input and the output too."""
    SPECS = (L.LocalResponseNorm,)
    dataflow = Dataflow(backward_reads=frozenset({"input", "output"}))

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        if len(self.input_shape) not in (2, 3):
            raise ValueError(
                f"{self.where()} works on images (C, H, W) or signals (C, L) "
                f"but receives samples of shape {self.input_shape}")

    def allocate(self, capacity, dtype):
        # inference has no backward pass to keep the scale for
        self.buf_scale = (np.empty((capacity,) + self.input_shape, dtype=dtype)
                          if self.training else None)

    def forward(self, x, n_threads):
        self.x, spec, n = x, self.spec, len(x)
        keep = self.buf_scale is not None
        self.y, self.scale = self.prepared("forward", (x,), lambda: F.prepare(
            F.local_response_norm, x, spec.size, spec.alpha, spec.beta, spec.k,
            out=(self.output_rows(n), self.buf_scale[:n] if keep else None),
            keep_scale=keep)).run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        spec = self.spec
        return self.prepared("backward", (grad_y, self.x, self.y, self.scale),
                             lambda: F.prepare(
            F.local_response_norm_backward, grad_y, self.x, self.y, self.scale,
            spec.size, spec.alpha, spec.beta,
            out=self.buf_grad_x[:len(grad_y)])).run(n_threads)


def _runtime_layer(spec, input_shape, position):
    runtime = _RUNTIME.get(type(spec))
    if runtime is None:
        raise ValueError(
            f"{_position_text(position)} must be a layer specification from "
            f"fastcnn.layers, got {spec!r}")
    return runtime(spec, input_shape, position)


def _execution_order(specs):
    """Positions of the layers in the order they run. A ReLU followed by
    max pooling runs after it instead: ReLU keeps order, so it commutes with
    a maximum, and the values and gradients are the same (where the window's
    maximum is not positive both give 0 and a zero gradient). The ReLU then
    works on the pooled values, inside the pooling's own passes
    (MaxPool.fuse_relu), and the output of the layer before the pooling is
    left for nothing but the pooling to read, so that its buffer can take
    the pooling's input gradient (plan_buffers)."""
    order = list(range(len(specs)))
    i = 0
    while i + 1 < len(order):
        if (type(specs[order[i]]) is L.ReLU
                and type(specs[order[i + 1]]) in (L.MaxPool2D, L.MaxPool1D)):
            order[i], order[i + 1] = order[i + 1], order[i]
            i += 2
        else:
            i += 1
    return order


def _fuses_relu(previous, layer):
    """Whether ``layer`` is a ReLU that the max pooling, batch norm or
    dense layer run just before it takes on (their fuse_relu)."""
    return type(layer) is ReLU and type(previous) in _TAKE_ON_RELU


#: the layers that run a ReLU right after them in their own passes
_TAKE_ON_RELU = (MaxPool, BatchNorm, Dense)


def _build_sequence(specs, input_shape, position_of):
    """(runtime layers in execution order, output shape) of a sequence of
    specifications; ``position_of(i)`` is the position of ``specs[i]``."""
    layers, shape = [], tuple(input_shape)
    for index, i in enumerate(_execution_order(specs)):
        layer = _runtime_layer(specs[i], shape, position_of(i))
        layer.first = index == 0
        previous = layers[-1] if layers else None
        if _fuses_relu(previous, layer):
            previous.fuse_relu()
            continue
        layers.append(layer)
        shape = layer.output_shape
    return layers, shape


def _walk(layers):
    """Every runtime layer of a sequence, each followed by those it runs
    inside itself: the one order of parameters, states and generators."""
    for layer in layers:
        yield layer
        yield from layer.nested_layers()


def _holding_arrays(layers):
    """The layers among ``layers`` that have parameters or state."""
    return [layer for layer in layers if layer.parameters or layer.states]


def _timed(profile, key, run, *args):
    """``run(*args)``, its seconds added to ``profile[key]`` (None: no
    profile)."""
    if profile is None or key is None:
        return run(*args)
    start = time.perf_counter()
    result = run(*args)
    profile[key] = profile.get(key, 0.0) + time.perf_counter() - start
    return result


def _profile_key(layer, kind):
    """A layer's key in Network.profile: (position, name, pass). A block
    times its sums itself, and its paths' layers under their own keys
    (position: their path), so that the keys add up to a step's time once."""
    return None if isinstance(layer, Residual) else (layer.position, layer.name, kind)


def _forward_sequence(layers, x, n_threads, profile):
    if profile is None:
        # the path of every prediction: no key or clock per layer
        for layer in layers:
            x = layer.forward(x, n_threads)
        return x
    for layer in layers:
        x = _timed(profile, _profile_key(layer, "forward"), layer.forward, x, n_threads)
    return x


def _backward_sequence(layers, grad, need_grad_x, n_threads, profile):
    """The gradient with respect to the sequence's input (when
    ``need_grad_x``; else None), from that of its output."""
    if profile is None:
        for layer in reversed(layers):
            grad = layer.backward(grad, need_grad_x or not layer.first, n_threads)
        return grad
    for layer in reversed(layers):
        grad = _timed(profile, _profile_key(layer, "backward"), layer.backward,
                      grad, need_grad_x or not layer.first, n_threads)
    return grad


def layer_output_shape(spec, input_shape, position=0):
    """Shape of one sample after the layer ``spec``, validated against
    ``input_shape`` exactly as in a network."""
    return _runtime_layer(spec, input_shape, position).output_shape


# --------------------------------------------------------- the buffer plan

# Where a layer's output or input gradient goes (Placement): an array of
# its own, over what the pass reads, a view of it, over the layer's input
# (the gradient, written over the activation array it came from), or one
# of two arrays that input gradients take turns in.
OWN, OVER_READ, AS_VIEW, OVER_ACTIVATION, SHARED = (
    "own", "over what it reads", "view", "over its input activation", "shared")
_CALLER = 0     # the group of the network's input: the caller's array


@dataclass(frozen=True)
class Placement:
    output: str
    grad_input: str = None      # None: no input gradient is computed
    turn: int = None            # which shared array, for SHARED
    group: int = None           # the activation array, for OVER_ACTIVATION


@dataclass(frozen=True)
class BufferPlan:
    """placements: one per layer, in execution order. groups[t]: the array
    holding the t-th activation (the network's input is 0; the output of
    layer t - 1 is t when it has an array of its own, else its input's
    group). turn_sizes: values per sample of each shared gradient array."""
    placements: tuple
    groups: tuple
    turn_sizes: tuple


def plan_buffers(layers, training, share=True):
    """Which array each layer's output and input gradient is written into:
    the one place where buffers are shared, decided from the layers'
    Dataflow declarations alone.

    An activation array holds the output of the layer that owns it and of
    the layers after it that work over their input or return views of it.
    Sharing rules, each applied only when ``share``:

    - A forward pass that may run over its input (OVER_INPUT) does so
      unless the input is the caller's array, or a backward pass reads an
      activation of that array from before the overwrite.
    - An input gradient that may be written over the gradient received
      (OVER_INPUT) is: nothing reads that gradient afterwards.
    - An input gradient otherwise goes over the layer's input activation
      when no backward pass still to run (this layer's and those before
      it) reads an activation of that array, and the gradient received is
      elsewhere; or else into one of two shared arrays, taking turns, so
      that it never lands on the one it reads.

    Without ``share`` every output and input gradient that is not a view
    has an array of its own (tests compare against this, bit for bit).
    The first layer computes no input gradient; without ``training``
    nothing does.
    """
    outputs, groups = _plan_outputs(layers, training, share)
    grads, turn_sizes = (_plan_grads(layers, groups, share) if training
                         else ([(None, None, None)] * len(layers), ()))
    placements = tuple(Placement(output, grad, turn, group)
                       for output, (grad, turn, group) in zip(outputs, grads))
    return BufferPlan(placements, tuple(groups), tuple(turn_sizes))


def _read_in_backward(layers, groups, group, last_reader, last_activation):
    """Whether the backward pass of a layer up to ``last_reader`` reads an
    activation up to ``last_activation`` that ``group`` holds."""
    for t in range(last_activation + 1):
        if groups[t] != group:
            continue
        if t <= last_reader and t < len(layers) and \
                "input" in layers[t].dataflow.backward_reads:
            return True
        if 1 <= t <= last_reader + 1 and "output" in layers[t - 1].dataflow.backward_reads:
            return True
    return False


def _plan_outputs(layers, training, share):
    outputs, groups = [], [_CALLER]
    for i, layer in enumerate(layers):
        kind, group = layer.dataflow.output, groups[i]
        if kind == VIEW:
            place = AS_VIEW
        elif (kind == OVER_INPUT and share and group != _CALLER and not (
                training and _read_in_backward(layers, groups, group, i, i))):
            place = OVER_READ
        else:
            place, group = OWN, i + 1
        outputs.append(place)
        groups.append(group)
    return outputs, groups


def _plan_grads(layers, groups, share):
    """(grad_input, turn, group) per layer, decided in backward order, and
    the shared arrays' sizes per sample."""
    grads = [(None, None, None)] * len(layers)
    turn_sizes, turns_used = [0, 0], 0
    received = None     # where the gradient a layer receives lies
    for i in range(len(layers) - 1, 0, -1):
        kind, group = layers[i].dataflow.grad_input, groups[i]
        if kind == VIEW:
            grads[i] = (AS_VIEW, None, None)
        elif kind == OVER_INPUT and share:
            grads[i] = (OVER_READ, None, None)
        elif not share:
            grads[i], received = (OWN, None, None), ("own", i)
        elif (group != _CALLER and received != ("group", group)
              and not _read_in_backward(layers, groups, group, i, i + 1)):
            grads[i], received = (OVER_ACTIVATION, None, group), ("group", group)
        else:
            turn = turns_used % 2
            turns_used += 1
            size = math.prod(layers[i].input_shape)
            turn_sizes[turn] = max(turn_sizes[turn], size)
            grads[i], received = (SHARED, turn, None), ("shared", turn)
    return grads, turn_sizes[:min(turns_used, 2)]


def _allocate_sequence(layers, capacity, dtype, training, share, inside_block=False):
    """Give a sequence's layers their buffers as plan_buffers places them
    (``inside_block``: one of a block's paths, see _path_placements)."""
    plan = plan_buffers(layers, training, share)
    placements = plan.placements
    if inside_block and training and layers:
        placements = _path_placements(layers, placements)
    shared = [empty_aligned(capacity * size, dtype) for size in plan.turn_sizes]
    for layer, place in zip(layers, placements):
        layer.training, layer.share_buffers = training, share
        layer.in_place = place.output == OVER_READ
        layer.buf_y = (empty_aligned((capacity,) + layer.output_shape, dtype)
                       if place.output == OWN else None)
        layer.grad_in_place = place.grad_input == OVER_READ
        grad_shape = (capacity,) + layer.input_shape
        if place.grad_input == OWN:
            layer.buf_grad_x = empty_aligned(grad_shape, dtype)
        elif place.grad_input == SHARED:
            layer.buf_grad_x = shared[place.turn][:math.prod(grad_shape)].reshape(grad_shape)
        elif place.grad_input == OVER_ACTIVATION:
            # layers allocate in order: the array's owner has its output
            owner = layers[place.group - 1]
            layer.buf_grad_x = owner.buf_y.reshape(grad_shape)
        else:
            layer.buf_grad_x = None
        layer.allocate(capacity, dtype)
        layer.forget_calls()


def _path_placements(layers, placements):
    """A block's path, planned as a network is, but for its ends: its first
    layer computes an input gradient (the block's input has one), into an
    array of its own; and the gradient it receives is the block's, which
    the other path reads too, so the last layer that writes a gradient (the
    layers after it pass views) does not write over it."""
    placements = list(placements)
    first = layers[0]
    placements[0] = replace(placements[0], grad_input=(
        AS_VIEW if first.dataflow.grad_input == VIEW else OWN))
    for i in range(len(layers) - 1, -1, -1):
        if placements[i].grad_input != AS_VIEW:
            if placements[i].grad_input == OVER_READ:
                placements[i] = replace(placements[i], grad_input=OWN)
            break
    return placements


# ------------------------------------------------------------ the network

class Network:
    """A sequence of runtime layers over one flat parameter array.

    Parameters
    ----------
    specs : list of fastcnn.layers specifications
        The whole network, output layer included.
    input_shape : tuple
        Shape of one sample, ``(C, H, W)`` or ``(C, L)``.
    dtype : numpy dtype (float32 or float64)

    Attributes
    ----------
    params, grads : 1-D arrays
        All parameters (the L2-penalised ones first) and their gradients.
    n_weights : int
        Number of leading entries of ``params`` that the L2 penalty covers.
    state : 1-D array
        The layers' non-trainable state.
    profile : dict or None
        Where the passes' seconds are added up (see the property).
    """

    def __init__(self, specs, input_shape, dtype):
        self.specs = list(specs)
        self.input_shape = tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.layers, self.output_shape = _build_sequence(
            self.specs, self.input_shape, lambda i: i)
        # with the layers of blocks, in the order of their parameters
        self.all_layers = list(_walk(self.layers))
        declared = [p for layer in self.all_layers for p in layer.parameters]
        self.n_weights = sum(math.prod(p.shape) for p in declared if p.l2_penalty)
        self.params = np.zeros(sum(math.prod(p.shape) for p in declared), dtype=self.dtype)
        self.grads = np.zeros_like(self.params)
        self.state = np.zeros(sum(math.prod(s.shape) for layer in self.all_layers
                                  for s in layer.states), dtype=self.dtype)
        self._bind()
        self.capacity = 0
        self.training = False
        self.share_buffers = True
        self.input_buffer, self.input_views = None, {}
        self.profile = None
        self._idle_predictors = []
        self._per_sample_bytes = {}    # training -> per_sample_bytes(training)
        self._heads = {}     # n_specs -> head (see head)

    def _bind(self):
        """Point every layer's parameter, gradient and state attributes at
        their parts of the flat arrays: the penalised parameters first, in
        layer order (a block's layers after the block: its path's, then its
        shortcut's), then the others."""
        def view(array, at, shape):
            return array[at:at + math.prod(shape)].reshape(shape)
        at = 0
        for penalised in (True, False):
            for layer in self.all_layers:
                for p in layer.parameters:
                    if p.l2_penalty is penalised:
                        setattr(layer, p.name, view(self.params, at, p.shape))
                        setattr(layer, "grad_" + p.name, view(self.grads, at, p.shape))
                        at += math.prod(p.shape)
        at = 0
        for layer in self.all_layers:
            for s in layer.states:
                setattr(layer, s.name, view(self.state, at, s.shape))
                at += math.prod(s.shape)

    @property
    def parametric_layers(self):
        """The layers with parameters, those in blocks included, in the
        order of the flat array."""
        return [layer for layer in self.all_layers if layer.parameters]

    @property
    def drawing_layers(self):
        return [layer for layer in self.all_layers if layer.DRAWS_RANDOM]

    def initialize(self, rng):
        """Every parameter and state from its initialiser, in layer order
        and then declaration order, all drawing from ``rng`` (a numpy
        RandomState); then a Generator for each layer that draws random
        numbers, seeded from ``rng``."""
        with_params = self.parametric_layers
        output = with_params[-1] if with_params else None
        for layer in self.all_layers:
            for declared in layer.parameters + layer.states:
                getattr(layer, declared.name)[...] = declared.init(
                    rng, declared.shape, layer is output)
        for layer in self.drawing_layers:
            layer.random = np.random.default_rng(
                rng.randint(0, 2**32, size=4, dtype=np.uint64))

    def head(self, n_specs):
        """A network of the first ``n_specs`` specifications, computing what
        this one's layers compute up to there, for inference (an
        estimator's ``transform``): its parameters and state are copied
        from this one's on every call, so that it follows training, and
        its layers' random generators are this one's. With every
        specification, this network itself.

        The head is kept and lent again, as are its inference copies
        (:meth:`borrow_predictor`), so that repeated calls build nothing:
        a one-row transform costs about what a one-row prediction does.
        Its layers with parameters or state are the leading ones of this
        network's, in the same order: cutting the list of specifications
        only drops layers at the end, and the order of execution differs
        from that of the list only by ReLUs, which have neither."""
        if n_specs == len(self.specs):
            return self
        head = self._heads.get(n_specs)
        if head is None:
            head = Network(self.specs[:n_specs], self.input_shape, self.dtype)
            for mine, theirs in zip(head.drawing_layers, self.drawing_layers):
                mine.random = theirs.random
            self._heads[n_specs] = head
        for mine, theirs in zip(_holding_arrays(head.all_layers),
                                _holding_arrays(self.all_layers)):
            for declared in mine.parameters + mine.states:
                getattr(mine, declared.name)[...] = getattr(theirs, declared.name)
        return head

    def allocate(self, capacity, training, share_buffers=True):
        """Buffers for batches of up to ``capacity`` samples, shared as
        :func:`plan_buffers` decides (``share_buffers=False``: none is)."""
        if (capacity, training, share_buffers) == (
                self.capacity, self.training, self.share_buffers):
            return
        _allocate_sequence(self.layers, capacity, self.dtype, training, share_buffers)
        # a prediction's input is copied in (see forward)
        self.input_buffer = (None if training else
                             np.empty((capacity,) + self.input_shape, self.dtype))
        self.input_views = {}
        self.capacity, self.training, self.share_buffers = capacity, training, share_buffers

    def release(self):
        """Drop every batch buffer (they are rebuilt on the next allocate)."""
        for layer in self.layers:
            layer.drop_buffers()
        self.input_buffer, self.input_views = None, {}
        self.capacity = 0

    def forward(self, x, n_threads):
        """Scores (N, n_outputs) for a batch ``x`` of at most ``capacity``
        samples, C-contiguous, of the network's dtype."""
        if not self.training:
            # A prediction's input is the caller's, whose values and shape
            # may change before the next: the first layer reads a copy in
            # the network's own buffer, so that every layer's prepared call
            # is kept and run unchecked by the next prediction of as many
            # samples. (Training passes the same batch array every step.)
            view = self.input_views.get(len(x))
            if view is None:
                view = self.input_views[len(x)] = self.input_buffer[:len(x)]
            np.copyto(view, x)
            x = view
        return _forward_sequence(self.layers, x, n_threads, self.profile)

    def check_forward(self, x, n_threads):
        """What :meth:`forward` returns for ``x``, leaving the layers'
        state (running statistics) and random generators as they were: a
        look at the network between training steps that training does not
        see."""
        state = self.state.copy()
        generators = [layer.random.bit_generator.state for layer in self.drawing_layers]
        try:
            return self.forward(x, n_threads)
        finally:
            self.state[...] = state
            for layer, saved in zip(self.drawing_layers, generators):
                layer.random.bit_generator.state = saved

    def backward(self, grad, n_threads):
        """Fill ``grads`` from the gradient of the loss with respect to the
        scores; the input's own gradient is never computed."""
        _backward_sequence(self.layers, grad, False, n_threads, self.profile)

    @property
    def profile(self):
        """When a dict, forward and backward seconds are added up per layer
        under keys ``(position, name, 'forward' | 'backward')``; a layer in a
        block has its path as position (``(3, 'layers', 1)``: the second of
        ``layers[3]``'s path), and the block's own key times its sums."""
        return self._profile

    @profile.setter
    def profile(self, profile):
        self._profile = profile
        for layer in self.all_layers:
            if isinstance(layer, Residual):
                layer.profile = profile

    def inference_copy(self):
        """A network sharing these parameters and state with buffers of its
        own, so that predictions running at the same time never share
        buffers."""
        twin = Network.__new__(Network)
        twin.__setstate__(self.__getstate__(), share_params=True)
        return twin

    def borrow_predictor(self, capacity):
        """An inference copy with buffers for ``capacity`` samples, to hand
        back with :meth:`return_predictor` when the prediction is done.

        One returned copy is kept and lent again, so that repeated
        predictions reuse buffers whose pages are already mapped instead of
        faulting in fresh ones each call; a prediction that starts while
        another holds it gets a copy of its own. (``list.pop`` and
        ``append`` are atomic, so no lock is needed.)
        """
        try:
            twin = self._idle_predictors.pop()
        except IndexError:
            twin = self.inference_copy()
        twin.allocate(capacity, training=False)
        return twin

    def return_predictor(self, twin):
        if not self._idle_predictors:
            self._idle_predictors.append(twin)

    def per_sample_bytes(self, training=False):
        """Bytes of buffers one sample needs in a batch."""
        known = self._per_sample_bytes.get(training)
        if known is None:
            total = sum(math.prod(layer.output_shape) for layer in self.all_layers)
            if training:
                total += sum(math.prod(layer.input_shape) for layer in self.all_layers)
            else:
                total += math.prod(self.input_shape)   # the input's copy
            known = self._per_sample_bytes[training] = total * self.dtype.itemsize
        return known

    # Pickling keeps the specifications, the flat parameters and state, and
    # the random generators; views and buffers are rebuilt on loading.
    # (Pickles made before the state and generators existed have neither.)
    def __getstate__(self):
        return {"specs": self.specs, "input_shape": self.input_shape,
                "dtype": self.dtype.str, "params": self.params,
                "state": self.state,
                "random": [layer.random for layer in self.drawing_layers]}

    def __setstate__(self, state, share_params=False):
        self.__init__(state["specs"], state["input_shape"], state["dtype"])
        saved_state = state.get("state", self.state)
        if share_params:
            self.params, self.state = state["params"], saved_state
            self._bind()
        else:
            self.params[...] = state["params"]
            self.state[...] = saved_state
        for layer, random in zip(self.drawing_layers, state.get("random", ())):
            layer.random = random
