"""The matrix product (src/gemm/), built once: one micro-kernel selection
and one scratch block per thread for the whole process. Other extensions
cimport the functions declared in fastcnn/_kernels/gemm.pxd and call them
through this module, one call per product; from Python, the micro-kernel
selection.

A packed-panel product: an AVX-512 micro-kernel (8 x 32 float32, 8 x 16
float64) when the CPU has it, a portable one otherwise; beside it, sums of
products of rows (dot, tiles of 4 x 6 vector accumulators) for products
whose two operands both run along the summed axis. NumPy's BLAS is not
used: the kernels need a single-threaded product inside their own OpenMP
loops, and OpenBLAS may be pinned to AVX2 kernels
(OPENBLAS_CORETYPE=Haswell).
"""
import os

from cython cimport floating
from libc.stddef cimport ptrdiff_t

cdef extern from "gemm/gemm.h" nogil:
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
    void fcnn_pack_b_panel_f32(ptrdiff_t K, ptrdiff_t cols, const float *src,
                               ptrdiff_t rs, ptrdiff_t cs, float *dst, ptrdiff_t ld)
    void fcnn_pack_b_panel_f64(ptrdiff_t K, ptrdiff_t cols, const double *src,
                               ptrdiff_t rs, ptrdiff_t cs, double *dst, ptrdiff_t ld)
    void fcnn_gemm_f32(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                       const float *a, const ptrdiff_t *a_offsets,
                       const float *b, const ptrdiff_t *b_offsets,
                       float *c, ptrdiff_t ldc, int store,
                       const float *bias)
    void fcnn_gemm_f64(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                       const double *a, const ptrdiff_t *a_offsets,
                       const double *b, const ptrdiff_t *b_offsets,
                       double *c, ptrdiff_t ldc, int store,
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


# Outputs of this size and more are written around the caches (output_store).
cdef size_t stream_from_bytes = 0


cdef int output_store(size_t n_bytes) noexcept nogil:
    """The store mode for a product writing an output of n_bytes that
    nothing reads before all of it is written: non-temporal stores from the
    last-level cache's size up (the cache cannot keep such an output: its
    lines would be read in before being overwritten, then evicted before
    anything reads them)."""
    return FCNN_STORE_STREAM if n_bytes >= stream_from_bytes else FCNN_STORE_OVERWRITE


def set_stream_threshold(n_bytes=None):
    """Outputs of ``n_bytes`` bytes and more are written with non-temporal
    stores; ``None`` restores the default, the last-level cache's size
    (32 MiB where the system does not tell it). Returns the threshold in
    use before the call. The results are the same bits either way."""
    global stream_from_bytes
    before = stream_from_bytes
    if n_bytes is None:
        n_bytes = _last_level_cache_bytes()
    stream_from_bytes = max(int(n_bytes), 0)
    return before


def _last_level_cache_bytes():
    """glibc's sysconf names; elsewhere (macOS, Windows) 32 MiB."""
    sysconf = getattr(os, "sysconf", None)
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = sysconf(name) if sysconf is not None else 0
        except (ValueError, OSError):
            continue
        if size > 0:
            return size
    return 32 << 20


cdef void *aligned_malloc(size_t n_bytes) noexcept nogil:
    """64-byte aligned; NULL on failure; free with aligned_free."""
    return fcnn_malloc(n_bytes)


cdef void aligned_free(void *p) noexcept nogil:
    fcnn_free(p)


cdef void *thread_scratch(size_t n_bytes) noexcept nogil:
    """gemm/scratch.h's fcnn_thread_scratch (see gemm.pxd's thread_alloc)."""
    return fcnn_thread_scratch(n_bytes)


cdef void thread_scratch_trim() noexcept nogil:
    fcnn_thread_scratch_trim()


cdef void pack_a(Py_ssize_t M, Py_ssize_t K, const floating *src,
                 Py_ssize_t rs, Py_ssize_t cs, floating *dst) noexcept nogil:
    if floating is float:
        fcnn_pack_a_f32(M, K, src, rs, cs, dst)
    else:
        fcnn_pack_a_f64(M, K, src, rs, cs, dst)


cdef void pack_b(Py_ssize_t K, Py_ssize_t N, const floating *src,
                 Py_ssize_t rs, Py_ssize_t cs, floating *dst) noexcept nogil:
    if floating is float:
        fcnn_pack_b_f32(K, N, src, rs, cs, dst)
    else:
        fcnn_pack_b_f64(K, N, src, rs, cs, dst)


cdef void pack_b_panel(Py_ssize_t K, Py_ssize_t cols, const floating *src,
                       Py_ssize_t rs, Py_ssize_t cs, floating *dst,
                       Py_ssize_t ld) noexcept nogil:
    if floating is float:
        fcnn_pack_b_panel_f32(K, cols, src, rs, cs, dst, ld)
    else:
        fcnn_pack_b_panel_f64(K, cols, src, rs, cs, dst, ld)


cdef void gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               const floating *a, const Py_ssize_t *a_offsets,
               const floating *b, const Py_ssize_t *b_offsets,
               floating *c, Py_ssize_t ldc, int store,
               const floating *bias) noexcept nogil:
    """gemm/gemm.h's product; Py_ssize_t and ptrdiff_t are the same integer."""
    if floating is float:
        fcnn_gemm_f32(M, N, K, a, <const ptrdiff_t *> a_offsets,
                      b, <const ptrdiff_t *> b_offsets, c, ldc, store, bias)
    else:
        fcnn_gemm_f64(M, N, K, a, <const ptrdiff_t *> a_offsets,
                      b, <const ptrdiff_t *> b_offsets, c, ldc, store, bias)


cdef void dot(Py_ssize_t M, Py_ssize_t N, Py_ssize_t G, Py_ssize_t R,
              Py_ssize_t TL, const floating *a, Py_ssize_t a_ss,
              Py_ssize_t a_rs, Py_ssize_t a_hs, const floating *b,
              const Py_ssize_t *b_offsets, Py_ssize_t b_ss,
              Py_ssize_t b_hs, floating *c, Py_ssize_t ldc) noexcept nogil:
    """gemm/gemm.h's sums of products of rows."""
    if floating is float:
        fcnn_dot_f32(M, N, G, R, TL, a, a_ss, a_rs, a_hs, b,
                     <const ptrdiff_t *> b_offsets, b_ss, b_hs, c, ldc)
    else:
        fcnn_dot_f64(M, N, G, R, TL, a, a_ss, a_rs, a_hs, b,
                     <const ptrdiff_t *> b_offsets, b_ss, b_hs, c, ldc)


def select_gemm_kernel(bint avx512):
    """Use the AVX-512 micro-kernel (when the CPU has it) or the portable one,
    for every product in the process.

    Returns the name of the kernel in use afterwards.
    """
    fcnn_gemm_select(avx512)
    return gemm_kernel_name()


def gemm_kernel_name():
    """``'avx512'`` or ``'generic'``: the matrix-product micro-kernel in use."""
    return fcnn_gemm_kernel_name().decode()


fcnn_gemm_select(1)
set_stream_threshold()
