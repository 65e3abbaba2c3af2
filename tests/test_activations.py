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




# ============== tanh, sigmoid, leaky ReLU, ELU, GELU: references and checks
#
# References in float64 from NumPy/SciPy functions other than the libm
# calls the kernels make where one exists (scipy's expit and ndtr, the
# derivative from x rather than from y); each kernel's float32 result is
# compared with the reference on the same float32 input.

from scipy.special import expit, ndtr  # noqa: E402

EXTREME = np.array([-1e30, -1e4, -800.0, -100.0, -40.0, -20.0, -5.0, -1.0, -1e-6,
                    -1e-30, -0.0, 0.0, 1e-30, 1e-6, 0.5, 1.0, 5.0, 20.0, 40.0,
                    100.0, 800.0, 1e4, 1e30, -np.inf, np.inf])


def _normal_pdf(x):
    return np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _gelu_ref(x):
    cdf = ndtr(x)
    with np.errstate(invalid="ignore"):      # -inf * 0, replaced by 0
        return np.where(cdf == 0, 0.0, x * cdf)


def _gelu_grad_ref(x):
    pdf = _normal_pdf(x)
    with np.errstate(invalid="ignore"):
        return ndtr(x) + np.where(pdf == 0, 0.0, x * pdf)


def _gelu_tanh_inner(x):
    """2 u, u = sqrt(2 / pi) (x + 0.044715 x^3): the tanh approximation is
    0.5 x (1 + tanh(u)) = x expit(2 u)."""
    return 2 * np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)


def _gelu_tanh_ref(x):
    with np.errstate(all="ignore"):
        cdf = 0.5 * (1 + np.tanh(_gelu_tanh_inner(x) / 2))
        tail = expit(_gelu_tanh_inner(x))      # where 1 + tanh cancels
        cdf = np.where(x < -1, tail, cdf)
        return np.where(cdf == 0, 0.0, x * cdf)


def _gelu_tanh_grad_ref(x):
    with np.errstate(all="ignore"):
        s = expit(_gelu_tanh_inner(x))
        slope = 2 * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x * x)
        return s + np.where(s * (1 - s) == 0, 0.0, x * slope * s * (1 - s))


# name -> (forward, backward, keywords, reference of f(x), reference of
# f'(x) from x, whether the backward pass reads y (else x))
ACTIVATIONS = {
    "tanh": (fcf.tanh, fcf.tanh_backward, {}, np.tanh,
             lambda x: 1 / np.cosh(np.clip(x, -400, 400)) ** 2, True),
    "sigmoid": (fcf.sigmoid, fcf.sigmoid_backward, {}, expit,
                lambda x: expit(x) * expit(-x), True),
    "leaky_relu": (fcf.leaky_relu, fcf.leaky_relu_backward, {"negative_slope": 0.2},
                   lambda x: np.where(x > 0, x, 0.2 * x),
                   lambda x: np.where(x > 0, 1.0, 0.2), True),
    "elu": (fcf.elu, fcf.elu_backward, {"alpha": 1.5},
            lambda x: np.where(x > 0, x, 1.5 * np.expm1(np.minimum(x, 0))),
            lambda x: np.where(x > 0, 1.0, 1.5 * np.exp(np.minimum(x, 0))), True),
    "gelu": (fcf.gelu, fcf.gelu_backward, {}, _gelu_ref, _gelu_grad_ref, False),
    "gelu_tanh": (fcf.gelu, fcf.gelu_backward, {"approximate": "tanh"},
                  _gelu_tanh_ref, _gelu_tanh_grad_ref, False),
}
NAMES = list(ACTIVATIONS)


def _eps(dtype):
    return float(np.finfo(dtype).eps)


def _condition(name, x):
    """How much the rounding of the activations' arguments is magnified:
    GELU's exponent -x**2 / 2 (float64: erfc's argument x / sqrt(2)),
    rounded to the dtype first, by up to about x**2 in the left tail; the tanh approximation's exponent 2u by about
    |2u| there."""
    if name == "gelu":
        return 2 + x * x
    if name == "gelu_tanh":
        return 2 + np.abs(_gelu_tanh_inner(x))
    return 2.0


def _forward_tolerance(name, x, dtype):
    """Allowed |error| per element of the forward pass."""
    x = np.where(np.isfinite(x), x, 0.0)
    return 4 * _eps(dtype) * _condition(name, x) * np.abs(ACTIVATIONS[name][3](x)) \
        + np.finfo(dtype).tiny


@pytest.mark.parametrize("name", NAMES)
def test_activation_matches_reference_on_extreme_and_random_values(name, dtype, rng):
    forward, _, keywords, reference, _, _ = ACTIVATIONS[name]
    x = np.concatenate([EXTREME, 4 * rng.standard_normal(2000)]).astype(dtype)
    x[EXTREME.size:EXTREME.size + 50] = 0.0
    y = forward(x, **keywords)
    assert y.dtype == dtype and y.shape == x.shape
    x64 = x.astype(np.float64)
    expected = reference(x64)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(y[~finite], expected[~finite])
    error = np.abs(y[finite].astype(np.float64) - expected[finite])
    tolerance = _forward_tolerance(name, x64, dtype)[finite]
    assert (error <= tolerance).all(), x64[finite][error > tolerance]


@pytest.mark.parametrize("name", NAMES)
def test_activation_keeps_nan(name, dtype):
    """NaN in, NaN out; its gradient is NaN but for leaky ReLU's, which, as
    PyTorch's, takes the slope where the test ``> 0`` fails."""
    forward, backward, keywords, *_ = ACTIVATIONS[name]
    x = np.array([np.nan, -np.nan, 1.0], dtype=dtype)
    y = forward(x, **keywords)
    assert np.isnan(y[:2]).all() and not np.isnan(y[2])
    from_y = ACTIVATIONS[name][5]
    grad_x = backward(np.full_like(x, 2.0), y if from_y else x, **keywords)
    if name == "leaky_relu":
        np.testing.assert_array_equal(grad_x, np.array([0.4, 0.4, 2.0], dtype))
    else:
        assert np.isnan(grad_x[:2]).all() and not np.isnan(grad_x[2])


def test_sigmoid_saturates_without_overflow(dtype):
    x = np.array([-1e30, -1e4, -200.0, 200.0, 1e4, 1e30, -np.inf, np.inf], dtype=dtype)
    with np.errstate(all="raise"):          # NumPy's view: no warning to raise
        y = fcf.sigmoid(x)
    np.testing.assert_array_equal(y[[0, 1, 3, 4, 5, 6, 7]], [0, 0, 1, 1, 1, 0, 1])
    # exp(-200) through e / (1 + e): the vector exp (libmvec's, at most 4
    # ulp off) can miss the correctly rounded value by a few ulp
    np.testing.assert_allclose(y[2], expit(np.float64(-200)).astype(dtype),
                               rtol=8 * _eps(dtype), atol=0)
    assert fcf.sigmoid(np.array([-100.0]))[0] == pytest.approx(np.exp(-100.0), rel=1e-14)


def test_gelu_is_exact_erf_form_in_the_tails():
    x = np.array([-30.0, -10.0, -8.0, 8.0, 30.0])
    # 1 + erf(-x/sqrt 2) would be 0 or 1 - ulp here; erfc keeps the tail
    np.testing.assert_allclose(fcf.gelu(x)[:3], x[:3] * ndtr(x[:3]), rtol=1e-12)
    np.testing.assert_allclose(fcf.gelu(x)[3:], x[3:] * ndtr(x[3:]), rtol=1e-15, atol=0)
    assert fcf.gelu(np.array([-np.inf]))[0] == 0
    np.testing.assert_array_equal(
        fcf.gelu_backward(np.ones(3), np.array([-np.inf, np.inf, -1e200])), [0, 1, 0])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_keeps_its_relative_precision_into_the_left_tail(approximate):
    """Both forms, and their gradients, within a few float32 rounding errors
    of the float64 function wherever the result is a normal number (PyTorch's
    float32 forms are off by 17% at -5 and give 0 from about -6 down)."""
    x = np.linspace(-13, 6, 1_000_001).astype(np.float32)
    x64 = x.astype(np.float64)
    if approximate == "none":
        cdf, density = ndtr(x64), _normal_pdf(x64)
    else:
        cdf = expit(_gelu_tanh_inner(x64))
        density = np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x64 ** 2) * 2 * cdf * (1 - cdf)
    y = fcf.gelu(x, approximate=approximate).astype(np.float64)
    grad = fcf.gelu_backward(np.ones_like(x), x, approximate=approximate)
    normal = np.abs(x64 * cdf) > np.finfo(np.float32).tiny
    relative = np.abs(y - x64 * cdf)[normal] / np.abs(x64 * cdf)[normal]
    grad_relative = (np.abs(grad - (cdf + x64 * density))
                     / (cdf + np.abs(x64 * density)))[normal]
    centre = (x64[normal] >= -3)
    assert relative[centre].max() < 2e-6 and grad_relative[centre].max() < 2e-6
    assert relative.max() < 2e-5 and grad_relative.max() < 2e-5


def test_gelu_tanh_approximation_keeps_the_tail_and_stays_near_the_exact_form():
    x = np.array([-30.0, -12.0, -8.0, -3.0, 8.0, 30.0])
    # 0.5 x (1 + tanh(u)) would be 0 at -8 and below; x sigmoid(2u) is not
    u2 = _gelu_tanh_inner(x)
    np.testing.assert_allclose(fcf.gelu(x, approximate="tanh"), x * expit(u2),
                               rtol=1e-13)
    assert fcf.gelu(x[1:3], approximate="tanh").min() < 0
    assert fcf.gelu(np.array([-np.inf]), approximate="tanh")[0] == 0
    np.testing.assert_array_equal(fcf.gelu_backward(
        np.ones(3), np.array([-np.inf, np.inf, -1e200]), approximate="tanh"), [0, 1, 0])
    # the documented distance to the erf form
    grid = np.linspace(-10, 10, 200001)
    distance = np.abs(fcf.gelu(grid, approximate="tanh") - fcf.gelu(grid))
    assert 1e-4 < distance.max() < 5e-4


@pytest.mark.parametrize("approximate", ["Tanh", "erf", None, ""])
def test_gelu_rejects_unknown_approximation(approximate):
    from fastcnn.layers import GELU
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        fcf.gelu(np.ones(3), approximate=approximate)
    with pytest.raises(ValueError, match="approximate must be 'none' or 'tanh'"):
        fcf.gelu_backward(np.ones(3), np.ones(3), approximate=approximate)
    with pytest.raises(ValueError, match="GELU: approximate"):
        GELU(approximate)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_reference(name, dtype, rng):
    forward, backward, keywords, reference, derivative, from_y = ACTIVATIONS[name]
    x = np.concatenate([EXTREME[np.isfinite(EXTREME)],
                        4 * rng.standard_normal(2000)]).astype(dtype)
    grad_y = normal(rng, x.shape, dtype)
    y = reference(x.astype(np.float64)).astype(dtype)      # the reference's output
    grad_x = backward(grad_y, y if from_y else x, **keywords)
    assert grad_x.dtype == dtype and grad_x.shape == x.shape
    x64, g64, y64 = x.astype(np.float64), grad_y.astype(np.float64), y.astype(np.float64)
    if name == "tanh":
        expected, scale = g64 * (1 - y64 * y64), np.abs(g64) * (1 + y64 * y64)
    elif name == "sigmoid":
        expected, scale = g64 * y64 * (1 - y64), np.abs(g64 * y64)
    elif name == "elu":
        expected = np.where(y64 > 0, g64, g64 * (y64 + 1.5))
        scale = np.where(y64 > 0, np.abs(g64), np.abs(g64) * (np.abs(y64) + 1.5))
    else:
        expected = g64 * derivative(x64)
        if name == "gelu":
            scale = np.abs(g64) * (np.abs(ndtr(x64)) + np.abs(x64 * _normal_pdf(x64)))
        elif name == "gelu_tanh":
            s_ = expit(_gelu_tanh_inner(x64))
            scale = np.abs(g64) * (s_ + np.abs(derivative(x64) - s_))
        else:
            scale = np.abs(g64) * np.abs(derivative(x64))
    tolerance = 4 * _eps(dtype) * _condition(name, x64) * scale + np.finfo(dtype).tiny
    error = np.abs(grad_x.astype(np.float64) - expected)
    assert (error <= tolerance).all(), x64[error > tolerance]


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_the_derivative_in_float64(name, rng):
    """The formula from y against the derivative from x: catches a wrong
    formula that the test above, reading the same y, would share."""
    forward, backward, keywords, _, derivative, from_y = ACTIVATIONS[name]
    x = 3 * rng.standard_normal(500)
    grad_y = rng.standard_normal(500)
    y = forward(x, **keywords)
    grad_x = backward(grad_y, y if from_y else x, **keywords)
    np.testing.assert_allclose(grad_x, grad_y * derivative(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_finite_differences(name, rng, central_differences):
    forward, backward, keywords, _, _, from_y = ACTIVATIONS[name]
    x = 2 * rng.standard_normal((3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5        # away from the kinks of leaky ReLU and ELU
    weights = rng.standard_normal(x.shape)

    def loss():          # L = sum(f(x) * R): dL/dy = R
        return np.sum(forward(x, **keywords) * weights)
    y = forward(x, **keywords)
    analytic = backward(weights, y if from_y else x, **keywords)
    numeric = central_differences(loss, x, 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_activation_bitwise_identical_for_any_thread_count(name, dtype, rng):
    forward, backward, keywords, _, _, from_y = ACTIVATIONS[name]
    x = 3 * normal(rng, (317, 331), dtype)      # not a block multiple
    x.flat[::97] = np.nan
    x.flat[1::89] = -0.0
    x.flat[2::83] = 1e4
    x.flat[3::79] = -1e4
    y = forward(x, **keywords)
    grad_y = normal(rng, x.shape, dtype)
    check_thread_independence(lambda t: forward(x, **keywords, n_threads=t))
    check_thread_independence(lambda t: backward(grad_y, y if from_y else x, **keywords,
                                                 n_threads=t))


@pytest.mark.parametrize("name", NAMES)
def test_activation_of_an_element_does_not_depend_on_its_position(name, dtype, rng):
    """Each element alone gives the bits it gets anywhere in a longer array:
    vector math must not round the end of an array (a partial vector)
    otherwise than the rest."""
    forward, backward, keywords, _, _, from_y = ACTIVATIONS[name]
    x = (3 * rng.standard_normal(45)).astype(dtype)       # not a vector multiple
    grad_y = rng.standard_normal(x.shape).astype(dtype)
    y = forward(x, **keywords)
    read = y if from_y else x
    grad_x = backward(grad_y, read, **keywords)
    for i in range(x.size):
        np.testing.assert_array_equal(forward(x[i:i + 1], **keywords), y[i:i + 1])
        np.testing.assert_array_equal(backward(grad_y[i:], read[i:], **keywords),
                                      grad_x[i:])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(), (11,), (3, 4, 5), (200, 700)], ids=str)
def test_activation_in_place_equals_out_of_place(name, shape, dtype, rng):
    forward, backward, keywords, _, _, from_y = ACTIVATIONS[name]
    x = np.array(3 * rng.standard_normal(shape), dtype=dtype)   # 0-d too
    grad_y = np.array(rng.standard_normal(shape), dtype=dtype)
    y = forward(x, **keywords)
    activation = y if from_y else x
    grad_x = backward(grad_y, activation, **keywords)
    assert y.shape == shape and grad_x.shape == shape
    # over the activation it reads, then over the gradient it receives
    over_activation = activation.copy()
    assert backward(grad_y, over_activation, **keywords, out=over_activation) \
        is over_activation
    np.testing.assert_array_equal(over_activation, grad_x)
    assert backward(grad_y, activation, **keywords, out=grad_y) is grad_y
    np.testing.assert_array_equal(grad_y, grad_x)
    assert forward(x, **keywords, out=x) is x
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", NAMES)
def test_activation_out_is_filled_and_empty_input_works(name, dtype, rng):
    forward, backward, keywords, _, _, _ = ACTIVATIONS[name]
    x = normal(rng, (4, 6), dtype)
    out = np.full_like(x, np.nan)
    assert forward(x, **keywords, out=out) is out
    np.testing.assert_array_equal(out, forward(x, **keywords))
    empty = np.empty((0, 3), dtype)
    assert forward(empty, **keywords).shape == (0, 3)
    assert backward(empty, empty, **keywords).shape == (0, 3)


@pytest.mark.parametrize("name", NAMES)
def test_prepared_activation_calls_follow_their_arrays(name, rng):
    forward, backward, keywords, _, _, from_y = ACTIVATIONS[name]
    x, grad_y = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
    y = np.empty_like(x)
    prepared_forward = fcf.prepare(forward, x, **keywords, out=y)
    prepared_backward = fcf.prepare(backward, grad_y, y if from_y else x, **keywords)
    for _ in range(3):
        assert prepared_forward.run(2) is y
        np.testing.assert_array_equal(y, forward(x, **keywords))
        np.testing.assert_array_equal(prepared_backward.run(2),
                                      backward(grad_y, y if from_y else x, **keywords))
        x[...], grad_y[...] = rng.standard_normal((2, 6, 7))


@pytest.mark.parametrize("name", NAMES)
def test_activation_rejects_bad_arrays(name):
    forward, backward, keywords, _, _, from_y = ACTIVATIONS[name]
    read = "y" if from_y else "x"
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        forward(np.ones(3, dtype=np.int64), **keywords)
    with pytest.raises(ValueError, match=f"grad_y .* and {read} .* same shape"):
        backward(np.ones((2, 3)), np.ones((3, 2)), **keywords)
    with pytest.raises(TypeError, match="dtype"):
        backward(np.ones(3, np.float32), np.ones(3), **keywords)
    x = np.ones(10)
    with pytest.raises(ValueError, match="shares memory"):
        forward(x[:8], **keywords, out=x[1:9])
    with pytest.raises(ValueError, match="shares memory"):
        backward(x[:8], np.ones(8), **keywords, out=x[2:])
    with pytest.raises(ValueError, match="shape"):
        forward(np.ones(3), **keywords, out=np.ones(4))


@pytest.mark.parametrize("function, name, value", [
    (fcf.leaky_relu, "negative_slope", -0.01),
    (fcf.leaky_relu, "negative_slope", np.nan),
    (fcf.leaky_relu, "negative_slope", np.inf),
    (fcf.leaky_relu_backward, "negative_slope", -1.0),
    (fcf.elu, "alpha", 0.0),
    (fcf.elu, "alpha", -1.0),
    (fcf.elu, "alpha", np.inf),
    (fcf.elu_backward, "alpha", np.nan),
])
def test_activation_rejects_bad_parameters(function, name, value):
    arrays = (np.ones(3),) if "backward" not in function.__name__ else (np.ones(3),) * 2
    with pytest.raises(ValueError, match=name):
        function(*arrays, **{name: value})
    with pytest.raises(TypeError, match=name):
        function(*arrays, **{name: "1"})
