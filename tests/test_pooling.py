"""Max and average pooling against NumPy references, and the semantics the
docstrings promise: overlapping windows accumulate, ties go to the first
maximum in row-major order, NaN is a window's maximum and propagates."""
import numpy as np
import pytest

import fastcnn.functional as fcf


def _pool_args(pool_case):
    return pool_case.size, pool_case.stride


# ------------------------------------------------------ against references

def test_max_pool_matches_reference(pool_case, dtype, rng, ref):
    x = pool_case.random_input(rng, dtype)
    y, argmax = pool_case.functions.max_pool(x, **pool_case.geometry)
    expected_y, expected_argmax = ref.max_pool(x, *_pool_args(pool_case))
    assert y.dtype == dtype and argmax.dtype == np.int32
    # a maximum is one of the inputs: exact
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)


def test_max_pool_backward_matches_reference(pool_case, dtype, rng, ref, assert_close):
    x = pool_case.random_input(rng, dtype)
    grad_y = rng.standard_normal(pool_case.y_shape).astype(dtype)
    argmax = ref.max_pool(x, *_pool_args(pool_case))[1]
    grad_x = pool_case.functions.max_pool_backward(grad_y, argmax, pool_case.x_shape)
    assert grad_x.dtype == dtype
    assert_close(grad_x, ref.max_pool_backward(grad_y, argmax, pool_case.x_shape),
                 scale=ref.max_pool_backward(np.abs(grad_y), argmax, pool_case.x_shape))


def test_avg_pool_matches_reference(pool_case, dtype, rng, ref, assert_close):
    x = pool_case.random_input(rng, dtype)
    y = pool_case.functions.avg_pool(x, **pool_case.geometry)
    assert y.dtype == dtype
    assert_close(y, ref.avg_pool(x, *_pool_args(pool_case)),
                 scale=ref.avg_pool(np.abs(x), *_pool_args(pool_case)))


def test_avg_pool_backward_matches_reference(pool_case, dtype, rng, ref, assert_close):
    grad_y = rng.standard_normal(pool_case.y_shape).astype(dtype)
    grad_x = pool_case.functions.avg_pool_backward(grad_y, pool_case.x_shape,
                                                   **pool_case.geometry)
    assert grad_x.dtype == dtype
    args = (pool_case.x_shape,) + _pool_args(pool_case)
    assert_close(grad_x, ref.avg_pool_backward(grad_y, *args),
                 scale=ref.avg_pool_backward(np.abs(grad_y), *args))


# -------------------------------------------------- overlapping windows

def test_overlapping_windows_accumulate_at_a_shared_maximum(dtype):
    """A 3x3 image whose centre is the maximum of all four 2x2 windows at
    stride 1: the centre receives the sum of the four output gradients."""
    x = np.array([[[[1, 2, 3], [4, 9, 5], [6, 7, 8]]]], dtype=dtype)
    y, argmax = fcf.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 9, dtype=dtype))
    np.testing.assert_array_equal(argmax, np.full((1, 1, 2, 2), 4))  # 1*3 + 1
    grad_y = np.array([[[[1.0, 2.0], [4.0, 8.0]]]], dtype=dtype)
    grad_x = fcf.max_pool2d_backward(grad_y, argmax, x.shape)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = 15
    np.testing.assert_array_equal(grad_x, expected)


def test_overlapping_windows_accumulate_1d(dtype):
    x = np.array([[[0, 5, 1, 2, 7, 3]]], dtype=dtype)
    y, argmax = fcf.max_pool1d(x, 3, stride=1)
    np.testing.assert_array_equal(y[0, 0], [5, 5, 7, 7])
    np.testing.assert_array_equal(argmax[0, 0], [1, 1, 4, 4])
    grad_x = fcf.max_pool1d_backward(np.array([[[1.0, 2.0, 4.0, 8.0]]], dtype=dtype),
                                     argmax, x.shape)
    np.testing.assert_array_equal(grad_x[0, 0], [0, 3, 0, 0, 12, 0])


def test_overlapping_avg_pool_backward_accumulates(dtype):
    grad_x = fcf.avg_pool2d_backward(np.ones((1, 1, 2, 2), dtype=dtype), (1, 1, 3, 3),
                                     2, stride=1)
    # each input counted by as many windows as cover it, a quarter each
    np.testing.assert_array_equal(grad_x[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


@pytest.mark.parametrize("index_dtype", [np.int64, np.uint16, np.int16])
def test_max_pool_backward_accepts_any_integer_argmax(index_dtype, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    grad_y = rng.standard_normal((2, 3, 3, 2))
    _, argmax = fcf.max_pool2d(x, 3, stride=2)
    np.testing.assert_array_equal(
        fcf.max_pool2d_backward(grad_y, argmax.astype(index_dtype), x.shape),
        fcf.max_pool2d_backward(grad_y, argmax, x.shape))


# ------------------------------------------------------------------- ties

def test_ties_go_to_the_first_maximum_in_row_major_order(dtype):
    x = np.array([[[[1, 5, 0, 0],
                    [5, 5, 0, 0],
                    [2, 2, 7, 3],
                    [2, 2, 3, 7]]]], dtype=dtype)
    y, argmax = fcf.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[5, 0], [2, 7]])
    # windows: row 0 col 1; row 0 col 2 (all zero); row 2 col 0; row 2 col 2
    np.testing.assert_array_equal(argmax[0, 0], [[1, 2], [8, 10]])
    grad_x = fcf.max_pool2d_backward(np.ones_like(y), argmax, x.shape)
    assert grad_x.sum() == 4
    assert grad_x[0, 0].flat[[1, 2, 8, 10]].tolist() == [1, 1, 1, 1]


def test_ties_in_many_random_windows(pool_case, rng, ref):
    """Inputs from {0, 1, 2} tie in nearly every window."""
    x = rng.integers(0, 3, pool_case.x_shape).astype(np.float64)
    y, argmax = pool_case.functions.max_pool(x, **pool_case.geometry)
    expected_y, expected_argmax = ref.max_pool(x, *_pool_args(pool_case))
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)


def test_constant_input_selects_each_window_start():
    x = np.full((1, 2, 5, 7), -np.inf)
    _, argmax = fcf.max_pool2d(x, (2, 3), stride=(2, 2))
    starts = (np.arange(2)[:, None] * 2) * 7 + np.arange(3)[None, :] * 2
    np.testing.assert_array_equal(argmax, np.broadcast_to(starts, argmax.shape))


# ------------------------------------------------ the 2x2, stride 2 kernel

@pytest.mark.parametrize("shape", [
    (3, 5, 4, 4),     # output rows of 2 windows, far shorter than a block
    (2, 3, 9, 26),    # rows of 13: a whole block, then one past the row's end
    (2, 2, 7, 19),    # odd height and width: unread last row and column
    (1, 1, 2, 2),     # one window: only the exact row loop
    (5, 3, 6, 16),    # rows of exactly two blocks
])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_max_pool_2x2_blocks_match_the_reference(shape, n_threads, dtype, rng, ref):
    """The 2x2, stride-2 kernel computes whole blocks of windows, the last
    one of a row running into the next rows, and leaves each thread's last
    rows to an exact loop. Ties ({0, 1, 2}) and NaN test the order of the
    comparisons in both."""
    x = rng.integers(0, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.05] = np.nan
    y, argmax = fcf.max_pool2d(x, 2, n_threads=n_threads)
    expected_y, expected_argmax = ref.max_pool(x, (2, 2))
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)


# -------------------------------------------------------------------- NaN

def test_first_nan_in_a_window_is_its_maximum(dtype):
    nan = np.nan
    x = np.array([[[1, nan, 3, nan, 2, 0, 4, 5]]], dtype=dtype)
    y, argmax = fcf.max_pool1d(x, 3, stride=1)
    np.testing.assert_array_equal(y[0, 0], [nan, nan, nan, nan, 4, 5])
    # the first NaN of each window, whether or not a larger number precedes it
    np.testing.assert_array_equal(argmax[0, 0], [1, 1, 3, 3, 6, 7])
    grad_x = fcf.max_pool1d_backward(np.ones_like(y), argmax, x.shape)
    np.testing.assert_array_equal(grad_x[0, 0], [0, 2, 0, 2, 0, 0, 1, 1])


def test_nan_at_the_window_start_stays_the_maximum(dtype):
    x = np.array([[[[np.nan, 9], [9, np.nan]]]], dtype=dtype)
    y, argmax = fcf.max_pool2d(x, 2)
    assert np.isnan(y).all() and argmax.item() == 0


def test_nan_propagates_in_random_inputs(pool_case, rng, ref):
    x = pool_case.random_input(rng, np.float64)
    x[rng.random(x.shape) < 0.2] = np.nan
    y, argmax = pool_case.functions.max_pool(x, **pool_case.geometry)
    expected_y, expected_argmax = ref.max_pool(x, *_pool_args(pool_case))
    np.testing.assert_array_equal(y, expected_y)  # NaN == NaN here
    np.testing.assert_array_equal(argmax, expected_argmax)
    averaged = pool_case.functions.avg_pool(x, **pool_case.geometry)
    np.testing.assert_array_equal(np.isnan(averaged), np.isnan(expected_y))


def test_infinities_are_ordinary_values():
    x = np.array([[[-np.inf, -np.inf, 3, np.inf, -np.inf, np.inf]]])
    y, argmax = fcf.max_pool1d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [-np.inf, np.inf, np.inf])
    np.testing.assert_array_equal(argmax[0, 0], [0, 3, 5])


# ---------------------------------------------------------------- strides

@pytest.mark.parametrize("pool", [fcf.max_pool2d, fcf.avg_pool2d])
def test_stride_defaults_to_the_window_size(pool, rng):
    x = rng.standard_normal((2, 3, 7, 9))
    default, explicit = pool(x, (2, 3)), pool(x, (2, 3), stride=(2, 3))
    if pool is fcf.max_pool2d:  # (y, argmax)
        np.testing.assert_array_equal(default[1], explicit[1])
        default, explicit = default[0], explicit[0]
    np.testing.assert_array_equal(default, explicit)


# ------------------------------------------------------------- fused ReLU

def _relu_values(rng, shape, dtype):
    """Negative, positive, zero (both signs), NaN and tied values."""
    x = rng.integers(-3, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.1] = -0.0
    x[rng.random(shape) < 0.05] = np.nan
    return x


def _bits(a):
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_max_pool_with_relu_is_bitwise_relu_of_the_pooling(pool_case, dtype, n_threads,
                                                           rng, ref):
    """relu=True returns relu(max_pool(x)), which is max_pool(relu(x)); the
    backward pass with relu_output is max_pool_backward of relu_backward,
    bit for bit (-0 maxima become +0, NaN passes forward, not backward)."""
    fns = pool_case.functions
    x = _relu_values(rng, pool_case.x_shape, dtype)
    y, argmax = fns.max_pool(x, **pool_case.geometry, n_threads=n_threads, relu=True)
    plain_y, plain_argmax = fns.max_pool(x, **pool_case.geometry)
    np.testing.assert_array_equal(argmax, plain_argmax)
    expected_y = fcf.relu(plain_y)
    np.testing.assert_array_equal(_bits(y), _bits(expected_y))
    np.testing.assert_array_equal(_bits(y), _bits(ref.max_pool(np.maximum(x, 0) + 0.0,
                                                               *_pool_args(pool_case))[0]))
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    grad_y[rng.random(y.shape) < 0.1] = np.nan
    grad_x = fns.max_pool_backward(grad_y, argmax, x.shape, n_threads=n_threads,
                                   relu_output=y)
    expected = fns.max_pool_backward(fcf.relu_backward(grad_y, y), argmax, x.shape)
    np.testing.assert_array_equal(_bits(grad_x), _bits(expected))


@pytest.mark.parametrize("shape", [(3, 5, 4, 4), (2, 3, 9, 26), (2, 2, 7, 19), (1, 1, 2, 2)])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_max_pool_2x2_blocks_with_relu(shape, n_threads, dtype, rng):
    """The 2x2 kernel applies the ReLU in its blocks and in its exact row
    loop alike."""
    x = _relu_values(rng, shape, dtype)
    y, _ = fcf.max_pool2d(x, 2, n_threads=n_threads, relu=True)
    np.testing.assert_array_equal(_bits(y), _bits(fcf.relu(fcf.max_pool2d(x, 2)[0])))


def test_relu_output_is_validated(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    y, argmax = fcf.max_pool2d(x, 2, relu=True)
    grad_y = np.ones_like(y)
    with pytest.raises(ValueError, match="relu_output must have grad_y's shape"):
        fcf.max_pool2d_backward(grad_y, argmax, x.shape, relu_output=y[:, :2])
    with pytest.raises(TypeError, match="relu_output"):
        fcf.max_pool2d_backward(grad_y, argmax, x.shape, relu_output=y.astype(np.float32))
    with pytest.raises(ValueError, match="relu_output"):
        fcf.max_pool1d_backward(grad_y[:, :, 0], argmax[:, :, 0], x.shape[:3],
                                relu_output=y)
