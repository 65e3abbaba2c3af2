"""take_samples of fastcnn.functional: the batch gathered by index equals NumPy's fancy indexing, for any layout and index dtype; bad indices write nothing. all_finite: every NaN and infinity found.

Every value is checked against a plain NumPy (or SciPy) reference written
here, computed in float64, never against fastcnn itself.
"""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import THREAD_COUNTS, normal

# ======================================================= 9. take_samples

@pytest.mark.parametrize("shape", [(50, 7), (300, 1, 28, 28), (40, 3, 5), (9, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", THREAD_COUNTS)
def test_take_samples_equals_fancy_indexing(shape, dtype, n_threads, rng):
    # (300, 1, 28, 28) with 100 indices is over 64 KiB: copied by threads
    x = normal(rng, shape, dtype)
    index = rng.integers(0, shape[0], size=min(100, 2 * shape[0]))
    batch = fcf.take_samples(x, index, n_threads=n_threads)
    assert batch.dtype == dtype and batch.shape == (len(index),) + shape[1:]
    np.testing.assert_array_equal(batch, x[index])


def test_take_samples_accepts_any_layout_and_writes_into_out(rng):
    x = normal(rng, (30, 4, 6), np.float32)
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




@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_all_finite_finds_every_nan_and_infinity(dtype):
    """One NaN, +inf or -inf at any position (every lane of the vector loop
    and its tail) is found; the largest and the subnormal values are
    finite; any shape and layout; an empty array is all finite."""
    info = np.finfo(dtype)
    x = np.linspace(-1, 1, 77).astype(dtype)
    x[[3, 40]] = info.max, -info.max
    x[7] = info.smallest_subnormal
    assert fcf.all_finite(x) and fcf.all_finite(x.reshape(7, 11)[:, ::2])
    for bad in (np.nan, np.inf, -np.inf):
        for position in range(len(x)):
            y = x.copy()
            y[position] = bad
            assert not fcf.all_finite(y)
    assert fcf.all_finite(np.zeros((0, 3), dtype))
    with pytest.raises(TypeError, match="float32 or float64"):
        fcf.all_finite(np.zeros(3, np.int64))
