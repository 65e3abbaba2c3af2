"""The forward correlation with a 3 x 3 kernel at stride 1 and dilation 1 by
Winograd's minimal filtering F(2x2, 3x3) (the transforms: src/winograd.h).

Layout as src/correlation.pyx: x (N, C, H, W), w (F, C, 3, 3),
y (N, F, Ho, Wo). Each 2 x 2 tile of outputs takes 16 multiplications per
pair of channels where the direct correlation takes 36; the transforms
around the products cost a few additions per value. The input gradient of
such a layer is a correlation of the same kind (with the mirrored kernel,
fastcnn.functional), so it runs here too.

Per sample: the padded sample into a phase-split frame, then tile rows in
chunks: V = the chunk's input tiles transformed (16 matrices C x tiles),
M_e = U_e . V_e by the gemm module (U, the kernel transformed, packed once
per call), y = M's tiles transformed back. Threads take the samples one
at a time (a dynamic schedule), and each sample is computed the same way
by whichever thread takes it, so the bits never depend on the thread
count or on which thread took what.

The caller (fastcnn.functional) validates every shape, dtype and parameter
and allocates the output: these functions do no bounds checking.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stddef cimport ptrdiff_t
from libc.string cimport memset

from fastcnn._kernels.gemm cimport *

cdef extern from "winograd.h" nogil:
    enum:
        FCNN_WINOGRAD_LDV
        FCNN_WINOGRAD_CS
    int fcnn_winograd_select(int want_avx512)
    void fcnn_winograd_filter_f32(ptrdiff_t F, ptrdiff_t C, const float *w, float *u)
    void fcnn_winograd_filter_f64(ptrdiff_t F, ptrdiff_t C, const double *w, double *u)
    void fcnn_winograd_frame_f32(ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph,
                                 ptrdiff_t pw, ptrdiff_t Hp, ptrdiff_t Wq,
                                 const float *x, float *frame)
    void fcnn_winograd_frame_f64(ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph,
                                 ptrdiff_t pw, ptrdiff_t Hp, ptrdiff_t Wq,
                                 const double *x, double *frame)
    void fcnn_winograd_input_f32(ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wq, ptrdiff_t ti0,
                                 ptrdiff_t ti1, ptrdiff_t tj0, ptrdiff_t tj1,
                                 const float *frame, float *v)
    void fcnn_winograd_input_f64(ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wq, ptrdiff_t ti0,
                                 ptrdiff_t ti1, ptrdiff_t tj0, ptrdiff_t tj1,
                                 const double *frame, double *v)
    void fcnn_winograd_output_f32(ptrdiff_t F, ptrdiff_t ti0, ptrdiff_t ti1,
                                  ptrdiff_t tj0, ptrdiff_t tj1, const float *m,
                                  const float *bias, float *y, ptrdiff_t Ho,
                                  ptrdiff_t Wo)
    void fcnn_winograd_output_f64(ptrdiff_t F, ptrdiff_t ti0, ptrdiff_t ti1,
                                  ptrdiff_t tj0, ptrdiff_t tj1, const double *m,
                                  const double *bias, double *y, ptrdiff_t Ho,
                                  ptrdiff_t Wo)

cdef enum:
    # Elements of a tile's transform, one matrix product each
    ELEMENTS = 16


# The most tiles one chunk of a sample holds (a row of more is split)
CHUNK_TILES = FCNN_WINOGRAD_LDV


def select_transforms(int want_avx512):
    """The AVX-512 transforms (when the CPU has them) or the portable ones;
    returns whether AVX-512 is in use. The tests run both."""
    return bool(fcnn_winograd_select(want_avx512))


select_transforms(1)


cdef inline void transform_filter(Py_ssize_t F, Py_ssize_t C, const floating *w,
                                  floating *u) noexcept nogil:
    if floating is float:
        fcnn_winograd_filter_f32(F, C, w, u)
    else:
        fcnn_winograd_filter_f64(F, C, w, u)


cdef inline void fill_frame(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t Hp,
                            Py_ssize_t Wq, const floating *x,
                            floating *frame) noexcept nogil:
    if floating is float:
        fcnn_winograd_frame_f32(C, H, W, ph, pw, Hp, Wq, x, frame)
    else:
        fcnn_winograd_frame_f64(C, H, W, ph, pw, Hp, Wq, x, frame)


cdef inline void transform_input(Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wq,
                                 Py_ssize_t ti0, Py_ssize_t ti1, Py_ssize_t tj0,
                                 Py_ssize_t tj1, const floating *frame,
                                 floating *v) noexcept nogil:
    if floating is float:
        fcnn_winograd_input_f32(C, Hp, Wq, ti0, ti1, tj0, tj1, frame, v)
    else:
        fcnn_winograd_input_f64(C, Hp, Wq, ti0, ti1, tj0, tj1, frame, v)


cdef inline void transform_output(Py_ssize_t F, Py_ssize_t ti0, Py_ssize_t ti1,
                                  Py_ssize_t tj0, Py_ssize_t tj1,
                                  const floating *m, const floating *bias,
                                  floating *y, Py_ssize_t Ho,
                                  Py_ssize_t Wo) noexcept nogil:
    if floating is float:
        fcnn_winograd_output_f32(F, ti0, ti1, tj0, tj1, m, bias, y, Ho, Wo)
    else:
        fcnn_winograd_output_f64(F, ti0, ti1, tj0, tj1, m, bias, y, Ho, Wo)


cdef void winograd_sample(const floating *xn, floating *yn, Py_ssize_t C,
                          Py_ssize_t H, Py_ssize_t W, Py_ssize_t F,
                          Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t ph,
                          Py_ssize_t pw, const floating *u_panels,
                          Py_ssize_t panel_size, const floating *bias,
                          const Py_ssize_t *offsets, floating *frame,
                          floating *v, floating *m) noexcept nogil:
    """One sample xn into yn: into the frame (whose padding is zero), then
    a chunk of tiles at a time (whole tile rows, or a part of one where a
    row has more than FCNN_WINOGRAD_LDV tiles) through V, the 16 products
    M_e = U_e . V_e, then M into yn."""
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2
    cdef Py_ssize_t Hp = 2 * TH + 2, Wq = TW + 1
    cdef Py_ssize_t rows = max(1, FCNN_WINOGRAD_LDV // TW)
    cdef Py_ssize_t ti0 = 0, ti1, tj0, tj1, e
    fill_frame(C, H, W, ph, pw, Hp, Wq, xn, frame)
    while ti0 < TH:
        ti1 = min(TH, ti0 + rows)
        tj0 = 0
        while tj0 < TW:
            tj1 = min(TW, tj0 + FCNN_WINOGRAD_LDV)
            transform_input(C, Hp, Wq, ti0, ti1, tj0, tj1, frame, v)
            for e in range(ELEMENTS):
                gemm(F, (ti1 - ti0) * (tj1 - tj0), C, u_panels + e * panel_size,
                     NULL, v + e * FCNN_WINOGRAD_LDV, offsets,
                     m + e * FCNN_WINOGRAD_LDV, FCNN_WINOGRAD_CS, 0, NULL)
            transform_output(F, ti0, ti1, tj0, tj1, m, bias, yn, Ho, Wo)
            tj0 = tj1
        ti0 = ti1


def correlate2d_forward_winograd(const floating[:, :, :, ::1] x,
                                 const floating[:, :, :, ::1] w,
                                 const floating[::1] bias,
                                 floating[:, :, :, ::1] y,
                                 Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """y[n, f, i, j] = bias[f] + sum_{c,a,b} w[f,c,a,b] x[n, c, i+a-ph, j+b-pw]
    for w of shape (F, C, 3, 3), x read as zero outside its borders.

    y must have shape (N, F, Ho, Wo) with Ho, Wo from the correlation
    output-size formula at stride 1, padding (ph, pw) above and left of x
    (below and right, what the output size needs: at most 2, as the caller
    trims padding that reaches past the kernel).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2
    cdef Py_ssize_t MR = panel_rows(&y[0, 0, 0, 0])
    cdef Py_ssize_t frame_size = C * (2 * TH + 2) * 2 * (TW + 1)
    # the products read whole panels of columns, at most FCNN_WINOGRAD_LDV
    # (a multiple of NR) a row
    cdef Py_ssize_t v_size = C * FCNN_WINOGRAD_CS, m_size = F * FCNN_WINOGRAD_CS
    cdef Py_ssize_t per_thread = frame_size + v_size + m_size
    cdef Py_ssize_t panel_size = round_up(F, MR) * C
    cdef Py_ssize_t n, e, c
    cdef floating *u = NULL
    cdef floating *u_panels = NULL
    cdef floating *frame = NULL
    cdef Py_ssize_t *offsets = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    try:
        u = alloc(ELEMENTS * F * C, &y[0, 0, 0, 0])
        u_panels = alloc(ELEMENTS * panel_size, &y[0, 0, 0, 0])
        offsets = <Py_ssize_t *> aligned_malloc(C * sizeof(Py_ssize_t))
        if offsets == NULL:
            raise MemoryError(f"could not allocate {C * sizeof(Py_ssize_t)} bytes of scratch")
        with nogil:
            transform_filter(F, C, &w[0, 0, 0, 0], u)
            for e in range(ELEMENTS):
                pack_a(F, C, u + e * F * C, C, 1, u_panels + e * panel_size)
            for c in range(C):
                offsets[c] = c * FCNN_WINOGRAD_CS
        with nogil, parallel(num_threads=n_threads):
            frame = thread_alloc(per_thread, &y[0, 0, 0, 0], failure)
            if frame != NULL:
                # the padding stays zero: samples write the inside only; V's
                # columns past a chunk's tiles are read by the products
                # (never stored), so they must be numbers
                memset(frame, 0, (frame_size + v_size) * sizeof(floating))
            # Samples handed out one at a time: a core slowed by other work
            # takes fewer. A sample's output is the same whichever thread
            # computes it.
            for n in prange(N, schedule='dynamic'):
                if frame == NULL:
                    continue
                winograd_sample(&x[n, 0, 0, 0], &y[n, 0, 0, 0], C, H, W, F,
                                Ho, Wo, ph, pw, u_panels, panel_size, &bias[0], offsets, frame,
                                frame + frame_size, frame + frame_size + v_size)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &y[0, 0, 0, 0])
    finally:
        aligned_free(u)
        aligned_free(u_panels)
        aligned_free(offsets)
