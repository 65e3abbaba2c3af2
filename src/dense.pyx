"""Dense (fully connected) kernels: forward, backward to the input, backward
to the weights.

Layout (C-contiguous): x (N, D), w (U, D), bias (U,), y and grad_y (N, U).
    forward          y      = x . w^T + bias
    to the input     grad_x = grad_y . w
    to the weights   grad_w = grad_y^T . x,   grad_b = grad_y summed over n

The products run on the gemm module. Each splits the columns of its output between
threads, and each thread packs its own share of the packed operand into
scratch of its own (gemm.pxd's thread_alloc; a forward of few rows, run
as y^T = w . x^T, packs x once, the threads sharing it); every
element is summed by one thread, in the same order for any number of
threads (the weight gradient over the whole batch): no partial sums are
combined across threads.
The caller (fastcnn.functional) validates shapes and allocates the outputs.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stddef cimport ptrdiff_t

from fastcnn._kernels.gemm cimport *
# the one selection, under the names this module has always offered
from fastcnn._kernels.gemm import gemm_kernel_name, select_gemm_kernel

cdef extern from "elementwise.h" nogil:
    void fcnn_relu_f32(const float *x, float *y, ptrdiff_t n)
    void fcnn_relu_f64(const double *x, double *y, ptrdiff_t n)


# Below this many multiply-adds a product runs on one thread: waking a
# second one costs more than it saves.
cdef Py_ssize_t MIN_WORK_PER_THREAD = 1 << 18


cdef int threads_for(Py_ssize_t work, int n_threads) noexcept nogil:
    cdef Py_ssize_t useful = 1 + work // MIN_WORK_PER_THREAD
    return <int> (useful if useful < n_threads else n_threads)


cdef int times_packed_by_columns(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                                 const floating *a,
                                 const Py_ssize_t *row_offsets,
                                 const floating *b, Py_ssize_t b_rs,
                                 Py_ssize_t b_cs, floating *c,
                                 const floating *bias, bint relu,
                                 int n_threads) except -1:
    """C (M, N) = A (M, K) . B (+ bias[j] on column j), with A's rows read
    in place at row_offsets and B[k, j] = b[k*b_rs + j*b_cs]; then
    max(C, 0) where relu (elementwise.h's ReLU, the standalone layer's).

    The columns are split into one block per thread, and each thread packs
    its own columns of B into scratch of its own: the packing, which every
    product of a batch repeats, is then parallel too. Each element of C is
    one thread's sum over k, the same for any split."""
    cdef Py_ssize_t NR = panel_cols(a)
    cdef Py_ssize_t cols_per_block = round_up((N + n_threads - 1) // n_threads, NR)
    cdef Py_ssize_t n_blocks = (N + cols_per_block - 1) // cols_per_block
    cdef Py_ssize_t block, j0, cols, i, j
    cdef floating *mine = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    with nogil, parallel(num_threads=n_threads):
        mine = thread_alloc(cols_per_block * K, a, failure)
        for block in prange(n_blocks, schedule='static'):
            if mine == NULL:
                continue
            j0 = block * cols_per_block
            cols = N - j0 if N - j0 < cols_per_block else cols_per_block
            pack_b(K, cols, b + j0 * b_cs, b_rs, b_cs, mine)
            gemm(M, cols, K, a, row_offsets, mine, NULL, c + j0, N, 0, NULL)
            if bias != NULL:
                for i in range(M):
                    for j in range(j0, j0 + cols):
                        c[i * N + j] += bias[j]
            if relu:
                for i in range(M):
                    if floating is float:
                        fcnn_relu_f32(c + i * N + j0, c + i * N + j0, cols)
                    else:
                        fcnn_relu_f64(c + i * N + j0, c + i * N + j0, cols)
        thread_scratch_trim()
    return scratch_error(failed, cols_per_block * K, a)


cdef int transposed_product(Py_ssize_t N, Py_ssize_t U, Py_ssize_t D,
                            const floating *x, const floating *w,
                            const Py_ssize_t *w_rows, floating *y,
                            const floating *bias, bint relu,
                            int n_threads) except -1:
    """y (N, U) = x (N, D) . w^T + bias[u] on column u, then max(y, 0) where
    relu, computed as y^T = w . x^T: w's rows read in place at w_rows, x^T
    packed once, the threads sharing its rows (N*D values, where
    times_packed_by_columns packs w's U*D every call), each thread's block
    of units into scratch of its own, then written into y with the bias and
    the ReLU. N <= NR. Each element's sum over k runs as in
    times_packed_by_columns, and the bias is added after it, as there: the
    same bits."""
    cdef Py_ssize_t MR = panel_rows(x), NR = panel_cols(x)
    cdef Py_ssize_t rows_per_block = round_up((U + n_threads - 1) // n_threads, MR)
    cdef Py_ssize_t n_blocks = (U + rows_per_block - 1) // rows_per_block
    cdef Py_ssize_t block, u0, rows, n, r, t, k0, k1
    cdef floating *mine = NULL
    cdef floating *yn
    cdef floating *x_packed = alloc(NR * D, x)
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    try:
        with nogil, parallel(num_threads=n_threads):
            mine = thread_alloc(rows_per_block * N, x, failure)
            # B[k, n] = x[n, k], one panel (N <= NR): its rows k0 to k1 are
            # the run from k0 * NR, which each thread packs for its share
            for t in prange(n_threads, schedule='static'):
                k0 = D * t // n_threads
                k1 = D * (t + 1) // n_threads
                pack_b(k1 - k0, N, x + k0, 1, D, x_packed + k0 * NR)
            for block in prange(n_blocks, schedule='static'):
                if mine == NULL:
                    continue
                u0 = block * rows_per_block
                rows = U - u0 if U - u0 < rows_per_block else rows_per_block
                gemm(rows, N, D, w, w_rows + u0, x_packed, NULL, mine, N, 0, NULL)
                for n in range(N):
                    yn = y + n * U + u0
                    for r in range(rows):
                        yn[r] = mine[r * N + n] + bias[u0 + r]
                    if relu:
                        if floating is float:
                            fcnn_relu_f32(yn, yn, rows)
                        else:
                            fcnn_relu_f64(yn, yn, rows)
            thread_scratch_trim()
        return scratch_error(failed, rows_per_block * N, x)
    finally:
        aligned_free(x_packed)


cdef bint transposed_is_cheaper(Py_ssize_t N, Py_ssize_t U,
                                Py_ssize_t NR) noexcept nogil:
    """Whether a forward of N rows costs less as y^T = w . x^T: each way, a
    vector of multiply-adds per LANES columns of the product (rounded up:
    rows of N = 16 fill vectors of units, one row does not), plus half of
    one per value packed (the packers transpose about two values a
    multiply-add's time), U*D values of w the direct way, N*D of x the
    other. Batches of up to NR rows only, which bounds each thread's scratch
    (a block of units times N)."""
    cdef Py_ssize_t LANES = NR // 2
    if N > NR:
        return False
    return (2 * U * ((N + LANES - 1) // LANES) + N
            < 2 * N * ((U + LANES - 1) // LANES) + U)


def dense_forward(const floating[:, ::1] x, const floating[:, ::1] w,
                  const floating[::1] bias, floating[:, ::1] y,
                  const Py_ssize_t[::1] row_offsets, bint relu, int n_threads):
    """y = x . w^T + bias, then max(y, 0) where relu. row_offsets[i] = i * D
    for i < max(N, U) (the caller's, reusable): the rows of x, or of w where
    the product runs transposed (transposed_is_cheaper)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], U = w.shape[0]
    cdef int n_threads_used = threads_for(N * D * U, n_threads)
    if transposed_is_cheaper(N, U, panel_cols(&x[0, 0])):
        transposed_product(N, U, D, &x[0, 0], &w[0, 0], &row_offsets[0], &y[0, 0],
                           &bias[0], relu, n_threads_used)
        return
    # B[k, u] = w[u, k]
    times_packed_by_columns(N, U, D, &x[0, 0], &row_offsets[0], &w[0, 0],
                            1, D, &y[0, 0], &bias[0], relu, n_threads_used)


def dense_backward_input(const floating[:, ::1] grad_y,
                         const floating[:, ::1] w, floating[:, ::1] grad_x,
                         const Py_ssize_t[::1] row_offsets, int n_threads):
    """grad_x = grad_y . w. row_offsets[i] = i * U."""
    cdef Py_ssize_t N = grad_y.shape[0], U = grad_y.shape[1], D = w.shape[1]
    # B[u, d] = w[u, d]
    times_packed_by_columns(N, D, U, &grad_y[0, 0], &row_offsets[0],
                            &w[0, 0], D, 1, &grad_x[0, 0], NULL, False,
                            threads_for(N * D * U, n_threads))


def dense_backward_weight(const floating[:, ::1] x,
                          const floating[:, ::1] grad_y,
                          floating[:, ::1] grad_w, floating[::1] grad_b,
                          int n_threads):
    """grad_w = grad_y^T . x and grad_b[u] = sum_n grad_y[n, u], each summed
    over the batch by one thread in sample order. Overwrites both."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], U = grad_y.shape[1]
    cdef Py_ssize_t MR = panel_rows(&x[0, 0]), NR = panel_cols(&x[0, 0])
    cdef Py_ssize_t cols_per_block, n_blocks, block, j0, cols, n, u
    cdef floating *gy_packed
    cdef floating *mine = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    n_threads = threads_for(N * D * U, n_threads)
    cols_per_block = round_up((D + n_threads - 1) // n_threads, NR)
    n_blocks = (D + cols_per_block - 1) // cols_per_block
    gy_packed = alloc(round_up(U, MR) * N, &x[0, 0])
    try:
        with nogil:
            pack_a(U, N, &grad_y[0, 0], 1, U, gy_packed)   # A[u, n] = grad_y[n, u]
        with nogil, parallel(num_threads=n_threads):
            mine = thread_alloc(cols_per_block * N, &x[0, 0], failure)
            for block in prange(n_blocks, schedule='static'):
                if mine == NULL:
                    continue
                j0 = block * cols_per_block
                cols = D - j0 if D - j0 < cols_per_block else cols_per_block
                pack_b(N, cols, &x[0, 0] + j0, D, 1, mine)
                gemm(U, cols, N, gy_packed, NULL, mine, NULL, &grad_w[0, 0] + j0,
                     D, 0, NULL)
            thread_scratch_trim()
        scratch_error(failed, cols_per_block * N, &x[0, 0])
        with nogil:
            for u in range(U):
                grad_b[u] = 0
            for n in range(N):
                for u in range(U):
                    grad_b[u] += grad_y[n, u]
    finally:
        aligned_free(gy_packed)

