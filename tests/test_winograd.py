"""Winograd's F(4x4, 3x3) forward correlation and kernel gradient
(src/winograd.pyx) against the NumPy reference, under both sets of
transforms and matrix-product micro-kernels (the gemm_kernel fixture
selects both), and where fastcnn.functional sends a correlation to it."""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence
from fastcnn._kernels import winograd as winograd_kernels
from fastcnn.functional import _correlation

# (x shape, filters, padding as ((top, bottom), (left, right)))
SHAPES = [
    ((3, 8, 7, 9), 5, ((1, 1), (1, 1))),         # odd output: tiles cut at both edges
    ((2, 32, 32, 32), 32, ((1, 1), (1, 1))),     # the 3-channel net's second layer
    ((4, 5, 6, 6), 9, ((0, 0), (0, 0))),         # no padding
    ((3, 7, 5, 8), 17, ((2, 2), (2, 2))),        # padding of the whole span less one
    ((2, 3, 4, 3), 4, ((1, 0), (0, 1))),         # asymmetric ('same' for an even size)
    ((3, 9, 13, 11), 10, ((0, 1), (2, 0))),
    ((1, 4, 1, 3), 3, ((1, 1), (1, 1))),         # one input row
    ((2, 3, 3, 301), 5, ((1, 1), (1, 1))),       # rows of 151 tiles: split into chunks
    ((1, 2, 5, 259), 3, ((0, 1), (2, 2))),
    ((2, 33, 9, 520), 9, ((1, 1), (1, 1))),
    ((3, 2, 300, 4), 3, ((1, 1), (0, 0))),       # many tile rows, few columns
    ((3, 4, 14, 14), 6, ((1, 1), (1, 1))),       # samples sharing a chunk, the last short
    ((2, 5, 20, 40), 7, ((1, 1), (1, 1))),       # rows of 10 tiles in 12 slots
    ((5, 6, 16, 60), 4, ((1, 1), (1, 1))),       # rows of 15 tiles in 16 slots
    ((2, 3, 9, 70), 5, ((1, 1), (1, 1))),        # rows of 18 tiles in 20 slots
    ((2, 3, 30, 70), 5, ((0, 2), (1, 1))),       # chunks of 3 such rows
]


def _winograd(x, w, bias, padding, n_threads, out=None):
    (top, bottom), (left, right) = padding
    shape = (x.shape[0], w.shape[0], x.shape[2] + top + bottom - 2,
             x.shape[3] + left + right - 2)
    y = np.full(shape, np.nan, dtype=x.dtype) if out is None else out
    winograd_kernels.correlate2d_forward_winograd(x, w, bias, y, top, left, n_threads)
    return y


def _inputs(rng, x_shape, n_filters, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((n_filters, x_shape[1], 3, 3)).astype(dtype)
    bias = rng.standard_normal(n_filters).astype(dtype)
    return x, w, bias


@pytest.mark.parametrize("x_shape, n_filters, padding", SHAPES, ids=str)
def test_matches_reference(x_shape, n_filters, padding, dtype, gemm_kernel, rng,
                           ref, assert_close):
    x, w, bias = _inputs(rng, x_shape, n_filters, dtype)
    y = _winograd(x, w, bias, padding, 2)
    geometry = ((1, 1), padding)
    assert_close(y, ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(np.abs(x), np.abs(w), np.abs(bias), *geometry))


@pytest.mark.parametrize("x_shape, n_filters", [((2, 32, 32, 32), 32), ((4, 64, 16, 16), 64)],
                         ids=str)
def test_float32_rounding_on_relu_outputs(x_shape, n_filters, gemm_kernel, rng, ref,
                                          assert_close):
    """The hardest inputs for the transforms' rounding: a ReLU's outputs
    (80% zeros), whose tiles mix windows of very different sums. The
    error of each output stays within float32's tolerance of its own
    window's sum of absolute products."""
    x = np.maximum(rng.standard_normal(x_shape) - 0.84, 0)
    w = rng.standard_normal((n_filters, x_shape[1], 3, 3)) / np.sqrt(9 * x_shape[1])
    bias = np.zeros(n_filters)
    y = _winograd(x.astype(np.float32), w.astype(np.float32), bias.astype(np.float32),
                  ((1, 1), (1, 1)), 2)
    geometry = ((1, 1), ((1, 1), (1, 1)))
    assert_close(y, ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(x, np.abs(w), bias, *geometry))


@pytest.mark.parametrize("x_shape, n_filters, padding", SHAPES[:3] + SHAPES[7:8] + [
    ((9, 4, 14, 14), 6, ((1, 1), (1, 1))),       # three chunks of samples
], ids=str)
def test_same_bits_for_any_thread_count(x_shape, n_filters, padding, dtype, rng):
    x, w, bias = _inputs(rng, x_shape, n_filters, dtype)
    check_thread_independence(lambda n: _winograd(x, w, bias, padding, n))


def _rows_a_nan_reaches(position, size):
    """The outputs along one axis (of `size`) that F(4x4, 3x3) lets a NaN at
    padded input `position` reach. A tile's outputs 4t .. 4t + 3 read the
    window 4t .. 4t + 5; by the zeros of B^T and A^T, window position 0
    reaches the tile's first output only, 5 its last only, 1 to 4 all four
    (in exact arithmetic only those that read it, but NaN does not
    cancel)."""
    reached = set()
    for i in range(size):
        k = position - 4 * (i // 4)
        if 1 <= k <= 4 or (k == 0 and i % 4 == 0) or (k == 5 and i % 4 == 3):
            reached.add(i)
    return reached


def test_nan_stays_in_the_tiles_that_read_it(rng):
    """The transforms mix the 36 values of a tile's window, so a NaN in the
    input spoils the outputs of the tiles whose windows hold it (and all
    those whose own 3 x 3 windows hold it), nothing beyond."""
    x, w, bias = _inputs(rng, (1, 2, 10, 11), 3, np.float64)
    for h, c in [(0, 0), (3, 4), (5, 2), (9, 10), (2, 1), (7, 7)]:
        xn = x.copy()
        xn[0, 1, h, c] = np.nan
        y = _winograd(xn, w, bias, ((1, 1), (1, 1)), 1)
        rows, cols = np.nonzero(np.isnan(y[0, 0]))
        spoiled = set(zip(rows.tolist(), cols.tolist()))
        expected = {(i, j) for i in _rows_a_nan_reaches(h + 1, 10)
                    for j in _rows_a_nan_reaches(c + 1, 11)}
        assert spoiled == expected
        assert {(i, j) for i in range(10) for j in range(11)
                if abs(i - h) <= 1 and abs(j - c) <= 1} <= spoiled


@pytest.mark.parametrize("w_shape, out_spatial, stride, dilation, expected", [
    ((32, 32, 3, 3), (32, 32), (1, 1), (1, 1), True),
    ((64, 128, 3, 3), (16, 16), (1, 1), (1, 1), True),
    ((64, 64, 3, 3), (14, 14), (1, 1), (1, 1), True),     # 196 of 256 outputs kept
    ((64, 64, 3, 3), (12, 12), (1, 1), (1, 1), True),     # 144 of 192 (rows of 3 tiles in 4 slots)
    ((32, 32, 3, 3), (10, 10), (1, 1), (1, 1), True),     # 100 of 192
    ((64, 64, 3, 3), (3, 600), (1, 1), (1, 1), True),     # rows split into chunks
    ((16, 32, 3, 3), (32, 32), (1, 1), (1, 1), True),
    ((32, 16, 3, 3), (16, 16), (1, 1), (1, 1), True),
    ((64, 64, 3, 3), (8, 8), (1, 1), (1, 1), True),       # 64 of 128
    ((32, 32, 3, 3), (9, 9), (1, 1), (1, 1), False),      # 81 of 192
    ((64, 64, 3, 3), (4, 4), (1, 1), (1, 1), False),
    ((16, 16, 3, 3), (32, 32), (1, 1), (1, 1), True),
    ((32, 8, 3, 3), (32, 32), (1, 1), (1, 1), False),     # too few channels
    ((8, 32, 3, 3), (32, 32), (1, 1), (1, 1), False),     # too few filters
    ((32, 3, 3, 3), (32, 32), (1, 1), (1, 1), False),     # the first layer of an RGB net
    ((32, 32, 5, 5), (32, 32), (1, 1), (1, 1), False),
    ((32, 32, 3, 3), (32, 32), (2, 2), (1, 1), False),
    ((32, 32, 3, 3), (32, 32), (1, 1), (2, 2), False),
], ids=str)
def test_used_where_it_is_faster(w_shape, out_spatial, stride, dilation, expected):
    assert _correlation._winograd_is_faster(w_shape, out_spatial, stride, dilation,
                                            2) is expected
    assert not _correlation._winograd_is_faster(w_shape[:2] + (3,), out_spatial[1:],
                                                stride[:1], dilation[:1], 1)


@pytest.mark.parametrize("padding", [1, 0, 2, ((0, 1), (1, 0))], ids=str)
def test_public_functions_through_winograd_match_reference(padding, dtype, rng, ref,
                                                           assert_close):
    """correlate2d and its input gradient (the mirrored correlation, a forward
    call of the same kind) on shapes that run as Winograd's."""
    x, w, bias = _inputs(rng, (3, 32, 14, 13), 32, dtype)
    y = fcf.correlate2d(x, w, bias, padding=padding)
    geometry = ((1, 1), padding if not np.isscalar(padding) else (padding, padding))
    assert _correlation._winograd_is_faster(w.shape, y.shape[2:], (1, 1), (1, 1), 2)
    assert_close(y, ref.correlate(x, w, bias, *geometry),
                 scale=ref.correlate(np.abs(x), np.abs(w), np.abs(bias), *geometry))
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_x = fcf.correlate2d_backward_input(grad_y, w, x.shape, padding=padding)
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, x.shape, (1, 1), geometry[1]),
                 scale=ref.correlate_backward_input(np.abs(grad_y), np.abs(w), x.shape,
                                                    (1, 1), geometry[1]))


# --------------------------------------------------------- kernel gradient

def _kernel_gradient(x, grad_y, padding, n_threads):
    (top, _), (left, _) = padding
    grad_w = np.full((grad_y.shape[1], x.shape[1], 3, 3), np.nan, dtype=x.dtype)
    grad_b = np.full(grad_y.shape[1], np.nan, dtype=x.dtype)
    winograd_kernels.correlate2d_backward_kernel_winograd(x, grad_y, grad_w, grad_b,
                                                          top, left, n_threads)
    return grad_w, grad_b


def _grad_y_shape(x_shape, n_filters, padding):
    (top, bottom), (left, right) = padding
    return (x_shape[0], n_filters, x_shape[2] + top + bottom - 2,
            x_shape[3] + left + right - 2)


@pytest.mark.parametrize("x_shape, n_filters, padding", SHAPES, ids=str)
def test_kernel_gradient_matches_reference(x_shape, n_filters, padding, dtype,
                                           gemm_kernel, rng, ref, assert_close):
    x = rng.standard_normal(x_shape).astype(dtype)
    grad_y = rng.standard_normal(_grad_y_shape(x_shape, n_filters, padding)).astype(dtype)
    grad_w, grad_b = _kernel_gradient(x, grad_y, padding, 2)
    w_shape = (n_filters, x_shape[1], 3, 3)
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, w_shape, (1, 1),
                                                           padding)
    scale_w, scale_b = ref.correlate_backward_kernel(np.abs(x), np.abs(grad_y), w_shape,
                                                     (1, 1), padding)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)


@pytest.mark.parametrize("x_shape, n_filters", [((4, 32, 32, 32), 32), ((8, 64, 16, 16), 64),
                                                ((6, 32, 14, 14), 64)], ids=str)
def test_kernel_gradient_float32_rounding_on_sparse_inputs(x_shape, n_filters,
                                                           gemm_kernel, rng, ref,
                                                           assert_close):
    """A ReLU's outputs (80% zeros) and the output gradient max pooling
    leaves (three in four zero, others through a ReLU): tiles that mix
    large and zero values, the transforms' hardest case."""
    x = np.maximum(rng.standard_normal(x_shape) - 0.84, 0)
    y_shape = _grad_y_shape(x_shape, n_filters, ((1, 1), (1, 1)))
    grad_y = rng.standard_normal(y_shape) * (rng.random(y_shape) < 0.15)
    grad_w, grad_b = _kernel_gradient(x.astype(np.float32), grad_y.astype(np.float32),
                                      ((1, 1), (1, 1)), 2)
    w_shape = (n_filters, x_shape[1], 3, 3)
    geometry = ((1, 1), ((1, 1), (1, 1)))
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, w_shape, *geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(x, np.abs(grad_y), w_shape, *geometry)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)


@pytest.mark.parametrize("x_shape, n_filters, padding", SHAPES[:3] + SHAPES[7:8] + [
    ((9, 4, 14, 14), 6, ((1, 1), (1, 1))),       # three chunks of samples
    ((72, 3, 8, 8), 5, ((1, 1), (1, 1))),        # the most blocks: 8, of 1 or 2 chunks
], ids=str)
def test_kernel_gradient_same_bits_for_any_thread_count(x_shape, n_filters, padding,
                                                        dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    grad_y = rng.standard_normal(_grad_y_shape(x_shape, n_filters, padding)).astype(dtype)
    check_thread_independence(lambda n: _kernel_gradient(x, grad_y, padding, n))


@pytest.mark.parametrize("shape, expected", [
    ((128, 64, 64, 16, 16), 8),       # 32 chunks of 4 samples
    ((3, 64, 64, 16, 16), 1),         # one chunk
    ((40, 5, 3, 8, 8), 5),            # 5 chunks of 8 samples
    ((72, 5, 3, 8, 8), 8),            # 9 chunks: blocks of 1 or 2
    ((128, 512, 512, 14, 14), 2),     # 9.4 million partial sums a block
    ((128, 256, 256, 14, 14), 7),     # 2.4 million
    ((128, 1024, 1024, 14, 14), 2),   # past the bound, still two
], ids=str)
def test_kernel_gradient_blocks_are_bounded_by_their_memory(shape, expected):
    assert winograd_kernels.kernel_gradient_blocks(*shape) == expected


def test_kernel_gradient_nan_spoils_its_channel_or_filter(rng):
    """The transforms mix the 36 values of a window and of a tile's
    output gradients, and G^T dU G all 36 elements into the 9 taps: a NaN
    in x spoils the whole gradient of its channel's kernels (every filter,
    every tap), one in grad_y that of its filter's (and its bias);
    everything else stays finite."""
    x = rng.standard_normal((3, 5, 10, 11))
    grad_y = rng.standard_normal((3, 4, 10, 11))
    padding = ((1, 1), (1, 1))
    for n, c, h, v in [(0, 1, 0, 0), (2, 4, 9, 10), (1, 0, 5, 6)]:
        xn = x.copy()
        xn[n, c, h, v] = np.nan
        grad_w, grad_b = _kernel_gradient(xn, grad_y, padding, 2)
        expected = np.zeros(grad_w.shape, bool)
        expected[:, c] = True
        np.testing.assert_array_equal(np.isnan(grad_w), expected)
        assert np.isfinite(grad_b).all()
    for n, f, h, v in [(0, 2, 0, 0), (2, 3, 9, 10)]:
        gn = grad_y.copy()
        gn[n, f, h, v] = np.nan
        grad_w, grad_b = _kernel_gradient(x, gn, padding, 2)
        expected = np.zeros(grad_w.shape, bool)
        expected[f] = True
        np.testing.assert_array_equal(np.isnan(grad_w), expected)
        np.testing.assert_array_equal(np.isnan(grad_b), np.arange(4) == f)


@pytest.mark.parametrize("side", ["end", "start"])
def test_kernel_gradient_stays_inside_its_arrays(side, rng, guarded_copy):
    """Every array against a page that cannot be touched (as
    test_memory_bounds does for the other kernels)."""
    x = rng.standard_normal((3, 4, 14, 13)).astype(np.float32)
    grad_y = rng.standard_normal((3, 5, 14, 13)).astype(np.float32)
    grad_w = guarded_copy(np.zeros((5, 4, 3, 3), np.float32), side)
    grad_b = guarded_copy(np.zeros(5, np.float32), side)
    winograd_kernels.correlate2d_backward_kernel_winograd(
        guarded_copy(x, side), guarded_copy(grad_y, side), grad_w, grad_b, 1, 1, 3)
    expected_w, expected_b = _kernel_gradient(x, grad_y, ((1, 1), (1, 1)), 1)
    np.testing.assert_array_equal(grad_w, expected_w)
    np.testing.assert_array_equal(grad_b, expected_b)


@pytest.mark.parametrize("w_shape, out_spatial, stride, expected", [
    ((32, 32, 3, 3), (32, 32), (1, 1), True),
    ((32, 32, 3, 3), (28, 28), (1, 1), True),
    ((64, 32, 3, 3), (16, 16), (1, 1), True),
    ((32, 32, 3, 3), (14, 14), (1, 1), True),
    ((32, 32, 3, 3), (12, 12), (1, 1), True),     # 144 of 192 outputs kept
    ((64, 64, 3, 3), (10, 10), (1, 1), False),    # 100 of 192: the forward's, not the gradient's
    ((64, 64, 3, 3), (8, 8), (1, 1), False),
    ((16, 16, 3, 3), (32, 32), (1, 1), False),    # the forward's, not the gradient's
    ((32, 16, 3, 3), (32, 32), (1, 1), False),
    ((32, 32, 3, 3), (32, 32), (2, 2), False),
], ids=str)
def test_kernel_gradient_used_where_it_is_faster(w_shape, out_spatial, stride, expected):
    assert _correlation._winograd_gradient_is_faster(
        w_shape, out_spatial, stride, (1, 1), 2) is expected


@pytest.mark.parametrize("padding", [1, 0, ((0, 1), (1, 0))], ids=str)
def test_public_kernel_gradient_through_winograd_matches_reference(padding, dtype, rng,
                                                                   ref, assert_close):
    x = rng.standard_normal((3, 32, 16, 16)).astype(dtype)
    geometry = ((1, 1), padding if not np.isscalar(padding) else (padding, padding))
    w_shape = (32, 32, 3, 3)
    out_spatial = ref.correlate(x, np.zeros(w_shape, dtype), None, *geometry).shape[2:]
    assert _correlation._winograd_gradient_is_faster(w_shape, out_spatial, (1, 1),
                                                     (1, 1), 2)
    grad_y = rng.standard_normal((3, 32) + out_spatial).astype(dtype)
    grad_w, grad_b = fcf.correlate2d_backward_kernel(x, grad_y, w_shape, padding=padding)
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, w_shape, *geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(np.abs(x), np.abs(grad_y), w_shape,
                                                     *geometry)
    assert_close(grad_w, expected_w, scale=scale_w)
    assert_close(grad_b, expected_b, scale=scale_b)
