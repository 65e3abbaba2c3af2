"""Gathering a batch: the samples a list of indices selects, copied into a
buffer the caller owns; and whether a batch of input is all finite.

A training step starts by copying its batch out of the training set. The
rows sit at random places in a large array, so the copy waits on memory
rather than on arithmetic, and threads waiting at once overlap their
waits.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t
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


def all_finite(const floating[::1] x):
    """Whether no value of x is NaN or infinite: the exponent bits of
    every value short of all ones, tested on the bits as integers, which
    the compiler vectorises (a float reduction it may not reorder)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef const uint32_t *bits32
    cdef const uint64_t *bits64
    cdef uint32_t bad32 = 0
    cdef uint64_t bad64 = 0
    if n == 0:
        return True
    with nogil:
        if floating is float:
            bits32 = <const uint32_t *> &x[0]
            for i in range(n):
                bad32 |= (bits32[i] & 0x7f800000u) == 0x7f800000u
        else:
            bits64 = <const uint64_t *> &x[0]
            for i in range(n):
                bad64 |= (bits64[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u
    return bad32 == 0 and bad64 == 0
