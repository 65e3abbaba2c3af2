"""Time fastcnn's kernels against PyTorch's CPU convolution, pooling,
activations, dropout and normalization (batch norm in training, local
response norm).

For every benchmark shape and thread count this prints fastcnn's forward,
backward-input and backward-kernel times (median ms) and GFLOP/s, the same
figures for PyTorch when it is importable, and the speed ratio
``torch_ms / fastcnn_ms`` (above 1: fastcnn is faster). A header gives the
machine, the versions and numpy's float32 matmul GFLOP/s (the practical limit
of this machine); a summary at the end checks the performance targets.

FLOPs of a correlation are ``2 * N * F * out_positions * C * kernel_size``;
each backward pass is counted the same as the forward. Pooling,
normalization, dropout and the activations (tanh, sigmoid, leaky ReLU, ELU,
GELU: forward and backward, the backward pass from what each reads) have no
FLOP figure (only times and ratios).

fastcnn and PyTorch calls for the same shape, operation and thread count are
interleaved call by call, so that machine noise hits both alike.

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_kernels.py            # everything
    PYTHONPATH=. python benchmarks/bench_kernels.py --quick --shapes 0 3
"""
import argparse
import csv
import datetime
import gc
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONV_OPS = ("forward", "backward-input", "backward-kernel")
POOL_OPS = ("forward", "backward")

# Relative tolerance of the fastcnn-versus-PyTorch check; the absolute
# tolerance is the same fraction of the reference's largest magnitude.
CHECK_RTOL = 1e-3

# Targets from the issue, checked in the summary.
FIRST_LAYER_TARGET = 3.0      # forward ratio, 2 threads, C = 1 or 3
OTHER_LAYER_TARGET = 0.8      # forward ratio, 2 threads, other C
THREAD_SPEEDUP_TARGET = 1.8   # fastcnn fwd+bwd time, 1 thread / 2 threads

# A row whose interquartile range exceeds this fraction of its median was
# probably disturbed by another process; the summary says which to rerun.
NOISY_SPREAD = 0.5


# ------------------------------------------------------------------ shapes

@dataclass(frozen=True)
class ConvCase:
    """A correlation layer: x (n, c, *spatial) with f kernels of size k."""
    n: int
    c: int
    spatial: tuple
    f: int
    k: int
    pad: int
    stride: int
    dilation: int = 1
    ops = CONV_OPS

    @property
    def ndim(self):
        return len(self.spatial)

    @property
    def x_shape(self):
        return (self.n, self.c) + self.spatial

    @property
    def w_shape(self):
        return (self.f, self.c) + (self.k,) * self.ndim

    @property
    def y_shape(self):
        span = self.dilation * (self.k - 1) + 1
        out = tuple((s - span + 2 * self.pad) // self.stride + 1
                    for s in self.spatial)
        return (self.n, self.f) + out

    @property
    def flops(self):
        return (2 * math.prod(self.y_shape) * self.c * self.k ** self.ndim)

    @property
    def is_first_layer(self):
        return self.c in (1, 3)

    @property
    def label(self):
        dims = "x".join(map(str, self.x_shape))
        kind = "" if self.ndim == 2 else f" ({self.ndim}-D)"
        dilation = f" d{self.dilation}" if self.dilation > 1 else ""
        return f"{dims} F{self.f} K{self.k} p{self.pad} s{self.stride}{dilation}{kind}"


class _MapCase:
    """A case on feature maps x (n, c, *spatial), the fields n, c and
    spatial of each subclass: forward and backward times, no FLOP figure."""
    ops = POOL_OPS

    @property
    def x_shape(self):
        return (self.n, self.c) + self.spatial

    @property
    def flops(self):
        return None


@dataclass(frozen=True)
class MaxPoolCase(_MapCase):
    """Max pooling of x (n, c, h, w) over size x size windows, stride = size."""
    n: int
    c: int
    spatial: tuple
    size: int

    @property
    def label(self):
        dims = "x".join(map(str, self.x_shape))
        return f"max_pool {self.size}x{self.size}/{self.size} {dims}"


@dataclass(frozen=True)
class GlobalPoolCase(_MapCase):
    """Global average or max pooling of x (n, c, h, w) to (n, c)."""
    n: int
    c: int
    spatial: tuple
    kind: str                   # "avg" or "max"

    @property
    def y_shape(self):
        return (self.n, self.c)

    @property
    def label(self):
        dims = "x".join(map(str, self.x_shape))
        return f"global_{self.kind}_pool {dims}"


@dataclass(frozen=True)
class L2PoolCase(_MapCase):
    """L2 pooling of x (n, c, h, w) over size x size windows, stride = size."""
    n: int
    c: int
    spatial: tuple
    size: int

    @property
    def y_shape(self):
        return (self.n, self.c) + tuple(s // self.size for s in self.spatial)

    @property
    def label(self):
        dims = "x".join(map(str, self.x_shape))
        return f"l2_pool {self.size}x{self.size}/{self.size} {dims}"


@dataclass(frozen=True)
class DropoutCase(_MapCase):
    """Dropout of x (n, c, h, w) at ``rate``. The forward pass includes
    drawing the mask: fastcnn's uniforms from a numpy Generator into an
    array allocated once (as the layer draws them), PyTorch's Bernoulli
    noise. The backward pass multiplies the gradient by the mask of one
    fixed draw, the same in both, so the two results are compared."""
    n: int
    c: int
    spatial: tuple
    rate: float

    @property
    def label(self):
        return f"dropout {self.rate:g} {'x'.join(map(str, self.x_shape))}"


@dataclass(frozen=True)
class ActivationCase(_MapCase):
    """An elementwise activation (ACTIVATIONS[name]) of x (n, c, h, w) and
    its gradient."""
    name: str
    n: int
    c: int
    spatial: tuple

    @property
    def label(self):
        return f"{self.name} " + "x".join(map(str, self.x_shape))


# name -> (fastcnn function, keywords, whether its gradient reads the output
# y (else the input x)); PyTorch's counterparts are TorchBackend's
ACTIVATIONS = {
    "tanh": ("tanh", {}, True),
    "sigmoid": ("sigmoid", {}, True),
    "leaky_relu": ("leaky_relu", {"negative_slope": 0.01}, True),
    "elu": ("elu", {"alpha": 1.0}, True),
    "gelu": ("gelu", {}, False),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, False),
}


@dataclass(frozen=True)
class NormCase(_MapCase):
    """Batch normalization in training (kind 'batch_norm') or local
    response normalization of ``size`` channels ('lrn') of x (n, c, h, w)."""
    kind: str
    n: int
    c: int
    spatial: tuple
    size: int = 5

    @property
    def label(self):
        dims = "x".join(map(str, self.x_shape))
        return f"{self.kind} {dims}" + (f" size {self.size}" if self.kind == "lrn" else "")


CASES = [
    ConvCase(64, 1, (28, 28), 32, 5, 2, 1),
    ConvCase(64, 6, (14, 14), 16, 5, 0, 1),
    ConvCase(128, 3, (32, 32), 64, 3, 1, 1),
    ConvCase(64, 32, (14, 14), 64, 3, 1, 1),
    ConvCase(64, 64, (16, 16), 128, 3, 1, 1),
    MaxPoolCase(64, 32, (28, 28), 2),
    ConvCase(100, 25, (40,), 25, 3, 1, 1),
    # the VGG-style net's second layer (bench_training.py's vgg-cifar): a
    # sample's frame and outputs pass the frame budget, one sample a frame
    ConvCase(128, 32, (32, 32), 32, 3, 1, 1),
    DropoutCase(128, 32, (28, 28), 0.5),
    # a ResNet-style head over the last feature maps, and L2 pooling of an
    # early layer's
    GlobalPoolCase(128, 64, (7, 7), "avg"),
    GlobalPoolCase(128, 64, (7, 7), "max"),
    L2PoolCase(128, 32, (28, 28), 2),
    # a dilated 1-D layer (WaveNet/TCN style), padding 'same': d*(k - 1) / 2
    ConvCase(64, 32, (1000,), 32, 3, 4, 1, dilation=4),
]

# the activations on a convolution's output of realistic size
CASES += [ActivationCase(name, 128, 32, (28, 28)) for name in ACTIVATIONS]

CASES += [NormCase("batch_norm", 128, 32, (28, 28)), NormCase("lrn", 128, 32, (28, 28))]

# the batch norms of the nets: vgg-bn's second block and its dense
# layer's (BatchNorm1D over features), the 1-D FCN's middle layer (batch 16)
CASES += [NormCase("batch_norm", 128, 64, (14, 14)), NormCase("batch_norm", 128, 256, ()),
          NormCase("batch_norm", 16, 256, (40,))]


@dataclass
class Op:
    """One operation on one shape: a fastcnn call and maybe a torch call.

    Both calls return the operation's result (arrays or tensors, possibly in
    a tuple) so that they can be compared.
    """
    name: str
    flops: Optional[int]
    fastcnn: Callable[[int], object]            # takes n_threads
    torch: Optional[Callable[[], object]]       # threads set globally
    # fastcnn writing into outputs allocated once (out=), as the network does
    fastcnn_out: Optional[Callable[[int], object]] = None
    # whether the two results must agree (not dropout's forward pass: each
    # library draws its own mask)
    comparable: bool = True


def random_conv_arrays(case, rng):
    """x, w, bias and grad_y for ``case``, float32 standard normal."""
    def normal(shape):
        return rng.standard_normal(shape, dtype=np.float32)
    return (normal(case.x_shape), normal(case.w_shape), normal(case.f),
            normal(case.y_shape))


# ----------------------------------------------------------------- fastcnn

def import_fastcnn(attempts=20, wait_seconds=3.0):
    """fastcnn.functional and the correlation kernels, retrying the import.

    The kernels may be being rebuilt while this runs; a half-written
    extension fails to import for a moment.
    """
    for attempt in range(attempts):
        try:
            from fastcnn import functional
            from fastcnn._kernels import correlation
            return functional, correlation
        except (ImportError, OSError) as error:
            if attempt == attempts - 1:
                raise
            print(f"# import of fastcnn failed ({error}); retrying",
                  file=sys.stderr)
            time.sleep(wait_seconds)


def fastcnn_conv_calls(fc, case, x, w, bias, grad_y):
    """{op name: f(n_threads)} for a correlation case."""
    if case.ndim == 2:
        forward, backward_input, backward_kernel = (
            fc.correlate2d, fc.correlate2d_backward_input,
            fc.correlate2d_backward_kernel)
    else:
        forward, backward_input, backward_kernel = (
            fc.correlate1d, fc.correlate1d_backward_input,
            fc.correlate1d_backward_kernel)
    geometry = dict(stride=case.stride, padding=case.pad, dilation=case.dilation)
    # the outputs allocated once as fastcnn allocates them (a network's
    # buffers alike): 64-byte aligned, unlike NumPy's large arrays
    y = forward(x, w, bias, n_threads=1, **geometry)
    grad_x = backward_input(grad_y, w, x.shape, n_threads=1, **geometry)
    grad_w, grad_b = backward_kernel(x, grad_y, w.shape, n_threads=1, **geometry)
    return {
        "forward": lambda t: forward(x, w, bias, n_threads=t, **geometry),
        "backward-input": lambda t: backward_input(
            grad_y, w, x.shape, n_threads=t, **geometry),
        "backward-kernel": lambda t: backward_kernel(
            x, grad_y, w.shape, n_threads=t, **geometry),
    }, {
        "forward": lambda t: forward(x, w, bias, n_threads=t, out=y, **geometry),
        "backward-input": lambda t: backward_input(
            grad_y, w, x.shape, n_threads=t, out=grad_x, **geometry),
        "backward-kernel": lambda t: backward_kernel(
            x, grad_y, w.shape, n_threads=t, out=(grad_w, grad_b), **geometry),
    }


def fastcnn_pool_calls(fc, case, x, grad_y):
    """{op name: f(n_threads)} for a max-pooling case."""
    _, argmax = fc.max_pool2d(x, case.size, case.size)
    return {
        "forward": lambda t: fc.max_pool2d(x, case.size, case.size, n_threads=t),
        "backward": lambda t: fc.max_pool2d_backward(
            grad_y, argmax, x.shape, n_threads=t),
    }


def fastcnn_global_pool_calls(fc, case, x, grad_y):
    """{op name: f(n_threads)} for a global pooling case."""
    if case.kind == "avg":
        return {
            "forward": lambda t: fc.global_avg_pool2d(x, n_threads=t),
            "backward": lambda t: fc.global_avg_pool2d_backward(
                grad_y, x.shape, n_threads=t),
        }
    _, argmax = fc.global_max_pool2d(x)
    return {
        "forward": lambda t: fc.global_max_pool2d(x, n_threads=t),
        "backward": lambda t: fc.global_max_pool2d_backward(
            grad_y, argmax, x.shape, n_threads=t),
    }


def fastcnn_l2_pool_calls(fc, case, x, grad_y):
    """{op name: f(n_threads)} for an L2 pooling case."""
    y = fc.l2_pool2d(x, case.size)
    return {
        "forward": lambda t: fc.l2_pool2d(x, case.size, n_threads=t),
        "backward": lambda t: fc.l2_pool2d_backward(
            grad_y, x, y, case.size, n_threads=t),
    }


def fastcnn_dropout_calls(fc, case, x, grad_y, mask_uniforms):
    """({op name: f(n_threads)}, the same writing into outputs allocated
    once) for a dropout case; the backward pass masks with
    ``mask_uniforms``."""
    generator = np.random.default_rng(0)
    uniforms = np.empty_like(x)
    y, grad_x = np.empty_like(x), np.empty_like(grad_y)

    def forward(n_threads, out=None):
        generator.random(out=uniforms, dtype=uniforms.dtype)
        return fc.dropout(x, uniforms, case.rate, n_threads=n_threads, out=out)

    def backward(n_threads, out=None):
        return fc.dropout_backward(grad_y, mask_uniforms, case.rate,
                                   n_threads=n_threads, out=out)
    return ({"forward": forward, "backward": backward},
            {"forward": partial(forward, out=y), "backward": partial(backward, out=grad_x)})


def fastcnn_activation_calls(fc, case, x, grad_y):
    """({op name: f(n_threads)}, the same writing into outputs allocated
    once) for an activation case."""
    function_name, keywords, from_y = ACTIVATIONS[case.name]
    forward = getattr(fc, function_name)
    backward = getattr(fc, function_name + "_backward")
    read = forward(x, **keywords) if from_y else x
    y, grad_x = np.empty_like(x), np.empty_like(x)
    return {
        "forward": lambda t: forward(x, **keywords, n_threads=t),
        "backward": lambda t: backward(grad_y, read, **keywords, n_threads=t),
    }, {
        "forward": lambda t: forward(x, **keywords, n_threads=t, out=y),
        "backward": lambda t: backward(grad_y, read, **keywords, n_threads=t,
                                       out=grad_x),
    }


def fastcnn_norm_calls(fc, case, x, grad_y):
    """{op name: f(n_threads)} for a normalization case; the forward calls
    return y alone, as PyTorch's do."""
    if case.kind == "batch_norm":
        channels = case.c
        weight, bias = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        running_mean, running_var = np.zeros_like(weight), np.ones_like(weight)
        _, mean, invstd = fc.batch_norm(x, weight, bias, training=True)
        return {
            "forward": lambda t: fc.batch_norm(x, weight, bias, running_mean, running_var,
                                               training=True, n_threads=t)[0],
            "backward": lambda t: fc.batch_norm_backward(grad_y, x, weight, mean, invstd,
                                                         n_threads=t),
        }
    y, scale = fc.local_response_norm(x, case.size)
    return {
        "forward": lambda t: fc.local_response_norm(x, case.size, n_threads=t)[0],
        "backward": lambda t: fc.local_response_norm_backward(
            grad_y, x, y, scale, case.size, n_threads=t),
    }


# ----------------------------------------------------------------- PyTorch

class TorchBackend:
    """PyTorch's CPU kernels, called on tensors sharing the numpy arrays."""

    def __init__(self, torch):
        self.torch = torch
        torch.set_grad_enabled(False)   # as torch.no_grad() around every call
        self.aten = torch.ops.aten
        self.conv_backward_is_aten = self._aten_works(self._probe_conv_backward)
        self.pool_backward_is_aten = self._aten_works(self._probe_pool_backward)

    @property
    def description(self):
        torch = self.torch
        backward = ("aten.convolution_backward" if self.conv_backward_is_aten
                    else "torch.nn.grad")
        return (f"torch {torch.__version__}, "
                f"mkldnn available: {torch.backends.mkldnn.is_available()}, "
                f"conv backward via {backward}")

    def set_threads(self, n_threads):
        self.torch.set_num_threads(n_threads)

    @staticmethod
    def _aten_works(probe):
        try:
            probe()
            return True
        except (AttributeError, RuntimeError, TypeError):
            return False

    def _probe_conv_backward(self):
        t = self.torch
        x, w, gy = t.ones(1, 1, 3, 3), t.ones(1, 1, 2, 2), t.ones(1, 1, 2, 2)
        self.aten.convolution_backward(gy, x, w, [1], [1, 1], [0, 0], [1, 1],
                                       False, [0, 0], 1, [True, True, True])

    def _probe_pool_backward(self):
        x = self.torch.ones(1, 1, 2, 2)
        y, index = self.torch.nn.functional.max_pool2d(x, 2, 2,
                                                       return_indices=True)
        self.aten.max_pool2d_with_indices_backward(
            y, x, [2, 2], [2, 2], [0, 0], [1, 1], False, index)

    def conv_calls(self, case, x, w, bias, grad_y):
        """{op name: f()} for a correlation case."""
        t = self.torch
        x, w, bias, grad_y = map(t.from_numpy, (x, w, bias, grad_y))
        nn_f, nn_grad = t.nn.functional, t.nn.grad
        conv = {1: nn_f.conv1d, 2: nn_f.conv2d}[case.ndim]
        stride, pad = [case.stride] * case.ndim, [case.pad] * case.ndim
        dilation = [case.dilation] * case.ndim
        calls = {"forward": lambda: conv(x, w, bias, stride, pad, dilation)}
        if self.conv_backward_is_aten:
            def conv_backward(mask):
                return self.aten.convolution_backward(
                    grad_y, x, w, [case.f], stride, pad, dilation,
                    False, [0] * case.ndim, 1, mask)
            calls["backward-input"] = partial(conv_backward,
                                              [True, False, False])
            calls["backward-kernel"] = partial(conv_backward,
                                               [False, True, True])
        else:
            conv_input = {1: nn_grad.conv1d_input, 2: nn_grad.conv2d_input}
            conv_weight = {1: nn_grad.conv1d_weight, 2: nn_grad.conv2d_weight}
            spatial_dims = tuple(range(2, 2 + case.ndim))
            calls["backward-input"] = lambda: conv_input[case.ndim](
                x.shape, w, grad_y, stride, pad, dilation)
            calls["backward-kernel"] = lambda: (
                conv_weight[case.ndim](x, w.shape, grad_y, stride, pad, dilation),
                grad_y.sum(dim=(0,) + spatial_dims))
        return calls

    def dropout_calls(self, case, x, grad_y, mask_uniforms):
        """{op name: f()} for a dropout case: nn.functional.dropout in
        training, and its backward pass as autograd runs it on the CPU,
        the gradient times the scaled mask it saved."""
        t = self.torch
        x, grad_y = t.from_numpy(x), t.from_numpy(grad_y)
        scale = np.float32(1 / (1 - case.rate))
        noise = t.from_numpy(np.where(mask_uniforms >= np.float32(case.rate),
                                      scale, np.float32(0)))
        return {"forward": lambda: t.nn.functional.dropout(x, case.rate, training=True),
                "backward": lambda: grad_y * noise}

    def pool_calls(self, case, x, grad_y):
        """{op name: f()} for a max-pooling case."""
        t = self.torch
        x, grad_y = t.from_numpy(x), t.from_numpy(grad_y)
        size = [case.size, case.size]
        pool = partial(t.nn.functional.max_pool2d, x, case.size, case.size,
                       return_indices=True)
        calls = {"forward": pool}
        if self.pool_backward_is_aten:
            _, index = pool()
            calls["backward"] = lambda: self.aten.max_pool2d_with_indices_backward(
                grad_y, x, size, size, [0, 0], [1, 1], False, index)
        else:
            x_grad = x.clone().requires_grad_(True)
            with t.enable_grad():
                y, _ = t.nn.functional.max_pool2d(x_grad, case.size, case.size,
                                                  return_indices=True)
            calls["backward"] = lambda: t.autograd.grad(
                y, x_grad, grad_y, retain_graph=True)
        return calls


    def global_pool_calls(self, case, x, grad_y):
        """{op name: f()} for a global pooling case: adaptive pooling to
        one position, flattened to fastcnn's (n, c), and its aten backward."""
        t = self.torch
        x, grad_y = t.from_numpy(x), t.from_numpy(grad_y)
        grad_4d = grad_y.reshape(grad_y.shape + (1, 1))
        nn_f = t.nn.functional
        if case.kind == "avg":
            return {
                "forward": lambda: nn_f.adaptive_avg_pool2d(x, 1).flatten(1),
                "backward": lambda: self.aten._adaptive_avg_pool2d_backward(grad_4d, x),
            }
        _, index = nn_f.adaptive_max_pool2d(x, 1, return_indices=True)

        def forward():
            y, where = nn_f.adaptive_max_pool2d(x, 1, return_indices=True)
            return y.flatten(1), where.flatten(1)
        return {
            "forward": forward,
            "backward": lambda: self.aten.adaptive_max_pool2d_backward(grad_4d, x, index),
        }

    def l2_pool_calls(self, case, x, grad_y):
        """{op name: f()} for an L2 pooling case: LPPool2d of norm 2, whose
        backward runs through autograd (it has no kernel of its own)."""
        t = self.torch
        x, grad_y = t.from_numpy(x), t.from_numpy(grad_y)
        x_grad = x.clone().requires_grad_(True)
        with t.enable_grad():
            y = t.nn.functional.lp_pool2d(x_grad, 2, case.size, case.size)
        return {
            "forward": lambda: t.nn.functional.lp_pool2d(x, 2, case.size, case.size),
            "backward": lambda: t.autograd.grad(y, x_grad, grad_y, retain_graph=True),
        }


def torch_activation_calls(torch_backend, case, x, grad_y):
    """{op name: f()} for an activation case: PyTorch's functions and the
    backward kernels its autograd calls (aten's *_backward)."""
    t = torch_backend.torch
    aten, nn_f = torch_backend.aten, t.nn.functional
    x, grad_y = t.from_numpy(x), t.from_numpy(grad_y)
    forward = {"tanh": t.tanh, "sigmoid": t.sigmoid,
               "leaky_relu": lambda v: nn_f.leaky_relu(v, 0.01),
               "elu": lambda v: nn_f.elu(v, 1.0), "gelu": nn_f.gelu,
               "gelu_tanh": lambda v: nn_f.gelu(v, approximate="tanh")}[case.name]
    y = forward(x)
    backward = {
        "tanh": lambda: aten.tanh_backward(grad_y, y),
        "sigmoid": lambda: aten.sigmoid_backward(grad_y, y),
        "leaky_relu": lambda: aten.leaky_relu_backward(grad_y, x, 0.01, False),
        # nn.ELU's autograd (not in place) reads the input
        "elu": lambda: aten.elu_backward(grad_y, 1.0, 1, 1, False, x),
        "gelu": lambda: aten.gelu_backward(grad_y, x, approximate="none"),
        "gelu_tanh": lambda: aten.gelu_backward(grad_y, x, approximate="tanh"),
    }[case.name]
    return {"forward": lambda: forward(x), "backward": backward}


def torch_norm_calls(torch_backend, case, x, grad_y):
    """{op name: f()} for a normalization case: the functional forward,
    and the backward by autograd through it (aten's own for batch norm)."""
    t = torch_backend.torch
    x, grad_y = t.from_numpy(x), t.from_numpy(grad_y)
    if case.kind == "batch_norm":
        weight, bias = t.ones(case.c), t.zeros(case.c)
        running_mean, running_var = t.zeros(case.c), t.ones(case.c)
        _, save_mean, save_invstd = t.native_batch_norm(
            x, weight, bias, running_mean.clone(), running_var.clone(), True, 0.1, 1e-5)
        return {
            "forward": lambda: t.nn.functional.batch_norm(
                x, running_mean, running_var, weight, bias, True),
            "backward": lambda: torch_backend.aten.native_batch_norm_backward(
                grad_y, x, weight, running_mean, running_var, save_mean, save_invstd,
                True, 1e-5, [True, True, True]),
        }
    x_grad = x.clone().requires_grad_(True)
    with t.enable_grad():
        y = t.nn.functional.local_response_norm(x_grad, case.size)
    return {
        "forward": lambda: t.nn.functional.local_response_norm(x, case.size),
        "backward": lambda: t.autograd.grad(y, x_grad, grad_y, retain_graph=True),
    }


def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return TorchBackend(torch)


# ------------------------------------------------------------- the ops

def other_pool_calls(case, fc, torch_backend, rng):
    """(fastcnn calls, torch calls) of a global or L2 pooling case."""
    x = rng.standard_normal(case.x_shape, dtype=np.float32)
    grad_y = rng.standard_normal(case.y_shape, dtype=np.float32)
    if isinstance(case, GlobalPoolCase):
        fastcnn_calls = fastcnn_global_pool_calls(fc, case, x, grad_y)
        torch_calls = (torch_backend.global_pool_calls(case, x, grad_y)
                       if torch_backend else {})
    else:
        fastcnn_calls = fastcnn_l2_pool_calls(fc, case, x, grad_y)
        torch_calls = (torch_backend.l2_pool_calls(case, x, grad_y)
                       if torch_backend else {})
    return fastcnn_calls, torch_calls


def build_ops(case, fc, torch_backend, rng):
    """The list of Op for ``case``, inputs allocated once."""
    if isinstance(case, ConvCase):
        arrays = random_conv_arrays(case, rng)
        fastcnn_calls, fastcnn_out_calls = fastcnn_conv_calls(fc, case, *arrays)
        torch_calls = torch_backend.conv_calls(case, *arrays) if torch_backend else {}
    elif isinstance(case, NormCase):
        x = rng.standard_normal(case.x_shape, dtype=np.float32)
        grad_y = rng.standard_normal(case.x_shape, dtype=np.float32)
        fastcnn_calls, fastcnn_out_calls = fastcnn_norm_calls(fc, case, x, grad_y), {}
        torch_calls = (torch_norm_calls(torch_backend, case, x, grad_y)
                       if torch_backend else {})
    elif isinstance(case, ActivationCase):
        x = 3 * rng.standard_normal(case.x_shape, dtype=np.float32)
        grad_y = rng.standard_normal(case.x_shape, dtype=np.float32)
        fastcnn_calls, fastcnn_out_calls = fastcnn_activation_calls(fc, case, x, grad_y)
        torch_calls = (torch_activation_calls(torch_backend, case, x, grad_y)
                       if torch_backend else {})
    elif isinstance(case, DropoutCase):
        arrays = (rng.standard_normal(case.x_shape, dtype=np.float32),
                  rng.standard_normal(case.x_shape, dtype=np.float32),
                  rng.random(case.x_shape, dtype=np.float32))
        fastcnn_calls, fastcnn_out_calls = fastcnn_dropout_calls(fc, case, *arrays)
        torch_calls = torch_backend.dropout_calls(case, *arrays) if torch_backend else {}
        return [Op(name, None, fastcnn_calls[name], torch_calls.get(name),
                   fastcnn_out_calls[name], comparable=name != "forward")
                for name in case.ops]
    elif isinstance(case, (GlobalPoolCase, L2PoolCase)):
        fastcnn_calls, torch_calls = other_pool_calls(case, fc, torch_backend, rng)
        fastcnn_out_calls = {}
    else:
        x = rng.standard_normal(case.x_shape, dtype=np.float32)
        y_shape = case.x_shape[:2] + tuple(s // case.size for s in case.spatial)
        grad_y = rng.standard_normal(y_shape, dtype=np.float32)
        fastcnn_calls, fastcnn_out_calls = fastcnn_pool_calls(fc, case, x, grad_y), {}
        torch_calls = torch_backend.pool_calls(case, x, grad_y) if torch_backend else {}
    return [Op(name, case.flops, fastcnn_calls[name], torch_calls.get(name),
               fastcnn_out_calls.get(name))
            for name in case.ops]


def as_arrays(result):
    """A call's result as a list of numpy arrays (tuples flattened)."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [item if isinstance(item, np.ndarray) else item.numpy()
            for item in items if item is not None]


def disagreement(fastcnn_result, torch_result):
    """None when the results agree, else a description of the worst part."""
    ours, theirs = as_arrays(fastcnn_result), as_arrays(torch_result)
    if len(ours) != len(theirs):
        return f"{len(ours)} outputs versus {len(theirs)}"
    for part, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            return f"output {part}: shape {a.shape} versus {b.shape}"
        scale = float(np.abs(b).max())
        if not np.allclose(a, b, rtol=CHECK_RTOL, atol=CHECK_RTOL * scale):
            worst = float(np.abs(a.astype(np.float64) - b).max())
            return (f"output {part}: max |difference| {worst:.3g}, "
                    f"max |PyTorch| {scale:.3g}")
    return None


# ----------------------------------------------------------------- timing

@dataclass
class Timing:
    repeats: Optional[int]      # fixed repeats, or None to aim at seconds
    seconds: float              # target time of the slower call's repeats
    min_repeats: int = 3
    max_repeats: int = 2000


def time_once(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def relative_spread(samples):
    """Interquartile range over median: how noisy a measurement was."""
    if len(samples) < 4:
        return max(samples) / min(samples) - 1
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / median


def time_interleaved(calls, repeats):
    """Seconds of each call, the calls alternating round by round.

    The order within a round flips every round so that neither call always
    runs right after the other.
    """
    samples = [[] for _ in calls]
    order = list(range(len(calls)))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for i in order:
                samples[i].append(time_once(calls[i])[0])
            order.reverse()
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


@dataclass
class Row:
    case_index: int
    shape: str
    op: str
    threads: int
    flops: Optional[int]
    fastcnn_ms: float
    torch_ms: Optional[float]
    repeats: int
    spread: float               # worst relative interquartile range
    warning: Optional[str] = None
    fastcnn_out_ms: Optional[float] = None

    @staticmethod
    def _gflops(flops, ms):
        return None if flops is None or ms is None else flops / ms / 1e6

    @property
    def fastcnn_gflops(self):
        return self._gflops(self.flops, self.fastcnn_ms)

    @property
    def torch_gflops(self):
        return self._gflops(self.flops, self.torch_ms)

    @property
    def ratio(self):
        return None if self.torch_ms is None else self.torch_ms / self.fastcnn_ms


def measure(op, n_threads, timing):
    """Warm up, check fastcnn against torch, then time both, interleaved.

    Returns (fastcnn ms, torch ms or None, repeats, spread, disagreement or
    None, fastcnn out= ms or None); the times are medians, the spread the
    largest relative interquartile range of the calls.
    """
    calls = [partial(op.fastcnn, n_threads)]
    if op.torch is not None:
        calls.append(op.torch)
    if op.fastcnn_out is not None:
        calls.append(partial(op.fastcnn_out, n_threads))
    for call in calls:                      # first calls allocate, pack, plan
        call()
    single = [time_once(call) for call in calls]
    problem = (disagreement(single[0][1], single[1][1])
               if op.torch is not None and op.comparable else None)
    repeats = timing.repeats
    if repeats is None:
        slowest = max(seconds for seconds, _ in single)
        repeats = min(timing.max_repeats,
                      max(timing.min_repeats, math.ceil(timing.seconds / slowest)))
    samples = time_interleaved(calls, repeats)
    medians = [statistics.median(s) * 1e3 for s in samples]
    spread = max(relative_spread(s) for s in samples)
    torch_ms = medians[1] if op.torch is not None else None
    out_ms = medians[-1] if op.fastcnn_out is not None else None
    return medians[0], torch_ms, repeats, spread, problem, out_ms


# ------------------------------------------------------------------ machine

def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            fields = dict(line.split(":", 1) for line in cpuinfo if ":" in line)
    except OSError:
        return platform.processor() or "unknown"
    model = fields.get("model name\t", "unknown").strip()
    flags = fields.get("flags\t\t", "").split()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags]
    return f"{model} ({', '.join(simd) or 'no AVX2'})"


def core_count():
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        from joblib import cpu_count
        physical = cpu_count(only_physical_cores=True)
    except Exception:
        physical = "?"
    return (f"{os.cpu_count()} logical, {physical} physical, "
            f"{available} available to this process")


def load_average():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def git_revision():
    try:
        revision = subprocess.run(
            ["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "src", "fastcnn"],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + (" + uncommitted changes in src/ or fastcnn/" if dirty else "")


def matmul_gflops(n, n_threads, repeats=3, seed=0):
    """numpy's float32 (n x n) @ (n x n) GFLOP/s with ``n_threads`` BLAS threads."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    with threadpool_limits(limits=n_threads, user_api="blas"):
        np.matmul(a, b, out=out)
        seconds = statistics.median(
            time_once(partial(np.matmul, a, b, out=out))[0] for _ in range(repeats))
    return 2 * n ** 3 / seconds / 1e9


def blas_description():
    blas = [info for info in threadpool_info() if info["user_api"] == "blas"]
    return ", ".join(f"{b['internal_api']} {b.get('version')} "
                     f"({b.get('architecture')})" for b in blas) or "unknown"


def openmp_description():
    """The OpenMP runtime(s) loaded: one shared by fastcnn and torch is best."""
    runtimes = [info["filepath"] for info in threadpool_info()
                if info["user_api"] == "openmp"]
    return ", ".join(runtimes) or "none"


# ------------------------------------------------------------------- output

COLUMNS = [  # (title, width)
    ("#", 2), ("shape", 30), ("op", 15), ("thr", 3),
    ("fastcnn ms", 10), ("out= ms", 8), ("GFLOP/s", 8), ("%peak", 5),
    ("torch ms", 10), ("GFLOP/s", 8), ("ratio", 6), ("reps", 4), ("iqr%", 4),
]


def format_number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def format_line(cells):
    parts = []
    for (title, width), cell in zip(COLUMNS, cells):
        parts.append(cell.ljust(width) if title in ("shape", "op") else cell.rjust(width))
    return "  ".join(parts)


def table_header():
    line = format_line([title for title, _ in COLUMNS])
    return line + "\n" + "-" * len(line)


def format_row(row, peak_gflops):
    peak = peak_gflops.get(row.threads)
    percent = (None if row.fastcnn_gflops is None or not peak
               else 100 * row.fastcnn_gflops / peak)
    return format_line([
        str(row.case_index), row.shape, row.op, str(row.threads),
        format_number(row.fastcnn_ms, 3), format_number(row.fastcnn_out_ms, 3),
        format_number(row.fastcnn_gflops, 1),
        format_number(percent, 0),
        format_number(row.torch_ms, 3), format_number(row.torch_gflops, 1),
        format_number(row.ratio, 2), str(row.repeats),
        format_number(100 * row.spread, 0),
    ])


def verdict(value, target):
    if value is None:
        return "n/a"
    return "ok" if value >= target else "MISS"


def summary_lines(rows):
    """Per conv shape: 2-thread forward ratio and fastcnn's 2/1-thread speedup."""
    by_key = {(r.case_index, r.op, r.threads): r for r in rows}
    lines = [
        f"Targets: 2-thread forward ratio >= {FIRST_LAYER_TARGET:g}x on first-layer "
        f"shapes (C = 1 or 3), >= {OTHER_LAYER_TARGET:g}x on the others; "
        f"fastcnn 2-thread speedup (fwd+bwd-in+bwd-k time, 1 thread / 2 threads) "
        f">= {THREAD_SPEEDUP_TARGET:g}x, of the kernels writing into outputs "
        f"allocated once (out=, as the network runs them; 'alloc' beside it: "
        f"with a new output each call, which adds the first touch of its pages).",
        f"{'#':>2}  {'shape':30}  {'fwd ratio 2t':>12}  {'target':>6}  {'':4}  "
        f"{'all-op ratio 2t':>15}  {'speedup 2t/1t':>13}  {'':4}  {'alloc':>5}  "
        f"noisy rows",
    ]
    measured = sorted({r.case_index for r in rows})
    for index in measured:
        case = CASES[index]
        if not isinstance(case, ConvCase):
            continue
        forward_2t = by_key.get((index, "forward", 2))
        ratio = forward_2t.ratio if forward_2t else None
        target = FIRST_LAYER_TARGET if case.is_first_layer else OTHER_LAYER_TARGET

        def total(threads, field):
            parts = [getattr(by_key.get((index, op, threads)), field, None)
                     for op in CONV_OPS]
            return None if None in parts else sum(parts)

        fc_1t, fc_2t = total(1, "fastcnn_ms"), total(2, "fastcnn_ms")
        out_1t, out_2t = total(1, "fastcnn_out_ms"), total(2, "fastcnn_out_ms")
        torch_2t = total(2, "torch_ms")
        alloc_speedup = fc_1t / fc_2t if fc_1t and fc_2t else None
        speedup = out_1t / out_2t if out_1t and out_2t else None
        all_ratio = torch_2t / fc_2t if torch_2t and fc_2t else None
        lines.append(
            f"{index:>2}  {case.label:30}  {format_number(ratio, 2):>12}  "
            f"{'>=' + format(target, 'g'):>6}  {verdict(ratio, target):4}  "
            f"{format_number(all_ratio, 2):>15}  {format_number(speedup, 2):>13}  "
            f"{verdict(speedup, THREAD_SPEEDUP_TARGET):4}  "
            f"{format_number(alloc_speedup, 2):>5}  "
            f"{sum(r.spread >= NOISY_SPREAD for r in rows if r.case_index == index)}")
    noisy = sorted({r.case_index for r in rows if r.spread >= NOISY_SPREAD})
    if noisy:
        lines.append(
            f"Rows with iqr% >= {100 * NOISY_SPREAD:.0f} were probably disturbed by "
            f"another process; rerun with --shapes {' '.join(map(str, noisy))}.")
    return lines


def write_csv(path, rows):
    fields = ["case_index", "shape", "op", "threads", "flops", "fastcnn_ms",
              "fastcnn_out_ms",
              "fastcnn_gflops", "torch_ms", "torch_gflops", "ratio", "repeats",
              "spread", "warning"]
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([getattr(row, field) for field in fields])


# --------------------------------------------------------------------- main

def parse_args(argv=None):
    shape_list = "\n".join(f"  {i}: {case.label}" for i, case in enumerate(CASES))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="shapes (N x C x H x W, F filters, kernel K, padding p, stride s):\n"
               + shape_list,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, nargs="+", metavar="INDEX",
                        choices=range(len(CASES)), default=list(range(len(CASES))),
                        help="indices of the shapes to run (default: all)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="fixed number of timed repeats per measurement "
                             "(default: enough for ~0.3 s, at least 3)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (~0.05 s per measurement) and a "
                             "smaller matmul")
    parser.add_argument("--no-torch", action="store_true",
                        help="time fastcnn alone even if torch is installed")
    parser.add_argument("--matmul-n", type=int, default=None,
                        help="matrix size of the numpy matmul limit "
                             "(default 4096, 2048 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", metavar="PATH", help="also write the rows as CSV")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if min(args.threads) < 1:
        parser.error("--threads must be positive")
    return args


def print_header(fc_kernels, torch_backend, peak_gflops, matmul_n, load_before):
    command = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OMP_", "OPENBLAS_", "MKL_", "GOMP_"))}
    print("fastcnn kernel benchmark")
    print(f"date:     {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}")
    print(f"command:  {command}")
    print(f"cpu:      {cpu_model()}")
    print(f"cores:    {core_count()}")
    print(f"python:   {platform.python_version()}, numpy {np.__version__}, "
          f"BLAS {blas_description()}")
    print(f"openmp:   {openmp_description()}")
    print(f"env:      {' '.join(f'{k}={v}' for k, v in sorted(env.items())) or '-'}")
    print(f"fastcnn:  git {git_revision()}, gemm kernel "
          f"{fc_kernels.gemm_kernel_name()!r}")
    print(f"torch:    {torch_backend.description if torch_backend else 'not used'}")
    for threads, gflops in peak_gflops.items():
        print(f"limit:    numpy float32 matmul n={matmul_n}, {threads} thread(s): "
              f"{gflops:.1f} GFLOP/s (the BLAS's own SIMD: see its architecture)")
    print(f"load:     {load_before} (1, 5, 15 min) before the run")
    print("ms = median time per call; ratio = torch ms / fastcnn ms (> 1: fastcnn "
          "faster); %peak = fastcnn GFLOP/s / matmul GFLOP/s at the same threads;\n"
          "fastcnn ms, GFLOP/s and ratio: a new output each call, as torch's calls "
          "make; out= ms: fastcnn writing into outputs allocated once;\n"
          "reps = timed calls of each library; iqr% = interquartile range / median "
          "(the noisier library), a noise gauge")
    print()


def main(argv=None):
    args = parse_args(argv)
    load_before = load_average()
    fc, fc_kernels = import_fastcnn()
    torch_backend = None if args.no_torch else import_torch()
    timing = Timing(repeats=args.repeats, seconds=0.05 if args.quick else 0.3)
    matmul_n = args.matmul_n or (2048 if args.quick else 4096)
    peak_gflops = {t: matmul_gflops(matmul_n, t) for t in args.threads}
    print_header(fc_kernels, torch_backend, peak_gflops, matmul_n, load_before)

    rng = np.random.default_rng(args.seed)
    rows = []
    print(table_header())
    for index in args.shapes:
        case = CASES[index]
        ops = build_ops(case, fc, torch_backend, rng)
        for threads in args.threads:
            if torch_backend:
                torch_backend.set_threads(threads)
            for op in ops:
                fc_ms, torch_ms, repeats, spread, problem, out_ms = measure(
                    op, threads, timing)
                row = Row(index, case.label, op.name, threads, op.flops, fc_ms,
                          torch_ms, repeats, spread, problem, out_ms)
                rows.append(row)
                print(format_row(row, peak_gflops), flush=True)
                if problem:
                    print(f"WARNING: #{index} {op.name} at {threads} thread(s): "
                          f"fastcnn and PyTorch disagree: {problem}", flush=True)

    print()
    print("Summary")
    for line in summary_lines(rows):
        print(line)
    print(f"Load average after the run: {load_average()} (other processes "
          "running at the same time make the figures noisier).")
    warnings = sum(row.warning is not None for row in rows)
    if torch_backend:
        print(f"Checked against PyTorch (rtol {CHECK_RTOL:g}, atol {CHECK_RTOL:g} "
              f"x max|PyTorch|): {warnings} disagreement(s).")
    if args.csv:
        write_csv(args.csv, rows)
        print(f"Rows written to {args.csv}")


if __name__ == "__main__":
    main()
