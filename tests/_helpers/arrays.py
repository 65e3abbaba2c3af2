"""Helpers of the tests of the dense, activation, loss, optimizer and batch
functions of fastcnn.functional: random arrays, float64 views, and the check
that a result has the same bits whatever the thread count."""
import numpy as np

THREAD_COUNTS = (1, 2, 3, 4)  # more threads than cores is allowed


def normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def f64(a):
    return np.asarray(a, dtype=np.float64)


def abs64(a):
    """|a| in float64: the magnitude that bounds a sum's rounding error."""
    return np.abs(f64(a))


def assert_bitwise_equal(got, want, what):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, what
        assert g.tobytes() == w.tobytes(), f"{what}: results differ in bits"


def check_thread_independence(call):
    """call(n_threads) -> array or tuple of arrays, from fresh inputs."""
    first = call(THREAD_COUNTS[0])
    for n_threads in THREAD_COUNTS[1:]:
        assert_bitwise_equal(call(n_threads), first,
                             f"n_threads={n_threads} against n_threads=1")

