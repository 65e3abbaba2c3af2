"""Correlation kernels: forward, backward to the input, backward to the kernel.

Layout (all C-contiguous, channels first):
    x (N, C, H, W)   w (F, C, KH, KW)   y, grad_y (N, F, Ho, Wo)

Each correlation is a matrix product. With K = C*KH*KW and P = Ho*Wo, and
cols[n] the (K, P) matrix of input patches (im2col):
    forward         y[n]      = w (F, K) . cols[n]             (+ bias)
    to the input    dcols[n]  = w^T (K, F) . grad_y[n]  then added back
                                where each patch was read: W^T delta
    to the kernel   grad_w   += grad_y[n] (F, P) . cols[n]^T
The patch matrix is never built: the product (gemm) reads row k = (c, a, b)
of cols in place from a frame of the input, at an offset fixed per k.
  - Padded-width frame (forward at stride 1, large images): one sample in a
    zero frame (C, Hp, Wp); outputs are computed over the frame's width and
    the KW - 1 extra columns of each row dropped.
  - Interleaved frame (strides, small images; the input gradient; the kernel
    gradient with many filters): a group of G samples with each row's
    columns split into their sw phases and the samples innermost
    (interleave_group). The patches of one output row, for all G samples,
    are then a single run of Wo*G values with no column outside a window,
    and the products run per output row over the whole group.
Dilation (dh, dw) only moves where element k = (c, a, b) of a patch sits:
row a*dh, column b*dw of the frame, in the offset tables (patch_offsets,
interleaved_offsets) that every path reads patches through, so dilation 1
costs nothing extra. Padding reaches the kernels as the rows above and the
columns left of the input (ph, pw); the output size fixes how much follows
below and right (padded_size), which is how asymmetric padding ('same' for
an even kernel) gets in.
The kernel gradient also has row products (gemm's dot), for layers
whose few filters would leave the product's panels mostly empty.
fastcnn.functional uses the mirrored correlation (a forward call) for the
input gradient where that is faster, and Winograd's F(4x4, 3x3)
(src/winograd.pyx) instead of these kernels for 3 x 3 forward correlations
at stride 1 between many channels.

Threads split the batch: the forward and the input gradient give each
thread an equal share of the samples (within one), which it works through
in groups; each thread takes its own scratch inside the parallel region
(thread_alloc). The
kernel gradient sums over the batch in N_REDUCTION_BLOCKS fixed blocks of
samples, each with its own partial sum, and adds the blocks in block order,
so the result is bitwise the same for any number of threads.

Each public function is a driver (scratch sizes, allocation, the parallel
region) over small nogil helpers, one per path and step; the frames and the
split of the batch into groups are in src/frames.pxd. interleave_group stays
here, out of line: inlined into the drivers it made the kernels slower.

The caller (fastcnn.functional) validates every shape, dtype and parameter
and allocates the outputs: these functions do no bounds checking.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, memset

from fastcnn._kernels.gemm cimport *
from frames cimport *
# the one selection, under the names this module has always offered
from fastcnn._kernels.gemm import gemm_kernel_name, select_gemm_kernel

cdef extern from *:
    """
    static inline void fcnn_prefetch_l2(const void *p) {
    #if defined(__GNUC__) || defined(__clang__)
        __builtin_prefetch(p, 0, 2);
    #endif
    }
    """
    void prefetch_l2 "fcnn_prefetch_l2"(const void *p) nogil

# The kernel gradient is summed over the batch in at most this many blocks
# of samples (fewer for small batches of small samples: reduction_blocks).
# It fixes the order of the sum independently of the thread count; it also
# bounds how many threads share that reduction, so it is well above the
# core counts this package targets.
cdef enum:
    MAX_REDUCTION_BLOCKS = 16
    # fewest output positions (samples times positions each) a block sums
    MIN_BLOCK_POSITIONS = 128
N_REDUCTION_BLOCKS = MAX_REDUCTION_BLOCKS


cdef void interleave_group(floating *x, Py_ssize_t G, Py_ssize_t C,
                           Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph,
                           Py_ssize_t pw, Py_ssize_t Hp, Py_ssize_t sw,
                           Py_ssize_t Wq, floating *frame,
                           bint into_frame) noexcept nogil:
    """G consecutive samples of x into an interleaved frame (into_frame), or
    back out of it (its padding dropped). Padded row h of channel c, column
    w = q*sw + r, of sample s is frame[(((c*Hp + h)*sw + r)*Wq + q)*G + s];
    filling a frame, the caller has zeroed its padding. x is only read when
    into_frame.

    Splitting the columns into their sw phases and putting the samples
    innermost makes the patches of one output row, for every sample of the
    group, a single run: output (i, j) of sample s reads element k at
    G*base[k] + i*sh*sw*Wq*G + j*G + s (interleaved_offsets), so a matrix
    product reads them in place, with no column outside a window.
    """
    cdef Py_ssize_t sample = C * H * W, c, h, r, w, w0, s
    cdef floating *row
    cdef floating *d
    for c in range(C):
        for h in range(H):
            row = x + (c * H + h) * W
            if sw == 1 and G < 8:
                # One phase and few samples: each sample's row is one run,
                # read (or written) in order, G apart in the frame; one
                # sample is a plain padded copy, which the compiler
                # vectorises. The general loop below moves a value of each
                # sample in turn, G a position: a run of the frame when G is
                # large, too short a loop when it is small (the kernel
                # gradient's frames of a few samples).
                d = frame + ((c * Hp + h + ph) * Wq + pw) * G
                if G == 1:
                    if into_frame:
                        copy_run(d, row, W)
                    else:
                        copy_run(row, d, W)
                    continue
                for s in range(G):
                    if into_frame:
                        for w in range(W):
                            d[w * G + s] = row[s * sample + w]
                    else:
                        for w in range(W):
                            row[s * sample + w] = d[w * G + s]
                continue
            for r in range(sw):
                # the first input column whose padded position is in phase r
                w0 = (r - pw % sw + sw) % sw
                d = frame + (((c * Hp + h + ph) * sw + r) * Wq + (w0 + pw) // sw) * G
                w = w0
                while w < W:
                    if into_frame:
                        for s in range(G):
                            d[s] = row[s * sample + w]
                    else:
                        for s in range(G):
                            row[s * sample + w] = d[s]
                    d += G
                    w += sw


cdef Py_ssize_t *alloc_offsets(Py_ssize_t K, Py_ssize_t per_thread,
                               Py_ssize_t n_threads) except NULL:
    """One block, freed with aligned_free, holding K patch offsets, then for
    each thread per_thread offsets (those of its group's size), then for
    each thread the group size its frame is laid out for, zero
    (clear_on_new_layout)."""
    cdef Py_ssize_t n_items = K + n_threads * (per_thread + 1)
    cdef Py_ssize_t *p = <Py_ssize_t *> aligned_malloc(n_items * sizeof(Py_ssize_t))
    if p == NULL:
        raise MemoryError(
            f"could not allocate {n_items * sizeof(Py_ssize_t)} bytes of scratch")
    memset(p + K + n_threads * per_thread, 0, n_threads * sizeof(Py_ssize_t))
    return p


cdef enum:
    # Multiply-adds of the product that cost about what copying one value
    # costs: the vector kernel does 32 float32 multiply-adds a cycle, a copy
    # that transposes about one value; a lower cost sends layers with many
    # filters and small frames to the interleaved path, which then loses.
    COPY_COST = 32


cdef inline bint in_place_is_cheaper(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                     Py_ssize_t F, Py_ssize_t K,
                                     Py_ssize_t Ho, Py_ssize_t Wo,
                                     Py_ssize_t Wp, Py_ssize_t NR,
                                     Py_ssize_t G, bint padded) noexcept nogil:
    """At stride 1, whether the product over one sample's padded width
    (Ho*Wp columns in panels of NR, of which Ho*Wo are outputs) costs less
    than interleaving G samples: that copies the sample in and its outputs
    out, transposed (unless G is 1), and its products (Wo*G columns a row)
    waste the empty columns of their last panel. Small images with many
    channels waste most in place: the KW - 1 added columns of each row, the
    last panel's empty ones. Large samples waste most interleaved, where
    few of them fit in a frame: 64 x 16 x 16 images, one to a frame, fill
    half of each panel of 32."""
    cdef Py_ssize_t wasted = F * K * (round_up(Ho * Wp, NR) - Ho * Wo)
    cdef Py_ssize_t wasted_interleaved = F * K * Ho * (round_up(Wo * G, NR) - Wo * G) // G
    if G == 1:
        # A frame of one sample is the padded sample itself, and its
        # products write y directly: in place, the outputs are copied out
        # (dropping the extra columns), and the input copied in only when
        # padded.
        return (wasted + COPY_COST * F * Ho * Wo <=
                wasted_interleaved + (0 if padded else COPY_COST * C * H * W))
    return wasted <= wasted_interleaved + COPY_COST * (C * H * W + F * Ho * Wo)


# out of line, as interleave_group: inlined into the forward's driver, it
# changed how GCC compiled the rest of the driver, whose output scatter then
# ran at half speed
cdef Py_ssize_t forward_group(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                              Py_ssize_t F, Py_ssize_t K,
                              Py_ssize_t Ho, Py_ssize_t Wo,
                              Py_ssize_t Wp, Py_ssize_t NR,
                              Py_ssize_t G, bint stride_1,
                              bint padded) noexcept nogil:
    """The forward's layout, as the size of its groups: 0 for one sample in
    place (in_place_is_cheaper, stride 1 only), else the G samples of an
    interleaved frame; and 1 where a sample would be in place but a frame
    of one costs less: its products, one an output row, write y directly,
    so nothing is copied out, but each wastes the empty columns of its last
    panel, and its input is always copied in. Rows almost as wide as the
    panels, of few channels, then lose least (LeNet-5's first layer: 28 of
    32 columns, one channel, 6 filters, whose outputs cost more to copy out
    than to compute). Interleaved frames of several samples stay: a frame
    of one for each sample of a strided layer of short rows (MNIST-1D's
    first) costs more in its many small products than the model counts."""
    cdef Py_ssize_t copy_in = COPY_COST * C * H * W
    cdef Py_ssize_t one, in_place
    if not (stride_1 and in_place_is_cheaper(C, H, W, F, K, Ho, Wo, Wp, NR, G, padded)):
        return G
    one = F * K * Ho * (round_up(Wo, NR) - Wo) + copy_in
    in_place = (F * K * (round_up(Ho * Wp, NR) - Ho * Wo) + COPY_COST * F * Ho * Wo
                + (copy_in if padded else 0))
    return 1 if one < in_place else 0


ctypedef struct Dims:
    # The shapes of one call: x (N, C, H, W), w (F, C, KH, KW), y (N, F, Ho, Wo);
    # strides, dilations and the top/left padding; the padded sample (Hp, Wp);
    # interleaved frames' Wq columns per phase, Wrow per padded row;
    # K = C*KH*KW and P = Ho*Wo.
    Py_ssize_t N, C, H, W, F, KH, KW, Ho, Wo
    Py_ssize_t sh, sw, ph, pw, dh, dw
    Py_ssize_t Hp, Wp, Wq, Wrow, K, P
    bint padded               # the frame is larger than the sample


cdef inline Py_ssize_t padded_size(Py_ssize_t size, Py_ssize_t before,
                                   Py_ssize_t kernel, Py_ssize_t stride,
                                   Py_ssize_t dilation,
                                   Py_ssize_t outputs) noexcept nogil:
    """A frame's size along one axis: the input after `before` zeros, then
    as many zeros as its last window reaches past the input, and never less
    than `before` of them, so that symmetric padding (which reaches no
    further) keeps the symmetric frame. The kernels get the padding before
    the input only: the output size fixes the padding after it, which is
    how asymmetric padding ('same' for an even kernel) reaches them."""
    cdef Py_ssize_t after = (outputs - 1) * stride + dilation * (kernel - 1) + 1 - size - before
    return size + before + max(before, after)


cdef inline Dims dims_of(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t F, Py_ssize_t KH, Py_ssize_t KW,
                         Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t sh,
                         Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    cdef Dims d
    d.N = N; d.C = C; d.H = H; d.W = W; d.F = F; d.KH = KH; d.KW = KW
    d.Ho = Ho; d.Wo = Wo; d.sh = sh; d.sw = sw; d.ph = ph; d.pw = pw
    d.dh = dh; d.dw = dw
    d.Hp = padded_size(H, ph, KH, sh, dh, Ho)
    d.Wp = padded_size(W, pw, KW, sw, dw, Wo)
    d.padded = d.Hp > H or d.Wp > W
    d.Wq = (d.Wp + sw - 1) // sw
    d.Wrow = sw * d.Wq
    d.K = C * KH * KW
    d.P = Ho * Wo
    return d


# ---------------------------------------------------------------- forward

cdef void forward_in_place_group(const floating *xn, floating *yn, bint pad,
                                 Dims d, const floating *a_panels,
                                 const floating *bias,
                                 const Py_ssize_t *offsets, floating *frame,
                                 Py_ssize_t frame_size, floating *out,
                                 Py_ssize_t *layout) noexcept nogil:
    """Sample xn into yn over the padded width: one product of Ho*Wp columns
    from xn itself, or from its copy in the frame when pad (padding, or the
    product would read past the end of x), then the outputs copied into yn
    without each row's KW - 1 extra columns."""
    cdef Py_ssize_t F = d.F, Ho = d.Ho, Wo = d.Wo, Wp = d.Wp
    cdef Py_ssize_t P_wide = Ho * Wp, f, i
    # zero once per call: the tail of the frame past the sample is read,
    # and pad_sample rewrites only the rest
    clear_on_new_layout(frame, frame_size, 1, layout)
    if pad:
        pad_sample(xn, d.C, d.H, d.W, d.ph, d.pw, d.Hp, d.Wp, frame)
        xn = frame
    gemm(F, P_wide, d.K, a_panels, NULL, xn, offsets, out, P_wide, 0, bias)
    for f in range(F):
        for i in range(Ho):
            copy_run(yn + (f * Ho + i) * Wo, out + f * P_wide + i * Wp, Wo)


cdef void scatter_group_outputs(const floating *out, floating *yn,
                                Py_ssize_t cnt, Py_ssize_t F,
                                Py_ssize_t P) noexcept nogil:
    """out (F, Ho, Wo, cnt) -> yn[s, f, i, j] in tiles of 16 positions: a
    tile's reads stay in cache, and each sample gets one run of writes
    (writing a position of every sample in turn would hit addresses F*P
    apart, often a multiple of 4 KiB)."""
    cdef Py_ssize_t f, s, p, p0, p_end
    cdef const floating *src
    cdef floating *dst
    for f in range(F):
        p0 = 0
        while p0 < P:
            p_end = min(p0 + 16, P)
            for s in range(cnt):
                src = out + f * P * cnt + s
                dst = yn + (s * F + f) * P
                for p in range(p0, p_end):
                    dst[p] = src[p * cnt]
            p0 = p_end


cdef void forward_interleaved_group(const floating *xn, floating *yn,
                                    Py_ssize_t cnt, Dims d,
                                    const floating *a_panels,
                                    const floating *bias,
                                    const Py_ssize_t *offsets,
                                    Py_ssize_t *offs, floating *frame,
                                    Py_ssize_t frame_size, floating *out,
                                    Py_ssize_t *layout, int y_store) noexcept nogil:
    """cnt samples from xn into yn: interleaved into the frame, one product
    per output row i over the group's Wo*cnt columns, then out's (f, i, j, s)
    scattered into yn (a group of one sample is written into yn directly,
    as y_store says). offs is the thread's own K offsets, for a group of
    cnt."""
    cdef Py_ssize_t F = d.F, K = d.K, P = d.P, Ho = d.Ho, Wo = d.Wo
    cdef Py_ssize_t row_step = d.sh * d.Wrow, k, i
    clear_on_new_layout(frame, frame_size, cnt, layout)
    interleave_group(<floating *> xn, cnt, d.C, d.H, d.W, d.ph, d.pw,
                     d.Hp, d.sw, d.Wq, frame, True)
    for k in range(K):
        offs[k] = offsets[k] * cnt
    if cnt == 1:
        # one sample: out's layout is y's, so write y itself
        for i in range(Ho):
            gemm(F, Wo, K, a_panels, NULL, frame + i * row_step,
                 offs, yn + i * Wo, P, y_store, bias)
        return
    for i in range(Ho):
        gemm(F, Wo * cnt, K, a_panels, NULL, frame + i * row_step * cnt,
             offs, out + i * Wo * cnt, P * cnt, 0, bias)
    scatter_group_outputs(out, yn, cnt, F, P)


cdef Py_ssize_t forward_frame(Dims d, bint in_place, Py_ssize_t G,
                              Py_ssize_t NR, Py_ssize_t *offsets) noexcept nogil:
    """Fills the K patch offsets of the forward's frame and returns the
    frame's length: in place, the padded sample and the tail the product
    reads past it (up to round_up(Ho*Wp, NR) columns past the last offset,
    zero); interleaved, G samples and the round_up(Wo*G, NR) columns the
    last row's product reads."""
    if in_place:
        patch_offsets(d.C, d.Hp, d.Wp, d.KH, d.KW, d.dh, d.dw, offsets)
        return max(d.C * d.Hp * d.Wp, offsets[d.K - 1] + round_up(d.Ho * d.Wp, NR))
    interleaved_offsets(d.C, d.Hp, d.KH, d.KW, d.sw, d.Wq, d.dh, d.dw, offsets)
    return (max(d.C * d.Hp * d.Wrow, largest(offsets, d.K) + (d.Ho - 1) * d.sh * d.Wrow) * G
            + round_up(d.Wo * G, NR))


def correlate2d_forward(const floating[:, :, :, ::1] x,
                        const floating[:, :, :, ::1] w,
                        const floating[::1] bias,
                        floating[:, :, :, ::1] y,
                        Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                        Py_ssize_t dw, int n_threads):
    """y[n, f, i, j] = bias[f] + sum_{c,a,b} w[f,c,a,b] x[n, c, i*sh+a*dh-ph, j*sw+b*dw-pw].

    y must have shape (N, F, Ho, Wo) with Ho, Wo from the correlation
    output-size formula; x is read as zero outside its borders. (ph, pw) is
    the padding above and left of x; below and right it is what the output
    size needs (padded_size).

    No patch matrix is built; the product reads row k = (c, a, b) of it in
    place from a frame, one of two ways:

    - At stride 1, when that wastes less (in_place_is_cheaper), one sample
      in a zero frame (C, Hp, Wp): row k starts at offset
      (c*Hp + a*dh)*Wp + b*dw,
      and the outputs are computed over the padded width (Ho, Wp); the
      KW - 1 extra columns of each output row are dropped when copied into y
      (forward_in_place_group).
    - Otherwise (strides, small images) a group of samples interleaved
      (interleave_group): one product per output row i, whose Wo*G columns
      are all outputs, then transposed from (f, i, j, s) into y (a group
      of one sample is written into y directly; forward_interleaved_group).
    """
    cdef Dims d = dims_of(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                          w.shape[2], w.shape[3], y.shape[2], y.shape[3], sh, sw, ph, pw,
                          dh, dw)
    cdef Py_ssize_t N = d.N, K = d.K, CHW = d.C * d.H * d.W
    cdef Py_ssize_t MR = panel_rows(&y[0, 0, 0, 0])
    cdef Py_ssize_t NR = panel_cols(&y[0, 0, 0, 0])
    cdef Py_ssize_t G_interleaved = interleaved_group(
        d.Wo, d.C * d.Hp * d.Wrow + d.F * d.P, N, n_threads, NR, sizeof(floating))
    cdef Py_ssize_t layout = forward_group(d.C, d.H, d.W, d.F, K, d.Ho, d.Wo, d.Wp, NR,
                                           G_interleaved, sh == 1 and sw == 1, d.padded)
    cdef bint in_place = layout == 0
    cdef Py_ssize_t G = 1 if in_place else layout
    cdef Py_ssize_t g, n, cnt, t, groups
    cdef floating *frame = NULL
    cdef floating *a_panels = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    cdef Py_ssize_t *offsets = alloc_offsets(K, K, n_threads)
    cdef Py_ssize_t *group_offsets = offsets + K
    cdef Py_ssize_t *frame_layout = group_offsets + n_threads * K
    cdef Py_ssize_t frame_size = forward_frame(d, in_place, G, NR, offsets)
    cdef Py_ssize_t reads_past = frame_size - d.C * d.Hp * d.Wp
    cdef Py_ssize_t out_size = d.F * d.Ho * d.Wp if in_place else d.F * d.P * G
    cdef Py_ssize_t per_thread = frame_size + out_size
    cdef int y_store = output_store(N * d.F * d.P * sizeof(floating))
    try:
        a_panels = alloc(round_up(d.F, MR) * K, &y[0, 0, 0, 0])
        with nogil:
            pack_a(d.F, K, &w[0, 0, 0, 0], K, 1, a_panels)
        with nogil, parallel(num_threads=n_threads):
            frame = thread_alloc(per_thread, &y[0, 0, 0, 0], failure)
            for t in prange(n_threads, schedule='static'):
                if frame == NULL:
                    continue
                groups = thread_groups(N, n_threads, t, G)
                for g in range(groups):
                    n = group_start(N, n_threads, t, groups, g)
                    cnt = group_start(N, n_threads, t, groups, g + 1) - n
                    if in_place:
                        # the product reads round_up(Ho*Wp, NR) columns from
                        # each offset: past the end of x for the last sample
                        forward_in_place_group(
                            &x[n, 0, 0, 0], &y[n, 0, 0, 0],
                            d.padded or (n + 1) * CHW + reads_past > N * CHW,
                            d, a_panels, &bias[0], offsets, frame, frame_size,
                            frame + frame_size, &frame_layout[threadid()])
                    else:
                        forward_interleaved_group(
                            &x[n, 0, 0, 0], &y[n, 0, 0, 0], cnt, d, a_panels,
                            &bias[0], offsets, group_offsets + threadid() * K,
                            frame, frame_size, frame + frame_size,
                            &frame_layout[threadid()], y_store)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &y[0, 0, 0, 0])
    finally:
        aligned_free(a_panels)
        aligned_free(offsets)


# --------------------------------------------------------- input gradient

cdef void backward_input_group(const floating *gyn, floating *gxn,
                               Py_ssize_t cnt, bint gy_in_place,
                               bint next_is_ours, Dims d, Py_ssize_t NR,
                               const floating *a_panels,
                               const Py_ssize_t *offsets, Py_ssize_t *offs,
                               floating *gy_frame, floating *dcols,
                               floating *frame) noexcept nogil:
    """The input gradient of cnt samples, gyn into gxn: the patch gradients
    dcols = W^T . grad_y with grad_y interleaved (gy_frame), added into an
    interleaved frame where each patch was read, copied out into gxn. offs
    is the thread's own F + K offsets: grad_y's rows, then the patch rows.

    gy_in_place: one sample, whose grad_y is already that frame, read where
    it is (product_prefetching_planes; next_is_ours: the sample after it is
    this thread's next)."""
    cdef Py_ssize_t F = d.F, K = d.K, P = d.P, Ho = d.Ho, Wo = d.Wo
    cdef Py_ssize_t row_step = d.sh * d.Wrow * cnt, f, k, i, j
    cdef const floating *src
    cdef floating *dst
    for f in range(F):
        offs[f] = f * P * cnt
    for k in range(K):
        offs[F + k] = offsets[k] * cnt
    if gy_in_place:
        product_prefetching_planes(K, P, F, a_panels, gyn, offs, dcols, NR,
                                   next_is_ours)
    else:
        # grad_y (F, Ho, Wo, cnt): a frame without padding or phases; the
        # product also reads the NR values past it (the other buffers are
        # written before they are read)
        interleave_group(<floating *> gyn, cnt, F, Ho, Wo, 0, 0, Ho, 1, Wo,
                         gy_frame, True)
        memset(gy_frame + F * P * cnt, 0, NR * sizeof(floating))
        gemm(K, P * cnt, F, a_panels, NULL, gy_frame, offs, dcols, P * cnt, 0, NULL)
    memset(frame, 0, d.C * d.Hp * d.Wrow * cnt * sizeof(floating))
    for k in range(K):
        for i in range(Ho):
            src = dcols + (k * Ho + i) * Wo * cnt
            dst = frame + offs[F + k] + i * row_step
            for j in range(Wo * cnt):
                dst[j] += src[j]
    interleave_group(gxn, cnt, d.C, d.H, d.W, d.ph, d.pw, d.Hp, d.sw, d.Wq,
                     frame, False)


cdef enum:
    # how many panels of columns ahead product_prefetching_planes fetches
    PREFETCH_PANELS = 2


cdef void product_prefetching_planes(Py_ssize_t M, Py_ssize_t P, Py_ssize_t F,
                                     const floating *a_panels,
                                     const floating *planes,
                                     const Py_ssize_t *offs, floating *c,
                                     Py_ssize_t NR, bint next_is_ours) noexcept nogil:
    """c (M, P) = A . planes, B's row f the plane at planes + offs[f] =
    planes + f*P, read in place from memory. Read so by one product, the F
    planes (P apart, a multiple of 4 KiB for 32 x 32 images) are F
    concurrent streams, too many for the hardware prefetcher, and copying
    them into the cache first is a pass of its own that waits on memory.
    Instead the product runs a panel of NR columns at a time, after
    prefetching into L2 the panel PREFETCH_PANELS ahead in every plane
    (past the last panel: the next sample's first ones, when next_is_ours).
    Each column's sum is the same as in one product."""
    cdef Py_ssize_t c0 = 0, f, ahead
    cdef const char *base
    while c0 < P:
        ahead = c0 + PREFETCH_PANELS * NR
        base = NULL
        if ahead < P:
            base = <const char *> (planes + ahead)
        elif next_is_ours:
            base = <const char *> (planes + F * P + ahead - P)
        if base != NULL:
            for f in range(F):
                # a panel's row is NR values: 128 bytes, two lines
                prefetch_l2(base + f * P * sizeof(floating))
                prefetch_l2(base + f * P * sizeof(floating) + 64)
        gemm(M, min(NR, P - c0), F, a_panels, NULL, planes + c0, offs,
             c + c0, P, 0, NULL)
        c0 += NR


def correlate2d_backward_input(const floating[:, :, :, ::1] grad_y,
                               const floating[:, :, :, ::1] w,
                               floating[:, :, :, ::1] grad_x,
                               Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                               Py_ssize_t dw, int n_threads):
    """grad_x = W^T grad_y: each output gradient times the kernel, added back
    to the input positions that produced it. grad_x is overwritten.

    For a group of samples at a time, interleaved as in the forward: the
    patch gradients dcols (K, Ho*Wo*G) = W^T (K, F) . grad_y, with grad_y's
    samples interleaved (F, Ho, Wo, G) and read in place; then for each
    patch row k and output row i, one run of Wo*G values added into an
    interleaved frame of the padded input gradient, where that row's
    patches were read (interleave_group); then the frame's inside copied
    out into grad_x (backward_input_group).
    """
    cdef Dims d = dims_of(grad_y.shape[0], grad_x.shape[1], grad_x.shape[2],
                          grad_x.shape[3], grad_y.shape[1], w.shape[2], w.shape[3],
                          grad_y.shape[2], grad_y.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t N = d.N, F = d.F, K = d.K, P = d.P
    cdef Py_ssize_t MR = panel_rows(&grad_x[0, 0, 0, 0])
    cdef Py_ssize_t NR = panel_cols(&grad_x[0, 0, 0, 0])
    cdef Py_ssize_t frame_items = d.C * d.Hp * d.Wrow
    cdef Py_ssize_t G = interleaved_group(
        d.Wo, frame_items + (K + F) * P, N, n_threads, NR, sizeof(floating))
    # the product reads round_up(P*G, NR) columns of grad_y's last row
    cdef Py_ssize_t gy_size = F * P * G + NR
    cdef Py_ssize_t per_thread = gy_size + K * P * G + frame_items * G
    # per thread: grad_y's rows and the patch rows for its group's size
    cdef Py_ssize_t *offsets = alloc_offsets(K, F + K, n_threads)
    cdef Py_ssize_t *group_offsets = offsets + K
    cdef Py_ssize_t g, n, cnt, t, groups
    cdef floating *gy_frame = NULL
    cdef floating *a_panels = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    interleaved_offsets(d.C, d.Hp, d.KH, d.KW, sw, d.Wq, dh, dw, offsets)
    try:
        a_panels = alloc(round_up(K, MR) * F, &grad_x[0, 0, 0, 0])
        with nogil:
            # W^T as the A operand: row k = (c, a, b), column f.
            pack_a(K, F, &w[0, 0, 0, 0], 1, K, a_panels)
        with nogil, parallel(num_threads=n_threads):
            gy_frame = thread_alloc(per_thread, &grad_x[0, 0, 0, 0], failure)
            for t in prange(n_threads, schedule='static'):
                if gy_frame == NULL:
                    continue
                groups = thread_groups(N, n_threads, t, G)
                for g in range(groups):
                    n = group_start(N, n_threads, t, groups, g)
                    cnt = group_start(N, n_threads, t, groups, g + 1) - n
                    # one sample's grad_y is read in place unless the
                    # product's reads past its end (its last plane's
                    # columns up to round_up(P, NR), never stored) would
                    # pass the end of grad_y
                    backward_input_group(
                        &grad_y[n, 0, 0, 0], &grad_x[n, 0, 0, 0], cnt,
                        cnt == 1 and (n + 1) * F * P + round_up(P, NR) - P <= N * F * P,
                        g + 1 < groups, d, NR, a_panels, offsets, group_offsets + threadid() * (F + K),
                        gy_frame, gy_frame + gy_size, gy_frame + gy_size + K * P * G)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &grad_x[0, 0, 0, 0])
    finally:
        aligned_free(a_panels)
        aligned_free(offsets)


# -------------------------------------------------------- kernel gradient

cdef void pack_grad_interleaved(const floating *gy, Py_ssize_t G,
                                Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo,
                                floating *dst) noexcept nogil:
    """grad_y of G consecutive samples (G, F, Ho, Wo) as the B operands of
    the interleaved kernel gradient, one per output row i, each
    round_up(F, NR) * Wo*G long: row t = j*G + s of operand i holds
    grad_y[s, :, i, j], in panels of NR filters; columns past F are zero."""
    cdef Py_ssize_t NR = panel_cols(dst)
    cdef Py_ssize_t P = Ho * Wo, depth = Wo * G, operand = round_up(F, NR) * depth
    cdef Py_ssize_t i, s, q
    # A panel's rows for one sample are every G-th: B[j, f] =
    # grad_y[s, q + f, i, j], filters P apart, each a run of Wo values
    # (the packer reads runs whole and transposes them in registers;
    # reading a value of each filter in turn instead hits addresses P
    # apart, often a multiple of 4 KiB, all in the same cache set).
    for i in range(Ho):
        q = 0
        while q < F:
            for s in range(G):
                pack_b_panel(Wo, min(NR, F - q), gy + (s * F + q) * P + i * Wo, 1, P,
                             dst + i * operand + q * depth + s * NR, G * NR)
            q += NR


cdef void bias_gradient_group(const floating *gyn, Py_ssize_t cnt, Py_ssize_t F,
                              Py_ssize_t P, floating *gb) noexcept nogil:
    """gb[f] += the sum of grad_y[s, f] over the group's cnt samples."""
    cdef Py_ssize_t s, f
    for s in range(cnt):
        for f in range(F):
            gb[f] += sum_fixed_order(gyn + (s * F + f) * P, P, 1)


cdef void kernel_gradient_block_rows(const floating *xn, const floating *gyn,
                                     Py_ssize_t cnt, Dims d,
                                     const Py_ssize_t *offsets, floating *frames,
                                     Py_ssize_t frame_items,
                                     Py_ssize_t sample_stride,
                                     floating *part) noexcept nogil:
    """part (F, K) += the row products of cnt samples: from x itself, or from
    padded copies in the frames (sample_stride apart either way)."""
    cdef Py_ssize_t C = d.C, H = d.H, W = d.W, s
    if d.padded:
        for s in range(cnt):
            pad_sample(xn + s * C * H * W, C, H, W, d.ph, d.pw, d.Hp, d.Wp,
                       frames + s * frame_items)
        xn = frames
    dot(d.F, d.K, cnt, d.Ho, d.Wo, gyn, d.F * d.P, d.P, d.Wo, xn, offsets,
        sample_stride, d.sh * d.Wp, part, d.K)


cdef void kernel_gradient_block_interleaved(const floating *xn, const floating *gyn,
                                            Py_ssize_t cnt, Dims d, Py_ssize_t NR,
                                            Py_ssize_t G, const Py_ssize_t *offsets,
                                            Py_ssize_t *offs, floating *frames,
                                            Py_ssize_t frame_items,
                                            floating *b_panels, floating *part,
                                            Py_ssize_t *layout) noexcept nogil:
    """part (K, F) += the interleaved products of cnt samples: one per output
    row i, A the group's patches in the frames, B grad_y's row i
    (pack_grad_interleaved). offs is the thread's own K offsets."""
    cdef Py_ssize_t F = d.F, K = d.K, Ho = d.Ho, Wo = d.Wo
    cdef Py_ssize_t row_step = d.sh * d.Wrow, k, i
    clear_on_new_layout(frames, frame_items * G, cnt, layout)
    interleave_group(<floating *> xn, cnt, d.C, d.H, d.W, d.ph, d.pw, d.Hp,
                     d.sw, d.Wq, frames, True)
    pack_grad_interleaved(gyn, cnt, F, Ho, Wo, b_panels)
    for k in range(K):
        offs[k] = offsets[k] * cnt
    for i in range(Ho):
        gemm(K, F, Wo * cnt, frames + i * row_step * cnt, offs,
             b_panels + i * round_up(F, NR) * Wo * cnt, NULL, part, F, 1, NULL)


cdef void reduce_row(floating *partials, Py_ssize_t r, Py_ssize_t n_blocks,
                     Py_ssize_t partial_size, Py_ssize_t row_len, bint rows,
                     floating *gw, Py_ssize_t F, Py_ssize_t K) noexcept nogil:
    """Row r of the blocks' sums (F rows of K, or K rows of F on the
    interleaved path) added in block order into block 0's, then written to
    grad_w (transposed on the interleaved path)."""
    cdef floating *acc = partials + r * row_len
    cdef const floating *src
    cdef Py_ssize_t blk, t, f
    for blk in range(1, n_blocks):
        src = partials + blk * partial_size + r * row_len
        for t in range(row_len):
            acc[t] = acc[t] + src[t]
    if rows:
        copy_run(gw + r * K, acc, K)
    else:
        for f in range(F):
            gw[f * K + r] = acc[f]


cdef void reduce_bias(const floating *partials, Py_ssize_t n_blocks,
                      Py_ssize_t partial_size, Py_ssize_t F, Py_ssize_t K,
                      floating *gb) noexcept nogil:
    """gb[f] = the blocks' bias sums, added in block order."""
    cdef Py_ssize_t f, blk
    cdef floating total
    for f in range(F):
        total = partials[F * K + f]
        for blk in range(1, n_blocks):
            total = total + partials[blk * partial_size + F * K + f]
        gb[f] = total


ctypedef struct KernelGradPlan:
    bint rows                 # row products, else interleaved
    Py_ssize_t frame_items    # values of one sample's frame
    Py_ssize_t G              # samples summed by one product
    Py_ssize_t b_size         # B's panels (interleaved), first in the scratch
    Py_ssize_t sample_stride  # between the samples the row products read
    Py_ssize_t per_thread     # scratch values: B's panels, then the frames


cdef Py_ssize_t reduction_blocks(Py_ssize_t N, Py_ssize_t P) noexcept nogil:
    """How many blocks of samples the kernel gradient sums separately: up
    to N_REDUCTION_BLOCKS, a power of two, with at least MIN_BLOCK_POSITIONS
    output positions a block. Each block costs a partial sum of all of
    grad_w, read again when the blocks are added: a block of a few short
    samples (a small batch of signals) would spend more on that than on its
    products. Shapes alone decide it, never the thread count."""
    cdef Py_ssize_t blocks = 1
    while (2 * blocks <= MAX_REDUCTION_BLOCKS and 2 * blocks <= N
           and N * P >= 2 * blocks * MIN_BLOCK_POSITIONS):
        blocks *= 2
    return blocks


cdef KernelGradPlan kernel_gradient_plan(Dims d, Py_ssize_t NR, Py_ssize_t n_blocks,
                                         const floating *tag) noexcept nogil:
    cdef KernelGradPlan p
    cdef Py_ssize_t CHW = d.C * d.H * d.W
    cdef bint padded = d.padded
    # Interleaving copies each sample and its output gradient (C*H*W + F*P
    # values) where the row products copy nothing: worth it when that is
    # small against the patch rows (K*P values) and the filters fill the
    # product's panels (F of round_up(F, NR) columns) better than output
    # rows fill the row products' vectors (Wo of NR / 2 lanes).
    p.rows = d.sw == 1 and not (
        d.F * d.P + CHW <= d.K * d.P and
        d.F * round_up(d.Wo, NR // 2) >= d.Wo * round_up(d.F, NR))
    p.frame_items = d.C * d.Hp * d.Wp if p.rows else d.C * d.Hp * d.Wrow
    # Samples summed by one product. It depends on the shapes only, never on
    # the thread count, as it sets the order of the sum.
    p.G = min((d.N + n_blocks - 1) // n_blocks,
              max(1, FRAME_BYTES // (p.frame_items * sizeof(floating))))
    p.b_size = 0 if p.rows else round_up(d.F, NR) * d.P * p.G
    # the row products read samples from frames, or from x itself
    p.sample_stride = p.frame_items if padded else CHW
    p.per_thread = p.b_size + (p.G * p.frame_items if padded or not p.rows else 0)
    return p


cdef void kernel_gradient_block(const floating *xb, const floating *gyb,
                                Py_ssize_t count, Dims d, KernelGradPlan p,
                                Py_ssize_t NR, const Py_ssize_t *offsets,
                                Py_ssize_t *offs, floating *b_panels,
                                floating *part, Py_ssize_t *layout) noexcept nogil:
    """part += one block's sums: its count samples (from xb, gyb) in groups
    of at most p.G. The thread's scratch is B's panels, then the frames;
    offs and layout are the thread's own."""
    cdef Py_ssize_t n = 0, cnt
    cdef Py_ssize_t CHW = d.C * d.H * d.W, F = d.F, P = d.P, FP = F * P
    cdef Py_ssize_t G = p.G, K = d.K, b_size = p.b_size, frame_items = p.frame_items
    cdef Py_ssize_t sample_stride = p.sample_stride
    cdef bint rows = p.rows
    while n < count:
        cnt = count - n if count - n < G else G
        bias_gradient_group(gyb + n * FP, cnt, F, P, part + F * K)
        if rows:
            kernel_gradient_block_rows(xb + n * CHW, gyb + n * FP, cnt, d, offsets,
                                       b_panels + b_size, frame_items,
                                       sample_stride, part)
        else:
            kernel_gradient_block_interleaved(
                xb + n * CHW, gyb + n * FP, cnt, d, NR, G, offsets, offs,
                b_panels + b_size, frame_items, b_panels, part, layout)
        n = n + cnt


def correlate2d_backward_kernel(const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] grad_y,
                                floating[:, :, :, ::1] grad_w,
                                floating[::1] grad_b,
                                Py_ssize_t sh, Py_ssize_t sw,
                                Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                                Py_ssize_t dw, int n_threads):
    """grad_w = sum_n grad_y[n] . cols[n]^T and grad_b = sum over n, i, j of
    grad_y, in a fixed order. grad_w and grad_b are overwritten.

    Two ways, by shape (never by thread count), for a group of samples at a
    time:

    - Row products, at unit column stride, when output rows fill vectors
      better than the filters fill panels. grad_w[f, k] for k = (c, a, b)
      sums products of two contiguous rows: output row i of grad_y[n, f]
      and the Wo input values from (c, i*sh + a*dh, b*dw) of the padded sample.
      gemm's dot reads both in place (kernel_gradient_block_rows).
    - The interleaved product otherwise: the group's samples interleaved as
      in the forward (interleave_group), so that for output row i the
      patches of every sample form the rows of A (K, Wo*G), read in place;
      grad_w^T (K, F) += A . B with B grad_y's row i, transposed
      (pack_grad_interleaved). Only values inside windows enter the sum
      (kernel_gradient_block_interleaved).
    """
    cdef Dims d = dims_of(x.shape[0], x.shape[1], x.shape[2], x.shape[3],
                          grad_y.shape[1], grad_w.shape[2], grad_w.shape[3],
                          grad_y.shape[2], grad_y.shape[3], sh, sw, ph, pw, dh, dw)
    cdef Py_ssize_t N = d.N, F = d.F, K = d.K
    cdef Py_ssize_t NR = panel_cols(&grad_w[0, 0, 0, 0])
    cdef Py_ssize_t n_blocks = reduction_blocks(N, d.P)
    cdef KernelGradPlan plan = kernel_gradient_plan(d, NR, n_blocks,
                                                    &grad_w[0, 0, 0, 0])
    # per block: grad_w (F, K), grad_w^T (K, F) on the interleaved path,
    # then grad_b (F)
    cdef Py_ssize_t partial_size = F * K + F
    cdef Py_ssize_t per_thread = plan.per_thread
    cdef Py_ssize_t blk, n, r
    cdef floating *b_panels = NULL
    cdef floating *part
    cdef floating *gw = &grad_w[0, 0, 0, 0]
    cdef floating *partials = NULL
    cdef Py_ssize_t *offsets = alloc_offsets(K, K, n_threads)
    cdef Py_ssize_t *group_offsets = offsets + K
    cdef Py_ssize_t *frame_layout = group_offsets + n_threads * K
    if plan.rows:
        patch_offsets(d.C, d.Hp, d.Wp, d.KH, d.KW, dh, dw, offsets)
    else:
        interleaved_offsets(d.C, d.Hp, d.KH, d.KW, sw, d.Wq, dh, dw, offsets)
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    try:
        partials = alloc(n_blocks * partial_size, gw)
        with nogil, parallel(num_threads=n_threads):
            b_panels = thread_alloc(per_thread, gw, failure)
            # Every buffer is cleared by the thread that uses it: the block's
            # partial sums here; padded frames by pad_sample, interleaved
            # ones by clear_on_new_layout; B's panels are written whole.
            # Blocks are handed out one at a time, so a core slowed by other
            # work takes fewer; a block's partial sum does not depend on the
            # thread that computes it.
            for blk in prange(n_blocks, schedule='dynamic'):
                if b_panels == NULL:
                    continue
                part = partials + blk * partial_size
                memset(part, 0, partial_size * sizeof(floating))
                n = blk * N // n_blocks
                kernel_gradient_block(
                    &x[n, 0, 0, 0], &grad_y[n, 0, 0, 0], (blk + 1) * N // n_blocks - n,
                    d, plan, NR, offsets, group_offsets + threadid() * K, b_panels,
                    part, &frame_layout[threadid()])
            thread_scratch_trim()
        scratch_error(failed, per_thread, gw)
        with nogil:
            # blocks added in block order, whatever thread computed them
            for r in prange(F if plan.rows else K, num_threads=n_threads,
                            schedule='static'):
                reduce_row(partials, r, n_blocks, partial_size,
                           K if plan.rows else F, plan.rows, gw, F, K)
            reduce_bias(partials, n_blocks, partial_size, F, K, &grad_b[0])
    finally:
        aligned_free(partials)
        aligned_free(offsets)


def mirror_kernel(const floating[:, :, ::1] w, floating[:, :, ::1] mirrored,
                  int n_threads):
    """mirrored[c, f, k] = w[f, c, K - 1 - k]: the kernel w (F, C, K), its
    K = KH*KW positions flattened, rotated 180 degrees (the flattened
    positions reversed) with input and output channels swapped, as the
    backward pass to the input correlates with it. mirrored is (C, F, K)."""
    cdef Py_ssize_t F = w.shape[0], C = w.shape[1], K = w.shape[2], c, f, k
    with nogil:
        for c in prange(C, num_threads=n_threads, schedule='static'):
            for f in range(F):
                for k in range(K):
                    mirrored[c, f, k] = w[f, c, K - 1 - k]


def correlate2d_forward_naive(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] w,
                              const floating[::1] bias,
                              floating[:, :, :, ::1] y,
                              Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t ph, Py_ssize_t pw,
                              Py_ssize_t dh=1, Py_ssize_t dw=1):
    """The forward correlation as its definition's six loops, single-threaded.

    The reference the fast kernels are tested against; never used for work.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3], F = w.shape[0], KH = w.shape[2]
    cdef Py_ssize_t KW = w.shape[3], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t n, f, i, j, c, a, b, hi, wj
    cdef double total
    with nogil:
        for n in range(N):
            for f in range(F):
                for i in range(Ho):
                    for j in range(Wo):
                        total = bias[f]
                        for c in range(C):
                            for a in range(KH):
                                hi = i * sh + a * dh - ph
                                if hi < 0 or hi >= H:
                                    continue
                                for b in range(KW):
                                    wj = j * sw + b * dw - pw
                                    if 0 <= wj < W:
                                        total += w[f, c, a, b] * x[n, c, hi, wj]
                        y[n, f, i, j] = <floating> total
