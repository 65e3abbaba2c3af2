"""Batch normalization and local response normalization of
fastcnn.functional: against plain NumPy references written here (computed
in float64), gradients against central finite differences, bits
independent of the thread count, tiny batches, bad arguments."""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence, f64, normal

SHAPES = [(6, 3), (4, 3, 7), (3, 4, 5, 6)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def tol(dtype):
    return TOL[np.dtype(dtype).type]


# ------------------------------------------------------------ references

def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm_ref(x, weight, bias, running_mean, running_var, training,
                   momentum, eps):
    """(y, new running_mean, new running_var), all float64."""
    x = f64(x)
    if training:
        mean, var = x.mean(axis=_axes(x)), x.var(axis=_axes(x))
        count = x.size // x.shape[1]
        new_mean = (1 - momentum) * f64(running_mean) + momentum * mean
        new_var = f64(running_var) if count == 1 else (
            (1 - momentum) * f64(running_var) + momentum * var * count / (count - 1))
    else:
        mean, var = f64(running_mean), f64(running_var)
        new_mean, new_var = f64(running_mean), f64(running_var)
    x_hat = (x - _per_channel(mean, x)) / np.sqrt(_per_channel(var, x) + eps)
    return x_hat * _per_channel(weight, x) + _per_channel(bias, x), new_mean, new_var


def batch_norm_backward_ref(grad_y, x, weight, eps):
    """The gradients of the training-mode batch norm, from the textbook
    formula, float64."""
    g, x = f64(grad_y), f64(x)
    axes, count = _axes(x), x.size // x.shape[1]
    mean = _per_channel(x.mean(axis=axes), x)
    invstd = 1 / np.sqrt(_per_channel(x.var(axis=axes), x) + eps)
    x_hat = (x - mean) * invstd
    grad_bias = g.sum(axis=axes)
    grad_weight = (g * x_hat).sum(axis=axes)
    grad_x = _per_channel(weight, x) * invstd * (
        g - _per_channel(grad_bias, x) / count - x_hat * _per_channel(grad_weight, x) / count)
    return grad_x, grad_weight, grad_bias


def lrn_ref(x, size, alpha, beta, k):
    x = f64(x)
    squares = np.pad(x * x, [(0, 0), (size // 2, (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = sum(squares[:, i:i + x.shape[1]] for i in range(size))
    scale = k + alpha / size * window
    return x * scale ** -beta, scale


def lrn_backward_ref(grad_y, x, size, alpha, beta, k):
    """The Jacobian of lrn_ref applied to grad_y, element by element."""
    g, x = f64(grad_y), f64(x)
    _, scale = lrn_ref(x, size, alpha, beta, k)
    grad_x = g * scale ** -beta
    channels = x.shape[1]
    for i in range(channels):        # output channel
        for j in range(max(0, i - size // 2), min(channels, i + (size - 1) // 2 + 1)):
            grad_x[:, j] -= (2 * alpha * beta / size * g[:, i] * x[:, i] * x[:, j]
                             * scale[:, i] ** (-beta - 1))
    return grad_x


def _bn_inputs(rng, shape, dtype):
    channels = shape[1]
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)    # away from zero mean
    weight = normal(rng, channels, dtype)
    bias = normal(rng, channels, dtype)
    running_mean = normal(rng, channels, dtype)
    running_var = (0.5 + rng.random(channels)).astype(dtype)
    return x, weight, bias, running_mean, running_var


# ------------------------------------------------------------ batch norm

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_numpy(shape, training, dtype, rng):
    x, weight, bias, running_mean, running_var = _bn_inputs(rng, shape, dtype)
    y_ref, mean_ref, var_ref = batch_norm_ref(x, weight, bias, running_mean,
                                              running_var, training, 0.3, 1e-3)
    result = fcf.batch_norm(x, weight, bias, running_mean, running_var,
                            training=training, momentum=0.3, eps=1e-3)
    y = result[0] if training else result
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, y_ref, **tol(dtype))
    np.testing.assert_allclose(running_mean, mean_ref, **tol(dtype))
    np.testing.assert_allclose(running_var, var_ref, **tol(dtype))
    if training:
        _, mean, invstd = result
        assert mean.dtype == invstd.dtype == np.float64
        np.testing.assert_allclose(mean, f64(x).mean(axis=_axes(x)), rtol=1e-12)
        np.testing.assert_allclose(invstd, 1 / np.sqrt(f64(x).var(axis=_axes(x)) + 1e-3),
                                   rtol=1e-12)


def test_batch_norm_inference_uses_running_statistics_only(rng):
    x, weight, bias, running_mean, running_var = _bn_inputs(rng, (5, 3, 4), np.float64)
    y = fcf.batch_norm(x, weight, bias, running_mean, running_var)
    # one sample at a time gives the same: nothing depends on the batch
    alone = np.concatenate([fcf.batch_norm(x[i:i + 1], weight, bias, running_mean,
                                           running_var) for i in range(5)])
    np.testing.assert_array_equal(alone, y)
    trained = fcf.batch_norm(x, weight, bias, running_mean.copy(), running_var.copy(),
                             training=True)[0]
    assert not np.allclose(trained, y)


def test_batch_norm_defaults_and_no_running_statistics(rng):
    x = normal(rng, (8, 2, 5), np.float64)
    y, mean, invstd = fcf.batch_norm(x, training=True)
    y_ref, _, _ = batch_norm_ref(x, [1, 1], [0, 0], [0, 0], [1, 1], True, 0.1, 1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_backward_matches_numpy(shape, dtype, rng):
    x, weight, *_ = _bn_inputs(rng, shape, dtype)
    grad_y = normal(rng, shape, dtype)
    _, mean, invstd = fcf.batch_norm(x, weight, None, training=True, eps=1e-3)
    grads = fcf.batch_norm_backward(grad_y, x, weight, mean, invstd)
    for got, want in zip(grads, batch_norm_backward_ref(grad_y, x, weight, 1e-3)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol(dtype)["rtol"],
                                   atol=tol(dtype)["atol"] * np.abs(want).max())
    grad_x, grad_weight, grad_bias = fcf.batch_norm_backward(
        grad_y, x, weight, mean, invstd, grad_input=False)
    assert grad_x is None
    np.testing.assert_array_equal(grad_weight, grads[1])
    np.testing.assert_array_equal(grad_bias, grads[2])


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 2, 3, 3)], ids=str)
def test_batch_norm_gradients_match_finite_differences(shape, rng, central_differences):
    x, weight, bias, _, _ = _bn_inputs(rng, shape, np.float64)
    weights = rng.standard_normal(shape)

    def loss():     # sum(y * R): its gradient with respect to y is R
        return np.sum(fcf.batch_norm(x, weight, bias, training=True, eps=1e-2)[0] * weights)

    _, mean, invstd = fcf.batch_norm(x, weight, bias, training=True, eps=1e-2)
    grad_x, grad_weight, grad_bias = fcf.batch_norm_backward(weights, x, weight, mean, invstd)
    for analytic, array in ((grad_x, x), (grad_weight, weight), (grad_bias, bias)):
        np.testing.assert_allclose(analytic, central_differences(loss, array, 1e-5),
                                   rtol=1e-6, atol=1e-8)


def test_batch_norm_bits_do_not_depend_on_threads(dtype, rng):
    x, weight, bias, running_mean, running_var = _bn_inputs(rng, (9, 5, 11, 13), dtype)
    grad_y = normal(rng, x.shape, dtype)

    def train(n_threads):
        mean, var = running_mean.copy(), running_var.copy()
        y, saved_mean, invstd = fcf.batch_norm(x, weight, bias, mean, var, training=True,
                                               n_threads=n_threads)
        return (y, saved_mean, invstd, mean, var) + fcf.batch_norm_backward(
            grad_y, x, weight, saved_mean, invstd, n_threads=n_threads)
    check_thread_independence(train)
    check_thread_independence(lambda t: fcf.batch_norm(
        x, weight, bias, running_mean, running_var, n_threads=t))


def test_batch_norm_of_a_large_offset_keeps_its_variance():
    # a one-pass sum of squares would lose the variance of values near 1e4
    x = (1e4 + np.random.default_rng(0).standard_normal((64, 2, 16))).astype(np.float32)
    _, mean, invstd = fcf.batch_norm(x, training=True)
    np.testing.assert_allclose(1 / invstd ** 2 - 1e-5, f64(x).var(axis=(0, 2)), rtol=1e-9)


def test_batch_norm_of_one_value_per_channel_is_the_bias(rng):
    # a batch of one sample of flat features: every channel holds one value
    x, weight, bias, running_mean, running_var = _bn_inputs(rng, (1, 4), np.float64)
    kept_var = running_var.copy()
    y, mean, invstd = fcf.batch_norm(x, weight, bias, running_mean, running_var,
                                     training=True, momentum=0.5)
    np.testing.assert_array_equal(y[0], bias)
    np.testing.assert_array_equal(running_var, kept_var)
    grad_x, grad_weight, grad_bias = fcf.batch_norm_backward(
        normal(rng, (1, 4), np.float64), x, weight, mean, invstd)
    np.testing.assert_array_equal(grad_x, 0)
    np.testing.assert_array_equal(grad_weight, 0)
    assert np.isfinite(grad_bias).all()


def test_batch_norm_of_two_equal_values_is_finite():
    x = np.full((2, 3, 1), 7.0, dtype=np.float32)
    y, mean, invstd = fcf.batch_norm(x, training=True)
    assert np.isfinite(y).all() and np.isfinite(invstd).all()
    np.testing.assert_array_equal(y, 0)
    grads = fcf.batch_norm_backward(np.ones_like(x), x, None, mean, invstd)
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(eps=0.0), ValueError, "eps"),
    (dict(eps=-1e-5), ValueError, "eps"),
    (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps="1e-5"), TypeError, "eps"),
    (dict(momentum=-0.1), ValueError, "momentum"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(momentum="0.1"), TypeError, "momentum"),
    (dict(weight=np.ones(4)), ValueError, "weight"),
    (dict(bias=np.ones(3, dtype=np.float32)), TypeError, "bias"),
    (dict(running_mean=np.zeros(3)), ValueError, "together"),
    (dict(running_mean=[0.0, 0, 0], running_var=[1.0, 1, 1]), TypeError, "running_mean"),
    (dict(running_mean=np.zeros(6)[::2], running_var=np.ones(3)), ValueError, "running_mean"),
    (dict(out=np.empty((4, 3, 5))), TypeError, "out"),
])
def test_batch_norm_refuses_bad_arguments(kwargs, error, match):
    x = np.random.default_rng(0).standard_normal((4, 3, 5))
    with pytest.raises(error, match=match):
        fcf.batch_norm(x, **{"training": True, **kwargs})


def test_batch_norm_refuses_bad_shapes_and_missing_statistics():
    x = np.ones((4, 3, 5))
    with pytest.raises(ValueError, match="running_mean"):
        fcf.batch_norm(x)      # inference needs them
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        fcf.batch_norm(np.ones(4), training=True)
    with pytest.raises(TypeError, match="float32 or float64"):
        fcf.batch_norm(x.astype(int), training=True)
    with pytest.raises(ValueError, match="mean"):
        fcf.batch_norm_backward(x, x, None, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        fcf.batch_norm_backward(x[:2], x, None, np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="shares memory"):
        fcf.batch_norm(x, training=True, out=(x, np.empty(3), np.empty(3)))


# --------------------------------------------------- local response norm

LRN_CASES = [((3, 7, 4, 5), 5, 1e-1, 0.75, 1.0), ((2, 6, 9), 2, 0.5, 0.6, 2.0),
             ((2, 4, 3, 3), 1, 1.0, 1.5, 0.5), ((2, 3, 5), 8, 0.3, 0.75, 1.0)]


@pytest.mark.parametrize("shape, size, alpha, beta, k", LRN_CASES, ids=str)
def test_local_response_norm_matches_numpy(shape, size, alpha, beta, k, dtype, rng):
    x = normal(rng, shape, dtype)
    grad_y = normal(rng, shape, dtype)
    y, scale = fcf.local_response_norm(x, size, alpha, beta, k)
    y_ref, scale_ref = lrn_ref(x, size, alpha, beta, k)
    assert y.dtype == scale.dtype == dtype
    np.testing.assert_allclose(y, y_ref, **tol(dtype))
    np.testing.assert_allclose(scale, scale_ref, **tol(dtype))
    grad_x = fcf.local_response_norm_backward(grad_y, x, y, scale, size, alpha, beta)
    np.testing.assert_allclose(grad_x, lrn_backward_ref(grad_y, x, size, alpha, beta, k),
                               **tol(dtype))


@pytest.mark.parametrize("shape, size, alpha, beta, k", LRN_CASES, ids=str)
def test_local_response_norm_gradient_matches_finite_differences(
        shape, size, alpha, beta, k, rng, central_differences):
    x = rng.standard_normal(shape)
    weights = rng.standard_normal(shape)

    def loss():
        return np.sum(fcf.local_response_norm(x, size, alpha, beta, k)[0] * weights)

    y, scale = fcf.local_response_norm(x, size, alpha, beta, k)
    grad_x = fcf.local_response_norm_backward(weights, x, y, scale, size, alpha, beta)
    np.testing.assert_allclose(grad_x, central_differences(loss, x, 1e-5),
                               rtol=1e-6, atol=1e-8)


def test_local_response_norm_bits_do_not_depend_on_threads(dtype, rng):
    x = normal(rng, (7, 6, 9, 10), dtype)
    grad_y = normal(rng, x.shape, dtype)

    def run(n_threads):
        y, scale = fcf.local_response_norm(x, 3, 0.2, 0.75, 1.0, n_threads=n_threads)
        return y, scale, fcf.local_response_norm_backward(
            grad_y, x, y, scale, 3, 0.2, 0.75, n_threads=n_threads)
    check_thread_independence(run)


@pytest.mark.parametrize("args, error, match", [
    ((0,), ValueError, "size"),
    ((2.0,), TypeError, "size"),
    ((2, -1e-4), ValueError, "alpha"),
    ((2, 1e-4, float("inf")), ValueError, "beta"),
    ((2, 1e-4, 0.75, 0.0), ValueError, "k"),
    ((2, 1e-4, 0.75, -1.0), ValueError, "k"),
])
def test_local_response_norm_refuses_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        fcf.local_response_norm(np.ones((2, 3, 4)), *args)


def test_local_response_norm_refuses_bad_shapes():
    x = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        fcf.local_response_norm(np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="scale"):
        fcf.local_response_norm_backward(x, x, x, np.ones((2, 3, 5)), 2)
    with pytest.raises(TypeError, match="dtype"):
        fcf.local_response_norm_backward(x, x, x.astype(np.float32), x, 2)
    with pytest.raises(ValueError, match="shares memory"):
        fcf.local_response_norm(x, 2, out=(x, np.empty_like(x)))


def test_prepared_calls_compute_what_the_functions_do(rng):
    x, weight, bias, running_mean, running_var = _bn_inputs(rng, (4, 3, 6), np.float64)
    y = np.empty_like(x)
    stats = (np.empty(3), np.empty(3))
    call = fcf.prepare(fcf.batch_norm, x, weight, bias, running_mean, running_var,
                       training=True, out=(y,) + stats)
    expected_mean = running_mean.copy()
    fcf.batch_norm(x, weight, bias, expected_mean, running_var.copy(), training=True)
    call.run(2)
    np.testing.assert_array_equal(running_mean, expected_mean)
    with pytest.raises(ValueError, match="running_var"):
        fcf.prepare(fcf.batch_norm, x, weight, bias, running_mean,
                    np.ones(6)[::2], training=True)


def test_local_response_norm_without_scale_gives_the_same_bits(dtype, rng):
    x = normal(rng, (3, 5, 4, 6), dtype)
    y, scale = fcf.local_response_norm(x, 3, 0.4, 0.75, 1.0)
    alone, none = fcf.local_response_norm(x, 3, 0.4, 0.75, 1.0, keep_scale=False)
    assert none is None
    np.testing.assert_array_equal(alone, y)


# ------------------------------------------------------ the fused ReLU

@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_with_relu_has_the_bits_of_batch_norm_then_relu(shape, training, dtype, rng):
    x, weight, bias, running_mean, running_var = _bn_inputs(rng, shape, dtype)
    if not training:      # NaN stays NaN through the fused ReLU, as through relu
        x.flat[::5] = np.nan
    grad_y = normal(rng, shape, dtype)

    def run(relu):
        stats = running_mean.copy(), running_var.copy()
        result = fcf.batch_norm(x, weight, bias, *stats, training=training, relu=relu)
        return (result if training else (result,)) + stats
    fused, plain = run(True), run(False)
    relu_y = fcf.relu(plain[0])
    np.testing.assert_array_equal(fused[0], relu_y)
    for a, b in zip(fused[1:], plain[1:]):
        np.testing.assert_array_equal(a, b)
    assert (relu_y == 0).any() and (relu_y > 0).any()
    if training:
        _, mean, invstd = fused[:3]
        got = fcf.batch_norm_backward(grad_y, x, weight, mean, invstd, relu_output=fused[0])
        want = fcf.batch_norm_backward(fcf.relu_backward(grad_y, relu_y), x, weight,
                                       mean, invstd)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_batch_norm_backward_refuses_a_bad_relu_output():
    x = np.ones((4, 3, 5))
    with pytest.raises(ValueError, match="relu_output"):
        fcf.batch_norm_backward(x, x, None, np.zeros(3), np.ones(3),
                                relu_output=np.ones((4, 3, 6)))
    with pytest.raises(TypeError, match="relu_output"):
        fcf.batch_norm_backward(x, x, None, np.zeros(3), np.ones(3),
                                relu_output=np.ones((4, 3, 5), np.float32))
