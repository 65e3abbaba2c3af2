"""Max, average and L2 pooling against NumPy references, and the semantics
the docstrings promise: overlapping windows accumulate, ties go to the first
maximum in row-major order, NaN is a window's maximum and propagates, an
all-zero L2 window passes no gradient."""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence
from _helpers.references import l2_pool_backward_ref, l2_pool_ref


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


@pytest.mark.parametrize("relu", [False, True], ids=["max", "max-relu"])
def test_maxima_alone_are_the_maxima_of_the_pooling(pool_case, dtype, relu, rng):
    """return_argmax=False (inference) returns y alone, the bits of the
    pooling that also finds the indices, through the 2x2 kernel's blocks
    and the general row loop alike; out is then y itself."""
    fns = pool_case.functions
    x = _relu_values(rng, pool_case.x_shape, dtype)
    expected, _ = fns.max_pool(x, **pool_case.geometry, relu=relu)
    for n_threads in (1, 2, 3):
        y = fns.max_pool(x, **pool_case.geometry, n_threads=n_threads, relu=relu,
                         return_argmax=False)
        np.testing.assert_array_equal(_bits(y), _bits(expected))
    out = np.full_like(expected, np.nan)
    assert fns.max_pool(x, **pool_case.geometry, relu=relu, out=out,
                        return_argmax=False) is out
    np.testing.assert_array_equal(_bits(out), _bits(expected))


@pytest.mark.parametrize("shape", [(3, 5, 4, 4), (2, 3, 9, 26), (2, 2, 7, 19), (1, 1, 2, 2),
                                   (5, 3, 6, 16)])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_max_pool_2x2_blocks_without_indices(shape, n_threads, dtype, rng, ref):
    """The 2x2 kernel's blocks and its exact row loop without the indices:
    ties ({0, 1, 2}) and NaN test the order of the comparisons."""
    x = rng.integers(0, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.05] = np.nan
    y = fcf.max_pool2d(x, 2, n_threads=n_threads, return_argmax=False)
    np.testing.assert_array_equal(y, ref.max_pool(x, (2, 2))[0])


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


# ------------------------------------------------------------- L2 pooling

L2 = {2: (fcf.l2_pool2d, fcf.l2_pool2d_backward),
      1: (fcf.l2_pool1d, fcf.l2_pool1d_backward)}


def _with_zero_windows(rng, pool_case, dtype):
    """Standard normal values with about a third of the inputs zero, and
    the first window of every plane all zero."""
    x = pool_case.random_input(rng, dtype)
    x[rng.random(x.shape) < 0.3] = 0
    x[(slice(None), slice(None)) + tuple(slice(0, k) for k in pool_case.size)] = 0
    return x


def test_l2_pool_matches_reference(pool_case, dtype, rng):
    pool, _ = L2[pool_case.ndim]
    x = _with_zero_windows(rng, pool_case, dtype)
    y = pool(x, **pool_case.geometry)
    assert y.dtype == dtype and y.shape == pool_case.y_shape
    expected = l2_pool_ref(x, *_pool_args(pool_case))
    # every term of the sum is a square: no cancellation, |expected| bounds
    # the rounding error, and an all-zero window is exactly 0
    within = np.abs(y.astype(np.float64) - expected) <= (
        {np.float32: 5e-6, np.float64: 1e-14}[dtype.type] * expected)
    assert within.all(), (y, expected)
    assert (y.reshape(pool_case.n, pool_case.c, -1)[..., 0] == 0).all()


def test_l2_pool_backward_matches_reference(pool_case, dtype, rng, assert_close):
    pool, backward = L2[pool_case.ndim]
    x = _with_zero_windows(rng, pool_case, dtype)
    y = pool(x, **pool_case.geometry)
    grad_y = rng.standard_normal(pool_case.y_shape).astype(dtype)
    grad_x = backward(grad_y, x, y, **pool_case.geometry)
    assert grad_x.dtype == dtype and grad_x.shape == x.shape
    args = _pool_args(pool_case)
    assert_close(grad_x, l2_pool_backward_ref(grad_y, x, *args),
                 scale=l2_pool_backward_ref(np.abs(grad_y), np.abs(x), *args))


def test_l2_pool_gradient_is_zero_at_all_zero_windows(dtype):
    """Window [0, 0] passes nothing, not NaN; window [3, 4] passes
    grad_y * x / 5; the overlap at position 2 (zero) gets 0 from both."""
    x = np.array([[[0, 0, 0, 3, 4]]], dtype=dtype)
    y = fcf.l2_pool1d(x, 3, stride=2)
    np.testing.assert_array_equal(y[0, 0], [0, 5])
    grad_x = fcf.l2_pool1d_backward(np.array([[[7, 10]]], dtype=dtype), x, y, 3, stride=2)
    np.testing.assert_array_equal(grad_x[0, 0], [0, 0, 0, 6, 8])
    zeros = np.zeros((2, 3, 4, 4), dtype)
    grad_x = fcf.l2_pool2d_backward(np.ones((2, 3, 2, 2), dtype), zeros,
                                    fcf.l2_pool2d(zeros, 2), 2)
    np.testing.assert_array_equal(grad_x, zeros)


def test_l2_pool_gradient_matches_finite_differences(tiny_pool_case, rng, central_differences):
    """The norm is smooth away from 0 (standard normal windows are never
    zero); its curvature gives central differences an error of step**2."""
    pool, backward = L2[tiny_pool_case.ndim]
    x = tiny_pool_case.random_input(rng, np.float64)
    weights = rng.standard_normal(tiny_pool_case.y_shape)

    def loss():
        return np.sum(pool(x, **tiny_pool_case.geometry) * weights)

    y = pool(x, **tiny_pool_case.geometry)
    grad_x = backward(weights, x, y, **tiny_pool_case.geometry)
    np.testing.assert_allclose(grad_x, central_differences(loss, x, 1e-5),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape, size, stride", [
    ((5, 7, 28, 27), 2, None), ((4, 6, 9, 11), (3, 2), (1, 2)), ((6, 5, 101), 3, 2)])
def test_l2_pool_is_bitwise_identical_for_any_thread_count(shape, size, stride, dtype, rng):
    pool, backward = L2[len(shape) - 2]
    x = rng.standard_normal(shape).astype(dtype)
    y = pool(x, size, stride)
    grad_y = rng.standard_normal(y.shape).astype(dtype)
    check_thread_independence(lambda t: pool(x, size, stride, n_threads=t))
    check_thread_independence(lambda t: backward(grad_y, x, y, size, stride, n_threads=t))


@pytest.mark.parametrize("ndim", [2, 1])
def test_l2_pool_matches_pytorch_lppool(ndim, rng):
    torch = pytest.importorskip("torch")
    pool, backward = L2[ndim]
    shape, size, stride = ((3, 4, 9, 8), (3, 2), (2, 1)) if ndim == 2 else ((3, 4, 17), 3, 2)
    x = rng.standard_normal(shape)
    lp = (torch.nn.LPPool2d if ndim == 2 else torch.nn.LPPool1d)(2, size, stride)
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    y_torch = lp(x_torch)
    grad_y = rng.standard_normal(tuple(y_torch.shape))
    y_torch.backward(torch.from_numpy(grad_y))
    y = pool(x, size, stride)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(backward(grad_y, x, y, size, stride),
                               x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fcf.l2_pool2d(np.ones((1, 1, 3, 3)), 4), ValueError, "larger than the input"),
    (lambda: fcf.l2_pool1d(np.ones((1, 1, 3)), 2, stride=0), ValueError, "stride"),
    (lambda: fcf.l2_pool2d(np.ones((1, 1, 3)), 2), ValueError, "x must have 4"),
    (lambda: fcf.l2_pool2d_backward(np.ones((1, 1, 2, 2)), np.ones((1, 1, 4, 4)),
                                    np.ones((1, 1, 2, 3)), 2), ValueError, "y must have"),
    (lambda: fcf.l2_pool2d_backward(np.ones((1, 1, 1, 1)), np.ones((1, 1, 4, 4)),
                                    np.ones((1, 1, 2, 2)), 2), ValueError, "grad_y must"),
    (lambda: fcf.l2_pool1d_backward(np.ones((1, 1, 2)), np.ones((1, 1, 4)),
                                    np.ones((1, 1, 2), np.float32), 2), TypeError, "y has"),
    (lambda: fcf.l2_pool1d_backward(np.ones((1, 1, 2)), np.ones((1, 1, 4)),
                                    np.ones((1, 1, 2)), 2, out=np.ones((1, 1, 2))),
     ValueError, "out must have shape"),
], ids=["pool-larger", "stride", "rank", "y-shape", "grad-shape", "dtype", "out"])
def test_l2_pool_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_prepared_l2_pool_calls_read_new_values(rng):
    x = rng.standard_normal((3, 2, 7, 6))
    y, grad_y, grad_x = np.empty((3, 2, 3, 5)), np.empty((3, 2, 3, 5)), np.empty(x.shape)
    forward = fcf.prepare(fcf.l2_pool2d, x, (3, 2), stride=(2, 1), out=y)
    backward = fcf.prepare(fcf.l2_pool2d_backward, grad_y, x, y, (3, 2),
                           stride=(2, 1), out=grad_x)
    for _ in range(2):
        x[...] = rng.standard_normal(x.shape)
        grad_y[...] = rng.standard_normal(grad_y.shape)
        assert forward.run(2) is y and backward.run(2) is grad_x
        np.testing.assert_array_equal(y, fcf.l2_pool2d(x, (3, 2), stride=(2, 1)))
        np.testing.assert_array_equal(
            grad_x, fcf.l2_pool2d_backward(grad_y, x, y, (3, 2), stride=(2, 1)))
    with pytest.raises(ValueError, match="prepare needs x"):
        fcf.prepare(fcf.l2_pool2d, x[:, :, ::2], 2)
