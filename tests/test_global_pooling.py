"""Global average and max pooling (fastcnn.functional._global_pooling)
against NumPy references, by finite differences, across thread counts,
and their argument checks."""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence
from _helpers.checks import assert_close, central_differences
from _helpers.references import (global_avg_pool_backward_ref,
                                 global_avg_pool_ref,
                                 global_max_pool_backward_ref,
                                 global_max_pool_ref)

FUNCTIONS = {
    2: (fcf.global_avg_pool2d, fcf.global_avg_pool2d_backward,
        fcf.global_max_pool2d, fcf.global_max_pool2d_backward),
    1: (fcf.global_avg_pool1d, fcf.global_avg_pool1d_backward,
        fcf.global_max_pool1d, fcf.global_max_pool1d_backward),
}
# odd plane sizes (not multiples of the four partial sums), a plane of
# one value, and a plane longer than a few vectors
SHAPES = [(3, 5, 7, 7), (2, 3, 5, 3), (1, 1, 1, 1), (2, 2, 9, 13),
          (4, 3, 11), (2, 5, 1), (3, 2, 66)]


def _functions(shape):
    return FUNCTIONS[len(shape) - 2]


# ------------------------------------------------------ against references

@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_global_avg_pool_matches_reference(shape, dtype, rng):
    avg, avg_backward, _, _ = _functions(shape)
    x = rng.standard_normal(shape).astype(dtype)
    y = avg(x)
    assert y.shape == shape[:2] and y.dtype == dtype
    assert_close(y, global_avg_pool_ref(x), scale=global_avg_pool_ref(np.abs(x)))
    grad_y = rng.standard_normal(shape[:2]).astype(dtype)
    grad_x = avg_backward(grad_y, shape)
    assert grad_x.shape == shape and grad_x.dtype == dtype
    assert_close(grad_x, global_avg_pool_backward_ref(grad_y, shape))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_global_max_pool_matches_reference(shape, dtype, rng):
    _, _, pool, pool_backward = _functions(shape)
    x = rng.standard_normal(shape).astype(dtype)
    y, argmax = pool(x)
    expected_y, expected_argmax = global_max_pool_ref(x)
    assert y.dtype == dtype and argmax.dtype == np.int32
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)
    grad_y = rng.standard_normal(shape[:2]).astype(dtype)
    grad_x = pool_backward(grad_y, argmax, shape)
    np.testing.assert_array_equal(grad_x,
                                  global_max_pool_backward_ref(grad_y, argmax, shape))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_global_max_pool_ties_go_to_the_first_maximum(shape, rng):
    """Inputs from {0, 1, 2} tie in nearly every plane."""
    _, _, pool, pool_backward = _functions(shape)
    x = rng.integers(0, 3, shape).astype(np.float64)
    y, argmax = pool(x)
    expected_y, expected_argmax = global_max_pool_ref(x)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)
    grad_x = pool_backward(np.ones(shape[:2]), argmax, shape)
    # one gradient per plane, at one position only
    np.testing.assert_array_equal(grad_x.reshape(shape[0], shape[1], -1).sum(-1), 1)


def test_global_max_pool_tie_and_nan_examples(dtype):
    x = np.array([[[1, 5, 0], [5, 2, 5]],
                  [[np.nan, 9, np.nan], [-np.inf, -np.inf, -np.inf]]], dtype=dtype)
    x = x.reshape(1, 2, 2, 3)
    y, argmax = fcf.global_max_pool2d(x)
    np.testing.assert_array_equal(y, [[5, np.nan]])
    np.testing.assert_array_equal(argmax, [[1, 0]])
    x = np.array([[[-np.inf, -np.inf], [3, np.nan]]], dtype=dtype)
    y, argmax = fcf.global_max_pool1d(x)
    np.testing.assert_array_equal(y, [[-np.inf, np.nan]])
    np.testing.assert_array_equal(argmax, [[0, 1]])


def test_global_max_pool_zeros_of_either_sign_tie(dtype):
    """-0 and +0 are equal: the first of them is the maximum, with its sign."""
    x = np.array([[[-1, -0.0, 0.0, -2], [-3, 0.0, -0.0, -0.0]]], dtype=dtype)
    y, argmax = fcf.global_max_pool1d(x)
    np.testing.assert_array_equal(argmax, [[1, 1]])
    assert np.signbit(y).tolist() == [[True, False]]


@pytest.mark.parametrize("length", [1, 2, 7, 16, 33, 100])
def test_global_max_pool_finds_the_first_of_many_positions(length, dtype):
    """The maximum, a tie or a NaN at every position of planes of several
    lengths (vector bodies and remainders)."""
    for where in range(length):
        x = np.zeros((1, 3, length), dtype)
        x[0, 0, where] = 1
        x[0, 1, where:] = 1
        x[0, 2, where] = np.nan
        x[0, 2, -1] = np.nan
        _, argmax = fcf.global_max_pool1d(x)
        np.testing.assert_array_equal(argmax, [[where] * 3])


def test_global_avg_pool_of_a_constant_is_the_constant(dtype):
    x = np.full((2, 3, 7, 5), 0.1, dtype=dtype)
    np.testing.assert_allclose(fcf.global_avg_pool2d(x), np.full((2, 3), 0.1),
                               rtol=np.finfo(dtype).eps * 8)
    grad_x = fcf.global_avg_pool2d_backward(np.full((2, 3), 35.0, dtype), x.shape)
    np.testing.assert_array_equal(grad_x, np.ones(x.shape, dtype))


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 2, 7)], ids=str)
def test_global_pool_gradients_match_finite_differences(shape, rng):
    avg, avg_backward, pool, pool_backward = _functions(shape)
    size = int(np.prod(shape))
    # values at least 0.25 apart: a step never changes a plane's maximum
    x = rng.permutation(size).reshape(shape) * 0.25 - size / 8
    weights = rng.standard_normal(shape[:2])
    numeric = central_differences(lambda: np.sum(avg(x) * weights), x, 1e-3)
    np.testing.assert_allclose(avg_backward(weights, shape), numeric,
                               rtol=1e-6, atol=1e-9)
    numeric = central_differences(lambda: np.sum(pool(x)[0] * weights), x, 1e-3)
    np.testing.assert_allclose(pool_backward(weights, pool(x)[1], shape), numeric,
                               rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ threads

@pytest.mark.parametrize("shape", [(5, 7, 9, 11), (6, 5, 301)], ids=str)
def test_global_pooling_is_bitwise_identical_for_any_thread_count(shape, dtype, rng):
    avg, avg_backward, pool, pool_backward = _functions(shape)
    x = rng.standard_normal(shape).astype(dtype)
    grad_y = rng.standard_normal(shape[:2]).astype(dtype)
    argmax = pool(x)[1]
    check_thread_independence(lambda t: avg(x, n_threads=t))
    check_thread_independence(lambda t: avg_backward(grad_y, shape, n_threads=t))
    check_thread_independence(lambda t: pool(x, n_threads=t))
    check_thread_independence(lambda t: pool_backward(grad_y, argmax, shape, n_threads=t))


# ---------------------------------------------------------- out= and prepare

def test_out_arrays_are_written_and_prepared_calls_rerun(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    y, argmax = np.empty((3, 4)), np.empty((3, 4), np.int32)
    call = fcf.prepare(fcf.global_max_pool2d, x, out=(y, argmax))
    for _ in range(2):
        x[...] = rng.standard_normal(x.shape)
        got_y, got_argmax = call.run(2)
        assert got_y is y and got_argmax is argmax
        np.testing.assert_array_equal(y, global_max_pool_ref(x)[0])
    grad_x = np.empty(x.shape)
    call = fcf.prepare(fcf.global_avg_pool2d_backward, y, x.shape, out=grad_x)
    assert call.run(1) is grad_x
    assert_close(grad_x, global_avg_pool_backward_ref(y, x.shape))


# --------------------------------------------------------- bad arguments

@pytest.mark.parametrize("call, error, match", [
    (lambda: fcf.global_avg_pool2d(np.ones((2, 3, 4))), ValueError, "x must have 4"),
    (lambda: fcf.global_max_pool1d(np.ones((2, 3, 4, 5))), ValueError, "x must have 3"),
    (lambda: fcf.global_avg_pool2d(np.ones((2, 3, 4, 4), int)), TypeError, "float32"),
    (lambda: fcf.global_avg_pool2d(np.ones((0, 3, 4, 4))), ValueError, "empty"),
    (lambda: fcf.global_avg_pool2d(np.ones((2, 3, 4, 4)), out=np.empty((2, 4))),
     ValueError, r"out must have shape \(2, 3\)"),
    (lambda: fcf.global_avg_pool2d_backward(np.ones((2, 4)), (2, 3, 4, 4)),
     ValueError, "grad_y must have shape"),
    (lambda: fcf.global_avg_pool1d_backward(np.ones((2, 3)), (2, 3, 4, 4)),
     ValueError, "x_shape"),
    (lambda: fcf.global_max_pool2d_backward(np.ones((2, 3)), np.zeros((2, 3)),
                                            (2, 3, 4, 4)), TypeError, "integer"),
    (lambda: fcf.global_max_pool2d_backward(np.ones((2, 3)), np.zeros((3, 2), np.int32),
                                            (2, 3, 4, 4)), ValueError, "argmax must have"),
    (lambda: fcf.global_max_pool2d_backward(np.ones((2, 3)), np.full((2, 3), 16),
                                            (2, 3, 4, 4)), ValueError, r"\[0, 16\)"),
    (lambda: fcf.global_max_pool2d_backward(np.ones((2, 3)),
                                            np.full((2, 3), -1, np.int32), (2, 3, 4, 4)),
     ValueError, "1 outside|6 outside"),
], ids=["2d-rank", "1d-rank", "int-dtype", "empty", "out-shape", "grad-shape",
        "x_shape-rank", "float-argmax", "argmax-shape", "argmax-range-int64",
        "argmax-range-int32"])
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_out_overlapping_the_input_is_refused():
    x = np.ones((2, 3, 4, 4))
    with pytest.raises(ValueError, match="shares memory"):
        fcf.global_max_pool2d(x, out=(x.reshape(-1)[:6].reshape(2, 3),
                                      np.empty((2, 3), np.int32)))
    with pytest.raises(ValueError, match="shares memory"):
        fcf.global_avg_pool2d_backward(x.reshape(-1)[:6].reshape(2, 3), x.shape, out=x)
