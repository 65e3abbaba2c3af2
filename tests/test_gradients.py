"""Backward kernels checked without any reference implementation: against
central finite differences of the forward kernels, and through the adjoint
identity <A x, g> = <x, A^T g> of the linear maps they transpose. All in
float64."""
import numpy as np

import fastcnn.functional as fcf

# The losses below are linear in the perturbed array (correlation, average
# pooling, max pooling away from ties), so a central difference has no
# truncation error and a large step only shrinks the rounding error. It must
# stay well below the 0.25 gap of PoolCase.distinct_input.
STEP = 1e-3
FD_RTOL, FD_ATOL = 1e-6, 1e-9


def assert_gradient(analytic, numeric):
    assert analytic.shape == numeric.shape
    np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL)


# ---------------------------------------------------------- finite differences

def test_correlation_gradients_match_finite_differences(tiny_conv_case, rng, central_differences):
    fn = tiny_conv_case.functions
    x, w, bias, weights = tiny_conv_case.random_inputs(rng, np.float64)

    def loss():  # L = sum(y * R), whose gradient with respect to y is R
        return np.sum(fn.correlate(x, w, bias, **tiny_conv_case.geometry) * weights)

    grad_x, grad_w, grad_b = fn.backward(x, w, weights, **tiny_conv_case.geometry)
    assert_gradient(grad_x, central_differences(loss, x, STEP))
    assert_gradient(grad_w, central_differences(loss, w, STEP))
    assert_gradient(grad_b, central_differences(loss, bias, STEP))


def test_separate_backward_kernels_match_finite_differences(tiny_conv_case, rng, central_differences):
    fn = tiny_conv_case.functions
    x, w, bias, weights = tiny_conv_case.random_inputs(rng, np.float64)

    def loss():
        return np.sum(fn.correlate(x, w, bias, **tiny_conv_case.geometry) * weights)

    grad_x = fn.backward_input(weights, w, x.shape, **tiny_conv_case.geometry)
    grad_w, grad_b = fn.backward_kernel(x, weights, w.shape, **tiny_conv_case.geometry)
    assert_gradient(grad_x, central_differences(loss, x, STEP))
    assert_gradient(grad_w, central_differences(loss, w, STEP))
    assert_gradient(grad_b, central_differences(loss, bias, STEP))
    if tiny_conv_case.ndim == 2:
        mirrored = fcf.correlate2d_backward_input_mirrored(
            weights, w, x.shape, **tiny_conv_case.geometry)
        assert_gradient(mirrored, central_differences(loss, x, STEP))


def test_dilated_correlation_gradients_match_finite_differences(
        tiny_dilated_conv_case, rng, central_differences):
    """Both backward passes (and in 2-D the mirrored form) of dilated
    correlations, some padded asymmetrically."""
    case = tiny_dilated_conv_case
    fn = case.functions
    x, w, bias, weights = case.random_inputs(rng, np.float64)

    def loss():
        return np.sum(fn.correlate(x, w, bias, **case.geometry) * weights)

    grad_x = fn.backward_input(weights, w, x.shape, **case.geometry)
    grad_w, grad_b = fn.backward_kernel(x, weights, w.shape, **case.geometry)
    assert_gradient(grad_x, central_differences(loss, x, STEP))
    assert_gradient(grad_w, central_differences(loss, w, STEP))
    assert_gradient(grad_b, central_differences(loss, bias, STEP))
    if case.ndim == 2:
        mirrored = fcf.correlate2d_backward_input_mirrored(
            weights, w, x.shape, **case.geometry)
        assert_gradient(mirrored, central_differences(loss, x, STEP))


def test_max_pool_gradient_matches_finite_differences(tiny_pool_case, rng, central_differences):
    fn = tiny_pool_case.functions
    x = tiny_pool_case.distinct_input(rng, np.float64)
    weights = rng.standard_normal(tiny_pool_case.y_shape)

    def loss():
        return np.sum(fn.max_pool(x, **tiny_pool_case.geometry)[0] * weights)

    _, argmax = fn.max_pool(x, **tiny_pool_case.geometry)
    grad_x = fn.max_pool_backward(weights, argmax, x.shape)
    assert_gradient(grad_x, central_differences(loss, x, STEP))


def test_avg_pool_gradient_matches_finite_differences(tiny_pool_case, rng, central_differences):
    fn = tiny_pool_case.functions
    x = tiny_pool_case.random_input(rng, np.float64)
    weights = rng.standard_normal(tiny_pool_case.y_shape)

    def loss():
        return np.sum(fn.avg_pool(x, **tiny_pool_case.geometry) * weights)

    grad_x = fn.avg_pool_backward(weights, x.shape, **tiny_pool_case.geometry)
    assert_gradient(grad_x, central_differences(loss, x, STEP))


# ----------------------------------------------------------------- adjoints

def assert_inner_products_equal(left, right, scale):
    """Two inner products of float64 arrays equal up to rounding, relative
    to ``scale``, the same inner product over absolute values."""
    assert abs(left - right) <= 1e-12 * scale, (left, right, scale)


def test_correlation_adjoint_with_respect_to_input(conv_case, rng, ref):
    """correlate(., w) and backward_input(., w) are transposes:
    <correlate(x, w), g> = <x, backward_input(g, w)>."""
    fn = conv_case.functions
    x, w, _, g = conv_case.random_inputs(rng, np.float64)
    forward = fn.correlate(x, w, **conv_case.geometry)
    transposed = fn.backward_input(g, w, x.shape, **conv_case.geometry)
    scale = np.vdot(np.abs(x), ref.correlate_backward_input(
        np.abs(g), np.abs(w), x.shape, conv_case.stride, conv_case.padding))
    assert_inner_products_equal(np.vdot(forward, g), np.vdot(x, transposed), scale)
    if conv_case.ndim == 2:
        mirrored = fcf.correlate2d_backward_input_mirrored(g, w, x.shape,
                                                           **conv_case.geometry)
        assert_inner_products_equal(np.vdot(forward, g), np.vdot(x, mirrored), scale)


def test_correlation_adjoint_with_respect_to_kernel_and_bias(conv_case, rng, ref):
    """y is linear in (w, b): <correlate(x, w, b), g> = <w, grad_w> + <b, grad_b>."""
    fn = conv_case.functions
    x, w, bias, g = conv_case.random_inputs(rng, np.float64)
    forward = fn.correlate(x, w, bias, **conv_case.geometry)
    grad_w, grad_b = fn.backward_kernel(x, g, w.shape, **conv_case.geometry)
    scale_w, scale_b = ref.correlate_backward_kernel(
        np.abs(x), np.abs(g), w.shape, conv_case.stride, conv_case.padding)
    scale = np.vdot(np.abs(w), scale_w) + np.vdot(np.abs(bias), scale_b)
    assert_inner_products_equal(np.vdot(forward, g),
                                np.vdot(w, grad_w) + np.vdot(bias, grad_b), scale)


def test_avg_pool_adjoint(pool_case, rng, ref):
    fn = pool_case.functions
    x = pool_case.random_input(rng, np.float64)
    g = rng.standard_normal(pool_case.y_shape)
    forward = fn.avg_pool(x, **pool_case.geometry)
    transposed = fn.avg_pool_backward(g, x.shape, **pool_case.geometry)
    scale = np.vdot(np.abs(x), ref.avg_pool_backward(
        np.abs(g), x.shape, pool_case.size, pool_case.stride))
    assert_inner_products_equal(np.vdot(forward, g), np.vdot(x, transposed), scale)


def test_max_pool_adjoint_for_a_fixed_argmax(pool_case, rng):
    """With the argmax fixed, max pooling is the linear map "pick
    x[argmax]" per plane; max_pool_backward must be its transpose, for any
    x, not only the one the argmax came from."""
    fn = pool_case.functions
    _, argmax = fn.max_pool(pool_case.random_input(rng, np.float64),
                            **pool_case.geometry)
    x = pool_case.random_input(rng, np.float64)
    g = rng.standard_normal(pool_case.y_shape)
    planes = pool_case.n * pool_case.c
    picked = np.take_along_axis(x.reshape(planes, -1), argmax.reshape(planes, -1), axis=1)
    transposed = fn.max_pool_backward(g, argmax, x.shape)
    scale = np.vdot(np.abs(picked), np.abs(g).reshape(planes, -1))
    assert_inner_products_equal(np.vdot(picked, g.reshape(planes, -1)),
                                np.vdot(x, transposed), scale)
