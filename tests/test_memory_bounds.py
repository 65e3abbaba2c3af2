"""The kernels run without bounds checks, so every read and write must stay
inside the arrays the caller passes. Here every array, input and output,
sits against a page that cannot be touched, right after its last byte or
right before its first: a kernel that strays past either end crashes the
test run (pytest's faulthandler names the test) where it would otherwise
read a neighbour's memory silently. The results must also equal those on
ordinary arrays."""
import numpy as np
import pytest

import fastcnn.functional as fcf

SIDES = ["end", "start"]


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("side", SIDES)
def test_correlation_stays_inside_its_arrays(bounds_conv_case, side, n_threads,
                                             dtype, rng, guarded_copy):
    case, fn = bounds_conv_case, bounds_conv_case.functions
    x, w, bias, grad_y = case.random_inputs(rng, dtype)
    geometry = dict(case.geometry, n_threads=n_threads)

    def guarded(a):
        return guarded_copy(a, side)

    def empty(shape):
        return guarded(np.zeros(shape, dtype))

    gx, gw, gb = guarded(x), guarded(w), guarded(grad_y)
    y = fn.correlate(gx, gw, guarded(bias), **geometry, out=empty(case.y_shape))
    np.testing.assert_array_equal(y, fn.correlate(x, w, bias, **geometry))
    grad_x = fn.backward_input(gb, gw, case.x_shape, **geometry,
                               out=empty(case.x_shape))
    np.testing.assert_array_equal(
        grad_x, fn.backward_input(grad_y, w, case.x_shape, **geometry))
    grad_w, grad_b = fn.backward_kernel(
        gx, gb, case.w_shape, **geometry,
        out=(empty(case.w_shape), empty((case.f,))))
    expected_w, expected_b = fn.backward_kernel(x, grad_y, case.w_shape, **geometry)
    np.testing.assert_array_equal(grad_w, expected_w)
    np.testing.assert_array_equal(grad_b, expected_b)
    if case.ndim == 2:
        mirrored = fcf.correlate2d_backward_input_mirrored(
            gb, gw, case.x_shape, **geometry, out=empty(case.x_shape))
        np.testing.assert_array_equal(
            mirrored, fcf.correlate2d_backward_input_mirrored(
                grad_y, w, case.x_shape, **geometry))


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("side", SIDES)
def test_pooling_stays_inside_its_arrays(pool_case, side, n_threads, dtype, rng,
                                         guarded_copy):
    case, fn = pool_case, pool_case.functions
    geometry = dict(case.geometry, n_threads=n_threads)
    x = case.random_input(rng, dtype)
    grad_y = rng.standard_normal(case.y_shape).astype(dtype)

    def guarded(a):
        return guarded_copy(a, side)

    def empty(shape, kind=dtype):
        return guarded(np.zeros(shape, kind))

    y, argmax = fn.max_pool(guarded(x), **geometry,
                            out=(empty(case.y_shape), empty(case.y_shape, np.int32)))
    expected_y, expected_argmax = fn.max_pool(x, **geometry)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)
    grad_x = fn.max_pool_backward(guarded(grad_y), guarded(argmax), case.x_shape,
                                  n_threads=n_threads, out=empty(case.x_shape))
    np.testing.assert_array_equal(
        grad_x, fn.max_pool_backward(grad_y, argmax, case.x_shape, n_threads=n_threads))
    averaged = fn.avg_pool(guarded(x), **geometry, out=empty(case.y_shape))
    np.testing.assert_array_equal(averaged, fn.avg_pool(x, **geometry))
    grad_avg = fn.avg_pool_backward(guarded(grad_y), case.x_shape, **geometry,
                                    out=empty(case.x_shape))
    np.testing.assert_array_equal(
        grad_avg, fn.avg_pool_backward(grad_y, case.x_shape, **geometry))


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("side", SIDES)
def test_take_samples_stays_inside_its_arrays(side, n_threads, dtype, rng, guarded_copy):
    # the first and last samples are both taken; 120 rows of 1,000 values
    # go past the size copied by threads
    x = rng.standard_normal((37, 10, 100)).astype(dtype)
    index = np.concatenate([[0, 36], rng.integers(0, 37, 118)])
    out = guarded_copy(np.zeros((120, 10, 100), dtype), side)
    batch = fcf.take_samples(guarded_copy(x, side), guarded_copy(index, side),
                             n_threads=n_threads, out=out)
    np.testing.assert_array_equal(batch, x[index])


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("side", SIDES)
def test_l2_pooling_stays_inside_its_arrays(pool_case, side, n_threads, dtype, rng,
                                            guarded_copy):
    case = pool_case
    pool, backward = ((fcf.l2_pool2d, fcf.l2_pool2d_backward) if case.ndim == 2
                      else (fcf.l2_pool1d, fcf.l2_pool1d_backward))
    geometry = dict(case.geometry, n_threads=n_threads)
    x = case.random_input(rng, dtype)
    grad_y = rng.standard_normal(case.y_shape).astype(dtype)

    def guarded(a):
        return guarded_copy(a, side)

    y = pool(guarded(x), **geometry, out=guarded(np.zeros(case.y_shape, dtype)))
    np.testing.assert_array_equal(y, pool(x, **geometry))
    grad_x = backward(guarded(grad_y), guarded(x), guarded(y), **geometry,
                      out=guarded(np.zeros(case.x_shape, dtype)))
    np.testing.assert_array_equal(grad_x, backward(grad_y, x, y, **geometry))


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 2, 1, 1), (2, 3, 17), (1, 1, 1)],
                         ids=str)
@pytest.mark.parametrize("side", SIDES)
def test_global_pooling_stays_inside_its_arrays(shape, side, dtype, rng, guarded_copy):
    two_d = len(shape) == 4
    avg, avg_backward, pool, pool_backward = (
        (fcf.global_avg_pool2d, fcf.global_avg_pool2d_backward,
         fcf.global_max_pool2d, fcf.global_max_pool2d_backward) if two_d else
        (fcf.global_avg_pool1d, fcf.global_avg_pool1d_backward,
         fcf.global_max_pool1d, fcf.global_max_pool1d_backward))
    # the maximum at each plane's last position: the scan for it goes to the end
    x = np.sort(rng.standard_normal(shape).reshape(shape[0], shape[1], -1),
                axis=-1).reshape(shape).astype(dtype)
    grad_y = rng.standard_normal(shape[:2]).astype(dtype)

    def guarded(a):
        return guarded_copy(a, side)

    def empty(shape, kind=dtype):
        return guarded(np.zeros(shape, kind))

    np.testing.assert_array_equal(avg(guarded(x), n_threads=3, out=empty(shape[:2])),
                                  avg(x))
    np.testing.assert_array_equal(
        avg_backward(guarded(grad_y), shape, n_threads=3, out=empty(shape)),
        avg_backward(grad_y, shape))
    y, argmax = pool(guarded(x), n_threads=3,
                     out=(empty(shape[:2]), empty(shape[:2], np.int32)))
    expected_y, expected_argmax = pool(x)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(argmax, expected_argmax)
    np.testing.assert_array_equal(
        pool_backward(guarded(grad_y), guarded(argmax), shape, n_threads=3,
                      out=empty(shape)),
        pool_backward(grad_y, argmax, shape))
