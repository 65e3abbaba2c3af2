"""Declarations and inline wrappers for gemm.h, shared by the kernels that
run matrix products (correlation, dense). Only extern declarations and
inline functions live here, so cimporting it adds no run-time import."""
from cython cimport floating
from libc.stddef cimport ptrdiff_t

cdef extern from "gemm.h" nogil:
    enum:
        FCNN_MR_F32
        FCNN_NR_F32
        FCNN_MR_F64
        FCNN_NR_F64
    int fcnn_gemm_select(int want_avx512)
    const char *fcnn_gemm_kernel_name()
    void *fcnn_malloc(size_t n_bytes)
    void fcnn_free(void *p)
    void *fcnn_thread_scratch(size_t n_bytes)
    void fcnn_thread_scratch_trim()
    void fcnn_pack_a_f32(ptrdiff_t M, ptrdiff_t K, const float *src,
                         ptrdiff_t rs, ptrdiff_t cs, float *dst)
    void fcnn_pack_a_f64(ptrdiff_t M, ptrdiff_t K, const double *src,
                         ptrdiff_t rs, ptrdiff_t cs, double *dst)
    void fcnn_pack_b_f32(ptrdiff_t K, ptrdiff_t N, const float *src,
                         ptrdiff_t rs, ptrdiff_t cs, float *dst)
    void fcnn_pack_b_f64(ptrdiff_t K, ptrdiff_t N, const double *src,
                         ptrdiff_t rs, ptrdiff_t cs, double *dst)
    void fcnn_gemm_f32(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                       const float *a, const ptrdiff_t *a_offsets,
                       const float *b, const ptrdiff_t *b_offsets,
                       float *c, ptrdiff_t ldc, int accumulate,
                       const float *bias)
    void fcnn_gemm_f64(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                       const double *a, const ptrdiff_t *a_offsets,
                       const double *b, const ptrdiff_t *b_offsets,
                       double *c, ptrdiff_t ldc, int accumulate,
                       const double *bias)
    void fcnn_dot_f32(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,
                      ptrdiff_t TL, const float *a, ptrdiff_t a_ss,
                      ptrdiff_t a_rs, ptrdiff_t a_hs, const float *b,
                      const ptrdiff_t *b_offsets, ptrdiff_t b_ss,
                      ptrdiff_t b_hs, float *c, ptrdiff_t ldc)
    void fcnn_dot_f64(ptrdiff_t M, ptrdiff_t N, ptrdiff_t G, ptrdiff_t R,
                      ptrdiff_t TL, const double *a, ptrdiff_t a_ss,
                      ptrdiff_t a_rs, ptrdiff_t a_hs, const double *b,
                      const ptrdiff_t *b_offsets, ptrdiff_t b_ss,
                      ptrdiff_t b_hs, double *c, ptrdiff_t ldc)


cdef inline Py_ssize_t panel_rows(const floating *tag) noexcept nogil:
    if floating is float:
        return FCNN_MR_F32
    else:
        return FCNN_MR_F64


cdef inline Py_ssize_t panel_cols(const floating *tag) noexcept nogil:
    if floating is float:
        return FCNN_NR_F32
    else:
        return FCNN_NR_F64


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline void pack_a(Py_ssize_t M, Py_ssize_t K, const floating *src,
                        Py_ssize_t rs, Py_ssize_t cs,
                        floating *dst) noexcept nogil:
    if floating is float:
        fcnn_pack_a_f32(M, K, src, rs, cs, dst)
    else:
        fcnn_pack_a_f64(M, K, src, rs, cs, dst)


cdef inline void pack_b(Py_ssize_t K, Py_ssize_t N, const floating *src,
                        Py_ssize_t rs, Py_ssize_t cs,
                        floating *dst) noexcept nogil:
    if floating is float:
        fcnn_pack_b_f32(K, N, src, rs, cs, dst)
    else:
        fcnn_pack_b_f64(K, N, src, rs, cs, dst)


cdef inline void gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                      const floating *a, const Py_ssize_t *a_offsets,
                      const floating *b, const Py_ssize_t *b_offsets,
                      floating *c, Py_ssize_t ldc, int accumulate,
                      const floating *bias) noexcept nogil:
    """gemm.h's product; Py_ssize_t and ptrdiff_t are the same integer."""
    if floating is float:
        fcnn_gemm_f32(M, N, K, a, <const ptrdiff_t *> a_offsets,
                      b, <const ptrdiff_t *> b_offsets, c, ldc, accumulate,
                      bias)
    else:
        fcnn_gemm_f64(M, N, K, a, <const ptrdiff_t *> a_offsets,
                      b, <const ptrdiff_t *> b_offsets, c, ldc, accumulate,
                      bias)


cdef inline void dot(Py_ssize_t M, Py_ssize_t N, Py_ssize_t G, Py_ssize_t R,
                     Py_ssize_t TL, const floating *a, Py_ssize_t a_ss,
                     Py_ssize_t a_rs, Py_ssize_t a_hs, const floating *b,
                     const Py_ssize_t *b_offsets, Py_ssize_t b_ss,
                     Py_ssize_t b_hs, floating *c, Py_ssize_t ldc) noexcept nogil:
    """gemm.h's sums of products of rows."""
    if floating is float:
        fcnn_dot_f32(M, N, G, R, TL, a, a_ss, a_rs, a_hs, b,
                     <const ptrdiff_t *> b_offsets, b_ss, b_hs, c, ldc)
    else:
        fcnn_dot_f64(M, N, G, R, TL, a, a_ss, a_rs, a_hs, b,
                     <const ptrdiff_t *> b_offsets, b_ss, b_hs, c, ldc)


cdef inline floating *alloc(Py_ssize_t n_items, const floating *tag) except NULL:
    cdef floating *p = <floating *> fcnn_malloc(n_items * sizeof(floating))
    if p == NULL:
        raise MemoryError(
            f"could not allocate {n_items * sizeof(floating)} bytes of scratch")
    return p


cdef inline floating *thread_alloc(Py_ssize_t n_items, const floating *tag,
                                   int *failure) noexcept nogil:
    """The calling thread's scratch (gemm.h's fcnn_thread_scratch), taken
    inside the parallel region by each thread for itself: the block it kept
    from its last call, grown if needed, still in that thread's cache.
    (Scratch that one thread allocates for all leaves the others fetching
    their part from its cache: the 1-D kernel gradient's second thread ran
    about 15% slower than the first.) Never freed by the caller, but each
    thread calls fcnn_thread_scratch_trim at the end of its region. NULL,
    with failure[0] set, when memory runs out; raise with scratch_error
    afterwards."""
    cdef floating *p = <floating *> fcnn_thread_scratch(max(n_items, 1) * sizeof(floating))
    if p == NULL:
        failure[0] = 1
    return p


cdef inline int scratch_error(int failed, Py_ssize_t n_items, const floating *tag) except -1:
    if failed:
        raise MemoryError(
            f"could not allocate {n_items * sizeof(floating)} bytes of scratch "
            "for a thread")
    return 0


