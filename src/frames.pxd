"""Frames of samples for the correlation kernels (src/correlation.pyx), and
how a thread's share of the batch splits into groups.

A frame is scratch that a product reads patches from in place: one sample
padded with zeros (pad_sample, read at patch_offsets), or a group of samples
interleaved, columns split into their stride phases and samples innermost
(interleave_group, read at interleaved_offsets). All inline, so this file
has no .pyx: correlation.pyx cimports it from src/ (setup.py's include_path).
"""
from cython cimport floating
from libc.string cimport memset

cdef inline void copy_run(floating *dst, const floating *src,
                          Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n]. Rows of small images are a few values long, where
    a call to memcpy costs more than the copy."""
    cdef Py_ssize_t t
    for t in range(n):
        dst[t] = src[t]


cdef inline void pad_sample(const floating *x, Py_ssize_t C, Py_ssize_t H,
                            Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t Hp, Py_ssize_t Wp,
                            floating *dst) noexcept nogil:
    """One sample inside a zero frame (C, Hp, Wp), ph rows above it and pw
    columns left of it (the rest of the padding below and right)."""
    cdef Py_ssize_t c, h
    memset(dst, 0, C * Hp * Wp * sizeof(floating))
    for c in range(C):
        for h in range(H):
            copy_run(dst + (c * Hp + h + ph) * Wp + pw, x + (c * H + h) * W, W)


cdef inline void interleaved_offsets(Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t KH,
                                     Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t Wq,
                                     Py_ssize_t dh, Py_ssize_t dw,
                                     Py_ssize_t *base) noexcept nogil:
    """base[k] = ((c*Hp + a*dh)*sw + b*dw % sw)*Wq + b*dw // sw for
    k = (c, a, b), with dilation (dh, dw).

    In a frame of G interleaved samples (interleave_group) element k of
    every patch sits G * base[k] after the patch's first element."""
    cdef Py_ssize_t c, a, b, col
    for c in range(C):
        for a in range(KH):
            for b in range(KW):
                col = b * dw
                base[(c * KH + a) * KW + b] = (((c * Hp + a * dh) * sw + col % sw) * Wq
                                               + col // sw)


cdef inline Py_ssize_t largest(const Py_ssize_t *values, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, top = values[0]
    for i in range(1, n):
        top = max(top, values[i])
    return top


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


cdef inline void patch_offsets(Py_ssize_t C, Py_ssize_t Hp, Py_ssize_t Wp,
                               Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t dh,
                               Py_ssize_t dw, Py_ssize_t *offsets) noexcept nogil:
    """offsets[k] = (c*Hp + a*dh)*Wp + b*dw: where element k = (c, a, b) of
    every patch sits relative to the patch's corner in a padded (C, Hp, Wp)
    sample, with dilation (dh, dw)."""
    cdef Py_ssize_t c, a, b
    for c in range(C):
        for a in range(KH):
            for b in range(KW):
                offsets[(c * KH + a) * KW + b] = (c * Hp + a * dh) * Wp + b * dw


cdef enum:
    # Bytes of scratch (frames, product outputs) one thread fills for a group
    # of samples: they stay in L2 from one step to the next.
    FRAME_BYTES = 256 * 1024


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
    threads' shares never differ by more than one sample (groups of one
    fixed size split the batch unevenly when the size does not divide it)."""
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
