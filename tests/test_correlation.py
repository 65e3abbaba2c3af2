"""Correlation kernels against NumPy and SciPy references.

Every test runs over all the geometries of conftest (random ones and edge
cases, 2-D and 1-D) and under both matrix-product micro-kernels. The
tolerance scale of each comparison is the reference evaluated on absolute
values: the magnitude of the sum behind each output (see assert_close).
"""
import math

import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence
from fastcnn._kernels import correlation as correlation_kernels
from fastcnn._kernels import gemm as gemm_module


def _abs(*arrays):
    return [np.abs(a) for a in arrays]


# ----------------------------------------------------------------- forward

def test_forward_matches_numpy_reference(conv_case, dtype, gemm_kernel, rng, ref,
                                         assert_close):
    x, w, bias, _ = conv_case.random_inputs(rng, dtype)
    y = conv_case.functions.correlate(x, w, bias, **conv_case.geometry)
    assert y.dtype == dtype
    geometry = (conv_case.stride, conv_case.padding)
    assert_close(y, ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(*_abs(x, w, bias), *geometry))


@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((3, 64, 16, 16), (128, 64, 3, 3), 1),   # one sample per frame: in place
    ((64, 6, 14, 14), (16, 6, 5, 5), 0),     # in place at 1 thread, interleaved at 2
    ((20, 64, 14, 14), (64, 64, 3, 3), 1),
    ((3, 64, 12, 10), (128, 64, 3, 3), 2),    # in place, padding KW - 1
    ((2, 48, 9, 13), (96, 48, 5, 5), 1),      # in place, odd width
], ids=str)
def test_forward_paths_chosen_by_cost_match_reference(x_shape, w_shape, padding,
                                                      gemm_kernel, rng, ref, assert_close):
    """The forward reads patches in place or from interleaved samples,
    whichever wastes less (correlation.in_place_is_cheaper); the choice can
    depend on the thread count, the bits never do."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    outputs = [fcf.correlate2d(x, w, bias, padding=padding, n_threads=n)
               for n in (1, 2, 3)]
    for y in outputs[1:]:
        np.testing.assert_array_equal(y, outputs[0])
    geometry = ((1, 1), (padding, padding))
    assert_close(outputs[0], ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(*_abs(x, w, bias), *geometry))


@pytest.mark.parametrize("x_shape, w_shape", [
    ((3, 3, 32, 32), (64, 3, 3, 3)),     # forward frame of one sample; C < 8
    ((3, 32, 32, 32), (32, 32, 3, 3)),   # kernel gradient's frame of one sample
    ((2, 3, 33, 31), (64, 3, 3, 3)),     # odd sizes: panels end mid-row
    ((5, 1, 28, 28), (6, 1, 5, 5)),      # rows of 28 of 32 columns, few filters
], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_frames_of_one_sample_match_reference(x_shape, w_shape, dtype, gemm_kernel,
                                              rng, ref, assert_close):
    """Layers whose scratch per sample passes the frame budget, and
    forwards whose outputs would cost more to copy out of a wider product
    than one product an output row wastes (few filters, rows almost as
    wide as a panel), work one sample at a time: its frame is a plain
    padded copy, the forward's products write y directly, and the kernel
    gradient packs the output gradient a plane row at a time. Every thread
    count gives the same bits."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    geometry = ((1, 1), (1, 1))
    y_ref = ref.correlate(x, w, bias, *geometry)
    grad_y = rng.standard_normal(y_ref.shape).astype(dtype)
    results = [(fcf.correlate2d(x, w, bias, padding=1, n_threads=n),
                fcf.correlate2d_backward_input(grad_y, w, x.shape, padding=1, n_threads=n),
                *fcf.correlate2d_backward_kernel(x, grad_y, w.shape, padding=1,
                                                 n_threads=n))
               for n in (1, 2, 3)]
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_array_equal(a, b)
    y, grad_x, grad_w, grad_b = results[0]
    assert_close(y, y_ref, scale=ref.correlate(*_abs(x, w, bias), *geometry))
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, x.shape, *geometry),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), x.shape, *geometry))
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, w.shape, *geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(*_abs(x, grad_y), w.shape, *geometry)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)
    naive = np.empty_like(y)
    correlation_kernels.correlate2d_forward_naive(x, w, bias, naive, 1, 1, 1, 1)
    assert_close(y, naive, scale=ref.correlate(*_abs(x, w, bias), *geometry))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("padding, stride", [(2, 1), (0, 1), (1, 2)], ids=str)
def test_filters_of_edge_tiles_give_the_bits_of_full_tiles(dtype, padding, stride,
                                                           gemm_kernel, rng):
    """The forward's product has the filters as rows: a layer of 1 to 7
    filters fills part of a micro-tile, which then computes only those rows
    (and the columns of the row's width), in the order of a full tile: the
    bits of each filter's outputs are those of a layer with 8 or 16."""
    x = rng.standard_normal((4, 2, 21, 19)).astype(dtype)
    w = rng.standard_normal((16, 2, 5, 5)).astype(dtype)
    bias = rng.standard_normal(16).astype(dtype)
    full = fcf.correlate2d(x, w, bias, stride=stride, padding=padding, n_threads=1)
    for filters in (1, 2, 5, 6, 7, 8, 9):
        np.testing.assert_array_equal(
            fcf.correlate2d(x, w[:filters], bias[:filters], stride=stride,
                            padding=padding, n_threads=1),
            full[:, :filters])


@pytest.mark.parametrize("x_shape, w_shape", [
    ((3, 3, 32, 32), (64, 3, 3, 3)),     # whole aligned micro-tiles: streamed
    ((2, 3, 33, 31), (40, 3, 3, 3)),     # rows and tiles off the lines: stored
], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "unaligned"])
def test_outputs_written_around_the_caches_match_reference(x_shape, w_shape, dtype,
                                                           offset, gemm_kernel, rng,
                                                           ref, assert_close):
    """Outputs past the last-level cache are written with non-temporal
    stores (gemm's FCNN_STORE_STREAM) where a micro-tile's rows are whole
    cache lines: forced here for every output, into y aligned to 64 bytes
    or not, the bits are those of ordinary stores."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    geometry = ((1, 1), (1, 1))
    y_shape = ref.correlate(x, w, bias, *geometry).shape
    stored = fcf.correlate2d(x, w, bias, padding=1, n_threads=2)
    assert stored.ctypes.data % 64 == 0   # outputs are allocated aligned
    before = gemm_module.set_stream_threshold(0)
    try:
        for n_threads in (1, 2):
            raw = np.full(math.prod(y_shape) + 16, np.nan, dtype)
            start = (-raw.ctypes.data % 64) // raw.itemsize + offset
            y = raw[start:start + math.prod(y_shape)].reshape(y_shape)
            fcf.correlate2d(x, w, bias, padding=1, n_threads=n_threads, out=y)
            np.testing.assert_array_equal(y, stored)
    finally:
        gemm_module.set_stream_threshold(before)
    assert_close(stored, ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(*_abs(x, w, bias), *geometry))


def test_forward_without_bias_matches_scipy(conv_case, gemm_kernel, rng, ref,
                                            assert_close):
    x, w, _, _ = conv_case.random_inputs(rng, np.float64)
    y = conv_case.functions.correlate(x, w, **conv_case.geometry)
    geometry = (conv_case.stride, conv_case.padding)
    assert_close(y, ref.correlate_scipy(x, w, None, *geometry),
                 scale=ref.correlate(*_abs(x, w), None, *geometry))


def test_naive_kernel_matches_numpy_reference(conv2d_case, dtype, rng, ref,
                                              assert_close):
    """The six-loop kernel is itself a reference for the fast kernels."""
    x, w, bias, _ = conv2d_case.random_inputs(rng, dtype)
    y = np.empty(conv2d_case.y_shape, dtype=dtype)
    correlation_kernels.correlate2d_forward_naive(
        x, w, bias, y, *conv2d_case.stride, *conv2d_case.padding)
    geometry = (conv2d_case.stride, conv2d_case.padding)
    assert_close(y, ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(*_abs(x, w, bias), *geometry))


def test_forward_matches_naive_kernel(conv2d_case, dtype, gemm_kernel, rng, ref,
                                      assert_close):
    x, w, bias, _ = conv2d_case.random_inputs(rng, dtype)
    naive = np.empty(conv2d_case.y_shape, dtype=dtype)
    correlation_kernels.correlate2d_forward_naive(
        x, w, bias, naive, *conv2d_case.stride, *conv2d_case.padding)
    y = fcf.correlate2d(x, w, bias, **conv2d_case.geometry)
    # the naive kernel rounds once (to dtype) at the end: allow both roundings
    scale = ref.correlate(*_abs(x, w, bias), conv2d_case.stride, conv2d_case.padding)
    assert_close(y, naive, scale=2 * scale)


# ------------------------------------------------------ backward to input

def test_backward_input_matches_numpy_reference(conv_case, dtype, gemm_kernel, rng,
                                                ref, assert_close):
    _, w, _, grad_y = conv_case.random_inputs(rng, dtype)
    grad_x = conv_case.functions.backward_input(grad_y, w, conv_case.x_shape,
                                                **conv_case.geometry)
    assert grad_x.dtype == dtype
    geometry = (conv_case.x_shape, conv_case.stride, conv_case.padding)
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, *geometry),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), *geometry))


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0),   # LeNet-5's second layer
    ((37, 3, 9, 9), (5, 3, 3, 3), 2, 1),
    ((5, 2, 6, 6), (3, 2, 3, 3), 1, 1),
], ids=str)
def test_backward_input_over_uneven_thread_shares_matches_reference(
        x_shape, w_shape, stride, padding, gemm_kernel, rng, ref, assert_close):
    """Each thread splits its share of the batch into groups that differ by
    one sample at most (correlation.group_start): 64 samples on 3 threads
    are shares of 21 and 22, in groups of two sizes; 5 samples on 4 threads
    leave shares of one sample and none."""
    w = rng.standard_normal(w_shape).astype(np.float32)
    y_shape = (x_shape[0], w_shape[0]) + tuple(
        (s + 2 * padding - k) // stride + 1 for s, k in zip(x_shape[2:], w_shape[2:]))
    grad_y = rng.standard_normal(y_shape).astype(np.float32)
    outputs = [fcf.correlate2d_backward_input(grad_y, w, x_shape, stride, padding,
                                              n_threads=n) for n in (1, 2, 3, 4)]
    for grad_x in outputs[1:]:
        np.testing.assert_array_equal(grad_x, outputs[0])
    geometry = (x_shape, (stride, stride), (padding, padding))
    assert_close(outputs[0], ref.correlate_backward_input(grad_y, w, *geometry),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), *geometry))


def test_backward_input_matches_scipy_full_convolution(conv_case, gemm_kernel, rng,
                                                       ref, assert_close):
    """Backward to the input is a full convolution of the (dilated) output
    gradient with the kernel, i.e. a correlation with the rotated kernel."""
    _, w, _, grad_y = conv_case.random_inputs(rng, np.float64)
    grad_x = conv_case.functions.backward_input(grad_y, w, conv_case.x_shape,
                                                **conv_case.geometry)
    geometry = (conv_case.x_shape, conv_case.stride, conv_case.padding)
    assert_close(grad_x, ref.correlate_backward_input_scipy(grad_y, w, *geometry),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), *geometry))


def test_mirrored_backward_input_matches_numpy_reference(conv2d_case, dtype,
                                                         gemm_kernel, rng, ref,
                                                         assert_close):
    _, w, _, grad_y = conv2d_case.random_inputs(rng, dtype)
    grad_x = fcf.correlate2d_backward_input_mirrored(
        grad_y, w, conv2d_case.x_shape, **conv2d_case.geometry)
    assert grad_x.dtype == dtype
    geometry = (conv2d_case.x_shape, conv2d_case.stride, conv2d_case.padding)
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, *geometry),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), *geometry))


def transposed_product_backward_input(grad_y, w, x_shape, stride, padding,
                                      dilation=None):
    """The W^T grad_y + col2im kernel itself. correlate2d_backward_input
    switches to the mirrored correlation for 8+ channels at stride 1, so the
    public function alone would not reach it there. 1-D shapes run as images
    of height 1, as fastcnn.functional runs them. The kernel takes the
    padding before each axis; grad_y's shape fixes the padding after."""
    def as_image(a):
        return np.ascontiguousarray(a if a.ndim == 4 else a[:, :, np.newaxis, :])
    dilation = (1,) * len(stride) if dilation is None else dilation
    before = tuple(p[0] if isinstance(p, tuple) else p for p in padding)
    if len(x_shape) == 3:
        stride, before, dilation = (1,) + stride, (0,) + before, (1,) + dilation
    grad_x = np.empty(x_shape, dtype=w.dtype)
    correlation_kernels.correlate2d_backward_input(
        as_image(grad_y), as_image(w), as_image(grad_x), *stride, *before,
        *dilation, 2)
    return grad_x


def test_transposed_product_kernel_matches_numpy_reference(conv_case, dtype, gemm_kernel,
                                                           rng, ref, assert_close):
    _, w, _, grad_y = conv_case.random_inputs(rng, dtype)
    geometry = (conv_case.x_shape, conv_case.stride, conv_case.padding)
    grad_x = transposed_product_backward_input(grad_y, w, *geometry)
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, *geometry),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), *geometry))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 2, 1, 5), (8, 5, 3, 3), (6, 9, 2, 4)])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_mirror_kernel_is_numpy_rotation_with_channels_swapped(shape, n_threads, dtype):
    """The backward pass's mirrored kernel: w rotated 180 degrees in its
    spatial axes, filters and channels swapped, copied exactly."""
    w = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    mirrored = np.full((shape[1], shape[0]) + shape[2:], np.nan, dtype=dtype)
    correlation_kernels.mirror_kernel(w.reshape(shape[0], shape[1], -1),
                                      mirrored.reshape(shape[1], shape[0], -1), n_threads)
    np.testing.assert_array_equal(mirrored, np.swapaxes(w[:, :, ::-1, ::-1], 0, 1))


def test_mirrored_backward_input_agrees_with_transposed_product(
        conv2d_case, dtype, gemm_kernel, rng, ref, assert_close):
    """The two ways to the input gradient (dilate + pad + correlate with the
    rotated, channel-swapped kernel; or W^T grad_y + col2im) agree up to
    rounding, and the public correlate2d_backward_input gives the same."""
    _, w, _, grad_y = conv2d_case.random_inputs(rng, dtype)
    geometry = (conv2d_case.x_shape, conv2d_case.stride, conv2d_case.padding)
    transposed = transposed_product_backward_input(grad_y, w, *geometry)
    mirrored = fcf.correlate2d_backward_input_mirrored(
        grad_y, w, conv2d_case.x_shape, **conv2d_case.geometry)
    public = fcf.correlate2d_backward_input(grad_y, w, conv2d_case.x_shape,
                                            **conv2d_case.geometry)
    # each rounds: twice the tolerance of one
    scale = 2 * ref.correlate_backward_input(*_abs(grad_y, w), *geometry)
    assert_close(mirrored, transposed, scale=scale)
    assert_close(public, transposed, scale=scale)


# ----------------------------------------------------- backward to kernel

def test_backward_kernel_matches_numpy_reference(conv_case, dtype, gemm_kernel, rng,
                                                 ref, assert_close):
    x, _, _, grad_y = conv_case.random_inputs(rng, dtype)
    grad_w, grad_b = conv_case.functions.backward_kernel(
        x, grad_y, conv_case.w_shape, **conv_case.geometry)
    assert grad_w.dtype == grad_b.dtype == dtype
    geometry = (conv_case.w_shape, conv_case.stride, conv_case.padding)
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, *geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(*_abs(x, grad_y), *geometry)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)


def test_backward_kernel_matches_scipy(conv_case, gemm_kernel, rng, ref, assert_close):
    x, _, _, grad_y = conv_case.random_inputs(rng, np.float64)
    grad_w, grad_b = conv_case.functions.backward_kernel(
        x, grad_y, conv_case.w_shape, **conv_case.geometry)
    geometry = (conv_case.w_shape, conv_case.stride, conv_case.padding)
    expected_w, expected_b = ref.correlate_backward_kernel_scipy(x, grad_y, *geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(*_abs(x, grad_y), *geometry)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)


def test_backward_kernel_paths_match_numpy_reference(kernel_gradient_case, dtype,
                                                     gemm_kernel, rng, ref, assert_close):
    """Each path against the reference, with a NaN in the first column of
    the last sample: exactly the kernel entries whose windows read it become
    NaN (none at all when the row stride skips its row), whatever a path
    reads past a window's edge (KERNEL_GRADIENT_CASES in conftest)."""
    case = kernel_gradient_case
    x, _, _, grad_y = case.random_inputs(rng, dtype)
    x[-1, 0, case.spatial[0] - 1, 0] = np.nan
    grad_w, grad_b = fcf.correlate2d_backward_kernel(x, grad_y, case.w_shape,
                                                     **case.geometry)
    geometry = (case.w_shape, case.stride, case.padding)
    reads_nan = ref.correlate_backward_kernel(np.isnan(x).astype(float), np.ones_like(grad_y),
                                              *geometry)[0] > 0
    np.testing.assert_array_equal(np.isnan(grad_w), reads_nan)
    clean_x = np.nan_to_num(x, nan=0.0)
    expected_w, expected_b = ref.correlate_backward_kernel(clean_x, grad_y, *geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(*_abs(clean_x, grad_y), *geometry)
    assert_close(grad_w[~reads_nan], expected_w[~reads_nan], scale=scale_w[~reads_nan])
    assert_close(grad_b, expected_b, scale=scale_b)


def test_backward_returns_all_three_gradients(conv_case, dtype, gemm_kernel, rng,
                                              ref, assert_close):
    x, w, _, grad_y = conv_case.random_inputs(rng, dtype)
    grad_x, grad_w, grad_b = conv_case.functions.backward(x, w, grad_y,
                                                          **conv_case.geometry)
    stride, padding = conv_case.stride, conv_case.padding
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, x.shape, stride, padding),
                 scale=ref.correlate_backward_input(*_abs(grad_y, w), x.shape,
                                                    stride, padding))
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, w.shape,
                                                           stride, padding)
    scale_w, scale_b = ref.correlate_backward_kernel(*_abs(x, grad_y), w.shape,
                                                     stride, padding)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)


# ------------------------------------------------------------------- NaN

def test_nan_passes_through_correlation_like_any_float(conv_case, gemm_kernel, rng,
                                                       ref, assert_close):
    """A NaN makes exactly the outputs whose window reads it NaN (forward and
    kernel gradient), or the inputs its output's window covered (input
    gradient); everything else stays finite and correct."""
    x, w, bias, grad_y = conv_case.random_inputs(rng, np.float64)
    x.flat[rng.integers(x.size)] = np.nan
    grad_y.flat[rng.integers(grad_y.size)] = np.nan
    stride, padding = conv_case.stride, conv_case.padding
    x_is_nan, grad_y_is_nan = np.isnan(x).astype(float), np.isnan(grad_y).astype(float)
    ones_w, ones_grad_y = np.ones_like(w), np.ones_like(grad_y)
    fn = conv_case.functions

    # Which values the NaN reaches: the same operation applied to the NaN
    # indicator with all-ones weights is positive exactly there.
    y = fn.correlate(x, w, bias, **conv_case.geometry)
    reads_nan = ref.correlate(x_is_nan, ones_w, None, stride, padding) > 0
    np.testing.assert_array_equal(np.isnan(y), reads_nan)
    clean_x = np.nan_to_num(x, nan=0.0)
    assert_close(y[~reads_nan], ref.correlate(clean_x, w, bias, stride, padding)[~reads_nan],
                 scale=ref.correlate(*_abs(clean_x, w, bias), stride, padding)[~reads_nan])

    grad_x = fn.backward_input(grad_y, w, x.shape, **conv_case.geometry)
    np.testing.assert_array_equal(np.isnan(grad_x), ref.correlate_backward_input(
        grad_y_is_nan, ones_w, x.shape, stride, padding) > 0)

    grad_w, grad_b = fn.backward_kernel(x, np.nan_to_num(grad_y, nan=0.0), w.shape,
                                        **conv_case.geometry)
    np.testing.assert_array_equal(np.isnan(grad_w), ref.correlate_backward_kernel(
        x_is_nan, ones_grad_y, w.shape, stride, padding)[0] > 0)
    assert np.isfinite(grad_b).all()


# ------------------------------------------------------ parameter forms

@pytest.mark.parametrize("ndim", [1, 2])
def test_per_axis_tuples_equal_ints(ndim, rng):
    """stride=s, padding=p is the same as one-tuples (1-D) or pairs (2-D)."""
    correlate = fcf.correlate1d if ndim == 1 else fcf.correlate2d
    x = rng.standard_normal((2, 3) + (9,) * ndim)
    w = rng.standard_normal((4, 3) + (3,) * ndim)
    np.testing.assert_array_equal(correlate(x, w, stride=2, padding=1),
                                  correlate(x, w, stride=(2,) * ndim, padding=[1] * ndim))
    pool = fcf.max_pool1d if ndim == 1 else fcf.max_pool2d
    for a, b in zip(pool(x, 3, stride=2), pool(x, (3,) * ndim, stride=(2,) * ndim)):
        np.testing.assert_array_equal(a, b)


def test_micro_kernel_selection():
    try:
        assert correlation_kernels.select_gemm_kernel(False) == "generic"
        assert correlation_kernels.gemm_kernel_name() == "generic"
        assert correlation_kernels.select_gemm_kernel(True) in ("avx512", "generic")
    finally:
        correlation_kernels.select_gemm_kernel(True)


# ------------------------------------------------------------ output size

@pytest.mark.parametrize("size, kernel, stride, padding, expected", [
    (7, 3, 1, 0, 5), (7, 3, 2, 0, 3), (8, 3, 2, 0, 3), (5, 7, 1, 1, 1),
    (1, 3, 1, 1, 1), (4, 2, 1, 3, 9), (10, 1, 3, 0, 4),
])
def test_output_size(size, kernel, stride, padding, expected):
    assert fcf.output_size(size, kernel, stride, padding) == expected


# ------------------------------------------- dilation, asymmetric padding

def test_dilated_forward_matches_numpy_and_scipy(dilated_conv_case, dtype, gemm_kernel,
                                                 rng, ref, assert_close):
    """Window element (a, b) reads x[i*sh + a*dh - ph, j*sw + b*dw - pw];
    padding given per axis as an int or a (before, after) pair."""
    case = dilated_conv_case
    x, w, bias, _ = case.random_inputs(rng, dtype)
    y = case.functions.correlate(x, w, bias, **case.geometry)
    assert y.dtype == dtype and y.shape == case.y_shape
    scale = ref.correlate(*_abs(x, w, bias), *case.ref_geometry)
    assert_close(y, ref.correlate(x, w, bias, *case.ref_geometry), scale=scale)
    if dtype == np.float64:
        assert_close(y, ref.correlate_scipy(x, w, bias, *case.ref_geometry), scale=scale)


def test_dilated_backward_input_matches_numpy_reference(dilated_conv_case, dtype,
                                                        gemm_kernel, rng, ref,
                                                        assert_close):
    """The public function (mirrored or transposed, by shape), the
    transposed product kernel itself, and in 2-D the mirrored form."""
    case = dilated_conv_case
    _, w, _, grad_y = case.random_inputs(rng, dtype)
    expected = ref.correlate_backward_input(grad_y, w, case.x_shape, *case.ref_geometry)
    scale = 2 * ref.correlate_backward_input(*_abs(grad_y, w), case.x_shape,
                                             *case.ref_geometry)
    results = [case.functions.backward_input(grad_y, w, case.x_shape, **case.geometry),
               transposed_product_backward_input(grad_y, w, case.x_shape, case.stride,
                                                 case.padding, case.dilations)]
    if case.ndim == 2:
        results.append(fcf.correlate2d_backward_input_mirrored(
            grad_y, w, case.x_shape, **case.geometry))
    for grad_x in results:
        assert grad_x.dtype == dtype
        assert_close(grad_x, expected, scale=scale)


def test_dilated_backward_kernel_matches_numpy_reference(dilated_conv_case, dtype,
                                                         gemm_kernel, rng, ref,
                                                         assert_close):
    case = dilated_conv_case
    x, w, _, grad_y = case.random_inputs(rng, dtype)
    grad_w, grad_b = case.functions.backward_kernel(x, grad_y, case.w_shape,
                                                    **case.geometry)
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, case.w_shape,
                                                           *case.ref_geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(*_abs(x, grad_y), case.w_shape,
                                                     *case.ref_geometry)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)
    together = case.functions.backward(x, w, grad_y, **case.geometry)
    assert_close(together[1], expected_w, scale=scale_w)
    assert_close(together[0], ref.correlate_backward_input(
        grad_y, w, case.x_shape, *case.ref_geometry), scale=2 * ref.correlate_backward_input(
        *_abs(grad_y, w), case.x_shape, *case.ref_geometry))


def test_dilated_naive_kernel_matches_numpy_reference(dilated_conv_case, dtype, rng, ref,
                                                      assert_close):
    """The six-loop kernel takes the padding before each axis and the
    dilation; the output's shape sets the padding after."""
    case = dilated_conv_case
    x, w, bias, _ = case.random_inputs(rng, dtype)
    y = np.empty(case.y_shape, dtype=dtype)
    before = tuple(p[0] if isinstance(p, tuple) else p for p in case.padding)
    stride, dilation = case.stride, case.dilations
    if case.ndim == 1:
        x, w, y = x[:, :, None, :], w[:, :, None, :], y[:, :, None, :]
        stride, before, dilation = (1,) + stride, (0,) + before, (1,) + dilation
    correlation_kernels.correlate2d_forward_naive(x, w, bias, y, *stride, *before,
                                                  *dilation)
    assert_close(y.reshape(case.y_shape), ref.correlate(
        x.reshape(case.x_shape), w.reshape(case.w_shape), bias, *case.ref_geometry),
        scale=ref.correlate(*_abs(x.reshape(case.x_shape), w.reshape(case.w_shape), bias),
                            *case.ref_geometry))


def test_dilated_results_do_not_depend_on_thread_count(dilated_conv_case, dtype, rng):
    case = dilated_conv_case
    x, w, bias, grad_y = case.random_inputs(rng, dtype)
    fn = case.functions

    def call(n_threads):
        return (fn.correlate(x, w, bias, n_threads=n_threads, **case.geometry),
                fn.backward_input(grad_y, w, x.shape, n_threads=n_threads, **case.geometry),
                *fn.backward_kernel(x, grad_y, w.shape, n_threads=n_threads,
                                    **case.geometry))
    check_thread_independence(call)


@pytest.mark.parametrize("dilation, error", [
    (0, ValueError), (-1, ValueError), ((1, 0), ValueError), ((1, 2, 3), ValueError),
    (1.5, TypeError), (True, TypeError), (None, TypeError), ("2", TypeError),
], ids=str)
@pytest.mark.parametrize("which", ["correlate", "backward", "backward_input",
                                   "backward_kernel", "backward_input_mirrored"])
def test_bad_dilation_is_refused_naming_it(which, dilation, error):
    x, w = np.ones((2, 3, 9, 9)), np.ones((4, 3, 3, 3))
    grad_y = np.ones((2, 4, 7, 7))
    calls = {
        "correlate": lambda: fcf.correlate2d(x, w, dilation=dilation),
        "backward": lambda: fcf.correlate2d_backward(x, w, grad_y, dilation=dilation),
        "backward_input": lambda: fcf.correlate2d_backward_input(
            grad_y, w, x.shape, dilation=dilation),
        "backward_kernel": lambda: fcf.correlate2d_backward_kernel(
            x, grad_y, w.shape, dilation=dilation),
        "backward_input_mirrored": lambda: fcf.correlate2d_backward_input_mirrored(
            grad_y, w, x.shape, dilation=dilation),
    }
    with pytest.raises(error, match="dilation"):
        calls[which]()


@pytest.mark.parametrize("ndim", [1, 2])
def test_dilation_that_leaves_no_output_is_refused(ndim):
    """A kernel of 3 at dilation 5 spans 11 inputs: more than 9 + 2*0."""
    correlate = fcf.correlate1d if ndim == 1 else fcf.correlate2d
    backward_kernel = fcf.correlate1d_backward_kernel if ndim == 1 else \
        fcf.correlate2d_backward_kernel
    x, w = np.ones((1, 2) + (9,) * ndim), np.ones((3, 2) + (3,) * ndim)
    with pytest.raises(ValueError, match="dilation .* leaves no output"):
        correlate(x, w, dilation=5)
    with pytest.raises(ValueError, match="dilation .* leaves no output"):
        backward_kernel(x, np.ones((1, 3) + (1,) * ndim), w.shape, dilation=5)
    # padding that makes room again
    assert correlate(x, w, padding=1, dilation=5).shape == (1, 3) + (1,) * ndim


@pytest.mark.parametrize("padding", [
    ((1, 2, 3), 0), ((-1, 0), 0), (((0, -1), 0), 0), (((0, 1, 2), 0), 0),
    (((0.5, 1), 0), 0),
], ids=str)
def test_bad_padding_pairs_are_refused(padding):
    x, w = np.ones((1, 2, 6, 6)), np.ones((3, 2, 2, 2))
    with pytest.raises((ValueError, TypeError), match="padding"):
        fcf.correlate2d(x, w, padding=padding[0])


def test_even_kernel_same_padding_keeps_the_size(rng, ref, assert_close):
    """PyTorch's padding='same' for a 2 x 4 kernel: (0, 1) and (1, 2)."""
    x = rng.standard_normal((2, 3, 7, 8))
    w = rng.standard_normal((4, 3, 2, 4))
    padding = ((0, 1), (1, 2))
    y = fcf.correlate2d(x, w, padding=padding)
    assert y.shape == (2, 4, 7, 8)
    assert_close(y, ref.correlate(x, w, None, (1, 1), padding),
                 scale=ref.correlate(*_abs(x, w), None, (1, 1), padding))


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, expected", [
    (7, 3, 1, 0, 2, 3), (7, 3, 1, 2, 2, 7), (10, 3, 2, 0, 3, 2), (9, 3, 1, 0, 4, 1),
    (8, 2, 1, (0, 1), 1, 8), (8, 4, 1, (1, 2), 1, 8), (8, 4, 1, (4, 5), 3, 8),
    (1000, 3, 1, 4, 4, 1000),
])
def test_output_size_with_dilation(size, kernel, stride, padding, dilation, expected):
    """(W + before + after - d*(F - 1) - 1) // S + 1."""
    assert fcf.output_size(size, kernel, stride, padding, dilation) == expected


@pytest.mark.parametrize("args, error", [
    ((9, 3, 1, 0, 5), ValueError), ((9, 3, 1, 0, 0), ValueError),
    ((9, 3, 1, 0, 1.0), TypeError),
], ids=str)
def test_output_size_refuses_bad_dilation(args, error):
    with pytest.raises(error, match="dilation"):
        fcf.output_size(*args)
