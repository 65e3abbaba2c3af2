"""Gathering a batch: the samples a list of indices selects, copied into a
buffer the caller owns.

A training step starts by copying its batch out of the training set. The
rows sit at random places in a large array, so the copy waits on memory
rather than on arithmetic, and threads waiting at once overlap their
waits.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

# Batches smaller than this many bytes are copied on one thread: waking
# another costs more than the copy.
cdef Py_ssize_t MIN_PARALLEL_BYTES = 1 << 16

# int32 indices take half the memory of intp ones for a large training set
ctypedef fused sample_index:
    int
    Py_ssize_t


def take_rows(const floating[:, ::1] x, const sample_index[::1] index,
              floating[:, ::1] out, int n_threads):
    """out[r] = x[index[r]] for every r. An index outside [0, len(x))
    raises IndexError before anything is copied; negative indices are not
    read from the end."""
    cdef Py_ssize_t n_rows = index.shape[0], n_samples = x.shape[0]
    cdef Py_ssize_t row_bytes = x.shape[1] * sizeof(floating), r, bad = 0
    for r in range(n_rows):
        bad += index[r] < 0 or index[r] >= n_samples
    if bad:
        raise IndexError(
            f"index values must lie in [0, {n_samples}), got {bad} outside")
    if n_rows == 0 or row_bytes == 0:
        return
    with nogil:
        for r in prange(n_rows, schedule='static',
                        num_threads=n_threads if n_rows * row_bytes >= MIN_PARALLEL_BYTES else 1):
            memcpy(&out[r, 0], &x[index[r], 0], row_bytes)
