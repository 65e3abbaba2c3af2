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
per call), y = M's tiles transformed back. Threads split the batch, each
thread working through its share of samples, each sample the same way for
any thread count, so the bits never depend on it.

The caller (fastcnn.functional) validates every shape, dtype and parameter
and allocates the output: these functions do no bounds checking.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport isfinite
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint64_t
from libc.string cimport memset

from fastcnn._kernels.gemm cimport *
from frames cimport group_start, sum_fixed_order, thread_groups

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

    void fcnn_winograd_grad_output_f32(ptrdiff_t F, ptrdiff_t Hg, ptrdiff_t Wq,
                                       ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0,
                                       ptrdiff_t tj1, const float *frame, float *dm)
    void fcnn_winograd_grad_output_f64(ptrdiff_t F, ptrdiff_t Hg, ptrdiff_t Wq,
                                       ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0,
                                       ptrdiff_t tj1, const double *frame, double *dm)
    void fcnn_winograd_filter_grad_f32(ptrdiff_t F, ptrdiff_t C, const float *du,
                                       float *gw)
    void fcnn_winograd_filter_grad_f64(ptrdiff_t F, ptrdiff_t C, const double *du,
                                       double *gw)

cdef enum:
    # Elements of a tile's transform, one matrix product each
    ELEMENTS = 16
    # The kernel gradient sums the batch in at most this many blocks of
    # samples, each with its own partial sum, added in block order: a fixed
    # order for any number of threads
    MAX_REDUCTION_BLOCKS = 16


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


cdef inline void transform_grad_output(Py_ssize_t F, Py_ssize_t Hg, Py_ssize_t Wq,
                                       Py_ssize_t ti0, Py_ssize_t ti1,
                                       Py_ssize_t tj0, Py_ssize_t tj1,
                                       const floating *frame,
                                       floating *dm) noexcept nogil:
    if floating is float:
        fcnn_winograd_grad_output_f32(F, Hg, Wq, ti0, ti1, tj0, tj1, frame, dm)
    else:
        fcnn_winograd_grad_output_f64(F, Hg, Wq, ti0, ti1, tj0, tj1, frame, dm)


cdef inline void transform_filter_grad(Py_ssize_t F, Py_ssize_t C,
                                       const floating *du,
                                       floating *gw) noexcept nogil:
    if floating is float:
        fcnn_winograd_filter_grad_f32(F, C, du, gw)
    else:
        fcnn_winograd_filter_grad_f64(F, C, du, gw)


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
    cdef Py_ssize_t t, g, groups, n, e, c
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
            for t in prange(n_threads, schedule='static'):
                if frame == NULL:
                    continue
                groups = thread_groups(N, n_threads, t, 1)
                for g in range(groups):
                    n = group_start(N, n_threads, t, groups, g)
                    winograd_sample(&x[n, 0, 0, 0], &y[n, 0, 0, 0], C, H, W, F,
                                    Ho, Wo, ph, pw, u_panels, panel_size, &bias[0], offsets, frame,
                                    frame + frame_size, frame + frame_size + v_size)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &y[0, 0, 0, 0])
    finally:
        aligned_free(u)
        aligned_free(u_panels)
        aligned_free(offsets)


cdef void nonzero_rows(const floating *a, Py_ssize_t planes, Py_ssize_t rows,
                       Py_ssize_t cols, Py_ssize_t top, Py_ssize_t left,
                       Py_ssize_t frame_rows, uint64_t *mask) noexcept nogil:
    """mask[p*frame_rows + top + r] bit left + j set where a[p, r, j] != 0
    (a NaN counts as nonzero), for planes (rows, cols) of a; the other rows
    of each plane's frame_rows are zero (padding)."""
    cdef Py_ssize_t p, r, j
    cdef uint64_t word
    cdef const floating *row
    memset(mask, 0, planes * frame_rows * sizeof(uint64_t))
    for p in range(planes):
        for r in range(rows):
            row = a + (p * rows + r) * cols
            word = 0
            for j in range(cols):
                word = word | ((<uint64_t> (row[j] != 0)) << (left + j))
            mask[p * frame_rows + top + r] = word


cdef Py_ssize_t mark_products(const uint64_t *x_mask, const uint64_t *gy_mask,
                              Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t F,
                              Py_ssize_t Ho, unsigned char *found) noexcept nogil:
    """found[(f*C + c)*9 + 3a + b] = 1 where some product of the kernel
    gradient's tap (a, b), grad_y[f, i, j] x[c, i + a, j + b] (padded), has
    two nonzero factors; returns how many taps are still without one."""
    cdef Py_ssize_t f, c, k, i, missing = 0
    cdef unsigned char *flags
    for f in range(F):
        for c in range(C):
            flags = found + (f * C + c) * 9
            for k in range(9):
                if flags[k]:
                    continue
                for i in range(Ho):
                    if gy_mask[f * Ho + i] & (x_mask[c * Hp + i + k // 3] >> (k % 3)):
                        flags[k] = 1
                        break
                missing += not flags[k]
    return missing


cdef void kernel_gradient_sample(const floating *xn, const floating *gyn,
                                 Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                 Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo,
                                 Py_ssize_t ph, Py_ssize_t pw,
                                 const Py_ssize_t *offsets, floating *frame,
                                 floating *grad_frame, floating *v,
                                 floating *dm, floating *b_panel,
                                 floating *part) noexcept nogil:
    """part (16 x C x F, then F) += one sample's dU_e^T = V_e . dM_e^T and
    its output gradient's sums: the sample and its output gradient into
    their frames, then chunk by chunk V and dM, and one product per
    element, V's rows read in place and dM_e^T packed."""
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2
    cdef Py_ssize_t Hp = 2 * TH + 2, Wq = TW + 1, P = Ho * Wo
    cdef Py_ssize_t rows = max(1, FCNN_WINOGRAD_LDV // TW)
    cdef Py_ssize_t ti0 = 0, ti1, tj0, tj1, tiles, e, f
    cdef floating *gb = part + ELEMENTS * C * F
    for f in range(F):
        gb[f] += sum_fixed_order(gyn + f * P, P, 1)
    fill_frame(C, H, W, ph, pw, Hp, Wq, xn, frame)
    fill_frame(F, Ho, Wo, 0, 0, 2 * TH, TW, gyn, grad_frame)
    while ti0 < TH:
        ti1 = min(TH, ti0 + rows)
        tj0 = 0
        while tj0 < TW:
            tj1 = min(TW, tj0 + FCNN_WINOGRAD_LDV)
            tiles = (ti1 - ti0) * (tj1 - tj0)
            transform_input(C, Hp, Wq, ti0, ti1, tj0, tj1, frame, v)
            transform_grad_output(F, 2 * TH, TW, ti0, ti1, tj0, tj1, grad_frame, dm)
            for e in range(ELEMENTS):
                pack_b(tiles, F, dm + e * FCNN_WINOGRAD_LDV, 1, FCNN_WINOGRAD_CS,
                       b_panel)
                gemm(C, F, tiles, v + e * FCNN_WINOGRAD_LDV, offsets, b_panel, NULL,
                     part + e * C * F, F, 1, NULL)
            tj0 = tj1
        ti0 = ti1


def correlate2d_backward_kernel_winograd(const floating[:, :, :, ::1] x,
                                         const floating[:, :, :, ::1] grad_y,
                                         floating[:, :, :, ::1] grad_w,
                                         floating[::1] grad_b,
                                         Py_ssize_t ph, Py_ssize_t pw,
                                         int n_threads):
    """The kernel gradient of correlate2d_forward_winograd's correlation:
    grad_w (F, C, 3, 3) and grad_b (F,), overwritten, from x (N, C, H, W)
    and grad_y (N, F, Ho, Wo); the geometry as there.

    The gradient of the same function, by Winograd's transforms run
    backwards (src/winograd.h): dU_e (F x C) summed over the samples' tiles
    of dM_e V_e^T, then G^T dU G. The batch is summed in blocks of samples,
    each block's sums apart, added in block order at the end: the bits do
    not depend on the number of threads.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = grad_y.shape[1], Ho = grad_y.shape[2], Wo = grad_y.shape[3]
    cdef Py_ssize_t TH = (Ho + 1) // 2, TW = (Wo + 1) // 2
    cdef Py_ssize_t NR = panel_cols(&grad_w[0, 0, 0, 0])
    cdef Py_ssize_t n_blocks = min(N, MAX_REDUCTION_BLOCKS)
    cdef Py_ssize_t frame_size = C * (2 * TH + 2) * 2 * (TW + 1)
    cdef Py_ssize_t grad_frame_size = F * 2 * TH * 2 * TW
    cdef Py_ssize_t v_size = C * FCNN_WINOGRAD_CS, dm_size = F * FCNN_WINOGRAD_CS
    cdef Py_ssize_t per_thread = (frame_size + grad_frame_size + v_size + dm_size
                                  + round_up(F, NR) * FCNN_WINOGRAD_LDV)
    cdef Py_ssize_t partial_size = ELEMENTS * C * F + F
    # after the scratch, the bit masks of a sample's nonzero values: its
    # padded rows (one 64-bit word each, W + the padding <= 64) and its
    # output gradient's rows, in as many values as they take
    cdef Py_ssize_t Hp = 2 * TH + 2, taps = F * C * 9
    cdef Py_ssize_t per_thread_values = round_up(per_thread, 2)   # 8-byte aligned
    cdef Py_ssize_t mask_values = ((C * Hp + F * Ho) * sizeof(uint64_t)
                                   + sizeof(floating) - 1) // sizeof(floating)
    cdef Py_ssize_t blk, n, r, t, missing
    cdef unsigned char *found = NULL
    cdef unsigned char *flags
    cdef uint64_t *masks
    cdef floating *gw = &grad_w[0, 0, 0, 0]
    cdef floating *frame = NULL
    cdef floating *partials = NULL
    cdef floating *part
    cdef floating *acc
    cdef Py_ssize_t *offsets = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    per_thread = per_thread_values + mask_values
    if W + pw > 64:
        raise ValueError(f"rows of {W} values after {pw} of padding do not fit "
                         "the 64-bit masks of the Winograd kernel gradient")
    try:
        partials = alloc(n_blocks * partial_size, &grad_w[0, 0, 0, 0])
        offsets = <Py_ssize_t *> aligned_malloc(C * sizeof(Py_ssize_t))
        found = <unsigned char *> aligned_malloc(n_blocks * taps)
        if offsets == NULL or found == NULL:
            raise MemoryError(f"could not allocate {n_blocks * taps} bytes of scratch")
        for r in range(C):
            offsets[r] = r * FCNN_WINOGRAD_CS
        with nogil, parallel(num_threads=n_threads):
            frame = thread_alloc(per_thread, &grad_w[0, 0, 0, 0], failure)
            if frame != NULL:
                # the frames' padding stays zero: samples write the inside only
                memset(frame, 0, (frame_size + grad_frame_size) * sizeof(floating))
            for blk in prange(n_blocks, schedule='static'):
                if frame == NULL:
                    continue
                part = partials + blk * partial_size
                memset(part, 0, partial_size * sizeof(floating))
                flags = found + blk * taps
                memset(flags, 0, taps)
                missing = taps
                for n in range(blk * N // n_blocks, (blk + 1) * N // n_blocks):
                    if missing:
                        masks = <uint64_t *> (frame + per_thread_values)
                        nonzero_rows(&x[n, 0, 0, 0], C, H, W, ph, pw, Hp, masks)
                        nonzero_rows(&grad_y[n, 0, 0, 0], F, Ho, Wo, 0, 0, Ho,
                                     masks + C * Hp)
                        missing = mark_products(masks, masks + C * Hp, C, Hp, F, Ho,
                                                flags)
                    kernel_gradient_sample(
                        &x[n, 0, 0, 0], &grad_y[n, 0, 0, 0], C, H, W, F, Ho, Wo,
                        ph, pw, offsets, frame, frame + frame_size,
                        frame + frame_size + grad_frame_size,
                        frame + frame_size + grad_frame_size + v_size,
                        frame + frame_size + grad_frame_size + v_size + dm_size, part)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &grad_w[0, 0, 0, 0])
        with nogil:
            # blocks added in block order, whatever thread computed them
            for r in prange(ELEMENTS * C + 1, num_threads=n_threads, schedule='static'):
                acc = partials + r * F
                for blk in range(1, n_blocks):
                    for t in range(F):
                        acc[t] = acc[t] + partials[blk * partial_size + r * F + t]
            transform_filter_grad(F, C, partials, &grad_w[0, 0, 0, 0])
            for t in range(F):
                grad_b[t] = partials[ELEMENTS * C * F + t]
            # A tap none of whose products has two nonzero factors has the
            # gradient 0 exactly: summed directly, every product is 0. The
            # transforms sum other taps' products there, which cancel only
            # in exact arithmetic; an optimizer that divides by the
            # gradient's size (Adam) would turn what is left into whole
            # steps. (A NaN or infinity stays: 0 times infinity is NaN.)
            for r in range(taps):
                if not found[r]:
                    for blk in range(1, n_blocks):
                        found[r] = found[r] | found[blk * taps + r]
                if not found[r] and isfinite(gw[r]):
                    gw[r] = 0
    finally:
        aligned_free(partials)
        aligned_free(offsets)
        aligned_free(found)
