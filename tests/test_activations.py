"""ReLU of fastcnn.functional: special values, in place, backward, bits independent of threads, bad input.

Every value is checked against a plain NumPy (or SciPy) reference written
here, computed in float64, never against fastcnn itself.
"""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence, normal


def test_relu_bitwise_identical_for_any_thread_count(dtype, rng):
    x = normal(rng, (317, 331), dtype)          # 104927 elements, not a block multiple
    x.flat[::97] = np.nan
    x.flat[1::89] = -0.0
    y = fcf.relu(x)
    grad_y = normal(rng, x.shape, dtype)
    check_thread_independence(lambda t: fcf.relu(x, n_threads=t))
    check_thread_independence(lambda t: fcf.relu_backward(grad_y, y, n_threads=t))


# ========================================================== 4. ReLU values

SPECIAL = [np.nan, -0.0, 0.0, -1.0, -np.inf, np.inf, 2.5, 1e-30, -1e-30, 5e-324, -3.0]


def test_relu_special_values(dtype):
    x = np.array(SPECIAL, dtype=dtype)
    y = fcf.relu(x)
    assert y.dtype == dtype and y.shape == x.shape and y is not x
    assert np.isnan(y[0])
    expected = np.where(x > 0, x, 0)[1:]            # NaN handled above
    np.testing.assert_array_equal(y[1:], expected)
    assert (y[1:] >= 0).all()
    np.testing.assert_array_equal(x, np.array(SPECIAL, dtype=dtype))  # input untouched


@pytest.mark.parametrize("shape", [(11,), (3, 4, 5), (200, 700)], ids=str)
def test_relu_in_place_equals_out_of_place(shape, dtype, rng):
    x = normal(rng, shape, dtype)
    x.flat[::7] = 0.0
    x.flat[3::11] = -0.0
    x.flat[5::13] = np.nan
    expected = np.where(np.isnan(x) | (x > 0), x, 0)
    out_of_place = fcf.relu(x)
    np.testing.assert_array_equal(out_of_place, expected)
    result = fcf.relu(x, out=x)
    assert result is x
    np.testing.assert_array_equal(x, expected)


def test_relu_backward_values(dtype, rng):
    y = np.array([0.0, -0.0, 1.0, 3.5, np.nan, 1e-30, 0.0, np.inf], dtype=dtype)
    grad_y = normal(rng, y.shape, dtype)
    grad_x = fcf.relu_backward(grad_y, y)
    expected = np.where(y > 0, grad_y, 0)   # y == 0 (either sign) and NaN: zero
    np.testing.assert_array_equal(grad_x, expected)
    assert grad_x[0] == 0 and grad_x[1] == 0 and grad_x[6] == 0

    big_y = fcf.relu(normal(rng, (300, 400), dtype))
    big_g = normal(rng, big_y.shape, dtype)
    expected = np.where(big_y > 0, big_g, 0)
    np.testing.assert_array_equal(fcf.relu_backward(big_g, big_y), expected)
    result = fcf.relu_backward(big_g, big_y, out=big_g)      # in place on grad_y
    assert result is big_g
    np.testing.assert_array_equal(big_g, expected)



def test_relu_backward_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        fcf.relu_backward(np.ones((2, 3)), np.ones((3, 2)))


