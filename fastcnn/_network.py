"""The network the estimator trains: runtime layers built from the
specifications in :mod:`fastcnn.layers`.

A runtime layer owns its shapes, views of its parameters and of their
gradients, and the buffers its forward and backward passes write into.
Buffers are allocated for a batch capacity once and reused: a smaller batch
(the last of an epoch) uses the leading samples of each buffer, which stay
C-contiguous. Every computation goes through :mod:`fastcnn.functional` with
``out=``, so a training step allocates nothing of the size of a batch.

All parameters of a network live in one flat array, weights first and then
biases, and their gradients in another of the same layout: the optimizer
updates everything in one pass, and the L2 penalty covers exactly the
leading ``n_weights`` entries.
"""
import math
import time

import numpy as np

from . import functional as F
from . import layers as L


def _per_axis(value, ndim):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * ndim


def _describe(shape):
    return "(C, H, W) = " if len(shape) == 3 else "(C, L) = " if len(shape) == 2 else ""


class Layer:
    """A layer at run time; subclasses fill in shapes and passes.

    Attributes
    ----------
    input_shape, output_shape : tuple
        Shape of one sample, without the batch axis.
    weight_shape, bias_shape : tuple or None
        Shapes of the parameters (None: the layer has none).
    fan_in : int
        Inputs feeding one output, for the initialisation.
    """
    weight_shape = None
    bias_shape = None
    fan_in = 0
    # prepared calls kept per pass: the full batch's and a last batch's
    KEPT_CALLS = 2
    # What the backward pass touches, for Network.allocate's buffer plan:
    # whether it writes the input's gradient into a buffer (buf_grad_x)
    # rather than in place or as a view of grad_y; whether it reads the
    # layer's input, or its output; whether the output is an array of the
    # layer's own (buf_y) rather than its input or a view of it.
    writes_grad_x = False
    backward_reads_input = True
    backward_reads_output = False
    owns_output = False

    def __init__(self, spec, input_shape, position):
        self.spec = spec
        self.position = position
        self.input_shape = tuple(input_shape)
        self.output_shape = self.input_shape
        self.weight = self.bias = self.grad_weight = self.grad_bias = None
        # first to run (Network may run layers in another order than their
        # positions): its input is the caller's batch, and its input's
        # gradient is never needed
        self.first = position == 0
        self.forget_calls()

    def where(self):
        return f"layers[{self.position}] {type(self.spec).__name__}"

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

    def allocate(self, capacity, dtype, grad_x_storage=None):
        """Buffers for batches of up to ``capacity`` samples. When training,
        a layer that writes_grad_x gets ``grad_x_storage``, a flat array of
        at least capacity * prod(input_shape) values, which other layers
        use too (see Network.allocate)."""

    def grad_x_buffer(self, capacity, storage):
        if storage is None:
            return None
        return storage[:capacity * int(np.prod(self.input_shape))].reshape(
            (capacity,) + self.input_shape)

    def forward(self, x, n_threads):
        raise NotImplementedError

    def backward(self, grad_y, need_grad_x, n_threads):
        """Parameter gradients into grad_weight/grad_bias; returns the
        gradient with respect to the input when need_grad_x."""
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


class Conv(Layer):
    writes_grad_x = owns_output = True

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        ndim = self.check_spatial_ndim()
        channels, spatial = self.input_shape[0], self.input_shape[1:]
        kernel = _per_axis(spec.kernel_size, ndim)
        if spec.padding == "same":
            padding = tuple((k - 1) // 2 for k in kernel)
        elif spec.padding == "valid":
            padding = (0,) * ndim
        else:
            padding = _per_axis(spec.padding, ndim)
        self.stride, self.padding = _per_axis(spec.stride, ndim), padding
        if any(k > s + 2 * p for k, s, p in zip(kernel, spatial, padding)):
            raise ValueError(
                f"{self.where()}: kernel_size {kernel} is larger than its "
                f"padded input {_describe(self.input_shape)}{self.input_shape} "
                f"with padding {padding}")
        out = tuple(F.output_size(s, k, st, p) for s, k, st, p
                    in zip(spatial, kernel, self.stride, padding))
        self.output_shape = (spec.filters,) + out
        self.weight_shape = (spec.filters, channels) + kernel
        self.bias_shape = (spec.filters,)
        self.fan_in = channels * int(np.prod(kernel))
        if ndim == 2:
            self._forward = F.correlate2d
            self._backward_input = F.correlate2d_backward_input
            self._backward_kernel = F.correlate2d_backward_kernel
        else:
            self._forward = F.correlate1d
            self._backward_input = F.correlate1d_backward_input
            self._backward_kernel = F.correlate1d_backward_kernel

    def allocate(self, capacity, dtype, grad_x_storage=None):
        self.buf_y = np.empty((capacity,) + self.output_shape, dtype=dtype)
        self.buf_grad_x = self.grad_x_buffer(capacity, grad_x_storage)

    def forward(self, x, n_threads):
        self.x = x
        return self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, self.weight, self.bias, self.stride,
            self.padding, out=self.output_rows(len(x)))).run(n_threads)

    def backward(self, grad_y, need_grad_x, n_threads):
        x = self.x
        self.prepared("backward_kernel", (x, grad_y), lambda: F.prepare(
            self._backward_kernel, x, grad_y, self.weight_shape, self.stride,
            self.padding, out=(self.grad_weight, self.grad_bias))).run(n_threads)
        if need_grad_x:
            return self.prepared("backward_input", (grad_y,), lambda: F.prepare(
                self._backward_input, grad_y, self.weight, x.shape, self.stride,
                self.padding, out=self.buf_grad_x[:len(x)])).run(n_threads)
        return None


class Pool(Layer):
    # max pooling routes through argmax, average pooling by shape alone
    writes_grad_x = owns_output = True
    backward_reads_input = False

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
        self.is_max = isinstance(spec, (L.MaxPool2D, L.MaxPool1D))
        self.relu = False
        two_d = ndim == 2
        if self.is_max:
            self._forward = F.max_pool2d if two_d else F.max_pool1d
            self._backward = F.max_pool2d_backward if two_d else F.max_pool1d_backward
        else:
            self._forward = F.avg_pool2d if two_d else F.avg_pool1d
            self._backward = F.avg_pool2d_backward if two_d else F.avg_pool1d_backward

    def allocate(self, capacity, dtype, grad_x_storage=None):
        shape = (capacity,) + self.output_shape
        self.buf_y = np.empty(shape, dtype=dtype)
        self.buf_argmax = np.empty(shape, dtype=np.int32) if self.is_max else None
        self.buf_grad_x = self.grad_x_buffer(capacity, grad_x_storage)

    @property
    def name(self):
        return type(self.spec).__name__ + ("+ReLU" if self.relu else "")

    def fuse_relu(self):
        """Take on the ReLU that runs right after this max pooling: the
        pooling then returns relu(y), and its backward pass lets through
        only the gradients where that is positive (functional's relu and
        relu_output), the two layers' bits in one pass each way."""
        self.relu = self.backward_reads_output = True

    def forward(self, x, n_threads):
        n = len(x)
        self.x_shape = x.shape
        if self.is_max:
            self.y, self.argmax = self.prepared("forward", (x,), lambda: F.prepare(
                self._forward, x, self.size, self.stride,
                out=(self.output_rows(n), self.buf_argmax[:n]), relu=self.relu)
            ).run(n_threads)
            return self.y
        return self.prepared("forward", (x,), lambda: F.prepare(
            self._forward, x, self.size, self.stride, out=self.output_rows(n))
        ).run(n_threads)

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        n = self.x_shape[0]
        if self.is_max:
            return self.prepared("backward", (grad_y, self.argmax, self.y), lambda: F.prepare(
                self._backward, grad_y, self.argmax, self.x_shape,
                out=self.buf_grad_x[:n], relu_output=self.y if self.relu else None)
            ).run(n_threads)
        return self.prepared("backward", (grad_y,), lambda: F.prepare(
            self._backward, grad_y, self.x_shape, self.size, self.stride,
            out=self.buf_grad_x[:n])).run(n_threads)


class ReLU(Layer):
    """In place on its input, except as the first layer (whose input is the
    caller's batch, which must not change)."""
    backward_reads_output = True    # the sign of y

    @property
    def in_place(self):
        return not self.first

    @property
    def owns_output(self):
        return not self.in_place

    def allocate(self, capacity, dtype, grad_x_storage=None):
        self.buf_y = (None if self.in_place else
                      np.empty((capacity,) + self.input_shape, dtype=dtype))

    def forward(self, x, n_threads):
        self.y = self.prepared("forward", (x,), lambda: F.prepare(
            F.relu, x, out=x if self.in_place else self.output_rows(len(x)))
        ).run(n_threads)
        return self.y

    def backward(self, grad_y, need_grad_x, n_threads):
        if not need_grad_x:
            return None
        # grad_y is the next layer's buffer, free to overwrite now
        return self.prepared("backward", (grad_y, self.y), lambda: F.prepare(
            F.relu_backward, grad_y, self.y, out=grad_y)).run(n_threads)


class Flatten(Layer):
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
    writes_grad_x = owns_output = True

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        features = int(np.prod(self.input_shape))
        self.output_shape = (spec.units,)
        self.weight_shape = (spec.units, features)
        self.bias_shape = (spec.units,)
        self.fan_in = features

    def allocate(self, capacity, dtype, grad_x_storage=None):
        self.buf_y = np.empty((capacity,) + self.output_shape, dtype=dtype)
        self.buf_grad_x = self.grad_x_buffer(capacity, grad_x_storage)

    def forward(self, x, n_threads):
        def build():
            rows = x.reshape(len(x), -1)
            return rows, F.prepare(F.linear, rows, self.weight, self.bias,
                                   out=self.output_rows(len(x)))
        self.x, call = self.prepared("forward", (x,), build)
        return call.run(n_threads)

    def backward(self, grad_y, need_grad_x, n_threads):
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


_RUNTIME = {
    L.Conv2D: Conv, L.Conv1D: Conv,
    L.MaxPool2D: Pool, L.MaxPool1D: Pool, L.AvgPool2D: Pool, L.AvgPool1D: Pool,
    L.ReLU: ReLU, L.Flatten: Flatten, L.Dense: Dense,
}


def _runtime_layer(spec, input_shape, position):
    runtime = _RUNTIME.get(type(spec))
    if runtime is None:
        raise ValueError(
            f"layers[{position}] must be a layer specification from "
            f"fastcnn.layers, got {spec!r}")
    return runtime(spec, input_shape, position)


def _execution_order(specs):
    """Positions of the layers in the order they run. A ReLU followed by
    max pooling runs after it instead: ReLU keeps order, so it commutes with
    a maximum, and the values and gradients are the same (where the window's
    maximum is not positive both give 0 and a zero gradient). The ReLU then
    works on the pooled values, inside the pooling's own passes
    (Pool.fuse_relu), and the output of the layer before the pooling is
    left for nothing but the pooling to read, so that its buffer can take
    the pooling's input gradient (Network.allocate)."""
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
    """Whether ``layer`` is a ReLU that the max pooling run just before it
    takes on (Pool.fuse_relu)."""
    return type(layer) is ReLU and type(previous) is Pool and previous.is_max


def layer_output_shape(spec, input_shape, position=0):
    """Shape of one sample after the layer ``spec``, validated against
    ``input_shape`` exactly as in a network."""
    return _runtime_layer(spec, input_shape, position).output_shape


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
        All parameters (weights first, then biases) and their gradients.
    n_weights : int
        Number of leading entries of ``params`` that are weights.
    profile : dict or None
        When a dict, forward and backward seconds are added up per layer
        under keys ``(position, name, 'forward' | 'backward')``.
    """

    def __init__(self, specs, input_shape, dtype):
        self.specs = list(specs)
        self.input_shape = tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.layers = []
        shape = self.input_shape
        for index, position in enumerate(_execution_order(self.specs)):
            layer = _runtime_layer(self.specs[position], shape, position)
            layer.first = index == 0
            previous = self.layers[-1] if self.layers else None
            if _fuses_relu(previous, layer):
                previous.fuse_relu()
                continue
            self.layers.append(layer)
            shape = layer.output_shape
        self.output_shape = shape
        with_params = [layer for layer in self.layers if layer.weight_shape]
        weight_sizes = [int(np.prod(layer.weight_shape)) for layer in with_params]
        bias_sizes = [int(np.prod(layer.bias_shape)) for layer in with_params]
        self.n_weights = sum(weight_sizes)
        self.params = np.zeros(self.n_weights + sum(bias_sizes), dtype=self.dtype)
        self.grads = np.zeros_like(self.params)
        self._bind()
        self.capacity = 0
        self.training = False
        self.input_buffer, self.input_views = None, {}
        self.profile = None
        self._idle_predictors = []

    def _bind(self):
        """Point every layer's parameter attributes at its part of the flat
        arrays."""
        weight_at, bias_at = 0, self.n_weights
        for layer in self.layers:
            if not layer.weight_shape:
                continue
            w_size = int(np.prod(layer.weight_shape))
            b_size = int(np.prod(layer.bias_shape))
            layer.weight = self.params[weight_at:weight_at + w_size].reshape(layer.weight_shape)
            layer.grad_weight = self.grads[weight_at:weight_at + w_size].reshape(layer.weight_shape)
            layer.bias = self.params[bias_at:bias_at + b_size]
            layer.grad_bias = self.grads[bias_at:bias_at + b_size]
            weight_at += w_size
            bias_at += b_size

    @property
    def parametric_layers(self):
        return [layer for layer in self.layers if layer.weight_shape]

    def initialize(self, rng):
        """He-uniform weights for the hidden layers (they feed ReLUs),
        Glorot-uniform for the output layer, zero biases; drawn in float64
        from ``rng`` (a numpy RandomState) in layer order."""
        with_params = self.parametric_layers
        for i, layer in enumerate(with_params):
            if i == len(with_params) - 1:
                fan_out = layer.weight_shape[0]
                bound = np.sqrt(6.0 / (layer.fan_in + fan_out))
            else:
                bound = np.sqrt(6.0 / layer.fan_in)
            layer.weight[...] = rng.uniform(-bound, bound, layer.weight_shape)
            layer.bias[...] = 0

    def allocate(self, capacity, training):
        """Buffers for batches of up to ``capacity`` samples.

        Input gradients get no buffers of their own. A layer whose backward
        pass reads neither its input nor what the layer before it needs
        (pooling after a convolution: _execution_order puts it before the
        ReLU) writes its input's gradient over that input, the output of
        the layer before, which the backward pass no longer needs. The other
        layers that write an input gradient take turns, in order, between
        two shared arrays, each as large as the largest gradient it holds:
        the backward pass needs two at a time, the one a layer reads (from
        the layer after it) and the one it writes. ReLU works in place on
        the gradient it receives and Flatten reshapes it, so they keep the
        turn of the layer after them.
        """
        if capacity == self.capacity and training == self.training:
            return
        layers = self.layers
        over_input, turns = set(), {}
        sizes = [0, 0]
        for i, layer in enumerate(layers):
            if not training or layer.first or not layer.writes_grad_x:
                continue
            before = layers[i - 1]
            if (not layer.backward_reads_input and before.owns_output
                    and not before.backward_reads_output):
                over_input.add(i)
            else:
                turn = len(turns) % 2
                turns[i] = turn
                size = capacity * int(np.prod(layer.input_shape))
                sizes[turn] = max(sizes[turn], size)
        shared = [np.empty(size, dtype=self.dtype) for size in sizes] if turns else None
        for i, layer in enumerate(layers):
            # layers allocate in order, so the one before has its output
            storage = (layers[i - 1].buf_y.reshape(-1) if i in over_input
                       else shared[turns[i]] if i in turns else None)
            layer.allocate(capacity, self.dtype, storage)
            layer.forget_calls()
        # a prediction's input is copied in (see forward)
        self.input_buffer = (None if training else
                             np.empty((capacity,) + self.input_shape, self.dtype))
        self.input_views = {}
        self.capacity, self.training = capacity, training

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
        profile = self.profile
        for layer in self.layers:
            if profile is None:
                x = layer.forward(x, n_threads)
            else:
                start = time.perf_counter()
                x = layer.forward(x, n_threads)
                key = (layer.position, layer.name, "forward")
                profile[key] = profile.get(key, 0.0) + time.perf_counter() - start
        return x

    def backward(self, grad, n_threads):
        """Fill ``grads`` from the gradient of the loss with respect to the
        scores; the input's own gradient is never computed."""
        profile = self.profile
        for layer in reversed(self.layers):
            need_grad_x = not layer.first
            if profile is None:
                grad = layer.backward(grad, need_grad_x, n_threads)
            else:
                start = time.perf_counter()
                grad = layer.backward(grad, need_grad_x, n_threads)
                key = (layer.position, layer.name, "backward")
                profile[key] = profile.get(key, 0.0) + time.perf_counter() - start

    def inference_copy(self):
        """A network sharing these parameters with buffers of its own, so
        that predictions running at the same time never share buffers."""
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
        total = sum(math.prod(layer.output_shape) for layer in self.layers)
        if training:
            total += sum(math.prod(layer.input_shape) for layer in self.layers)
        else:
            total += math.prod(self.input_shape)   # the input's copy
        return total * self.dtype.itemsize

    # Pickling keeps the specifications and the flat parameters; views and
    # buffers are rebuilt on loading.
    def __getstate__(self):
        return {"specs": self.specs, "input_shape": self.input_shape,
                "dtype": self.dtype.str, "params": self.params}

    def __setstate__(self, state, share_params=False):
        self.__init__(state["specs"], state["input_shape"], state["dtype"])
        if share_params:
            self.params = state["params"]
            self._bind()
        else:
            self.params[...] = state["params"]
