"""The interface of the gemm extension module (src/gemm.pyx, over the C in
src/gemm/): the extensions that run matrix products cimport these functions
and call them through that one loaded module (its C-API capsule), so the
process has one micro-kernel selection and one scratch block per thread.

Each call crosses the module boundary once per product or packing: the
loops over panels, the micro-kernels and the row products stay inside the
gemm module. The inline helpers below are compiled into each caller.

Cython finds this file by the module's full name, fastcnn._kernels.gemm,
which is why it lives in the package and not beside src/gemm.pyx.
"""
from cython cimport floating

cdef extern from "gemm/layout.h" nogil:
    enum:
        FCNN_MR_F32
        FCNN_NR_F32
        FCNN_MR_F64
        FCNN_NR_F64

cdef extern from "gemm/gemm.h" nogil:
    enum:
        FCNN_STORE_OVERWRITE
        FCNN_STORE_ADD
        FCNN_STORE_STREAM

cdef void *aligned_malloc(size_t n_bytes) noexcept nogil
cdef void aligned_free(void *p) noexcept nogil
cdef void *thread_scratch(size_t n_bytes) noexcept nogil
cdef void thread_scratch_trim() noexcept nogil

cdef void pack_a(Py_ssize_t M, Py_ssize_t K, const floating *src,
                 Py_ssize_t rs, Py_ssize_t cs, floating *dst) noexcept nogil
cdef void pack_b(Py_ssize_t K, Py_ssize_t N, const floating *src,
                 Py_ssize_t rs, Py_ssize_t cs, floating *dst) noexcept nogil
cdef void pack_b_panel(Py_ssize_t K, Py_ssize_t cols, const floating *src,
                       Py_ssize_t rs, Py_ssize_t cs, floating *dst,
                       Py_ssize_t ld) noexcept nogil
cdef void gemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
               const floating *a, const Py_ssize_t *a_offsets,
               const floating *b, const Py_ssize_t *b_offsets,
               floating *c, Py_ssize_t ldc, int store,
               const floating *bias) noexcept nogil
cdef int output_store(size_t n_bytes) noexcept nogil
cdef void dot(Py_ssize_t M, Py_ssize_t N, Py_ssize_t G, Py_ssize_t R,
              Py_ssize_t TL, const floating *a, Py_ssize_t a_ss,
              Py_ssize_t a_rs, Py_ssize_t a_hs, const floating *b,
              const Py_ssize_t *b_offsets, Py_ssize_t b_ss,
              Py_ssize_t b_hs, floating *c, Py_ssize_t ldc) noexcept nogil


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


cdef inline floating *alloc(Py_ssize_t n_items, const floating *tag) except NULL:
    cdef floating *p = <floating *> aligned_malloc(n_items * sizeof(floating))
    if p == NULL:
        raise MemoryError(
            f"could not allocate {n_items * sizeof(floating)} bytes of scratch")
    return p


cdef inline floating *thread_alloc(Py_ssize_t n_items, const floating *tag,
                                   int *failure) noexcept nogil:
    """The calling thread's scratch (thread_scratch), taken inside the
    parallel region by each thread for itself: the block it kept from its
    last call, grown if needed, still in that thread's cache. (Scratch that
    one thread allocates for all leaves the others fetching their part from
    its cache.) Never freed by the caller, but each thread calls
    thread_scratch_trim at the end of its region. NULL, with failure[0]
    set, when memory runs out; raise with scratch_error afterwards."""
    cdef floating *p = <floating *> thread_scratch(max(n_items, 1) * sizeof(floating))
    if p == NULL:
        failure[0] = 1
    return p


cdef inline int scratch_error(int failed, Py_ssize_t n_items, const floating *tag) except -1:
    if failed:
        raise MemoryError(
            f"could not allocate {n_items * sizeof(floating)} bytes of scratch "
            "for a thread")
    return 0
