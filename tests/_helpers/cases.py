"""Test geometries of the correlation and pooling kernels (ConvCase,
PoolCase) and the lists of them the tests are parametrised over."""
import dataclasses
import types

import numpy as np

import fastcnn.functional as fcf
from _helpers.references import output_spatial

FLOAT_DTYPES = (np.float32, np.float64)

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
    if isinstance(values[0], tuple):   # a (before, after) pair stays per axis
        return values
    return values[0] if len(set(values)) == 1 else values


def _axes_id(values):
    return "x".join(map(str, values))


# ============================================================== test cases

class _SpatialCase:
    """What correlation and pooling cases share: a batch n of c channels
    over the spatial axes of ``spatial``."""

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


@dataclasses.dataclass(frozen=True)
class ConvCase(_SpatialCase):
    """Geometry of one correlation: batch n, channels c, filters f, and per
    spatial axis the input size, kernel size, stride, padding (an int, or a
    (before, after) pair) and dilation (None: 1 on every axis, and no
    dilation= keyword in the calls)."""
    n: int
    c: int
    f: int
    spatial: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple = None

    def __post_init__(self):
        for k, s, p, d in zip(self.kernel, self.spatial, self.padding, self.dilations):
            padded = s + (sum(p) if isinstance(p, tuple) else 2 * p)
            assert d * (k - 1) + 1 <= padded, f"invalid test case {self}"

    def __str__(self):
        dilation = "" if self.dilation is None else f"-d{_axes_id(self.dilation)}"
        return (f"{self.ndim}d-n{self.n}c{self.c}f{self.f}-in{_axes_id(self.spatial)}"
                f"-k{_axes_id(self.kernel)}-s{_axes_id(self.stride)}"
                f"-p{_axes_id(self.padding)}{dilation}")

    @property
    def dilations(self):
        return (1,) * len(self.spatial) if self.dilation is None else self.dilation

    @property
    def w_shape(self):
        return (self.f, self.c) + self.kernel

    @property
    def y_shape(self):
        return (self.n, self.f) + output_spatial(self.spatial, self.kernel,
                                                  self.stride, self.padding,
                                                  self.dilations)

    @property
    def geometry(self):
        """stride=, padding= (and dilation=) keywords for the fastcnn calls."""
        geometry = {"stride": _axis_arg(self.stride), "padding": _axis_arg(self.padding)}
        if self.dilation is not None:
            geometry["dilation"] = _axis_arg(self.dilation)
        return geometry

    @property
    def ref_geometry(self):
        """(stride, padding, dilation) for the references."""
        return self.stride, self.padding, self.dilations

    def with_batch(self, n):
        return dataclasses.replace(self, n=n)

    def random_inputs(self, rng, dtype):
        """x, w, bias and an output gradient grad_y, standard normal."""
        def normal(shape):
            return rng.standard_normal(shape).astype(dtype)
        return (normal(self.x_shape), normal(self.w_shape), normal(self.f),
                normal(self.y_shape))


@dataclasses.dataclass(frozen=True)
class PoolCase(_SpatialCase):
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
    def effective_stride(self):
        return self.size if self.stride is None else self.stride

    @property
    def y_shape(self):
        no_padding = (0,) * self.ndim
        return (self.n, self.c) + output_spatial(self.spatial, self.size,
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


def _random_dilated_conv_cases(rng, ndim, count, max_size):
    """Random small dilated geometries: kernels 1-5, dilations 1-3, strides
    1-3 and padding 0-3 per axis, a third of the axes padded asymmetrically
    (a (before, after) pair), batch 1-4, channels 1-10 (the mirrored input
    gradient from 8), filters 1-6."""
    cases = []
    for _ in range(count):
        kernel = tuple(int(k) for k in rng.integers(1, 6, ndim))
        dilation = tuple(int(d) for d in rng.integers(1, 4, ndim))
        stride = tuple(int(s) for s in rng.integers(1, 4, ndim))
        padding = tuple((int(rng.integers(0, 4)), int(rng.integers(0, 4)))
                        if rng.random() < 1 / 3 else int(rng.integers(0, 4))
                        for _ in range(ndim))
        spatial = tuple(
            int(rng.integers(max(1, d * (k - 1) + 1 - (sum(p) if isinstance(p, tuple)
                                                         else 2 * p)), max_size + 1))
            for k, d, p in zip(kernel, dilation, padding))
        cases.append(ConvCase(n=int(rng.integers(1, 5)), c=int(rng.integers(1, 11)),
                              f=int(rng.integers(1, 7)), spatial=spatial,
                              kernel=kernel, stride=stride, padding=padding,
                              dilation=dilation))
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

# Dilated correlations, and padding='same' for even kernels (one more zero
# after than before), through every path of the kernels.
DILATED_EDGE_CASES = [
    # 'same' for even kernels at stride 1: (0, 1) and (1, 2) pairs, and a
    # dilation that makes an even kernel's padding symmetric again
    ConvCase(2, 3, 4, spatial=(7, 8), kernel=(2, 4), stride=(1, 1),
             padding=((0, 1), (1, 2)), dilation=(1, 1)),
    ConvCase(2, 3, 4, spatial=(7, 8), kernel=(2, 4), stride=(1, 1),
             padding=(1, (1, 2)), dilation=(2, 1)),
    ConvCase(3, 4, 3, spatial=(20,), kernel=(4,), stride=(1,), padding=((1, 2),),
             dilation=(1,)),
    # the mirrored input gradient (8+ channels, stride 1), dilated
    ConvCase(2, 9, 5, spatial=(9, 10), kernel=(3, 3), stride=(1, 1),
             padding=((2, 3), 2), dilation=(2, 3)),
    ConvCase(2, 16, 4, spatial=(30,), kernel=(3,), stride=(1,), padding=(4,),
             dilation=(4,)),
    # in place forward (large sample, many channels), padded asymmetrically
    ConvCase(2, 64, 64, spatial=(16, 16), kernel=(2, 2), stride=(1, 1),
             padding=((0, 1), (0, 1)), dilation=(1, 1)),
    ConvCase(2, 64, 64, spatial=(16, 16), kernel=(3, 3), stride=(1, 1),
             padding=(2, 2), dilation=(2, 2)),
    # kernel gradient: row products (few filters, long rows, many samples)
    # and the interleaved product (many filters, strided)
    ConvCase(37, 2, 3, spatial=(6, 33), kernel=(3, 3), stride=(1, 1),
             padding=(2, (1, 2)), dilation=(2, 2)),
    ConvCase(40, 4, 33, spatial=(7, 11), kernel=(3, 3), stride=(2, 2),
             padding=(1, 1), dilation=(2, 3)),
    # padding beyond the dilated span: windows of padding only (trimmed)
    ConvCase(2, 2, 3, spatial=(4, 5), kernel=(2, 2), stride=(1, 2),
             padding=((5, 0), 4), dilation=(2, 1)),
    # a dilation larger than the input: windows whose taps skip it
    ConvCase(2, 3, 2, spatial=(2, 3), kernel=(3, 2), stride=(1, 1),
             padding=(3, 2), dilation=(3, 5)),
    # the benchmark's 1-D layer, smaller: kernel 3, dilation 4, 'same'
    ConvCase(3, 8, 8, spatial=(100,), kernel=(3,), stride=(1,), padding=(4,),
             dilation=(4,)),
]

DILATED_CONV_CASES = (_random_dilated_conv_cases(_case_rng, 2, 20, max_size=12)
                      + _random_dilated_conv_cases(_case_rng, 1, 12, max_size=24)
                      + DILATED_EDGE_CASES)

TINY_DILATED_CONV_CASES = [
    ConvCase(2, 2, 2, spatial=(6, 5), kernel=(2, 3), stride=(1, 1),
             padding=((0, 1), 2), dilation=(1, 2)),
    ConvCase(1, 2, 3, spatial=(7, 6), kernel=(3, 2), stride=(2, 1),
             padding=(1, (1, 2)), dilation=(2, 3)),
    ConvCase(2, 9, 2, spatial=(5, 5), kernel=(2, 2), stride=(1, 1),
             padding=((0, 1), (1, 0)), dilation=(2, 2)),
    ConvCase(2, 2, 2, spatial=(9,), kernel=(3,), stride=(2,), padding=((2, 1),),
             dilation=(3,)),
    ConvCase(1, 3, 2, spatial=(8,), kernel=(4,), stride=(1,), padding=((1, 2),),
             dilation=(1,)),
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
