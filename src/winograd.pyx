"""The forward correlation with a 3 x 3 kernel at stride 1 and dilation 1 by
Winograd's minimal filtering F(4x4, 3x3), and its kernel gradient (the
transforms: src/winograd.h).

Layout as src/correlation.pyx: x (N, C, H, W), w (F, C, 3, 3),
y (N, F, Ho, Wo). Each 4 x 4 tile of outputs takes 36 multiplications per
pair of channels where the direct correlation takes 144; the transforms
around the products cost a few additions per value. The input gradient of
such a layer is a correlation of the same kind (with the mirrored kernel,
fastcnn.functional), so it runs here too.

By chunks of tiles: the windows of the chunk's tiles gathered from x and
transformed in place, V (36 matrices C x slots), M_e = U_e . V_e by the
gemm module (U, the kernel transformed once per call, straight into the
products' panels, the panels shared among the threads), y = M's tiles
transformed back. Small samples share a chunk, so that the products
have enough columns; a large one is cut into chunks of tile rows. Threads
take the chunks of samples one at a time (a dynamic schedule), and each
column of a product is summed on its own, so a sample's outputs are the
same whichever thread computes them and whichever samples share its chunk:
the bits never depend on the thread count.

The kernel gradient goes through the same chunks and the same V: the
chunk's output gradients gathered and transformed (Z = A dY A^T), the 36
products dU_e += Z_e . V_e^T summed over the chunk's slots, and at the end
grad_w = G^T dU G. Its sum over the batch runs in a few blocks of chunks
fixed by the shapes, added in block order.

The caller (fastcnn.functional) validates every shape, dtype and parameter
and allocates the output: these functions do no bounds checking.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stddef cimport ptrdiff_t
from libc.string cimport memset

from fastcnn._kernels.gemm cimport *
from frames cimport sum_fixed_order

cdef extern from "winograd.h" nogil:
    enum:
        FCNN_WINOGRAD_ELEMENTS
        FCNN_WINOGRAD_LDV
        FCNN_WINOGRAD_CS
    int fcnn_winograd_select(int want_avx512)
    void fcnn_winograd_filter_f32(ptrdiff_t F, ptrdiff_t C, const float *w, ptrdiff_t MR,
                                  ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t stride, float *u)
    void fcnn_winograd_filter_f64(ptrdiff_t F, ptrdiff_t C, const double *w, ptrdiff_t MR,
                                  ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t stride, double *u)
    void fcnn_winograd_gather_f32(ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph,
                                  ptrdiff_t pw, ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0,
                                  ptrdiff_t tj1, ptrdiff_t ls, const float *x, float *d)
    void fcnn_winograd_gather_f64(ptrdiff_t C, ptrdiff_t H, ptrdiff_t W, ptrdiff_t ph,
                                  ptrdiff_t pw, ptrdiff_t ti0, ptrdiff_t ti1, ptrdiff_t tj0,
                                  ptrdiff_t tj1, ptrdiff_t ls, const double *x, double *d)
    void fcnn_winograd_input_f32(ptrdiff_t C, ptrdiff_t slots, float *v)
    void fcnn_winograd_input_f64(ptrdiff_t C, ptrdiff_t slots, double *v)
    void fcnn_winograd_output_f32(ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0, ptrdiff_t rows,
                                  ptrdiff_t tj0, ptrdiff_t tj1, ptrdiff_t ls, const float *m,
                                  const float *bias, float *y, ptrdiff_t Ho, ptrdiff_t Wo)
    void fcnn_winograd_output_f64(ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0, ptrdiff_t rows,
                                  ptrdiff_t tj0, ptrdiff_t tj1, ptrdiff_t ls, const double *m,
                                  const double *bias, double *y, ptrdiff_t Ho, ptrdiff_t Wo)

    void fcnn_winograd_grad_gather_f32(ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0,
                                       ptrdiff_t rows, ptrdiff_t tj0, ptrdiff_t tj1,
                                       ptrdiff_t ls, const float *gy, ptrdiff_t Ho,
                                       ptrdiff_t Wo, float *z)
    void fcnn_winograd_grad_gather_f64(ptrdiff_t F, ptrdiff_t TH, ptrdiff_t ti0,
                                       ptrdiff_t rows, ptrdiff_t tj0, ptrdiff_t tj1,
                                       ptrdiff_t ls, const double *gy, ptrdiff_t Ho,
                                       ptrdiff_t Wo, double *z)
    void fcnn_winograd_grad_input_f32(ptrdiff_t F, ptrdiff_t slots, float *z)
    void fcnn_winograd_grad_input_f64(ptrdiff_t F, ptrdiff_t slots, double *z)
    void fcnn_winograd_filter_grad_f32(ptrdiff_t F, ptrdiff_t C, const float *du,
                                       float *gw)
    void fcnn_winograd_filter_grad_f64(ptrdiff_t F, ptrdiff_t C, const double *du,
                                       double *gw)

cdef enum:
    # Elements of a tile's transform, one matrix product each
    ELEMENTS = FCNN_WINOGRAD_ELEMENTS
    # The kernel gradient is summed over the batch in at most this many
    # blocks of samples, each with its own partial sums (36 F x C
    # matrices), added in block order: the bits do not depend on the
    # thread count, and the blocks are few because their partial sums are
    # large. Together they hold at most GRADIENT_PARTIALS values where
    # two blocks do not pass that (512 x 512 channels: 2 blocks of 9.4
    # million).
    MAX_GRADIENT_BLOCKS = 8
    GRADIENT_PARTIALS = 1 << 24


def select_transforms(int want_avx512):
    """The AVX-512 transforms (when the CPU has them) or the portable ones;
    returns whether AVX-512 is in use. The tests run both."""
    return bool(fcnn_winograd_select(want_avx512))


select_transforms(1)


cdef inline void transform_filter(Py_ssize_t F, Py_ssize_t C, const floating *w,
                                  Py_ssize_t MR, Py_ssize_t p, Py_ssize_t stride,
                                  floating *u) noexcept nogil:
    if floating is float:
        fcnn_winograd_filter_f32(F, C, w, MR, p, p + 1, stride, u)
    else:
        fcnn_winograd_filter_f64(F, C, w, MR, p, p + 1, stride, u)


cdef inline void gather(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph,
                        Py_ssize_t pw, Py_ssize_t ti0, Py_ssize_t ti1, Py_ssize_t tj0,
                        Py_ssize_t tj1, Py_ssize_t ls, const floating *x,
                        floating *d) noexcept nogil:
    if floating is float:
        fcnn_winograd_gather_f32(C, H, W, ph, pw, ti0, ti1, tj0, tj1, ls, x, d)
    else:
        fcnn_winograd_gather_f64(C, H, W, ph, pw, ti0, ti1, tj0, tj1, ls, x, d)


cdef inline void transform_input(Py_ssize_t C, Py_ssize_t slots,
                                 floating *v) noexcept nogil:
    if floating is float:
        fcnn_winograd_input_f32(C, slots, v)
    else:
        fcnn_winograd_input_f64(C, slots, v)


cdef inline void transform_output(Py_ssize_t F, Py_ssize_t TH, Py_ssize_t ti0,
                                  Py_ssize_t rows, Py_ssize_t tj0, Py_ssize_t tj1,
                                  Py_ssize_t ls, const floating *m,
                                  const floating *bias, floating *y, Py_ssize_t Ho,
                                  Py_ssize_t Wo) noexcept nogil:
    if floating is float:
        fcnn_winograd_output_f32(F, TH, ti0, rows, tj0, tj1, ls, m, bias, y, Ho, Wo)
    else:
        fcnn_winograd_output_f64(F, TH, ti0, rows, tj0, tj1, ls, m, bias, y, Ho, Wo)


cdef void products(Py_ssize_t F, Py_ssize_t C, Py_ssize_t slots,
                   const floating *u_panels, Py_ssize_t panel_size,
                   const Py_ssize_t *offsets, const floating *v,
                   floating *m) noexcept nogil:
    """M_e = U_e . V_e for the 36 elements, over a chunk's slots."""
    cdef Py_ssize_t e
    for e in range(ELEMENTS):
        gemm(F, slots, C, u_panels + e * panel_size, NULL, v + e * FCNN_WINOGRAD_LDV,
             offsets, m + e * FCNN_WINOGRAD_LDV, FCNN_WINOGRAD_CS, 0, NULL)


cdef Py_ssize_t transformed_windows(const floating *x, Py_ssize_t C, Py_ssize_t H,
                                    Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                                    Py_ssize_t n_samples, Py_ssize_t ti0,
                                    Py_ssize_t ti1, Py_ssize_t tj0, Py_ssize_t tj1,
                                    Py_ssize_t ls, floating *v) noexcept nogil:
    """V of a chunk: the windows of tile rows ti0 .. ti1 - 1 and columns
    tj0 .. tj1 - 1 of n_samples consecutive samples of x (whole samples
    when n_samples > 1), gathered one sample after another and
    transformed. Returns the chunk's slots."""
    cdef Py_ssize_t n, sample_slots = (ti1 - ti0) * ls
    for n in range(n_samples):
        gather(C, H, W, ph, pw, ti0, ti1, tj0, tj1, ls, x + n * C * H * W,
               v + n * sample_slots)
    transform_input(C, n_samples * sample_slots, v)
    return n_samples * sample_slots


cdef void winograd_samples(const floating *x, floating *y, Py_ssize_t n0,
                           Py_ssize_t n1, Py_ssize_t C, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t F, Py_ssize_t Ho,
                           Py_ssize_t Wo, Py_ssize_t ph, Py_ssize_t pw,
                           const floating *u_panels, Py_ssize_t panel_size,
                           const floating *bias, const Py_ssize_t *offsets,
                           floating *v, floating *m) noexcept nogil:
    """Samples n0 .. n1 - 1 of x into y. Samples whose tiles fit in a chunk
    share one: each sample's windows gathered into V in turn, V transformed,
    the 36 products M_e = U_e . V_e over all their tiles, M into each
    sample's y. A larger sample (n1 = n0 + 1) goes a chunk of whole tile
    rows at a time, or a part of one where a row has more tiles than a
    chunk has slots."""
    cdef Py_ssize_t TH = (Ho + 3) // 4, TW = (Wo + 3) // 4
    cdef Py_ssize_t ls = row_slots(TW)
    cdef Py_ssize_t rows = max(1, FCNN_WINOGRAD_LDV // ls)
    cdef Py_ssize_t x_size = C * H * W, y_size = F * Ho * Wo
    cdef Py_ssize_t ti0 = 0, ti1, tj0, tj1, slots
    if whole_samples(Ho, Wo) > 0:
        slots = transformed_windows(x + n0 * x_size, C, H, W, ph, pw, n1 - n0,
                                    0, TH, 0, TW, ls, v)
        products(F, C, slots, u_panels, panel_size, offsets, v, m)
        transform_output(F, TH, 0, (n1 - n0) * TH, 0, TW, ls, m, bias, y + n0 * y_size,
                         Ho, Wo)
        return
    while ti0 < TH:
        ti1 = min(TH, ti0 + rows)
        tj0 = 0
        while tj0 < TW:
            tj1 = min(TW, tj0 + ls)
            slots = transformed_windows(x + n0 * x_size, C, H, W, ph, pw, 1,
                                        ti0, ti1, tj0, tj1, ls, v)
            products(F, C, slots, u_panels, panel_size, offsets, v, m)
            transform_output(F, TH, ti0, ti1 - ti0, tj0, tj1, ls, m, bias,
                             y + n0 * y_size, Ho, Wo)
            tj0 = tj1
        ti0 = ti1


cdef Py_ssize_t *chunk_rows(Py_ssize_t n) except NULL:
    """Where the rows of n channels (or filters) of a chunk's matrices
    start, i * FCNN_WINOGRAD_CS, for the products that read them in place;
    freed with aligned_free."""
    cdef Py_ssize_t *rows = <Py_ssize_t *> aligned_malloc(n * sizeof(Py_ssize_t))
    cdef Py_ssize_t i
    if rows == NULL:
        raise MemoryError(f"could not allocate {n * sizeof(Py_ssize_t)} bytes of scratch")
    for i in range(n):
        rows[i] = i * FCNN_WINOGRAD_CS
    return rows


cdef inline Py_ssize_t row_slots(Py_ssize_t TW) noexcept nogil:
    """Slots a row of TW tiles takes in a chunk: TW rounded up to a
    multiple of 4 (an output vector's four tiles), at most a chunk's."""
    return min(FCNN_WINOGRAD_LDV, (TW + 3) // 4 * 4)


cdef inline Py_ssize_t whole_samples(Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """How many whole samples of output size (Ho, Wo) a chunk holds: 0
    where the tiles of one take more slots than a chunk has."""
    cdef Py_ssize_t TW = (Wo + 3) // 4
    if TW > FCNN_WINOGRAD_LDV:
        return 0
    return FCNN_WINOGRAD_LDV // (((Ho + 3) // 4) * row_slots(TW))


def tile_slots(Py_ssize_t Ho, Py_ssize_t Wo):
    """The slots the tiles of one sample of output size (Ho, Wo) take in
    the products, those past each row's tiles included (16 outputs
    computed each)."""
    cdef Py_ssize_t TW = (Wo + 3) // 4, ls = row_slots(TW)
    return (Ho + 3) // 4 * ((TW + ls - 1) // ls * ls)


cdef inline Py_ssize_t samples_per_chunk(Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """How many samples of output size (Ho, Wo) share a chunk: as many as
    fit whole, or 1 where one does not. Fixed by the shape alone, so which
    samples share a chunk never depends on the thread count."""
    return max(1, whole_samples(Ho, Wo))


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
    cdef Py_ssize_t MR = panel_rows(&y[0, 0, 0, 0])
    cdef Py_ssize_t group = samples_per_chunk(Ho, Wo)
    cdef Py_ssize_t n_groups = (N + group - 1) // group
    # the products read whole panels of columns, at most FCNN_WINOGRAD_LDV
    # (a multiple of NR) a row
    cdef Py_ssize_t v_size = C * FCNN_WINOGRAD_CS, m_size = F * FCNN_WINOGRAD_CS
    cdef Py_ssize_t per_thread = v_size + m_size
    # U_e's panels, each element's a little over a multiple of 4 KiB apart
    # (the transform writes all 36 at once: they would share a cache set)
    cdef Py_ssize_t panel_size = round_up(F, MR) * C + 16
    cdef Py_ssize_t g, p
    cdef floating *u_panels = NULL
    cdef floating *scratch = NULL
    cdef Py_ssize_t *offsets = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    try:
        u_panels = alloc(ELEMENTS * panel_size, &y[0, 0, 0, 0])
        offsets = chunk_rows(C)
        for p in prange(round_up(F, MR) // MR, nogil=True, num_threads=n_threads,
                        schedule='static'):
            transform_filter(F, C, &w[0, 0, 0, 0], MR, p, panel_size, u_panels)
        with nogil, parallel(num_threads=n_threads):
            scratch = thread_alloc(per_thread, &y[0, 0, 0, 0], failure)
            if scratch != NULL:
                # V's columns past a chunk's slots are read by the products
                # (never stored), so they must be numbers
                memset(scratch, 0, v_size * sizeof(floating))
            # Groups of samples handed out one at a time: a core slowed by
            # other work takes fewer. A sample's output is the same
            # whichever thread computes it and whichever samples share its
            # chunk (each column of a product is summed on its own).
            for g in prange(n_groups, schedule='dynamic'):
                if scratch == NULL:
                    continue
                winograd_samples(&x[0, 0, 0, 0], &y[0, 0, 0, 0], g * group,
                                 min(N, g * group + group), C, H, W, F, Ho, Wo, ph, pw,
                                 u_panels, panel_size, &bias[0], offsets, scratch,
                                 scratch + v_size)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &y[0, 0, 0, 0])
    finally:
        aligned_free(u_panels)
        aligned_free(offsets)


# ------------------------------------------------------- kernel gradient

cdef inline void gather_gradient(Py_ssize_t F, Py_ssize_t TH, Py_ssize_t ti0,
                                 Py_ssize_t rows, Py_ssize_t tj0, Py_ssize_t tj1,
                                 Py_ssize_t ls, const floating *gy, Py_ssize_t Ho,
                                 Py_ssize_t Wo, floating *z) noexcept nogil:
    if floating is float:
        fcnn_winograd_grad_gather_f32(F, TH, ti0, rows, tj0, tj1, ls, gy, Ho, Wo, z)
    else:
        fcnn_winograd_grad_gather_f64(F, TH, ti0, rows, tj0, tj1, ls, gy, Ho, Wo, z)


cdef inline void transform_gradient(Py_ssize_t F, Py_ssize_t slots,
                                    floating *z) noexcept nogil:
    if floating is float:
        fcnn_winograd_grad_input_f32(F, slots, z)
    else:
        fcnn_winograd_grad_input_f64(F, slots, z)


cdef void gradient_products(Py_ssize_t F, Py_ssize_t C, Py_ssize_t slots,
                            const floating *z, const Py_ssize_t *filter_rows,
                            const floating *v, floating *vt,
                            floating *du) noexcept nogil:
    """dU_e (F x C) += Z_e (F x slots) . V_e^T for the 36 elements: Z_e's
    rows read in place, V_e's packed as the product's B (its columns are
    V_e's rows, runs the packer transposes)."""
    cdef Py_ssize_t e
    for e in range(ELEMENTS):
        pack_b(slots, C, v + e * FCNN_WINOGRAD_LDV, 1, FCNN_WINOGRAD_CS, vt)
        gemm(F, C, slots, z + e * FCNN_WINOGRAD_LDV, filter_rows, vt, NULL,
             du + e * F * C, C, FCNN_STORE_ADD, NULL)


cdef void gradient_chunk(const floating *x, const floating *gy, Py_ssize_t C,
                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t F, Py_ssize_t Ho,
                         Py_ssize_t Wo, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t n_samples, Py_ssize_t TH, Py_ssize_t ti0,
                         Py_ssize_t ti1, Py_ssize_t tj0, Py_ssize_t tj1,
                         Py_ssize_t ls, const Py_ssize_t *filter_rows,
                         floating *v, floating *z, floating *vt,
                         floating *du) noexcept nogil:
    """One chunk's part of dU: n_samples whole samples from x and gy
    (ti0 = 0, ti1 = TH), or tile rows ti0 .. ti1 - 1 and columns
    tj0 .. tj1 - 1 of one."""
    cdef Py_ssize_t slots = transformed_windows(x, C, H, W, ph, pw, n_samples,
                                                ti0, ti1, tj0, tj1, ls, v)
    gather_gradient(F, TH, ti0, n_samples * (ti1 - ti0), tj0, tj1, ls, gy, Ho,
                    Wo, z)
    transform_gradient(F, slots, z)
    gradient_products(F, C, slots, z, filter_rows, v, vt, du)


cdef void gradient_samples(const floating *x, const floating *gy, Py_ssize_t n0,
                           Py_ssize_t n1, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo,
                           Py_ssize_t ph, Py_ssize_t pw,
                           const Py_ssize_t *filter_rows, floating *v, floating *z,
                           floating *vt, floating *du) noexcept nogil:
    """dU += samples n0 .. n1 - 1's part, chunk by chunk as the forward
    goes (winograd_samples)."""
    cdef Py_ssize_t TH = (Ho + 3) // 4, TW = (Wo + 3) // 4
    cdef Py_ssize_t ls = row_slots(TW)
    cdef Py_ssize_t rows = max(1, FCNN_WINOGRAD_LDV // ls)
    cdef Py_ssize_t x_size = C * H * W, y_size = F * Ho * Wo
    cdef Py_ssize_t ti0 = 0, ti1, tj0, tj1
    if whole_samples(Ho, Wo) > 0:
        gradient_chunk(x + n0 * x_size, gy + n0 * y_size, C, H, W, F, Ho, Wo, ph,
                       pw, n1 - n0, TH, 0, TH, 0, TW, ls, filter_rows, v, z, vt, du)
        return
    while ti0 < TH:
        ti1 = min(TH, ti0 + rows)
        tj0 = 0
        while tj0 < TW:
            tj1 = min(TW, tj0 + ls)
            gradient_chunk(x + n0 * x_size, gy + n0 * y_size, C, H, W, F, Ho, Wo,
                           ph, pw, 1, TH, ti0, ti1, tj0, tj1, ls, filter_rows, v,
                           z, vt, du)
            tj0 = tj1
        ti0 = ti1


cdef inline Py_ssize_t gradient_blocks(Py_ssize_t n_groups,
                                       Py_ssize_t part_size) noexcept nogil:
    """How many blocks of whole chunks the kernel gradient sums apart: up
    to MAX_GRADIENT_BLOCKS and one a chunk, within GRADIENT_PARTIALS
    values of partial sums (of part_size each) but at least two. Shapes
    alone decide it, never the thread count."""
    cdef Py_ssize_t by_memory = max(2, GRADIENT_PARTIALS // part_size)
    return max(1, min(min(<Py_ssize_t> MAX_GRADIENT_BLOCKS, n_groups), by_memory))


def kernel_gradient_blocks(Py_ssize_t N, Py_ssize_t F, Py_ssize_t C,
                           Py_ssize_t Ho, Py_ssize_t Wo):
    """The blocks correlate2d_backward_kernel_winograd sums a batch of N
    in, for F filters and C channels of output size (Ho, Wo)."""
    cdef Py_ssize_t group = samples_per_chunk(Ho, Wo)
    return gradient_blocks((N + group - 1) // group, ELEMENTS * F * C + F)


def correlate2d_backward_kernel_winograd(const floating[:, :, :, ::1] x,
                                         const floating[:, :, :, ::1] grad_y,
                                         floating[:, :, :, ::1] grad_w,
                                         floating[::1] grad_b,
                                         Py_ssize_t ph, Py_ssize_t pw,
                                         int n_threads):
    """The gradients of correlate2d_forward_winograd's kernel and bias:
    grad_w[f, c, a, b] = sum_{n,i,j} grad_y[n, f, i, j] x[n, c, i+a-ph, j+b-pw]
    and grad_b[f] = the sum of grad_y[:, f], overwritten.

    dU = sum over tiles of (A dY A^T) * V, chunk by chunk (the forward's
    chunks and V), as 36 products Z_e . V_e^T summed over the chunk's
    slots; then grad_w = G^T dU G (winograd.h). The batch is summed in
    blocks of whole chunks fixed by the shapes (at most
    MAX_GRADIENT_BLOCKS), each into partial sums of its own that are then
    added in block order: the same bits for any thread count.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = grad_y.shape[1], Ho = grad_y.shape[2], Wo = grad_y.shape[3]
    cdef Py_ssize_t P = Ho * Wo, NR = panel_cols(&grad_w[0, 0, 0, 0])
    cdef Py_ssize_t group = samples_per_chunk(Ho, Wo)
    cdef Py_ssize_t n_groups = (N + group - 1) // group
    cdef Py_ssize_t du_size = ELEMENTS * F * C, part_size = du_size + F
    cdef Py_ssize_t n_blocks = gradient_blocks(n_groups, part_size)
    cdef Py_ssize_t v_size = C * FCNN_WINOGRAD_CS, z_size = F * FCNN_WINOGRAD_CS
    cdef Py_ssize_t vt_size = round_up(C, NR) * FCNN_WINOGRAD_LDV
    cdef Py_ssize_t per_thread = v_size + z_size + vt_size
    cdef Py_ssize_t b, g, g0, g1, n, n0, n1, f, i, blk
    cdef floating *parts = NULL
    cdef floating *part
    cdef floating *scratch = NULL
    cdef floating total
    cdef Py_ssize_t *filter_rows = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    try:
        parts = alloc(n_blocks * part_size, &grad_w[0, 0, 0, 0])
        filter_rows = chunk_rows(F)
        with nogil, parallel(num_threads=n_threads):
            scratch = thread_alloc(per_thread, &grad_w[0, 0, 0, 0], failure)
            # blocks handed out one at a time: a core slowed by other work
            # takes fewer
            for b in prange(n_blocks, schedule='dynamic'):
                if scratch == NULL:
                    continue
                part = parts + b * part_size
                memset(part, 0, part_size * sizeof(floating))
                g0 = b * n_groups // n_blocks
                g1 = (b + 1) * n_groups // n_blocks
                for g in range(g0, g1):
                    n0 = g * group
                    n1 = min(N, n0 + group)
                    gradient_samples(&x[0, 0, 0, 0], &grad_y[0, 0, 0, 0], n0, n1,
                                     C, H, W, F, Ho, Wo, ph, pw, filter_rows,
                                     scratch, scratch + v_size,
                                     scratch + v_size + z_size, part)
                    for n in range(n0, n1):
                        for f in range(F):
                            part[du_size + f] = part[du_size + f] + sum_fixed_order(
                                &grad_y[n, f, 0, 0], P, 1)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &grad_w[0, 0, 0, 0])
        with nogil:
            # the blocks' sums added in block order, into block 0's
            for i in prange(part_size, num_threads=n_threads, schedule='static'):
                total = parts[i]
                for blk in range(1, n_blocks):
                    total = total + parts[blk * part_size + i]
                parts[i] = total
            filter_gradient(F, C, parts, &grad_w[0, 0, 0, 0])
            for f in range(F):
                grad_b[f] = parts[du_size + f]
    finally:
        aligned_free(parts)
        aligned_free(filter_rows)


cdef inline void filter_gradient(Py_ssize_t F, Py_ssize_t C, const floating *du,
                                 floating *gw) noexcept nogil:
    if floating is float:
        fcnn_winograd_filter_grad_f32(F, C, du, gw)
    else:
        fcnn_winograd_filter_grad_f64(F, C, du, gw)
