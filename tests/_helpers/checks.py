"""Assertions and probes shared by the tests: closeness within the rounding
error of a sum (assert_close), finite differences, and guard-paged copies
that catch reads and writes past an array's end."""
import ctypes
import mmap

import numpy as np

# Largest rounding error allowed, relative to the magnitude of the sum that
# produced a value (see assert_close). Sums in these tests have at most a few
# hundred terms, whose worst-case error bound is depth * eps: 5e-5 covers
# float32 at depth ~800, and 1e-12 float64 with a wide margin. An indexing
# bug moves a value by about one term, far above either.
RTOL = {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, scale=None):
    """``|actual - expected| <= rtol * scale`` element by element, with rtol
    from RTOL for actual's dtype.

    ``scale`` is the magnitude of the sum behind each value, typically the
    reference evaluated on the absolute values of the inputs: it bounds the
    rounding error of any summation order, so the check is tight where
    there is no cancellation yet does not flake where there is. Default:
    ``|expected|``. NaN is never close to anything.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"shape {actual.shape}, expected {expected.shape}")
    rtol = RTOL[actual.dtype]
    scale = np.abs(expected) if scale is None else np.asarray(scale, np.float64)
    # tiny: an exact zero must come out as (practically) zero
    tolerance = rtol * scale + np.finfo(actual.dtype).tiny
    error = np.abs(actual.astype(np.float64) - expected)
    good = error <= tolerance
    if not good.all():
        bad = np.argwhere(~good)
        first = tuple(bad[0])
        raise AssertionError(
            f"{len(bad)} of {actual.size} elements differ beyond rtol={rtol}; "
            f"first at {first}: got {actual[first]!r}, expected {expected[first]!r} "
            f"(scale {np.broadcast_to(scale, actual.shape)[first]:.3g}); "
            f"largest error {np.nanmax(np.where(good, 0, error)):.3g}")



def central_differences(loss, array, step):
    """Central differences of ``loss()`` with respect to every element of
    ``array``, which is perturbed in place and restored."""
    gradient = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + step
        above = loss()
        array[index] = original - step
        below = loss()
        array[index] = original
        gradient[index] = (above - below) / (2 * step)
    return gradient



def check_network_gradient(specs, input_shape, n_threads):
    """A float64 network's parameter gradient on a batch of 5 random
    samples, against central differences of its loss."""
    from fastcnn import functional as F
    from fastcnn._network import Network
    network = Network(specs, input_shape, np.float64)
    network.initialize(np.random.RandomState(0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5,) + tuple(input_shape))
    target = rng.integers(0, 3, size=5)
    network.allocate(5, training=True)

    def loss():
        return F.softmax_cross_entropy(network.forward(x, n_threads), target)
    network.backward(loss()[1], n_threads)
    analytic = network.grads.copy()
    numeric = central_differences(lambda: loss()[0], network.params, 1e-6)
    assert np.abs(analytic).max() > 1e-3        # the check is not vacuous
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-7)


def guarded_copy(array, side):
    """A copy of ``array`` in memory of its own that ends exactly where a
    page that cannot be read or written begins (side="end"), or begins
    right after such a page (side="start"): a kernel that reads or writes
    past that end crashes instead of silently touching other memory."""
    page = mmap.PAGESIZE
    pages = max(1, -(-array.nbytes // page))
    memory = mmap.mmap(-1, (pages + 1) * page)
    base = ctypes.addressof((ctypes.c_char * len(memory)).from_buffer(memory))
    guard, offset = ((base + pages * page, pages * page - array.nbytes)
                     if side == "end" else (base, page))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    prot_none = 0   # PROT_NONE on every POSIX system
    if libc.mprotect(guard, page, prot_none):
        raise OSError(ctypes.get_errno(), "mprotect failed")
    copy = np.frombuffer(memory, dtype=array.dtype, count=array.size,
                         offset=offset).reshape(array.shape)
    copy[...] = array
    return copy

