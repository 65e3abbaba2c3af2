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
The kernel gradient also has row products (gemm's dot), for layers
whose few filters would leave the product's panels mostly empty.
fastcnn.functional uses the mirrored correlation (a forward call) for the
input gradient where that is faster.

Threads split the batch: the forward and the input gradient give each
thread an equal share of the samples (within one), which it works through
in groups; each thread takes its own scratch inside the parallel region
(thread_alloc). The
kernel gradient sums over the batch in N_REDUCTION_BLOCKS fixed blocks of
samples, each with its own partial sum, and adds the blocks in block order,
so the result is bitwise the same for any number of threads.

The caller (fastcnn.functional) validates every shape, dtype and parameter
and allocates the outputs: these functions do no bounds checking.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stddef cimport ptrdiff_t
from libc.string cimport memcpy, memset

from fastcnn._kernels.gemm cimport *
# the one selection, under the names this module has always offered
from fastcnn._kernels.gemm import gemm_kernel_name, select_gemm_kernel

# The kernel gradient is summed over the batch in this many blocks of
# samples (fewer when the batch is smaller). It fixes the order of the sum
# independently of the thread count; it also bounds how many threads share
# that reduction, so it is well above the core counts this package targets.
N_REDUCTION_BLOCKS = 16


# ------------------------------------------------------- patch extraction

cdef inline void copy_run(floating *dst, const floating *src,
                          Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n]. Rows of small images are a few values long, where
    a call to memcpy costs more than the copy."""
    cdef Py_ssize_t t
    for t in range(n):
        dst[t] = src[t]


cdef void pad_sample(const floating *x, Py_ssize_t C, Py_ssize_t H,
                     Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                     floating *dst) noexcept nogil:
    """One sample inside a zero frame of (ph, pw): (C, H + 2ph, W + 2pw)."""
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw, c, h
    memset(dst, 0, C * Hp * Wp * sizeof(floating))
    for c in range(C):
        for h in range(H):
            copy_run(dst + (c * Hp + h + ph) * Wp + pw, x + (c * H + h) * W, W)


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


cdef void interleaved_offsets(Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t KH,
                              Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t Wq,
                              Py_ssize_t *base) noexcept nogil:
    """base[k] = ((c*Hp + a)*sw + b % sw)*Wq + b // sw for k = (c, a, b).

    In a frame of G interleaved samples (interleave_group) element k of
    every patch sits G * base[k] after the patch's first element."""
    cdef Py_ssize_t c, a, b
    for c in range(C):
        for a in range(KH):
            for b in range(KW):
                base[(c * KH + a) * KW + b] = ((c * Hp + a) * sw + b % sw) * Wq + b // sw


cdef Py_ssize_t largest(const Py_ssize_t *values, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, top = values[0]
    for i in range(1, n):
        top = max(top, values[i])
    return top


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
                # gradient's frames of 2 to 6 samples on 16 x 16 to 28 x 28
                # images took 5-10% longer).
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


cdef inline void clear_on_new_layout(floating *frame, Py_ssize_t n_items,
                                     Py_ssize_t G,
                                     Py_ssize_t *layout) noexcept nogil:
    """Zeroes a thread's frame (n_items values) when it is about to hold a
    group of another size than last time (*layout, 0 at first, so also on
    a thread's first use): where the padding falls depends on the group's
    size, and only the samples' own values are written again. Each thread
    clears its own frame, in parallel, in its own cache."""
    if layout[0] != G:
        memset(frame, 0, n_items * sizeof(floating))
        layout[0] = G


cdef inline floating sum_fixed_order(const floating *v, Py_ssize_t n,
                                     floating scale) noexcept nogil:
    """Sum of v[0:n] * scale in eight interleaved partial sums combined
    pairwise: a fixed order (so fixed bits) without one long chain of
    dependent adds. scale = 1 gives the plain sum (multiplying by 1 is exact);
    scale = 0 gives 0 exactly when every value is finite, NaN otherwise."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef floating s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t p = 0
    while p + 8 <= n:
        s0 = s0 + v[p] * scale
        s1 = s1 + v[p + 1] * scale
        s2 = s2 + v[p + 2] * scale
        s3 = s3 + v[p + 3] * scale
        s4 = s4 + v[p + 4] * scale
        s5 = s5 + v[p + 5] * scale
        s6 = s6 + v[p + 6] * scale
        s7 = s7 + v[p + 7] * scale
        p += 8
    while p < n:
        s0 = s0 + v[p] * scale
        p += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef void patch_offsets(Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                        Py_ssize_t KH, Py_ssize_t KW,
                        Py_ssize_t *offsets) noexcept nogil:
    """offsets[k] = (c*Hp + a)*Wp + b: where element k = (c, a, b) of every
    patch sits relative to the patch's corner in a padded (C, Hp, Wp) sample."""
    cdef Py_ssize_t c, a, b
    for c in range(C):
        for a in range(KH):
            for b in range(KW):
                offsets[(c * KH + a) * KW + b] = (c * Hp + a) * Wp + b


cdef enum:
    # Bytes of scratch (frames, product outputs) one thread fills for a group
    # of samples: they stay in L2 from one step to the next.
    FRAME_BYTES = 256 * 1024


cdef enum:
    # Multiply-adds of the product that cost about what copying one value
    # costs: the vector kernel does 32 float32 multiply-adds a cycle, a copy
    # that transposes about one value. (At 16, the four-conv net's 14 x 14
    # layer, 64 x 32 x 3 x 3, went interleaved and lost 15%.)
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
    waste the empty columns of their last panel. Small images with many channels waste
    most in place: the KW - 1 added columns of each row, the last panel's
    empty ones. Large samples waste most interleaved, where few of them fit
    in a frame: 64 x 16 x 16 images, one to a frame, fill half of each
    panel of 32."""
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


cdef inline Py_ssize_t interleaved_group(Py_ssize_t Wo, Py_ssize_t sample_items,
                                         Py_ssize_t N, int n_threads,
                                         Py_ssize_t NR,
                                         Py_ssize_t itemsize) noexcept nogil:
    """The most samples an interleaved frame holds: enough for output rows
    (Wo columns a sample) of about four panels of NR, with the scratch of
    sample_items values a sample within FRAME_BYTES; then made as small as
    it can be for the same number of groups per thread. Each thread splits
    its own share of the batch (N / n_threads samples, give or take one)
    into groups that differ by at most one sample (group_start), so the
    threads' shares never differ by more than one sample: 64 samples in
    groups of up to 11 once gave one thread 33 and the other 31."""
    cdef Py_ssize_t share = (N + n_threads - 1) // n_threads
    cdef Py_ssize_t g = (4 * NR + Wo - 1) // Wo, n_groups
    g = min(g, share, FRAME_BYTES // (sample_items * itemsize))
    g = g if g > 1 else 1
    n_groups = (share + g - 1) // g
    return (share + n_groups - 1) // n_groups


cdef inline Py_ssize_t thread_groups(Py_ssize_t N, Py_ssize_t n_threads,
                                     Py_ssize_t t, Py_ssize_t G) noexcept nogil:
    """How many groups of at most G samples thread t's share of the N
    samples, [N*t // n_threads, N*(t+1) // n_threads), makes (0 for none)."""
    return (N * (t + 1) // n_threads - N * t // n_threads + G - 1) // G


cdef inline Py_ssize_t group_start(Py_ssize_t N, Py_ssize_t n_threads,
                                   Py_ssize_t t, Py_ssize_t groups,
                                   Py_ssize_t g) noexcept nogil:
    """Where group g of thread t's share starts when the share is split into
    `groups` groups (thread_groups), the first share % groups of them one
    sample larger: group g is [group_start(g), group_start(g+1)). Sizes
    change once, so a frame is laid out anew (clear_on_new_layout) at most
    twice a call."""
    cdef Py_ssize_t first = N * t // n_threads
    cdef Py_ssize_t share = N * (t + 1) // n_threads - first
    return first + g * (share // groups) + min(g, share % groups)


def correlate2d_forward(const floating[:, :, :, ::1] x,
                        const floating[:, :, :, ::1] w,
                        const floating[::1] bias,
                        floating[:, :, :, ::1] y,
                        Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """y[n, f, i, j] = bias[f] + sum_{c,a,b} w[f,c,a,b] x[n, c, i*sh+a-ph, j*sw+b-pw].

    y must have shape (N, F, Ho, Wo) with Ho, Wo from the correlation
    output-size formula; x is read as zero outside its borders.

    No patch matrix is built; the product reads row k = (c, a, b) of it in
    place from a frame, one of two ways:

    - At stride 1, when that wastes less (in_place_is_cheaper), one sample
      in a zero frame (C, Hp, Wp): row k starts at offset (c*Hp + a)*Wp + b,
      and the outputs are computed over the padded width (Ho, Wp); the
      KW - 1 extra columns of each output row are dropped when copied into y.
    - Otherwise (strides, small images) a group of samples interleaved
      (interleave_group): one product per output row i, whose Wo*G columns
      are all outputs, then transposed from (f, i, j, s) into y (a group
      of one sample is written into y directly).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3], F = w.shape[0], KH = w.shape[2]
    cdef Py_ssize_t KW = w.shape[3], Ho = y.shape[2], Wo = y.shape[3]
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t K = C * KH * KW, P = Ho * Wo
    cdef Py_ssize_t MR = panel_rows(&y[0, 0, 0, 0])
    cdef Py_ssize_t NR = panel_cols(&y[0, 0, 0, 0])
    cdef Py_ssize_t P_wide = Ho * Wp
    # interleaved frames: Wq columns per phase, Wrow per padded row
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw, Wrow = sw * Wq
    cdef Py_ssize_t G_interleaved = interleaved_group(
        Wo, C * Hp * Wrow + F * P, N, n_threads, NR, sizeof(floating))
    cdef bint in_place = (sh == 1 and sw == 1 and in_place_is_cheaper(
        C, H, W, F, K, Ho, Wo, Wp, NR, G_interleaved, ph > 0 or pw > 0))
    cdef Py_ssize_t G = 1 if in_place else G_interleaved
    cdef Py_ssize_t frame_size, out_size, per_thread, g, n, s, cnt, f, i, k, p, p0, p_end
    cdef Py_ssize_t t, groups
    cdef Py_ssize_t reads_past = 0
    cdef const floating *xn
    cdef const floating *src
    cdef floating *dst
    cdef floating *frame = NULL
    cdef floating *out = NULL
    cdef Py_ssize_t *offs = NULL
    cdef floating *a_panels = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    cdef Py_ssize_t *offsets = alloc_offsets(K, K, n_threads)
    cdef Py_ssize_t *group_offsets = offsets + K
    cdef Py_ssize_t *frame_layout = group_offsets + n_threads * K
    if in_place:
        patch_offsets(C, Hp, Wp, KH, KW, offsets)
        # the product reads up to round_up(P_wide, NR) columns past the
        # last offset; the frame is that long, its tail zero
        frame_size = max(C * Hp * Wp, offsets[K - 1] + round_up(P_wide, NR))
        reads_past = frame_size - C * Hp * Wp
        out_size = F * P_wide
    else:
        interleaved_offsets(C, Hp, KH, KW, sw, Wq, offsets)
        # the last row's product reads round_up(Wo*G, NR) columns
        frame_size = max(C * Hp * Wrow, largest(offsets, K) + (Ho - 1) * sh * Wrow) * G
        frame_size += round_up(Wo * G, NR)
        out_size = F * P * G
    per_thread = frame_size + out_size
    try:
        a_panels = alloc(round_up(F, MR) * K, &y[0, 0, 0, 0])
        with nogil:
            pack_a(F, K, &w[0, 0, 0, 0], K, 1, a_panels)
        with nogil, parallel(num_threads=n_threads):
            frame = thread_alloc(per_thread, &y[0, 0, 0, 0], failure)
            out = frame + frame_size
            for t in prange(n_threads, schedule='static'):
                if frame == NULL:
                    continue
                groups = thread_groups(N, n_threads, t, G)
                for g in range(groups):
                    n = group_start(N, n_threads, t, groups, g)
                    cnt = group_start(N, n_threads, t, groups, g + 1) - n
                    if in_place:
                        # zero once per call: the tail of the frame past the
                        # sample is read, and pad_sample rewrites only the rest
                        clear_on_new_layout(frame, frame_size, 1,
                                            &frame_layout[threadid()])
                        xn = &x[n, 0, 0, 0]
                        # the product reads round_up(P_wide, NR) columns from each
                        # offset: past the end of x for the last sample
                        if ph or pw or (n + 1) * C * H * W + reads_past > N * C * H * W:
                            pad_sample(xn, C, H, W, ph, pw, frame)
                            xn = frame
                        gemm(F, P_wide, K, a_panels, NULL, xn, &offsets[0], out,
                             P_wide, 0, &bias[0])
                        for f in range(F):
                            for i in range(Ho):
                                copy_run(&y[n, f, i, 0], out + f * P_wide + i * Wp, Wo)
                        continue
                    clear_on_new_layout(frame, frame_size, cnt,
                                        &frame_layout[threadid()])
                    interleave_group(<floating *> &x[n, 0, 0, 0], cnt, C, H, W, ph, pw,
                                     Hp, sw, Wq, frame, True)
                    offs = group_offsets + threadid() * K
                    for k in range(K):
                        offs[k] = offsets[k] * cnt
                    if cnt == 1:
                        # one sample: out's layout is y's, so write y itself
                        for i in range(Ho):
                            gemm(F, Wo, K, a_panels, NULL, frame + i * sh * Wrow,
                                 offs, &y[n, 0, i, 0], P, 0, &bias[0])
                        continue
                    for i in range(Ho):
                        gemm(F, Wo * cnt, K, a_panels, NULL, frame + i * sh * Wrow * cnt,
                             offs, out + i * Wo * cnt, P * cnt, 0, &bias[0])
                    # out (F, Ho, Wo, cnt) -> y[n + s, f, i, j] in tiles of 16
                    # positions: a tile's reads stay in cache, and each sample gets
                    # one run of writes (writing a position of every sample in turn
                    # would hit addresses F*P apart, often a multiple of 4 KiB)
                    for f in range(F):
                        p0 = 0
                        while p0 < P:
                            p_end = min(p0 + 16, P)
                            for s in range(cnt):
                                src = out + f * P * cnt + s
                                dst = &y[n + s, f, 0, 0]
                                for p in range(p0, p_end):
                                    dst[p] = src[p * cnt]
                            p0 = p_end
            thread_scratch_trim()
        scratch_error(failed, per_thread, &y[0, 0, 0, 0])
    finally:
        aligned_free(a_panels)
        aligned_free(offsets)


def correlate2d_backward_input(const floating[:, :, :, ::1] grad_y,
                               const floating[:, :, :, ::1] w,
                               floating[:, :, :, ::1] grad_x,
                               Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """grad_x = W^T grad_y: each output gradient times the kernel, added back
    to the input positions that produced it. grad_x is overwritten.

    For a group of samples at a time, interleaved as in the forward: the
    patch gradients dcols (K, Ho*Wo*G) = W^T (K, F) . grad_y, with grad_y's
    samples interleaved (F, Ho, Wo, G) and read in place; then for each
    patch row k and output row i, one run of Wo*G values added into an
    interleaved frame of the padded input gradient, where that row's
    patches were read (interleave_group); then the frame's inside copied
    out into grad_x.
    """
    cdef Py_ssize_t N = grad_y.shape[0], F = grad_y.shape[1]
    cdef Py_ssize_t Ho = grad_y.shape[2], Wo = grad_y.shape[3]
    cdef Py_ssize_t C = grad_x.shape[1], H = grad_x.shape[2]
    cdef Py_ssize_t W = grad_x.shape[3], KH = w.shape[2], KW = w.shape[3]
    cdef Py_ssize_t K = C * KH * KW, P = Ho * Wo
    cdef Py_ssize_t MR = panel_rows(&grad_x[0, 0, 0, 0])
    cdef Py_ssize_t NR = panel_cols(&grad_x[0, 0, 0, 0])
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw, Wrow = sw * Wq
    cdef Py_ssize_t frame_items = C * Hp * Wrow
    cdef Py_ssize_t G = interleaved_group(
        Wo, frame_items + (K + F) * P, N, n_threads, NR, sizeof(floating))
    # the product reads round_up(P*G, NR) columns of grad_y's last row
    cdef Py_ssize_t gy_size = F * P * G + NR
    cdef Py_ssize_t per_thread = gy_size + K * P * G + frame_items * G
    # per thread: grad_y's rows and the patch rows for its group's size
    cdef Py_ssize_t *offsets = alloc_offsets(K, F + K, n_threads)
    cdef Py_ssize_t *group_offsets = offsets + K
    cdef Py_ssize_t g, n, cnt, f, k, i, t, j, groups
    cdef Py_ssize_t *offs = NULL
    cdef floating *gy_frame = NULL
    cdef floating *dcols = NULL
    cdef floating *frame = NULL
    cdef floating *dst
    cdef const floating *src
    cdef floating *a_panels = NULL
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    interleaved_offsets(C, Hp, KH, KW, sw, Wq, offsets)
    try:
        a_panels = alloc(round_up(K, MR) * F, &grad_x[0, 0, 0, 0])
        with nogil:
            # W^T as the A operand: row k = (c, a, b), column f.
            pack_a(K, F, &w[0, 0, 0, 0], 1, K, a_panels)
        with nogil, parallel(num_threads=n_threads):
            gy_frame = thread_alloc(per_thread, &grad_x[0, 0, 0, 0], failure)
            dcols = gy_frame + gy_size
            frame = dcols + K * P * G
            offs = group_offsets + threadid() * (F + K)
            for t in prange(n_threads, schedule='static'):
                if gy_frame == NULL:
                    continue
                groups = thread_groups(N, n_threads, t, G)
                for g in range(groups):
                    n = group_start(N, n_threads, t, groups, g)
                    cnt = group_start(N, n_threads, t, groups, g + 1) - n
                    # grad_y (F, Ho, Wo, cnt): a frame without padding or phases;
                    # the product also reads the NR values past it (the other
                    # buffers are written before they are read)
                    interleave_group(<floating *> &grad_y[n, 0, 0, 0], cnt, F, Ho, Wo,
                                     0, 0, Ho, 1, Wo, gy_frame, True)
                    memset(gy_frame + F * P * cnt, 0, NR * sizeof(floating))
                    for f in range(F):
                        offs[f] = f * P * cnt
                    for k in range(K):
                        offs[F + k] = offsets[k] * cnt
                    gemm(K, P * cnt, F, a_panels, NULL, gy_frame, offs, dcols, P * cnt,
                         0, NULL)
                    memset(frame, 0, frame_items * cnt * sizeof(floating))
                    for k in range(K):
                        for i in range(Ho):
                            src = dcols + (k * Ho + i) * Wo * cnt
                            dst = frame + offs[F + k] + i * sh * Wrow * cnt
                            for j in range(Wo * cnt):
                                dst[j] += src[j]
                    interleave_group(&grad_x[n, 0, 0, 0], cnt, C, H, W, ph, pw, Hp,
                                     sw, Wq, frame, False)
            thread_scratch_trim()
        scratch_error(failed, per_thread, &grad_x[0, 0, 0, 0])
    finally:
        aligned_free(a_panels)
        aligned_free(offsets)


cdef void pack_grad_interleaved(const floating *gy, Py_ssize_t G,
                                Py_ssize_t F, Py_ssize_t Ho, Py_ssize_t Wo,
                                floating *dst) noexcept nogil:
    """grad_y of G consecutive samples (G, F, Ho, Wo) as the B operands of
    the interleaved kernel gradient, one per output row i, each
    round_up(F, NR) * Wo*G long: row t = j*G + s of operand i holds
    grad_y[s, :, i, j], in panels of NR filters; columns past F are zero."""
    cdef Py_ssize_t NR = panel_cols(dst)
    cdef Py_ssize_t P = Ho * Wo, depth = Wo * G, operand = round_up(F, NR) * depth
    cdef Py_ssize_t i, j, s, f, q, t
    cdef const floating *g
    cdef floating *d
    # Each row of a plane is read once, whole, and written down a column of
    # one panel (depth x NR values, in L1 while it fills). Reading a value of
    # each filter in turn instead hits addresses P apart, often a multiple
    # of 4 KiB, all in the same cache set: a third of the kernel gradient's
    # time on 128 x 32 x 32 x 32.
    for i in range(Ho):
        q = 0
        while q < F:
            d = dst + i * operand + q * depth
            for f in range(q, min(q + NR, F)):
                for s in range(G):
                    g = gy + (s * F + f) * P + i * Wo
                    for j in range(Wo):
                        d[(j * G + s) * NR + f - q] = g[j]
            for f in range(F, q + NR):
                for t in range(depth):
                    d[t * NR + f - q] = 0
            q += NR


def correlate2d_backward_kernel(const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] grad_y,
                                floating[:, :, :, ::1] grad_w,
                                floating[::1] grad_b,
                                Py_ssize_t sh, Py_ssize_t sw,
                                Py_ssize_t ph, Py_ssize_t pw, int n_threads):
    """grad_w = sum_n grad_y[n] . cols[n]^T and grad_b = sum over n, i, j of
    grad_y, in a fixed order. grad_w and grad_b are overwritten.

    Two ways, by shape (never by thread count), for a group of samples at a
    time:

    - Row products, at unit column stride, when output rows fill vectors
      better than the filters fill panels. grad_w[f, k] for k = (c, a, b)
      sums products of two contiguous rows: output row i of grad_y[n, f]
      and the Wo input values from (c, i*sh + a, b) of the padded sample.
      gemm's dot reads both in place.
    - The interleaved product otherwise: the group's samples interleaved as
      in the forward (interleave_group), so that for output row i the
      patches of every sample form the rows of A (K, Wo*G), read in place;
      grad_w^T (K, F) += A . B with B grad_y's row i, transposed
      (pack_grad_interleaved). Only values inside windows enter the sum.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2]
    cdef Py_ssize_t W = x.shape[3], F = grad_y.shape[1]
    cdef Py_ssize_t Ho = grad_y.shape[2], Wo = grad_y.shape[3]
    cdef Py_ssize_t KH = grad_w.shape[2], KW = grad_w.shape[3]
    cdef Py_ssize_t K = C * KH * KW, P = Ho * Wo
    cdef Py_ssize_t NR = panel_cols(&grad_w[0, 0, 0, 0])
    cdef Py_ssize_t n_blocks = min(N, N_REDUCTION_BLOCKS)
    cdef Py_ssize_t Hp = H + 2 * ph, Wp = W + 2 * pw
    cdef Py_ssize_t Wq = (Wp + sw - 1) // sw, Wrow = sw * Wq
    cdef bint padded = ph > 0 or pw > 0
    # Interleaving copies each sample and its output gradient (C*H*W + F*P
    # values) where the row products copy nothing: worth it when that is
    # small against the patch rows (K*P values) and the filters fill the
    # product's panels (F of round_up(F, NR) columns) better than output
    # rows fill the row products' vectors (Wo of NR / 2 lanes).
    cdef bint rows = sw == 1 and not (
        F * P + C * H * W <= K * P and
        F * round_up(Wo, NR // 2) >= Wo * round_up(F, NR))
    cdef Py_ssize_t frame_items = C * Hp * Wp if rows else C * Hp * Wrow
    # Samples summed by one product. It depends on the shapes only, never on
    # the thread count, as it sets the order of the sum.
    cdef Py_ssize_t G = min((N + n_blocks - 1) // n_blocks,
                            max(1, FRAME_BYTES // (frame_items * sizeof(floating))))
    # per block: grad_w (F, K), grad_w^T (K, F) on the interleaved path,
    # then grad_b (F)
    cdef Py_ssize_t partial_size = F * K + F
    cdef Py_ssize_t b_size = 0 if rows else round_up(F, NR) * P * G
    cdef Py_ssize_t frames_size = G * frame_items if padded or not rows else 0
    # the row products read samples from frames, or from x itself
    cdef Py_ssize_t sample_stride = frame_items if padded else C * H * W
    cdef Py_ssize_t per_thread = b_size + frames_size
    cdef Py_ssize_t blk, n, end, cnt, s, f, i, k, t
    cdef const floating *xn
    cdef const floating *gy
    cdef Py_ssize_t *offs = NULL
    cdef floating *b_panels = NULL
    cdef floating *frames = NULL
    cdef floating *part
    cdef floating total
    cdef floating *gw = &grad_w[0, 0, 0, 0]
    cdef floating *partials = NULL
    cdef floating *acc
    cdef const floating *src
    cdef Py_ssize_t n_rows = F if rows else K, row_len = K if rows else F, r
    cdef Py_ssize_t *offsets = alloc_offsets(K, K, n_threads)
    cdef Py_ssize_t *group_offsets = offsets + K
    cdef Py_ssize_t *frame_layout = group_offsets + n_threads * K
    if rows:
        patch_offsets(C, Hp, Wp, KH, KW, offsets)
    else:
        interleaved_offsets(C, Hp, KH, KW, sw, Wq, offsets)
    cdef int failed = 0
    cdef int *failure = &failed   # parallel() makes every name it assigns private
    try:
        partials = alloc(n_blocks * partial_size, gw)
        with nogil, parallel(num_threads=n_threads):
            b_panels = thread_alloc(per_thread, gw, failure)
            frames = b_panels + b_size
            # Every buffer is cleared by the thread that uses it: the block's
            # partial sums here; padded frames by pad_sample, interleaved
            # ones by clear_on_new_layout; B's panels are written whole.
            for blk in prange(n_blocks, schedule='static'):
                if b_panels == NULL:
                    continue
                part = partials + blk * partial_size
                memset(part, 0, partial_size * sizeof(floating))
                n = blk * N // n_blocks
                end = (blk + 1) * N // n_blocks
                while n < end:
                    cnt = end - n if end - n < G else G
                    for s in range(cnt):
                        gy = &grad_y[n + s, 0, 0, 0]
                        for f in range(F):
                            part[F * K + f] += sum_fixed_order(gy + f * P, P, 1)
                    if rows:
                        xn = &x[n, 0, 0, 0]
                        if padded:
                            for s in range(cnt):
                                pad_sample(&x[n + s, 0, 0, 0], C, H, W, ph, pw,
                                           frames + s * frame_items)
                            xn = frames
                        dot(F, K, cnt, Ho, Wo, &grad_y[n, 0, 0, 0], F * P, P,
                            Wo, xn, &offsets[0], sample_stride, sh * Wp, part, K)
                        n = n + cnt
                        continue
                    clear_on_new_layout(frames, frame_items * G, cnt,
                                        &frame_layout[threadid()])
                    interleave_group(<floating *> &x[n, 0, 0, 0], cnt, C, H, W, ph,
                                     pw, Hp, sw, Wq, frames, True)
                    pack_grad_interleaved(&grad_y[n, 0, 0, 0], cnt, F, Ho, Wo,
                                          b_panels)
                    offs = group_offsets + threadid() * K
                    for k in range(K):
                        offs[k] = offsets[k] * cnt
                    for i in range(Ho):
                        gemm(K, F, Wo * cnt, frames + i * sh * Wrow * cnt, offs,
                             b_panels + i * round_up(F, NR) * Wo * cnt, NULL,
                             part, F, 1, NULL)
                    n = n + cnt
            thread_scratch_trim()
        scratch_error(failed, per_thread, gw)
        with nogil:
            # Blocks added in block order, whatever thread computed them: into
            # block 0's sums, one row of their layout at a time (F rows of K,
            # or K rows of F on the interleaved path, written out transposed)
            for r in prange(n_rows, num_threads=n_threads, schedule='static'):
                acc = partials + r * row_len
                for blk in range(1, n_blocks):
                    src = partials + blk * partial_size + r * row_len
                    for t in range(row_len):
                        acc[t] = acc[t] + src[t]
                if rows:
                    copy_run(gw + r * K, acc, K)
                else:
                    for f in range(F):
                        gw[f * K + r] = acc[f]
            for f in range(F):
                total = partials[F * K + f]
                for blk in range(1, n_blocks):
                    total = total + partials[blk * partial_size + F * K + f]
                grad_b[f] = total
    finally:
        aligned_free(partials)
        aligned_free(offsets)


def correlate2d_forward_naive(const floating[:, :, :, ::1] x,
                              const floating[:, :, :, ::1] w,
                              const floating[::1] bias,
                              floating[:, :, :, ::1] y,
                              Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t ph, Py_ssize_t pw):
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
                                hi = i * sh + a - ph
                                if hi < 0 or hi >= H:
                                    continue
                                for b in range(KW):
                                    wj = j * sw + b - pw
                                    if 0 <= wj < W:
                                        total += w[f, c, a, b] * x[n, c, hi, wj]
                        y[n, f, i, j] = <floating> total
