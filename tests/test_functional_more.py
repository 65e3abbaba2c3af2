"""Dense maps, ReLU, softmax cross-entropy and the optimizer updates of
fastcnn.functional, and the ``out=`` parameter of every function that has one.

Every value is checked against a plain NumPy (or SciPy) reference written
here or in conftest.py, computed in float64, never against fastcnn itself.
Finite differences check the gradients against fastcnn's own forward pass.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.special

import fastcnn
import fastcnn.functional as fcf
from fastcnn._kernels import dense as dense_kernels

THREAD_COUNTS = (1, 2, 3, 4)  # more threads than cores is allowed


# ================================================================ helpers

@pytest.fixture(params=["generic", "avx512"])
def dense_gemm(request):
    """Runs the test under each micro-kernel of the dense module (which has
    its own copy of gemm.c, hence its own switch); AVX-512 afterwards."""
    active = dense_kernels.select_gemm_kernel(request.param == "avx512")
    try:
        if active != request.param:
            pytest.skip(f"no {request.param} micro-kernel on this CPU (got {active!r})")
        yield active
    finally:
        dense_kernels.select_gemm_kernel(True)


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _abs(a):
    return np.abs(_f64(a))


def _assert_bitwise_equal(got, want, what):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, what
        assert g.tobytes() == w.tobytes(), f"{what}: results differ in bits"


def _check_thread_independence(call):
    """call(n_threads) -> array or tuple of arrays, from fresh inputs."""
    first = call(THREAD_COUNTS[0])
    for n_threads in THREAD_COUNTS[1:]:
        _assert_bitwise_equal(call(n_threads), first,
                              f"n_threads={n_threads} against n_threads=1")


# ===================================================== 1. dense vs NumPy

# (N, D, U): ones everywhere, sizes off the 8-row / 16- and 32-column panels,
# depths beyond the float64 (128) and float32 (256) depth blocks.
LINEAR_SHAPES = [
    (1, 1, 1), (1, 5, 3), (7, 1, 4), (6, 9, 1), (1, 300, 1), (9, 17, 33),
    (8, 16, 32), (37, 53, 29), (33, 129, 17), (19, 257, 45), (300, 700, 130),
]


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "N{}-D{}-U{}".format(*s))
def test_linear_and_backward_match_numpy(shape, dtype, dense_gemm, rng, assert_close):
    n, d, u = shape
    x, w, b, g = (_normal(rng, s, dtype) for s in [(n, d), (u, d), (u,), (n, u)])
    x64, w64, b64, g64 = map(_f64, (x, w, b, g))

    y = fcf.linear(x, w, b)
    assert y.dtype == dtype and y.shape == (n, u)
    assert_close(y, x64 @ w64.T + b64, scale=_abs(x) @ _abs(w).T + _abs(b))
    y0 = fcf.linear(x, w)
    assert_close(y0, x64 @ w64.T, scale=_abs(x) @ _abs(w).T)

    grad_x = fcf.linear_backward_input(g, w)
    assert grad_x.dtype == dtype and grad_x.shape == (n, d)
    assert_close(grad_x, g64 @ w64, scale=_abs(g) @ _abs(w))

    grad_w, grad_b = fcf.linear_backward_weight(x, g)
    assert grad_w.dtype == dtype and grad_w.shape == (u, d)
    assert grad_b.dtype == dtype and grad_b.shape == (u,)
    assert_close(grad_w, g64.T @ x64, scale=_abs(g).T @ _abs(x))
    assert_close(grad_b, g64.sum(axis=0), scale=_abs(g).sum(axis=0))

    all_three = fcf.linear_backward(x, w, g)
    assert len(all_three) == 3
    assert_close(all_three[0], g64 @ w64, scale=_abs(g) @ _abs(w))
    assert_close(all_three[1], g64.T @ x64, scale=_abs(g).T @ _abs(x))
    assert_close(all_three[2], g64.sum(axis=0), scale=_abs(g).sum(axis=0))


def test_linear_accepts_non_contiguous_inputs(rng, assert_close):
    x = _normal(rng, (40, 23), np.float64)[:, ::2]          # (40, 12), strided
    w = _normal(rng, (12, 9), np.float64).T                 # (9, 12), transposed
    y = fcf.linear(x, w)
    assert_close(y, x @ w.T, scale=np.abs(x) @ np.abs(w).T)


# ====================================== 2. finite differences, float64

@pytest.mark.parametrize("shape", [(3, 5, 4), (1, 9, 2), (10, 1, 1)],
                         ids=lambda s: "N{}-D{}-U{}".format(*s))
def test_linear_gradients_match_finite_differences(shape, dense_gemm, rng,
                                                   central_differences):
    n, d, u = shape
    x, w, b, g = (_normal(rng, s, np.float64) for s in [(n, d), (u, d), (u,), (n, u)])

    def loss():  # a random linear function of the output
        return float(np.sum(g * fcf.linear(x, w, b)))

    grad_x, grad_w, grad_b = fcf.linear_backward(x, w, g)
    for name, analytic, array in [("x", grad_x, x), ("w", grad_w, w), ("b", grad_b, b)]:
        numeric = central_differences(loss, array, 1e-3)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8,
                                   err_msg=f"gradient with respect to {name}")


# ======================================= 3. bits independent of threads

@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
def test_dense_bitwise_identical_for_any_thread_count(dtype_, dense_gemm, rng):
    n, d, u = 256, 1000, 300
    x, w, b, g = (_normal(rng, s, dtype_) for s in [(n, d), (u, d), (u,), (n, u)])
    _check_thread_independence(lambda t: fcf.linear(x, w, b, n_threads=t))
    _check_thread_independence(lambda t: fcf.linear_backward_input(g, w, n_threads=t))
    _check_thread_independence(lambda t: fcf.linear_backward_weight(x, g, n_threads=t))


def test_relu_bitwise_identical_for_any_thread_count(dtype, rng):
    x = _normal(rng, (317, 331), dtype)          # 104927 elements, not a block multiple
    x.flat[::97] = np.nan
    x.flat[1::89] = -0.0
    y = fcf.relu(x)
    grad_y = _normal(rng, x.shape, dtype)
    _check_thread_independence(lambda t: fcf.relu(x, n_threads=t))
    _check_thread_independence(lambda t: fcf.relu_backward(grad_y, y, n_threads=t))


def _update_state(rng, dtype, size=200_003):
    params, grads, a, b = (_normal(rng, size, dtype) for _ in range(4))
    return params, grads, a, np.abs(b)   # the second moment is non-negative


def test_sgd_update_bitwise_identical_for_any_thread_count(dtype, rng):
    state = _update_state(rng, dtype)
    for nesterov in (False, True):
        def call(n_threads):
            params, grads, velocity = (a.copy() for a in state[:3])
            fcf.sgd_update(params, grads, velocity, 0.05, momentum=0.9,
                           nesterov=nesterov, l2=1e-3, n_penalized=150_001,
                           n_threads=n_threads)
            return params, velocity
        _check_thread_independence(call)


def test_adam_update_bitwise_identical_for_any_thread_count(dtype, rng):
    state = _update_state(rng, dtype)

    def call(n_threads):
        params, grads, m, v = (a.copy() for a in state)
        fcf.adam_update(params, grads, m, v, 3, 1e-3, l2=1e-3, n_penalized=150_001,
                        n_threads=n_threads)
        return params, m, v
    _check_thread_independence(call)


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
    x = _normal(rng, shape, dtype)
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
    grad_y = _normal(rng, y.shape, dtype)
    grad_x = fcf.relu_backward(grad_y, y)
    expected = np.where(y > 0, grad_y, 0)   # y == 0 (either sign) and NaN: zero
    np.testing.assert_array_equal(grad_x, expected)
    assert grad_x[0] == 0 and grad_x[1] == 0 and grad_x[6] == 0

    big_y = fcf.relu(_normal(rng, (300, 400), dtype))
    big_g = _normal(rng, big_y.shape, dtype)
    expected = np.where(big_y > 0, big_g, 0)
    np.testing.assert_array_equal(fcf.relu_backward(big_g, big_y), expected)
    result = fcf.relu_backward(big_g, big_y, out=big_g)      # in place on grad_y
    assert result is big_g
    np.testing.assert_array_equal(big_g, expected)


# ================================================ 5. softmax cross-entropy

def _cross_entropy_ref(logits, target):
    z = _f64(logits)
    n = z.shape[0]
    log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
    loss = -log_p[np.arange(n), target].mean()
    onehot = np.zeros_like(z)
    onehot[np.arange(n), target] = 1
    return loss, (np.exp(log_p) - onehot) / n


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (64, 10), (33, 257)], ids=str)
def test_softmax_cross_entropy_matches_reference(shape, dtype, rng):
    n, k = shape
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.integers(0, k, n)
    saved = logits.copy()
    loss, grad = fcf.softmax_cross_entropy(logits, target)
    np.testing.assert_array_equal(logits, saved)
    ref_loss, ref_grad = _cross_entropy_ref(logits, target)
    assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == shape
    eps = np.finfo(dtype).eps
    assert abs(loss - ref_loss) <= 16 * eps * max(1.0, abs(ref_loss))
    np.testing.assert_allclose(grad, ref_grad, rtol=16 * eps, atol=16 * eps / n)
    # every row of the gradient sums to zero, the target entry is negative
    np.testing.assert_allclose(_f64(grad).sum(axis=1), 0, atol=16 * eps * k / n)
    assert (grad[np.arange(n), target] <= 0).all()


def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1000, -1000, 0],
                       [-1000, -1000, -1000],
                       [1000, 1000, -1000],
                       [-1000, 1000, -1000]], dtype=dtype)
    target = np.array([0, 2, 2, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        loss, grad = fcf.softmax_cross_entropy(logits, target)
        p = fcf.softmax(logits)
        log_p = fcf.log_softmax(logits)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert np.isfinite(p).all() and np.isfinite(log_p).all()
    # per row: 0, log 3, 2000 + log 2, 2000
    expected = np.mean([0, np.log(3), 2000 + np.log(2), 2000])
    assert loss == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-13)
    expected_p = np.array([[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0], [0, 1, 0]])
    np.testing.assert_allclose(p, expected_p, atol=4 * np.finfo(dtype).eps)
    onehot = np.eye(3)[target]
    np.testing.assert_allclose(grad, (expected_p - onehot) / 4, atol=4 * np.finfo(dtype).eps)


def test_softmax_cross_entropy_gradient_matches_finite_differences(rng, central_differences):
    logits = 2 * rng.standard_normal((4, 6))
    target = np.array([5, 0, 3, 3])
    _, grad = fcf.softmax_cross_entropy(logits, target)
    numeric = central_differences(
        lambda: fcf.softmax_cross_entropy(logits, target)[0], logits, 1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (50, 1000)], ids=str)
def test_softmax_rows_sum_to_one(shape, dtype, rng):
    logits = (30 * rng.standard_normal(shape)).astype(dtype)
    p = fcf.softmax(logits)
    log_p = fcf.log_softmax(logits)
    assert p.dtype == dtype and log_p.dtype == dtype and p.shape == shape
    assert ((p >= 0) & (p <= 1)).all()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(_f64(p).sum(axis=1), 1, rtol=0,
                               atol=8 * eps * shape[1] ** 0.5 + 4 * eps)
    reference = scipy.special.log_softmax(_f64(logits), axis=1)
    np.testing.assert_allclose(log_p, reference, rtol=8 * eps,
                               atol=8 * eps * np.abs(reference).max())


@pytest.mark.parametrize("target", [
    np.array([0, 3, 1]),                 # 3 is out of range for K = 3
    np.array([0, -1, 1]),                # negative
    np.array([[0], [1], [2]]),           # (N, 1)
    np.array([0, 1]),                    # too short
    np.array([0, 1, 2, 0]),              # too long
    np.array([0.0, 1.0, 2.0]),           # float dtype
    np.array([True, False, True]),       # bool dtype
    np.array(1),                         # scalar
], ids=["too-large", "negative", "column", "short", "long", "float", "bool", "scalar"])
def test_softmax_cross_entropy_rejects_bad_target(target):
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros((3, 3)), target)


def test_softmax_cross_entropy_rejects_bad_logits():
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros((2, 3, 4)), np.array([0, 1]))
    with pytest.raises(TypeError):
        fcf.softmax_cross_entropy(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))


def test_softmax_cross_entropy_rejects_empty_batch():
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


# ===================================================== 6. optimizer updates

def _penalized(params, grads, l2, n_penalized):
    g = _f64(grads).copy()
    g[:n_penalized] += l2 * _f64(params)[:n_penalized]
    return g


def _sgd_ref(params, grads, velocity, lr, momentum, nesterov, l2, n_penalized):
    """(params, velocity, scale of params, scale of velocity) in float64."""
    p, v = _f64(params), _f64(velocity)
    g = _penalized(params, grads, l2, n_penalized)
    g_abs = np.abs(_f64(grads)) + l2 * np.abs(p) * (np.arange(p.size) < n_penalized)
    v_new = momentum * v - lr * g
    v_scale = momentum * np.abs(v) + lr * g_abs
    if nesterov:
        p_new = p + (momentum * v_new - lr * g)
        p_scale = np.abs(p) + momentum * v_scale + lr * g_abs
    else:
        p_new = p + v_new
        p_scale = np.abs(p) + v_scale
    return p_new, v_new, p_scale, v_scale


def _adam_ref(params, grads, m, v, step, lr, beta_1, beta_2, epsilon, l2, n_penalized):
    p = _f64(params)
    g = _penalized(params, grads, l2, n_penalized)
    m_new = beta_1 * _f64(m) + (1 - beta_1) * g
    v_new = beta_2 * _f64(v) + (1 - beta_2) * g ** 2
    lr_t = lr * np.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step)
    change = lr_t * m_new / (np.sqrt(v_new) + epsilon)
    return p - change, m_new, v_new, np.abs(p) + np.abs(change)


SGD_SETTINGS = [
    # (learning_rate, momentum, nesterov, l2, n_penalized or None)
    (0.1, 0.9, False, 0.0, None),
    (0.1, 0.9, True, 0.0, None),
    (0.05, 0.5, False, 0.01, 700),
    (0.05, 0.95, True, 0.01, 700),
    (0.2, 0.0, True, 0.3, None),
    (0.01, 0.9, True, 0.1, 0),
]


@pytest.mark.parametrize("setting", SGD_SETTINGS,
                         ids=lambda s: "lr{}-mu{}-{}-l2{}-pen{}".format(
                             s[0], s[1], "nesterov" if s[2] else "plain", s[3], s[4]))
def test_sgd_update_matches_documented_formula(setting, dtype, rng, assert_close):
    lr, momentum, nesterov, l2, n_penalized = setting
    size = 1001
    params, grads, velocity = (_normal(rng, size, dtype) for _ in range(3))
    grads_before = grads.copy()
    expected_penalized = size if n_penalized is None else n_penalized
    for _ in range(3):     # three steps in a row, each with fresh gradients
        p_ref, v_ref, p_scale, v_scale = _sgd_ref(params, grads, velocity, lr, momentum,
                                                  nesterov, l2, expected_penalized)
        result = fcf.sgd_update(params, grads, velocity, lr, momentum=momentum,
                                nesterov=nesterov, l2=l2, n_penalized=n_penalized)
        assert result is None
        np.testing.assert_array_equal(grads, grads_before)
        assert params.dtype == dtype and velocity.dtype == dtype
        assert_close(params, p_ref, scale=p_scale)
        assert_close(velocity, v_ref, scale=v_scale)
        grads[:] = _normal(rng, size, dtype)
        grads_before = grads.copy()


def test_sgd_penalty_only_on_first_entries():
    """Zero gradient and velocity: only the penalized entries move."""
    params = np.arange(1.0, 11.0)
    velocity = np.zeros(10)
    fcf.sgd_update(params, np.zeros(10), velocity, 0.5, momentum=0.0, nesterov=False,
                   l2=0.1, n_penalized=4)
    expected = np.arange(1.0, 11.0)
    expected[:4] -= 0.5 * 0.1 * expected[:4]
    np.testing.assert_allclose(params, expected, rtol=1e-15)
    np.testing.assert_array_equal(velocity[4:], 0)


@pytest.mark.parametrize("l2, n_penalized", [(0.0, None), (0.01, None), (0.05, 333)],
                         ids=["no-l2", "l2-all", "l2-first-333"])
def test_adam_update_matches_documented_formula(l2, n_penalized, dtype, rng):
    size = 1000
    lr, beta_1, beta_2, epsilon = 1e-2, 0.8, 0.95, 1e-6
    params, m, v = _normal(rng, size, dtype), np.zeros(size, dtype), np.zeros(size, dtype)
    expected_penalized = size if n_penalized is None else n_penalized
    # float64: a few roundings per step; float32: loose
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    for step in (1, 2, 3):
        grads = _normal(rng, size, dtype)
        grads_before = grads.copy()
        p_ref, m_ref, v_ref, p_scale = _adam_ref(params, grads, m, v, step, lr, beta_1,
                                                 beta_2, epsilon, l2, expected_penalized)
        fcf.adam_update(params, grads, m, v, step, lr, beta_1=beta_1, beta_2=beta_2,
                        epsilon=epsilon, l2=l2, n_penalized=n_penalized)
        np.testing.assert_array_equal(grads, grads_before)
        np.testing.assert_allclose(m, m_ref, rtol=rtol, atol=rtol * np.abs(m_ref).max(),
                                   err_msg=f"first moment at step {step}")
        np.testing.assert_allclose(v, v_ref, rtol=rtol, atol=0,
                                   err_msg=f"second moment at step {step}")
        assert (np.abs(_f64(params) - p_ref) <= rtol * p_scale).all(), f"params at step {step}"
    # Adam's first step moves every entry by lr (m / sqrt(v) = sign(g) after
    # the bias correction): a mixed-up correction would be off by 1 / (1 - beta_1).
    fresh, g = _normal(rng, size, np.float64), _normal(rng, size, np.float64)
    before = fresh.copy()
    fcf.adam_update(fresh, g, np.zeros(size), np.zeros(size), 1, 0.01, epsilon=0.0)
    np.testing.assert_allclose(before - fresh, 0.01 * np.sign(g), rtol=1e-12)


def test_update_argument_checks():
    p = np.zeros(8)
    with pytest.raises(ValueError):
        fcf.sgd_update(p, np.zeros(7), np.zeros(8), 0.1)
    with pytest.raises(ValueError):
        fcf.sgd_update(np.zeros((2, 4)), np.zeros((2, 4)), np.zeros((2, 4)), 0.1)
    with pytest.raises(TypeError):
        fcf.sgd_update(np.zeros(8, np.int64), np.zeros(8, np.int64), np.zeros(8, np.int64), 0.1)
    read_only = np.zeros(8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError):
        fcf.sgd_update(read_only, np.zeros(8), np.zeros(8), 0.1)
    with pytest.raises(ValueError):
        fcf.adam_update(p, np.zeros(8), np.zeros(8), np.zeros(16)[::2], 1, 0.1)
    with pytest.raises(ValueError):
        fcf.adam_update(p, np.zeros(8), np.zeros(8), np.zeros(8), 0, 0.1)   # step < 1
    with pytest.raises(TypeError):
        fcf.adam_update(p, np.zeros(8), np.zeros(8), np.zeros(8), 1.5, 0.1)


@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_updates_mixed_float_dtypes_raise_type_error(update):
    p = np.zeros(8)
    with pytest.raises(TypeError):
        if update == "sgd":
            fcf.sgd_update(p, np.zeros(8, np.float32), np.zeros(8), 0.1)
        else:
            fcf.adam_update(p, np.zeros(8), np.zeros(8, np.float32), np.zeros(8), 1, 0.1)


# ========================================================== 7. out= semantics

class Output:
    """One output of a function: its reference value, the magnitude bounding
    its rounding error (None: must be exact) and its dtype."""

    def __init__(self, expected, scale, dtype):
        self.expected, self.scale, self.dtype = np.asarray(expected), scale, np.dtype(dtype)

    @property
    def shape(self):
        return self.expected.shape


def _conv(rng, dtype, ref, x_shape, w_shape, stride, padding):
    x, w, b = (_normal(rng, s, dtype) for s in (x_shape, w_shape, w_shape[:1]))
    y_shape = ref.correlate(x, w, b, stride, padding).shape
    return x, w, b, _normal(rng, y_shape, dtype)


# (x shape, w shape, stride, padding): the transposed product for the input
# gradient, and the mirrored correlation (8+ channels, stride 1).
CONV_GEOMETRY = {
    2: ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 0)),
    1: ((2, 3, 11), (4, 3, 3), 2, 1),
}
CONV_GEOMETRY_MIRRORED = {
    2: ((2, 9, 6, 5), (3, 9, 3, 2), 1, 1),
    1: ((2, 9, 10), (3, 9, 3), 1, 2),
}
POOL_GEOMETRY = {2: ((2, 3, 7, 8), (3, 2), (2, 3)), 1: ((2, 3, 13), 3, 2)}


def _make_out_case(name, rng, dtype, ref):
    """call(out) -> the function's result, and its Outputs."""
    ndim = 1 if "1d" in name else 2
    op = name.split(":")[0].replace("1d", "").replace("2d", "")
    fn = getattr(fcf, name.split(":")[0])
    if op == "linear":
        x, w, b = (_normal(rng, s, dtype) for s in [(13, 21), (10, 21), (10,)])
        return (lambda out: fn(x, w, b, out=out),
                [Output(_f64(x) @ _f64(w).T + _f64(b), _abs(x) @ _abs(w).T + _abs(b), dtype)])
    if op == "linear_backward_input":
        g, w = _normal(rng, (13, 10), dtype), _normal(rng, (10, 21), dtype)
        return (lambda out: fn(g, w, out=out),
                [Output(_f64(g) @ _f64(w), _abs(g) @ _abs(w), dtype)])
    if op == "linear_backward_weight":
        x, g = _normal(rng, (13, 21), dtype), _normal(rng, (13, 10), dtype)
        return (lambda out: fn(x, g, out=out),
                [Output(_f64(g).T @ _f64(x), _abs(g).T @ _abs(x), dtype),
                 Output(_f64(g).sum(0), _abs(g).sum(0), dtype)])
    if op == "relu":
        x = _normal(rng, (6, 7), dtype)
        return lambda out: fn(x, out=out), [Output(np.maximum(x, 0), None, dtype)]
    if op == "relu_backward":
        g, y = _normal(rng, (6, 7), dtype), np.maximum(_normal(rng, (6, 7), dtype), 0)
        return lambda out: fn(g, y, out=out), [Output(np.where(y > 0, g, 0), None, dtype)]
    geometry = CONV_GEOMETRY_MIRRORED if "mirrored" in name else CONV_GEOMETRY
    x_shape, w_shape, stride, padding = geometry[ndim]
    if name.endswith(":strided"):
        stride = 2
    if op.startswith("correlate"):
        x, w, b, g = _conv(rng, dtype, ref, x_shape, w_shape, stride, padding)
        kw = dict(stride=stride, padding=padding)
    if op == "correlate":
        return (lambda out: fn(x, w, b, **kw, out=out),
                [Output(ref.correlate(x, w, b, stride, padding),
                        ref.correlate(_abs(x), _abs(w), _abs(b), stride, padding), dtype)])
    if op.startswith("correlate_backward_input"):
        return (lambda out: fn(g, w, x_shape, **kw, out=out),
                [Output(ref.correlate_backward_input(g, w, x_shape, stride, padding),
                        ref.correlate_backward_input(_abs(g), _abs(w), x_shape, stride,
                                                     padding), dtype)])
    if op == "correlate_backward_kernel":
        expected = ref.correlate_backward_kernel(x, g, w_shape, stride, padding)
        scale = ref.correlate_backward_kernel(_abs(x), _abs(g), w_shape, stride, padding)
        return (lambda out: fn(x, g, w_shape, **kw, out=out),
                [Output(e, s, dtype) for e, s in zip(expected, scale)])
    x_shape, size, stride = POOL_GEOMETRY[ndim]
    count = int(np.prod(x_shape))
    x = (rng.permutation(count).reshape(x_shape) * 0.25 - count / 8).astype(dtype)  # no ties
    y, argmax = ref.max_pool(x, size, stride)
    g = _normal(rng, y.shape, dtype)
    if op == "max_pool":
        return (lambda out: fn(x, size, stride, out=out),
                [Output(y, None, dtype), Output(argmax, None, np.int32)])
    if op == "max_pool_backward":
        return (lambda out: fn(g, argmax.astype(np.int32), x_shape, out=out),
                [Output(ref.max_pool_backward(g, argmax, x_shape),
                        ref.max_pool_backward(_abs(g), argmax, x_shape), dtype)])
    if op == "avg_pool":
        return (lambda out: fn(x, size, stride, out=out),
                [Output(ref.avg_pool(x, size, stride), ref.avg_pool(_abs(x), size, stride),
                        dtype)])
    if op == "avg_pool_backward":
        return (lambda out: fn(g, x_shape, size, stride, out=out),
                [Output(ref.avg_pool_backward(g, x_shape, size, stride),
                        ref.avg_pool_backward(_abs(g), x_shape, size, stride), dtype)])
    raise AssertionError(name)


OUT_CASES = [
    "linear", "linear_backward_input", "linear_backward_weight", "relu", "relu_backward",
    "correlate2d", "correlate1d",
    "correlate2d_backward_input", "correlate2d_backward_input:mirrored-path",
    "correlate2d_backward_input_mirrored:mirrored",
    "correlate2d_backward_input_mirrored:mirrored:strided",
    "correlate1d_backward_input", "correlate1d_backward_input:mirrored-path",
    "correlate2d_backward_kernel", "correlate1d_backward_kernel",
    "max_pool2d", "max_pool1d", "max_pool2d_backward", "max_pool1d_backward",
    "avg_pool2d", "avg_pool1d", "avg_pool2d_backward", "avg_pool1d_backward",
]


def _pack(outs):
    return outs[0] if len(outs) == 1 else tuple(outs)


def _fresh_outs(outputs):
    return [np.empty(o.shape, o.dtype) for o in outputs]


def _each_replaced(outputs, make):
    """For each output position k: (k, out argument with position k replaced
    by make(output k), the others valid)."""
    for k, output in enumerate(outputs):
        outs = _fresh_outs(outputs)
        outs[k] = make(output)
        yield k, _pack(outs)


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_is_returned_and_filled(case, dtype, rng, ref, assert_close):
    call, outputs = _make_out_case(case, rng, dtype, ref)
    for _ in range(2):   # twice: a reused out must be overwritten, not added to
        outs = [np.full(o.shape, np.nan if o.dtype.kind == "f" else -7, o.dtype)
                for o in outputs]
        result = call(_pack(outs))
        results = result if isinstance(result, tuple) else (result,)
        assert len(results) == len(outs)
        for got, out, output in zip(results, outs, outputs):
            assert got is out
            if output.scale is None:
                np.testing.assert_array_equal(got, output.expected.astype(output.dtype))
            else:
                assert_close(got, output.expected, scale=output.scale)
    # and the same values without out=
    fresh = call(None)
    fresh = fresh if isinstance(fresh, tuple) else (fresh,)
    for got, out in zip(fresh, outs):
        assert got is not out
        np.testing.assert_array_equal(got, out)


def _wrong_shapes(shape):
    yield shape[:-1] + (shape[-1] + 1,)                 # one too many
    yield shape[:2] + (1,) + shape[2:]                  # an extra axis (a 4-D out for 1-D)
    yield (int(np.prod(shape)),)                        # flattened
    if len(shape) > 1:
        yield shape[::-1] if shape[::-1] != shape else shape + (1,)


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_wrong_shape_raises_value_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)
    for k, output in enumerate(outputs):
        for shape in _wrong_shapes(output.shape):
            if shape == output.shape:
                continue
            outs = _fresh_outs(outputs)
            outs[k] = np.empty(shape, output.dtype)
            with pytest.raises(ValueError, match="shape"):
                call(_pack(outs))


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_wrong_dtype_raises_type_error(case, dtype, rng, ref):
    call, outputs = _make_out_case(case, rng, dtype, ref)
    other_float = np.float32 if dtype == np.float64 else np.float64
    for k, output in enumerate(outputs):
        wrong = ([other_float, np.int32] if output.dtype.kind == "f"
                 else [np.int64, np.uint32, dtype])
        for wrong_dtype in wrong:
            outs = _fresh_outs(outputs)
            outs[k] = np.empty(output.shape, wrong_dtype)
            with pytest.raises(TypeError, match="dtype"):
                call(_pack(outs))


def _non_contiguous(output):
    """Views of output's shape and dtype that are not C-contiguous."""
    shape, dtype = output.shape, output.dtype
    strided = np.empty(tuple(2 * s for s in shape), dtype)[tuple(slice(None, None, 2)
                                                               for _ in shape)]
    views = [strided]
    if len(shape) >= 2:
        views.append(np.empty(shape[::-1], dtype).T)                         # transposed
        views.append(np.empty(shape[:-1] + (shape[-1] + 3,), dtype)[..., 1:-2])  # sliced
    for view in views:
        assert view.shape == shape and not view.flags.c_contiguous
    return views


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_not_contiguous_raises_value_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)
    for k, output in enumerate(outputs):
        for view in _non_contiguous(output):
            outs = _fresh_outs(outputs)
            outs[k] = view
            with pytest.raises(ValueError, match="contiguous"):
                call(_pack(outs))


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_read_only_raises_value_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)

    def read_only(output):
        a = np.zeros(output.shape, output.dtype)
        a.flags.writeable = False
        return a
    for k, out in _each_replaced(outputs, read_only):
        with pytest.raises(ValueError, match="writeable"):
            call(out)
        assert not (out if len(outputs) == 1 else out[k]).any()   # nothing written


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_list_raises_type_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)
    for _, out in _each_replaced(outputs, lambda o: np.zeros(o.shape, o.dtype).tolist()):
        with pytest.raises(TypeError, match="NumPy array"):
            call(out)


def test_correlate1d_out_has_the_signal_shape(rng, ref):
    x_shape, w_shape, stride, padding = CONV_GEOMETRY[1]
    x, w, b, _ = _conv(rng, np.float64, ref, x_shape, w_shape, stride, padding)
    expected = ref.correlate(x, w, b, stride, padding)
    assert expected.ndim == 3
    out = np.empty(expected.shape)
    assert fcf.correlate1d(x, w, b, stride, padding, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):    # the internal image layout is not accepted
        fcf.correlate1d(x, w, b, stride, padding,
                        out=np.empty(expected.shape[:2] + (1,) + expected.shape[2:]))


# ============================================================ 8. bad input

def test_linear_rejects_mismatched_features():
    with pytest.raises(ValueError, match="features"):
        fcf.linear(np.zeros((4, 5)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="features"):
        fcf.linear(np.zeros((4, 5)), np.zeros((5, 4)))     # w given as (D, U)
    with pytest.raises(ValueError):
        fcf.linear(np.zeros((4, 5)), np.zeros((3, 5)), np.zeros(4))     # bias (U,)
    with pytest.raises(ValueError):
        fcf.linear_backward_input(np.zeros((4, 2)), np.zeros((3, 5)))   # U mismatch
    with pytest.raises(ValueError):
        fcf.linear_backward_weight(np.zeros((4, 5)), np.zeros((3, 2)))  # N mismatch
    with pytest.raises(ValueError):
        fcf.linear(np.zeros(5), np.zeros((3, 5)))                       # 1-D x
    with pytest.raises(ValueError):
        fcf.linear(np.zeros((2, 4, 5)), np.zeros((3, 5)))               # 3-D x
    with pytest.raises(ValueError):
        fcf.linear(np.zeros((0, 5)), np.zeros((3, 5)))                  # empty


@pytest.mark.parametrize("bad_dtype", [np.int32, np.int64, np.float16, np.complex128, bool])
def test_dense_and_relu_reject_non_float_dtypes(bad_dtype):
    a = np.ones((4, 5), dtype=bad_dtype)
    w = np.ones((3, 5), dtype=bad_dtype)
    with pytest.raises(TypeError):
        fcf.linear(a, w)
    with pytest.raises(TypeError):
        fcf.linear(np.ones((4, 5)), w)
    with pytest.raises(TypeError):
        fcf.linear_backward_input(np.ones((4, 3), dtype=bad_dtype), w)
    with pytest.raises(TypeError):
        fcf.linear_backward_weight(a, np.ones((4, 3), dtype=bad_dtype))
    with pytest.raises(TypeError):
        fcf.relu(a)
    with pytest.raises(TypeError):
        fcf.relu_backward(a, a)


@pytest.mark.parametrize("first, second", [(np.float32, np.float64), (np.float64, np.float32)],
                         ids=["f32-f64", "f64-f32"])
def test_mixed_float_dtypes_raise_type_error(first, second):
    with pytest.raises(TypeError):
        fcf.linear(np.ones((4, 5), first), np.ones((3, 5), second))
    with pytest.raises(TypeError):
        fcf.linear(np.ones((4, 5), first), np.ones((3, 5), first), np.ones(3, second))
    with pytest.raises(TypeError):
        fcf.linear_backward_input(np.ones((4, 3), first), np.ones((3, 5), second))
    with pytest.raises(TypeError):
        fcf.linear_backward_weight(np.ones((4, 5), first), np.ones((4, 3), second))
    with pytest.raises(TypeError):
        fcf.linear_backward(np.ones((4, 5), first), np.ones((3, 5), first),
                            np.ones((4, 3), second))
    with pytest.raises(TypeError):
        fcf.relu_backward(np.ones(6, first), np.ones(6, second))


def test_relu_backward_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        fcf.relu_backward(np.ones((2, 3)), np.ones((3, 2)))


# ======================================================= 9. take_samples

@pytest.mark.parametrize("shape", [(50, 7), (300, 1, 28, 28), (40, 3, 5), (9, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", THREAD_COUNTS)
def test_take_samples_equals_fancy_indexing(shape, dtype, n_threads, rng):
    # (300, 1, 28, 28) with 100 indices is over 64 KiB: copied by threads
    x = _normal(rng, shape, dtype)
    index = rng.integers(0, shape[0], size=min(100, 2 * shape[0]))
    batch = fcf.take_samples(x, index, n_threads=n_threads)
    assert batch.dtype == dtype and batch.shape == (len(index),) + shape[1:]
    np.testing.assert_array_equal(batch, x[index])


def test_take_samples_accepts_any_layout_and_writes_into_out(rng):
    x = _normal(rng, (30, 4, 6), np.float32)
    index = [3, 0, 29, 3]
    expected = x[index]
    strided = np.asfortranarray(x)
    read_only = x.copy()
    read_only.flags.writeable = False
    for source in (strided, read_only, x[:, :, :]):
        np.testing.assert_array_equal(fcf.take_samples(source, index), expected)
    for typed in (np.array(index, np.uint8), np.array(index, np.int32), tuple(index)):
        np.testing.assert_array_equal(fcf.take_samples(x, typed), expected)
    out = np.full((4, 4, 6), np.nan, np.float32)
    assert fcf.take_samples(x, index, out=out) is out
    np.testing.assert_array_equal(out, expected)
    for nothing in (np.array([], dtype=np.intp), []):
        assert fcf.take_samples(x, nothing).shape == (0, 4, 6)


@pytest.mark.parametrize("bad", [[0, 10], [-1], [2**63 + 1]])
def test_take_samples_rejects_indices_outside_and_writes_nothing(bad):
    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    out = np.full((len(bad), 4), -7.0)
    index = np.array(bad, dtype=np.uint64 if bad[0] > 2**62 else np.int64)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        fcf.take_samples(x, index, out=out)
    assert np.all(out == -7.0)


@pytest.mark.parametrize("x, index, out, error, match", [
    (np.ones((4, 2), np.int64), [0], None, TypeError, "x must be a float32"),
    (np.float32(1.0), [0], None, ValueError, "first axis"),
    (np.ones((4, 2)), [0.0], None, TypeError, "index must be an integer"),
    (np.ones((4, 2)), [[0]], None, ValueError, "index must be 1-D"),
    (np.ones((4, 2)), [0], np.empty((1, 3)), ValueError, "out must have shape"),
    (np.ones((4, 2)), [0], np.empty((1, 2), np.float32), TypeError, "out must have dtype"),
])
def test_take_samples_bad_input(x, index, out, error, match):
    with pytest.raises(error, match=match):
        fcf.take_samples(x, index, out=out)


# ====================================================== micro-kernel default

def test_dense_uses_avx512_micro_kernel_by_default():
    script = (
        "import numpy as np\n"
        "import fastcnn.functional as fcf\n"
        "from fastcnn._kernels import dense\n"
        "rng = np.random.default_rng(0)\n"
        "x, w = rng.standard_normal((37, 300)), rng.standard_normal((29, 300))\n"
        "default = fcf.linear(x, w)\n"
        "name = dense.select_gemm_kernel(True)\n"
        "avx = fcf.linear(x, w)\n"
        "dense.select_gemm_kernel(False)\n"
        "generic = fcf.linear(x, w)\n"
        "print(name, int(np.array_equal(avx, generic)), int(np.array_equal(default, avx)))\n"
    )
    env = dict(os.environ)
    package_root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    name, kernels_agree, default_is_avx = result.stdout.split()
    if name != "avx512":
        pytest.skip("no AVX-512 on this CPU")
    if kernels_agree == "1":
        pytest.skip("both micro-kernels give the same bits here: cannot tell them apart")
    assert default_is_avx == "1", "linear ran on the generic micro-kernel by default"


@pytest.mark.parametrize("bad", [-1, 3, np.iinfo(np.int64).max])
def test_softmax_cross_entropy_rejects_targets_outside_the_classes(bad):
    logits = np.zeros((4, 3))
    target = np.array([0, 1, bad, 2], dtype=np.int64)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\)"):
        fcf.softmax_cross_entropy(logits, target)
    big = np.array([0, 1, 2, 2**63], dtype=np.uint64)  # wraps to negative as intp
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\)"):
        fcf.softmax_cross_entropy(logits, big)


def test_int32_indices_are_taken_as_they_are(rng):
    """int32 targets and sample indices (what the estimator keeps for large
    training sets) give what intp ones give, and are checked the same way."""
    logits = rng.standard_normal((6, 4))
    target = np.array([3, 0, 1, 3, 2, 0])
    loss, grad = fcf.softmax_cross_entropy(logits, target.astype(np.intp))
    loss32, grad32 = fcf.softmax_cross_entropy(logits, target.astype(np.int32))
    assert loss32 == loss
    np.testing.assert_array_equal(grad32, grad)
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=r"target values must lie in \[0, 4\)"):
            fcf.softmax_cross_entropy(logits[:2], np.array([0, bad], dtype=np.int32))
    x = rng.standard_normal((10, 3))
    out = np.full((2, 3), -7.0)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        fcf.take_samples(x, np.array([1, -1], dtype=np.int32), out=out)
    assert np.all(out == -7.0)
