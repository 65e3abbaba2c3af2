"""Optimizer updates of fastcnn.functional (sgd_update, adam_update): the documented formulas, the L2 penalty, bits independent of threads, argument checks.

Every value is checked against a plain NumPy (or SciPy) reference written
here, computed in float64, never against fastcnn itself.
"""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence, f64, normal


def _update_state(rng, dtype, size=200_003):
    params, grads, a, b = (normal(rng, size, dtype) for _ in range(4))
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
        check_thread_independence(call)


def test_adam_update_bitwise_identical_for_any_thread_count(dtype, rng):
    state = _update_state(rng, dtype)

    def call(n_threads):
        params, grads, m, v = (a.copy() for a in state)
        fcf.adam_update(params, grads, m, v, 3, 1e-3, l2=1e-3, n_penalized=150_001,
                        n_threads=n_threads)
        return params, m, v
    check_thread_independence(call)


# ===================================================== 6. optimizer updates

def _penalized(params, grads, l2, n_penalized):
    g = f64(grads).copy()
    g[:n_penalized] += l2 * f64(params)[:n_penalized]
    return g


def _sgd_ref(params, grads, velocity, lr, momentum, nesterov, l2, n_penalized):
    """(params, velocity, scale of params, scale of velocity) in float64."""
    p, v = f64(params), f64(velocity)
    g = _penalized(params, grads, l2, n_penalized)
    g_abs = np.abs(f64(grads)) + l2 * np.abs(p) * (np.arange(p.size) < n_penalized)
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
    p = f64(params)
    g = _penalized(params, grads, l2, n_penalized)
    m_new = beta_1 * f64(m) + (1 - beta_1) * g
    v_new = beta_2 * f64(v) + (1 - beta_2) * g ** 2
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
    params, grads, velocity = (normal(rng, size, dtype) for _ in range(3))
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
        grads[:] = normal(rng, size, dtype)
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
    params, m, v = normal(rng, size, dtype), np.zeros(size, dtype), np.zeros(size, dtype)
    expected_penalized = size if n_penalized is None else n_penalized
    # float64: a few roundings per step; float32: loose
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    for step in (1, 2, 3):
        grads = normal(rng, size, dtype)
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
        assert (np.abs(f64(params) - p_ref) <= rtol * p_scale).all(), f"params at step {step}"
    # Adam's first step moves every entry by lr (m / sqrt(v) = sign(g) after
    # the bias correction): a mixed-up correction would be off by 1 / (1 - beta_1).
    fresh, g = normal(rng, size, np.float64), normal(rng, size, np.float64)
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


