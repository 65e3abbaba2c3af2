"""Shared test cases, fixtures and references for the fastcnn tests.

The references here are written with NumPy and SciPy only, never with
fastcnn, so that every kernel is checked against an independent
implementation of the definition in ``fastcnn.functional``::

    y[n, f, i, j] = b[f] + sum_{c, a, b} w[f, c, a, b] x[n, c, i*sh + a - ph, j*sw + b - pw]

They are written once for any number of spatial axes: a 1-D case is the same
code with one spatial axis instead of two. They compute in float64 whatever
the input dtype, so a float32 kernel is compared with the exact-ish answer.

The tests run with ``--import-mode=importlib``, where a test module cannot
import this file; everything shared is therefore handed out by fixtures
(``ref``, ``assert_close``, ``make_kernel_call``, ...) or by the
parametrisations in :func:`pytest_generate_tests`.
"""
import ctypes
import dataclasses
import itertools
import mmap
import sys
import types
import zlib

import numpy as np
import pytest
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view

import fastcnn.functional as fcf
from fastcnn._kernels import correlation as correlation_kernels

FLOAT_DTYPES = (np.float32, np.float64)

# Largest rounding error allowed, relative to the magnitude of the sum that
# produced a value (see assert_close). Sums in these tests have at most a few
# hundred terms, whose worst-case error bound is depth * eps: 5e-5 covers
# float32 at depth ~800, and 1e-12 float64 with a wide margin. An indexing
# bug moves a value by about one term, far above either.
RTOL = {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-12}


# ===================================================== fastcnn by dimension

#: The public functions of fastcnn.functional, by number of spatial axes.
FUNCTIONS = {
    1: types.SimpleNamespace(
        correlate=fcf.correlate1d,
        backward=fcf.correlate1d_backward,
        backward_input=fcf.correlate1d_backward_input,
        backward_kernel=fcf.correlate1d_backward_kernel,
        max_pool=fcf.max_pool1d,
        max_pool_backward=fcf.max_pool1d_backward,
        avg_pool=fcf.avg_pool1d,
        avg_pool_backward=fcf.avg_pool1d_backward,
    ),
    2: types.SimpleNamespace(
        correlate=fcf.correlate2d,
        backward=fcf.correlate2d_backward,
        backward_input=fcf.correlate2d_backward_input,
        backward_kernel=fcf.correlate2d_backward_kernel,
        backward_input_mirrored=fcf.correlate2d_backward_input_mirrored,
        max_pool=fcf.max_pool2d,
        max_pool_backward=fcf.max_pool2d_backward,
        avg_pool=fcf.avg_pool2d,
        avg_pool_backward=fcf.avg_pool2d_backward,
    ),
}


def _axis_arg(values):
    """A per-axis parameter as the caller would write it: a plain int when
    all axes agree (so both accepted forms get exercised), else the tuple."""
    return values[0] if len(set(values)) == 1 else values


def _axes_id(values):
    return "x".join(map(str, values))


# ============================================================== test cases

@dataclasses.dataclass(frozen=True)
class ConvCase:
    """Geometry of one correlation: batch n, channels c, filters f, and per
    spatial axis the input size, kernel size, stride and padding."""
    n: int
    c: int
    f: int
    spatial: tuple
    kernel: tuple
    stride: tuple
    padding: tuple

    def __post_init__(self):
        for k, s, p in zip(self.kernel, self.spatial, self.padding):
            assert k <= s + 2 * p, f"invalid test case {self}"

    def __str__(self):
        return (f"{self.ndim}d-n{self.n}c{self.c}f{self.f}-in{_axes_id(self.spatial)}"
                f"-k{_axes_id(self.kernel)}-s{_axes_id(self.stride)}"
                f"-p{_axes_id(self.padding)}")

    @property
    def ndim(self):
        return len(self.spatial)

    @property
    def functions(self):
        """The fastcnn functions for this case's number of spatial axes."""
        return FUNCTIONS[self.ndim]

    @property
    def x_shape(self):
        return (self.n, self.c) + self.spatial

    @property
    def w_shape(self):
        return (self.f, self.c) + self.kernel

    @property
    def y_shape(self):
        return (self.n, self.f) + _output_spatial(self.spatial, self.kernel,
                                                  self.stride, self.padding)

    @property
    def geometry(self):
        """stride= and padding= keywords for the fastcnn calls."""
        return {"stride": _axis_arg(self.stride), "padding": _axis_arg(self.padding)}

    def with_batch(self, n):
        return dataclasses.replace(self, n=n)

    def random_inputs(self, rng, dtype):
        """x, w, bias and an output gradient grad_y, standard normal."""
        def normal(shape):
            return rng.standard_normal(shape).astype(dtype)
        return (normal(self.x_shape), normal(self.w_shape), normal(self.f),
                normal(self.y_shape))


@dataclasses.dataclass(frozen=True)
class PoolCase:
    """Geometry of one pooling: batch n, channels c, and per spatial axis the
    input size, window size and stride (None: the window size)."""
    n: int
    c: int
    spatial: tuple
    size: tuple
    stride: tuple = None

    def __post_init__(self):
        assert all(k <= s for k, s in zip(self.size, self.spatial)), self

    def __str__(self):
        stride = "default" if self.stride is None else _axes_id(self.stride)
        return (f"{self.ndim}d-n{self.n}c{self.c}-in{_axes_id(self.spatial)}"
                f"-k{_axes_id(self.size)}-s{stride}")

    @property
    def ndim(self):
        return len(self.spatial)

    @property
    def functions(self):
        return FUNCTIONS[self.ndim]

    @property
    def x_shape(self):
        return (self.n, self.c) + self.spatial

    @property
    def effective_stride(self):
        return self.size if self.stride is None else self.stride

    @property
    def y_shape(self):
        no_padding = (0,) * self.ndim
        return (self.n, self.c) + _output_spatial(self.spatial, self.size,
                                                  self.effective_stride, no_padding)

    @property
    def geometry(self):
        """size= and stride= keywords for the fastcnn calls."""
        stride = None if self.stride is None else _axis_arg(self.stride)
        return {"size": _axis_arg(self.size), "stride": stride}

    def with_batch(self, n):
        return dataclasses.replace(self, n=n)

    def random_input(self, rng, dtype):
        return rng.standard_normal(self.x_shape).astype(dtype)

    def distinct_input(self, rng, dtype):
        """Values at least 0.25 apart: no ties, and a finite-difference step
        never changes which element is a window's maximum."""
        size = int(np.prod(self.x_shape))
        return (rng.permutation(size).reshape(self.x_shape) * 0.25 - size / 8).astype(dtype)


def _random_conv_cases(rng, ndim, count, max_size):
    """Random small geometries: kernels 1-4, strides 1-3 and padding 0-2 per
    axis independently (so often different per axis), batch 1-3,
    channels 1-4, filters 1-5."""
    cases = []
    for _ in range(count):
        kernel = tuple(int(k) for k in rng.integers(1, 5, ndim))
        stride = tuple(int(s) for s in rng.integers(1, 4, ndim))
        padding = tuple(int(p) for p in rng.integers(0, 3, ndim))
        spatial = tuple(int(rng.integers(max(1, k - 2 * p), max_size + 1))
                        for k, p in zip(kernel, padding))
        cases.append(ConvCase(n=int(rng.integers(1, 4)), c=int(rng.integers(1, 5)),
                              f=int(rng.integers(1, 6)), spatial=spatial,
                              kernel=kernel, stride=stride, padding=padding))
    return cases


def _random_pool_cases(rng, ndim, count, max_size):
    cases = []
    for _ in range(count):
        size = tuple(int(k) for k in rng.integers(1, 5, ndim))
        spatial = tuple(int(rng.integers(k, max_size + 1)) for k in size)
        stride = (None if rng.random() < 0.3
                  else tuple(int(s) for s in rng.integers(1, 4, ndim)))
        cases.append(PoolCase(n=int(rng.integers(1, 4)), c=int(rng.integers(1, 4)),
                              spatial=spatial, size=size, stride=stride))
    return cases


_case_rng = np.random.default_rng(20240611)

CONV2D_EDGE_CASES = [
    # kernel equals the padded input: a 1x1 output
    ConvCase(2, 3, 2, spatial=(5, 4), kernel=(7, 6), stride=(1, 1), padding=(1, 1)),
    # kernel equals the input, batch 1, one channel, one filter
    ConvCase(1, 1, 1, spatial=(3, 5), kernel=(3, 5), stride=(1, 1), padding=(0, 0)),
    # a 1x1 image under a 3x3 kernel that reads mostly padding
    ConvCase(1, 1, 1, spatial=(1, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(1, 1, 1, spatial=(1, 1), kernel=(1, 1), stride=(1, 1), padding=(0, 0)),
    # strides larger than the kernel: some inputs are never read
    ConvCase(2, 2, 3, spatial=(9, 10), kernel=(2, 1), stride=(3, 4), padding=(0, 0)),
    # padding larger than kernel - 1: some windows lie entirely in the padding
    ConvCase(2, 2, 2, spatial=(4, 5), kernel=(2, 3), stride=(1, 2), padding=(3, 4)),
    # 1x1 kernel, strided and padded
    ConvCase(2, 3, 4, spatial=(6, 7), kernel=(1, 1), stride=(2, 2), padding=(1, 1)),
    # strides that do not divide the padded input evenly, asymmetric padding
    ConvCase(1, 2, 3, spatial=(8, 7), kernel=(3, 3), stride=(3, 2), padding=(1, 0)),
    ConvCase(3, 2, 1, spatial=(5, 9), kernel=(2, 4), stride=(1, 3), padding=(2, 0)),
    # GEMM edges: 11 filters (not a multiple of the 8-row panels), 80 output
    # positions (not a multiple of the 16/32-column panels), depth
    # C*KH*KW = 144 beyond the float64 depth block (128)
    ConvCase(2, 9, 11, spatial=(13, 11), kernel=(4, 4), stride=(1, 1), padding=(0, 0)),
    # depth 272, beyond the float32 depth block (256)
    ConvCase(2, 17, 3, spatial=(6, 5), kernel=(4, 4), stride=(1, 1), padding=(0, 0)),
    # 306 output positions: the kernel gradient's product depth beyond 256
    ConvCase(2, 2, 9, spatial=(20, 19), kernel=(3, 3), stride=(1, 1), padding=(0, 0)),
    # Around the switch of backward_input to the mirrored correlation (8 or
    # more channels, stride 1, padding <= kernel - 1), on both sides of it:
    ConvCase(2, 8, 3, spatial=(7, 6), kernel=(3, 2), stride=(1, 1), padding=(2, 1)),
    ConvCase(2, 8, 5, spatial=(6, 7), kernel=(3, 3), stride=(1, 1), padding=(1, 0)),
    ConvCase(2, 12, 4, spatial=(5, 6), kernel=(1, 1), stride=(1, 1), padding=(0, 0)),
    ConvCase(2, 20, 10, spatial=(6, 7), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(2, 7, 3, spatial=(6, 6), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(1, 8, 2, spatial=(5, 5), kernel=(2, 3), stride=(1, 1), padding=(2, 1)),
    ConvCase(2, 8, 3, spatial=(6, 7), kernel=(3, 3), stride=(1, 2), padding=(1, 1)),
]

CONV1D_EDGE_CASES = [
    ConvCase(2, 3, 2, spatial=(5,), kernel=(9,), stride=(1,), padding=(2,)),
    ConvCase(1, 1, 1, spatial=(1,), kernel=(1,), stride=(1,), padding=(0,)),
    ConvCase(2, 2, 3, spatial=(13,), kernel=(2,), stride=(5,), padding=(0,)),
    ConvCase(2, 2, 2, spatial=(4,), kernel=(2,), stride=(2,), padding=(4,)),
    # depth C*K = 280 beyond both depth blocks; 300 output positions
    ConvCase(2, 40, 9, spatial=(306,), kernel=(7,), stride=(1,), padding=(0,)),
    # either side of the switch to the mirrored correlation (see 2-D)
    ConvCase(2, 10, 3, spatial=(15,), kernel=(5,), stride=(1,), padding=(4,)),
    ConvCase(2, 10, 3, spatial=(15,), kernel=(5,), stride=(1,), padding=(5,)),
]

CONV2D_CASES = _random_conv_cases(_case_rng, 2, 24, max_size=9) + CONV2D_EDGE_CASES
CONV1D_CASES = _random_conv_cases(_case_rng, 1, 12, max_size=20) + CONV1D_EDGE_CASES

# Tiny cases for finite differences, whose cost grows with the input size.
TINY_CONV_CASES = [
    ConvCase(2, 2, 3, spatial=(5, 4), kernel=(2, 3), stride=(1, 1), padding=(0, 0)),
    ConvCase(1, 3, 2, spatial=(6, 5), kernel=(3, 2), stride=(2, 3), padding=(1, 2)),
    # stride larger than the kernel, padding larger than kernel - 1
    ConvCase(2, 1, 1, spatial=(4, 4), kernel=(2, 2), stride=(3, 1), padding=(2, 0)),
    ConvCase(2, 2, 2, spatial=(7,), kernel=(3,), stride=(2,), padding=(1,)),
    ConvCase(1, 2, 3, spatial=(6,), kernel=(2,), stride=(3,), padding=(2,)),
]

POOL2D_EDGE_CASES = [
    PoolCase(2, 2, spatial=(5, 4), size=(5, 4)),                   # 1x1 output
    PoolCase(1, 1, spatial=(1, 1), size=(1, 1)),
    PoolCase(2, 3, spatial=(6, 7), size=(3, 3), stride=(1, 1)),    # overlapping
    PoolCase(1, 2, spatial=(9, 8), size=(2, 4), stride=(1, 3)),    # non-square
    PoolCase(2, 1, spatial=(9, 10), size=(2, 1), stride=(3, 4)),   # stride > size
    PoolCase(1, 2, spatial=(7, 5), size=(2, 2)),                   # remainder unused
]

POOL1D_EDGE_CASES = [
    PoolCase(2, 2, spatial=(7,), size=(7,)),
    PoolCase(2, 3, spatial=(9,), size=(3,), stride=(1,)),
    PoolCase(1, 1, spatial=(10,), size=(2,), stride=(3,)),
]

POOL2D_CASES = _random_pool_cases(_case_rng, 2, 16, max_size=9) + POOL2D_EDGE_CASES
POOL1D_CASES = _random_pool_cases(_case_rng, 1, 8, max_size=16) + POOL1D_EDGE_CASES

TINY_POOL_CASES = [
    PoolCase(2, 2, spatial=(5, 4), size=(2, 2)),
    PoolCase(1, 2, spatial=(5, 6), size=(3, 2), stride=(1, 2)),    # overlapping
    PoolCase(2, 1, spatial=(6, 5), size=(2, 3), stride=(3, 1)),
    PoolCase(2, 2, spatial=(9,), size=(3,), stride=(2,)),
]

# ================================================ one call of every kernel

CORRELATION_KERNEL_NAMES = [
    "correlate2d", "correlate2d_backward", "correlate2d_backward_input",
    "correlate2d_backward_kernel", "correlate2d_backward_input_mirrored",
    "correlate1d", "correlate1d_backward", "correlate1d_backward_input",
    "correlate1d_backward_kernel",
]
POOLING_KERNEL_NAMES = [
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward",
]
KERNEL_NAMES = CORRELATION_KERNEL_NAMES + POOLING_KERNEL_NAMES


@dataclasses.dataclass
class KernelCall:
    """A public function with its positional arguments (arrays and shapes)
    and keywords, ready to be called, possibly with extra keywords."""
    function: object
    args: list
    kwargs: dict

    def __call__(self, **extra):
        result = self.function(*self.args, **self.kwargs, **extra)
        return result if isinstance(result, tuple) else (result,)

    def with_args(self, args):
        return KernelCall(self.function, list(args), self.kwargs)


# Correlation geometries, by name, that between them take every path of the
# kernels: patch gathering (stride > 1) or patches read in place (stride 1);
# the transposed product or the mirrored correlation (8+ channels, stride 1,
# padding <= kernel - 1) for the input gradient; padded or unpadded samples.
CORRELATION_GEOMETRIES = {
    "strided-padded": {
        2: ConvCase(1, 3, 5, spatial=(9, 8), kernel=(3, 2), stride=(2, 1), padding=(1, 0)),
        1: ConvCase(1, 3, 4, spatial=(11,), kernel=(3,), stride=(2,), padding=(1,)),
    },
    "unit-stride-padded-8-channels": {
        2: ConvCase(1, 9, 5, spatial=(9, 8), kernel=(3, 2), stride=(1, 1), padding=(1, 1)),
        1: ConvCase(1, 9, 4, spatial=(11,), kernel=(3,), stride=(1,), padding=(2,)),
    },
    "unit-stride-unpadded": {
        2: ConvCase(1, 4, 10, spatial=(7, 9), kernel=(2, 3), stride=(1, 1), padding=(0, 0)),
        1: ConvCase(1, 4, 10, spatial=(13,), kernel=(4,), stride=(1,), padding=(0,)),
    },
}


def make_kernel_call(name, rng, dtype=np.float64, batch=3, geometry="strided-padded"):
    """A call of the public function ``name`` on random data.

    ``geometry`` names one of CORRELATION_GEOMETRIES; pooling has overlapping
    windows at strides differing per axis.
    """
    ndim = 1 if "1d" in name else 2
    conv = CORRELATION_GEOMETRIES[geometry][ndim].with_batch(batch)
    if ndim == 2:
        pool = PoolCase(batch, 3, spatial=(9, 8), size=(3, 2), stride=(2, 1))
    else:
        pool = PoolCase(batch, 3, spatial=(11,), size=(3,), stride=(2,))
    x, w, bias, grad_y = conv.random_inputs(rng, dtype)
    pooled_x = pool.random_input(rng, dtype)
    pooled_grad = rng.standard_normal(pool.y_shape).astype(dtype)
    argmax = max_pool_ref(pooled_x, pool.size, pool.stride)[1].astype(np.int32)
    operation = name.replace("2d", "").replace("1d", "")
    calls = {
        "correlate": ([x, w, bias], conv.geometry),
        "correlate_backward": ([x, w, grad_y], conv.geometry),
        "correlate_backward_input": ([grad_y, w, conv.x_shape], conv.geometry),
        "correlate_backward_kernel": ([x, grad_y, conv.w_shape], conv.geometry),
        "correlate_backward_input_mirrored": ([grad_y, w, conv.x_shape], conv.geometry),
        "max_pool": ([pooled_x], pool.geometry),
        "max_pool_backward": ([pooled_grad, argmax, pool.x_shape], {}),
        "avg_pool": ([pooled_x], pool.geometry),
        "avg_pool_backward": ([pooled_grad, pool.x_shape], pool.geometry),
    }
    args, kwargs = calls[operation]
    return KernelCall(getattr(fcf, name), args, kwargs)


# Shapes for the kernel gradient's paths (correlate2d_backward_kernel,
# tests/test_correlation.py).
# Row products (unit column stride): rows of 15, 16, 17 and 33 outputs (a
# masked tail, none, one lane, two full vectors and a tail), filter and
# patch counts that leave partial 4 x 6 tiles, a row stride, and batches of
# several samples per reduction block, summed in groups (small frames) or
# one by one (a frame over 256 KiB). The interleaved product (many filters on
# small outputs, and every column stride): filters over one panel, groups of
# several sizes (the frame's layout changes with the size), strides on both
# axes with kernels wider than the stride.
KERNEL_GRADIENT_CASES = [
    ConvCase(37, 1, 7, spatial=(6, 17), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(35, 2, 5, spatial=(5, 16), kernel=(2, 1), stride=(2, 1), padding=(0, 0)),
    ConvCase(33, 3, 9, spatial=(4, 35), kernel=(1, 3), stride=(1, 1), padding=(0, 1)),
    ConvCase(20, 1, 1, spatial=(3, 15), kernel=(1, 1), stride=(1, 1), padding=(0, 0)),
    ConvCase(34, 70, 3, spatial=(30, 31), kernel=(2, 2), stride=(1, 1), padding=(1, 1)),
    ConvCase(20, 8, 40, spatial=(6, 5), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(19, 6, 35, spatial=(4, 4), kernel=(3, 3), stride=(1, 1), padding=(0, 0)),
    ConvCase(21, 3, 5, spatial=(7, 9), kernel=(3, 2), stride=(1, 2), padding=(1, 0)),
    ConvCase(50, 4, 33, spatial=(5, 11), kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
]


# Layers of the benchmark networks, at batch 2 or 3: images large enough
# for the forward to read patches in place from the unpadded or padded
# sample, the strided 1-D layers of the MNIST-1D network.
LARGE_CONV_CASES = [
    ConvCase(2, 1, 6, spatial=(28, 28), kernel=(5, 5), stride=(1, 1), padding=(0, 0)),
    ConvCase(3, 6, 16, spatial=(14, 14), kernel=(5, 5), stride=(1, 1), padding=(0, 0)),
    ConvCase(2, 3, 8, spatial=(32, 32), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(2, 9, 4, spatial=(28, 28), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(2, 64, 128, spatial=(16, 16), kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
    ConvCase(3, 25, 25, spatial=(40,), kernel=(3,), stride=(1,), padding=(1,)),
    ConvCase(2, 25, 25, spatial=(19,), kernel=(3,), stride=(2,), padding=(1,)),
    ConvCase(2, 1, 25, spatial=(40,), kernel=(5,), stride=(2,), padding=(1,)),
]

# ================================================================= markers

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "large_memory: arrays of gigabytes, up to about 6 GB resident and a "
        "minute on two cores (tests/test_large_tensors.py); each test skips "
        "when /proc/meminfo shows too little memory available. Deselect with "
        "-m 'not large_memory'.")


# ========================================================= parametrisation

_PARAMETRISATIONS = {
    "conv_case": CONV2D_CASES + CONV1D_CASES,
    "conv2d_case": CONV2D_CASES,
    "tiny_conv_case": TINY_CONV_CASES,
    "kernel_gradient_case": KERNEL_GRADIENT_CASES,
    "bounds_conv_case": CONV2D_CASES + CONV1D_CASES + KERNEL_GRADIENT_CASES
                        + LARGE_CONV_CASES,
    "pool_case": POOL2D_CASES + POOL1D_CASES,
    "tiny_pool_case": TINY_POOL_CASES,
    "kernel_name": KERNEL_NAMES,
    "correlation_kernel_name": CORRELATION_KERNEL_NAMES,
    "pooling_kernel_name": POOLING_KERNEL_NAMES,
    "correlation_geometry": list(CORRELATION_GEOMETRIES),
}


def pytest_generate_tests(metafunc):
    for argument, values in _PARAMETRISATIONS.items():
        if argument in metafunc.fixturenames:
            metafunc.parametrize(argument, values, ids=str)


# ================================================================ fixtures

@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, yet different
    data in every test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=["generic", "avx512"])
def gemm_kernel(request):
    """Runs the test under each matrix-product micro-kernel; restores the
    default (AVX-512 when available) afterwards. Without AVX-512 the
    'avx512' run would repeat the 'generic' one, so it is skipped."""
    active = correlation_kernels.select_gemm_kernel(request.param == "avx512")
    try:
        if active != request.param:
            pytest.skip(f"no {request.param} micro-kernel on this CPU "
                        f"(got {active!r}); the run would be a duplicate")
        yield active
    finally:
        correlation_kernels.select_gemm_kernel(True)


@pytest.fixture(scope="session")
def ref():
    """The NumPy and SciPy references of this module, by operation name."""
    return types.SimpleNamespace(
        correlate=correlate_ref,
        correlate_backward_input=correlate_backward_input_ref,
        correlate_backward_kernel=correlate_backward_kernel_ref,
        correlate_scipy=correlate_scipy,
        correlate_backward_input_scipy=correlate_backward_input_scipy,
        correlate_backward_kernel_scipy=correlate_backward_kernel_scipy,
        max_pool=max_pool_ref,
        max_pool_backward=max_pool_backward_ref,
        avg_pool=avg_pool_ref,
        avg_pool_backward=avg_pool_backward_ref,
    )


@pytest.fixture(scope="session", name="assert_close")
def assert_close_fixture():
    return assert_close


def central_differences(loss, array, step):
    """Central differences of ``loss()`` with respect to every element of
    ``array``, which is perturbed in place and restored."""
    gradient = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + step
        above = loss()
        array[index] = original - step
        below = loss()
        array[index] = original
        gradient[index] = (above - below) / (2 * step)
    return gradient


@pytest.fixture(scope="session", name="central_differences")
def central_differences_fixture():
    """central_differences(loss, array, step): the finite-difference gradient."""
    return central_differences


@pytest.fixture(name="make_kernel_call")
def make_kernel_call_fixture(rng):
    """make_kernel_call(name, dtype, batch, geometry) with the test's rng."""
    def make(name, dtype=np.float64, batch=3, geometry="strided-padded"):
        return make_kernel_call(name, rng, dtype, batch, geometry)
    return make


def guarded_copy(array, side):
    """A copy of ``array`` in memory of its own that ends exactly where a
    page that cannot be read or written begins (side="end"), or begins
    right after such a page (side="start"): a kernel that reads or writes
    past that end crashes instead of silently touching other memory."""
    page = mmap.PAGESIZE
    pages = max(1, -(-array.nbytes // page))
    memory = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof((ctypes.c_char * len(memory)).from_buffer(memory))
    guard, offset = ((base + pages * page, pages * page - array.nbytes)
                     if side == "end" else (base, page))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prot_none = 0   # PROT_NONE on every POSIX system
    if libc.mprotect(guard, page, prot_none):
        raise OSError(ctypes.get_errno(), "mprotect failed")
    copy = np.frombuffer(memory, dtype=array.dtype, count=array.size,
                         offset=offset).reshape(array.shape)
    copy[...] = array
    return copy


@pytest.fixture(scope="session", name="guarded_copy")
def guarded_copy_fixture():
    """guarded_copy(array, side), on systems with mprotect."""
    if sys.platform == "win32":
        pytest.skip("guard pages need mprotect (POSIX)")
    return guarded_copy


# =============================================================== assertion

def assert_close(actual, expected, scale=None):
    """``|actual - expected| <= rtol * scale`` element by element, with rtol
    from RTOL for actual's dtype.

    ``scale`` is the magnitude of the sum behind each value, typically the
    reference evaluated on the absolute values of the inputs: it bounds the
    rounding error of any summation order, so the check is tight where
    there is no cancellation yet does not flake where there is. Default:
    ``|expected|``. NaN is never close to anything.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"shape {actual.shape}, expected {expected.shape}")
    rtol = RTOL[actual.dtype]
    scale = np.abs(expected) if scale is None else np.asarray(scale, np.float64)
    # tiny: an exact zero must come out as (practically) zero
    tolerance = rtol * scale + np.finfo(actual.dtype).tiny
    error = np.abs(actual.astype(np.float64) - expected)
    good = error <= tolerance
    if not good.all():
        bad = np.argwhere(~good)
        first = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {actual.size} elements differ beyond rtol={rtol}; "
            f"first at {first}: got {actual[first]!r}, expected {expected[first]!r} "
            f"(scale {np.broadcast_to(scale, actual.shape)[first]:.3g}); "
            f"largest error {np.nanmax(np.where(good, 0, error)):.3g}")


# ===================================================== NumPy references

def _per_axis(value, ndim):
    return (value,) * ndim if np.isscalar(value) else tuple(value)


def _output_spatial(spatial, kernel, stride, padding):
    return tuple((s - k + 2 * p) // st + 1
                 for s, k, st, p in zip(spatial, kernel, stride, padding))


def _window_view(offset, stride, out):
    """Index of the inputs that kernel offset ``offset`` meets, over all
    output positions: offset, offset + stride, ... (out of them), per axis."""
    return (slice(None), slice(None)) + tuple(
        slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, stride, out))


def _pad(x, padding):
    return np.pad(np.asarray(x, np.float64),
                  [(0, 0), (0, 0)] + [(p, p) for p in padding])


def correlate_ref(x, w, bias=None, stride=1, padding=0):
    """The forward correlation, one kernel offset at a time: for each offset,
    the strided slice of the zero-padded input it meets, contracted with that
    offset's weights over the channels."""
    ndim = x.ndim - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    w = np.asarray(w, np.float64)
    x_padded = _pad(x, padding)
    out = _output_spatial(x.shape[2:], w.shape[2:], stride, padding)
    y = np.zeros((x.shape[0], w.shape[0]) + out)
    for offset in np.ndindex(w.shape[2:]):
        y += np.einsum("nc...,fc->nf...", x_padded[_window_view(offset, stride, out)],
                       w[(slice(None), slice(None)) + offset])
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * ndim)
    return y


def correlate_backward_input_ref(grad_y, w, x_shape, stride=1, padding=0):
    """grad_x by scattering: each offset's weights times grad_y, added to the
    padded input positions that offset read, then the padding cropped off."""
    ndim = len(x_shape) - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    w = np.asarray(w, np.float64)
    out = grad_y.shape[2:]
    padded = np.zeros(tuple(x_shape[:2]) + tuple(
        s + 2 * p for s, p in zip(x_shape[2:], padding)))
    for offset in np.ndindex(w.shape[2:]):
        padded[_window_view(offset, stride, out)] += np.einsum(
            "nf...,fc->nc...", np.asarray(grad_y, np.float64),
            w[(slice(None), slice(None)) + offset])
    crop = tuple(slice(p, p + s) for p, s in zip(padding, x_shape[2:]))
    return padded[(slice(None), slice(None)) + crop]


def correlate_backward_kernel_ref(x, grad_y, w_shape, stride=1, padding=0):
    """(grad_w, grad_b): for each offset, grad_y contracted with the slice of
    the padded input that offset read, over samples and positions."""
    ndim = x.ndim - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    grad_y = np.asarray(grad_y, np.float64)
    x_padded = _pad(x, padding)
    out = grad_y.shape[2:]
    grad_w = np.zeros(w_shape)
    for offset in np.ndindex(tuple(w_shape[2:])):
        patches = x_padded[_window_view(offset, stride, out)]
        grad_w[(slice(None), slice(None)) + offset] = np.einsum(
            "nfp,ncp->fc", grad_y.reshape(grad_y.shape[:2] + (-1,)),
            patches.reshape(patches.shape[:2] + (-1,)))
    grad_b = grad_y.sum(axis=(0,) + tuple(range(2, 2 + ndim)))
    return grad_w, grad_b


def _pool_windows(x, size, stride):
    """Every pooling window of x, flattened: shape (N, C, *out, prod(size))."""
    ndim = x.ndim - 2
    spatial_axes = tuple(range(2, 2 + ndim))
    windows = sliding_window_view(x, size, axis=spatial_axes)
    windows = windows[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
    return windows.reshape(windows.shape[:2 + ndim] + (-1,))


def max_pool_ref(x, size, stride=None):
    """(y, argmax) with argmax the row-major index within the input plane of
    each window's first maximum, or of its first NaN if it has one."""
    ndim = x.ndim - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    windows = _pool_windows(np.asarray(x), size, stride)
    is_nan = np.isnan(windows)
    local = np.where(is_nan.any(axis=-1), np.argmax(is_nan, axis=-1),
                     np.argmax(np.where(is_nan, -np.inf, windows), axis=-1))
    y = np.take_along_axis(windows, local[..., None], axis=-1)[..., 0]
    # window position (per axis) * stride + offset within the window
    offsets = np.unravel_index(local, size)
    out = windows.shape[2:2 + ndim]
    coords = tuple(
        np.arange(n).reshape((1, 1) + tuple(-1 if a == d else 1 for a in range(ndim))) * s + o
        for d, (n, s, o) in enumerate(zip(out, stride, offsets)))
    argmax = np.ravel_multi_index(np.broadcast_arrays(*coords), x.shape[2:])
    return y, argmax


def max_pool_backward_ref(grad_y, argmax, x_shape):
    """Each output gradient added at its argmax in the plane (np.add.at, so
    repeated indices accumulate)."""
    planes = x_shape[0] * x_shape[1]
    grad_x = np.zeros((planes, int(np.prod(x_shape[2:]))))
    plane_index = np.arange(planes)[:, None]
    np.add.at(grad_x, (plane_index, np.asarray(argmax).reshape(planes, -1)),
              np.asarray(grad_y, np.float64).reshape(planes, -1))
    return grad_x.reshape(x_shape)


def avg_pool_ref(x, size, stride=None):
    ndim = x.ndim - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    return _pool_windows(np.asarray(x, np.float64), size, stride).mean(axis=-1)


def avg_pool_backward_ref(grad_y, x_shape, size, stride=None):
    """grad_y / window size added to every input of the window, one window
    offset at a time."""
    ndim = len(x_shape) - 2
    size = _per_axis(size, ndim)
    stride = size if stride is None else _per_axis(stride, ndim)
    grad_x = np.zeros(x_shape)
    share = np.asarray(grad_y, np.float64) / np.prod(size)
    for offset in np.ndindex(size):
        grad_x[_window_view(offset, stride, grad_y.shape[2:])] += share
    return grad_x


# ===================================================== SciPy references

def _dilate(a, stride):
    """``stride - 1`` zeros between the entries of a (per axis)."""
    dilated = np.zeros(tuple((n - 1) * s + 1 for n, s in zip(a.shape, stride)))
    dilated[tuple(slice(None, None, s) for s in stride)] = a
    return dilated


def correlate_scipy(x, w, bias=None, stride=1, padding=0):
    """scipy.signal.correlate in 'valid' mode per (sample, filter, channel),
    summed over channels, on the zero-padded input, subsampled by the stride."""
    ndim = x.ndim - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    x_padded = _pad(x, padding)
    w = np.asarray(w, np.float64)
    subsample = tuple(slice(None, None, s) for s in stride)
    out = _output_spatial(x.shape[2:], w.shape[2:], stride, padding)
    y = np.zeros((x.shape[0], w.shape[0]) + out)
    for n, f in itertools.product(range(x.shape[0]), range(w.shape[0])):
        for c in range(x.shape[1]):
            y[n, f] += scipy.signal.correlate(x_padded[n, c], w[f, c], mode="valid",
                                              method="direct")[subsample]
        if bias is not None:
            y[n, f] += bias[f]
    return y


def correlate_backward_input_scipy(grad_y, w, x_shape, stride=1, padding=0):
    """The textbook identity: grad_x is the full *convolution* (= correlation
    with the 180-degree rotated kernel) of the stride-dilated grad_y with w,
    summed over filters, then cropped by the padding. With stride 1 and no
    padding it is exactly sum_f convolve(grad_y[n, f], w[f, c], 'full')."""
    ndim = len(x_shape) - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    w = np.asarray(w, np.float64)
    padded_shape = tuple(s + 2 * p for s, p in zip(x_shape[2:], padding))
    crop = tuple(slice(p, p + s) for p, s in zip(padding, x_shape[2:]))
    grad_x = np.zeros(x_shape)
    for n, c in itertools.product(range(x_shape[0]), range(x_shape[1])):
        padded = np.zeros(padded_shape)
        for f in range(w.shape[0]):
            full = scipy.signal.convolve(_dilate(grad_y[n, f], stride), w[f, c],
                                         mode="full", method="direct")
            # the full convolution covers the padded input from its start up
            # to the end of the last window (inputs past it get no gradient)
            padded[tuple(slice(0, m) for m in full.shape)] += full
        grad_x[n, c] = padded[crop]
    return grad_x


def correlate_backward_kernel_scipy(x, grad_y, w_shape, stride=1, padding=0):
    """grad_w[f, c] = sum_n correlate(padded x[n, c], dilated grad_y[n, f],
    'valid'), cut to the kernel size; grad_b = sum of grad_y."""
    ndim = x.ndim - 2
    stride, padding = _per_axis(stride, ndim), _per_axis(padding, ndim)
    x_padded = _pad(x, padding)
    kernel = tuple(slice(0, k) for k in w_shape[2:])
    grad_w = np.zeros(w_shape)
    for f, c in itertools.product(range(w_shape[0]), range(w_shape[1])):
        for n in range(x.shape[0]):
            grad_w[f, c] += scipy.signal.correlate(
                x_padded[n, c], _dilate(grad_y[n, f], stride), mode="valid",
                method="direct")[kernel]
    grad_b = np.asarray(grad_y, np.float64).sum(axis=(0,) + tuple(range(2, 2 + ndim)))
    return grad_w, grad_b
