"""Large tensors: offsets that a 32-bit index could not hold.

Every kernel computes its offsets in Py_ssize_t (64 bits), except max
pooling's argmax, which indexes each input plane with int32. These tests
check the results where a 32-bit offset would have wrapped: arrays past
2**31 bytes, batches past 2**31 and 2**32 elements, a single row past
2**31 elements, and max-pooling planes on either side of the int32 limit.
The results are compared with NumPy (slicing, matmul, and the references of
conftest.py), never with fastcnn itself, and always include the first and
last samples and the samples that hold the 2**31 (and 2**32) element and
byte offsets: a wrapped offset shows there first.

Budget: about 6 GB of resident memory and a minute on two cores.

* Dense data. The batch is 512 x 3 x 224 x 224 float32 (308 MB). That is
  only 77M elements and 0.3 GB, far from 2**31 bytes, so its correlation
  has 24 filters: the output (and the output gradient) is 512 x 24 x 224
  x 224, 617M elements, 2.47 GB, past 2**31 bytes from sample 445 on. An
  output of 2**31 elements or more is 8.6 GB in float32 (and 512 x 64 x
  224 x 224 = 1.64e9 elements is still below 2**31): beyond the budget,
  so no dense array here reaches 2**31 elements.
* Past 2**31 and 2**32 elements. Inputs of 8.6 to 17 GB are made with
  np.zeros, whose pages Linux maps only when they are first written:
  reading an untouched page maps the shared zero page, so such an input
  costs address space, not memory (checked before each use: lazy_zeros).
  Only small regions are written (first and last samples, and those around
  the 2**31 and 2**32 offsets), so the expected result is known exactly,
  and the kernels still compute every offset and read every element. Only
  calls whose outputs are small can take such inputs (strided or pooled
  outputs, kernel gradients): an input gradient or a pooling gradient has
  the input's size and would be resident.
* Exactness. The correlation data are small integers in [-3, 3]: every
  product is an integer, and partial sums of these zero-mean terms stay far
  below 2**24 (about 1e4 for the 25M-term kernel gradient), so float32
  results are exact and compared for equality; one element read from the
  wrong place changes them. The pooling data of the 1-D test are normal
  floats (no ties). Kernels run on N_THREADS = 2 threads.

Needs Linux (/proc/meminfo); each test skips, saying why, when the memory it
needs (its arrays' sizes plus headroom) is not available. Deselect them all
with ``-m "not large_memory"``.
"""
import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastcnn.functional as fcf

pytestmark = pytest.mark.large_memory

MiB, GiB = 2**20, 2**30
# First element/byte offsets that a signed and an unsigned 32-bit index
# cannot hold.
LIMITS = (2**31, 2**32)
# Explicit, so the batch is split between threads even on one core.
N_THREADS = 2


# ================================================================== memory

def _meminfo_bytes(field):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def require_memory(resident_bytes, what):
    """Skip unless MemAvailable covers ``resident_bytes`` (the arrays the
    test keeps at its peak) plus a quarter and 512 MiB for NumPy's
    temporaries, the references and the kernels' scratch."""
    available = _meminfo_bytes("MemAvailable")
    if available is None:
        pytest.skip("needs /proc/meminfo (Linux) to know the memory available")
    need = int(resident_bytes * 1.25) + 512 * MiB
    if available < need:
        pytest.skip(f"{what} needs about {need / GiB:.1f} GiB "
                    f"({resident_bytes / GiB:.1f} GiB of arrays plus headroom); "
                    f"{available / GiB:.1f} GiB available")


def lazy_zeros(shape, dtype=np.float32):
    """np.zeros of ``shape`` that costs address space only: its pages become
    memory when written, and reading the others maps the zero page. Skips
    where that is not so: strict overcommit, an allocation refused, or a
    read of untouched pages that made them resident (transparent huge pages
    without the huge zero page, say)."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    try:
        with open("/proc/sys/vm/overcommit_memory") as f:
            strict = f.read().strip() == "2"
    except OSError:
        pytest.skip("needs /proc/sys/vm/overcommit_memory (Linux)")
    if strict:
        pytest.skip(f"strict overcommit: a {nbytes / GiB:.1f} GiB array would "
                    "be charged in full")
    try:
        a = np.zeros(shape, dtype)
    except MemoryError:
        pytest.skip(f"the system refused {nbytes / GiB:.1f} GiB of address space "
                    f"for a lazily zeroed {shape} array")
    flat = a.reshape(-1)
    start = flat.size // 2
    before = _rss_bytes()
    touched = flat[start:start + 64 * MiB // a.itemsize].any()
    grown = _rss_bytes() - before
    assert not touched
    if grown > 16 * MiB:
        pytest.skip(f"reading 64 MiB of untouched zeros made {grown / MiB:.0f} MiB "
                    "resident: no shared zero page here, so a read-only "
                    f"{nbytes / GiB:.1f} GiB input would cost that much memory")
    return a


# ==================================================================== data

def small_ints(rng, shape, low=-2, high=2, out=None):
    """Uniform integers in [low, high] as float32, made in chunks (no
    full-size temporaries; Generator.integers is 5x slower). Written into
    the memory of ``out`` (a float32 array at least as large) when given:
    on this kind of machine fresh memory costs more than the values."""
    size = int(np.prod(shape))
    out = (np.empty(shape, np.float32) if out is None
           else out.reshape(-1)[:size].reshape(shape))
    flat = out.reshape(-1)
    chunk = 1 << 24
    for start in range(0, size, chunk):
        part = flat[start:start + chunk]
        part[...] = np.frombuffer(rng.bytes(part.size), np.uint8) % (high - low + 1)
        part += low
    return out


def landmark_samples(a):
    """The samples worth checking in a batch ``a``: the first two, the last
    two, and on both sides of every element and byte offset in LIMITS that
    ``a`` reaches (the sample holding offset limit - 1 and the one holding
    offset limit; often the same sample, straddling it)."""
    per_sample = a[0].size
    samples = {0, 1, len(a) - 2, len(a) - 1}
    for limit in LIMITS:
        for unit in (1, a.itemsize):             # element offsets, byte offsets
            first = -(-limit // unit)            # first element at or past limit
            if first < a.size:
                samples |= {(first - 1) // per_sample, first // per_sample}
    return sorted(s for s in samples if 0 <= s < len(a))


def describe(a, n):
    """Sample n of batch ``a``, with the offsets it spans."""
    m = a[0].size
    return (f"sample {n} of {a.shape} {a.dtype} (elements {n * m:,}..{(n + 1) * m - 1:,}, "
            f"bytes {n * m * a.itemsize:,}..{(n + 1) * m * a.itemsize - 1:,})")


def assert_exact(actual, expected, what):
    """Equal values (a float32 result of integer data is exact), with the
    first and last differing positions in the message."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape}, expected {expected.shape}")
    bad = actual != expected
    if bad.any():
        where = np.argwhere(bad)
        first, last = tuple(where[0]), tuple(where[-1])
        raise AssertionError(
            f"{what}: {len(where)} of {actual.size} values differ; first at "
            f"{first}: got {actual[first]!r}, expected {expected[first]!r}; last at "
            f"{last}: got {actual[last]!r}, expected {expected[last]!r}")


def in_context(what, check, *args, **kwargs):
    """check(*args, **kwargs) (conftest's assert_close, say), its failure
    message prefixed with ``what``: where in the large array it was."""
    try:
        check(*args, **kwargs)
    except AssertionError as error:
        raise AssertionError(f"{what}: {error}") from None


def assert_all_equal_to(a, value, what, skip=(), block=1024):
    """Every sample of batch ``a`` but those in ``skip`` equals ``value``
    (broadcast to one sample), compared in blocks of samples."""
    value = np.broadcast_to(value, a.shape[1:])
    skip = set(skip)
    for n0 in range(0, len(a), block):
        rows = [n for n in range(n0, min(n0 + block, len(a))) if n not in skip]
        if not rows:
            continue
        part = a[rows[0]:rows[-1] + 1]
        keep = np.isin(np.arange(rows[0], rows[-1] + 1), rows)
        bad = (part != value) & keep.reshape((-1,) + (1,) * (a.ndim - 1))
        if bad.any():
            index = tuple(np.argwhere(bad)[0])
            n = rows[0] + index[0]
            raise AssertionError(
                f"{what}: {describe(a, n)} differs at {index[1:]}: got "
                f"{part[index]!r}, expected {value[index[1:]]!r}")


# ================================================= exact NumPy references

def backward_input_exact(grad_y, w, x_shape, stride, padding):
    """grad_x of integer-valued 4-D arrays: every offset's weights times
    grad_y added where that offset read, then the padding cropped off."""
    (sh, sw), (ph, pw) = stride, padding
    n, f, ho, wo = grad_y.shape
    c = x_shape[1]
    padded = np.zeros((n, c, x_shape[2] + 2 * ph, x_shape[3] + 2 * pw), np.float32)
    g = grad_y.reshape(n, f, ho * wo)
    contribution = np.empty((n, c, ho * wo), np.float32)
    with threadpool_limits(1, user_api="blas"):   # see backward_kernel_exact
        for a in range(w.shape[2]):
            for b in range(w.shape[3]):
                np.matmul(w[:, :, a, b].T, g, out=contribution)
                padded[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += (
                    contribution.reshape(n, c, ho, wo))
    return padded[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]


# A product sums at most this many products of integers of magnitude at
# most 8: every partial sum, in any order, is an integer of magnitude at
# most 2**24, exact in float32. The products' results are added in float64.
_EXACT_DEPTH = 2**21


def backward_kernel_exact(x, grad_y, w_shape, stride, padding):
    """(grad_w, grad_b) of integer-valued 4-D arrays over the whole batch,
    exactly: float32 products (F, depth) . (depth, C*KH*KW) of at most
    _EXACT_DEPTH terms, over blocks of samples (or of positions, when a
    sample has more), added up in float64. The blocks' buffers are reused
    (fresh memory costs more here than the products), and BLAS runs on one
    thread: for these skinny products two threads were up to 10x slower
    on a busy machine, and never much faster."""
    (sh, sw), (ph, pw) = stride, padding
    n, f, ho, wo = grad_y.shape
    _, c, h, w = x.shape
    _, _, kh, kw = w_shape
    p, k = ho * wo, c * kh * kw
    samples = min(n, max(1, _EXACT_DEPTH // p))     # per block
    depth = min(p, _EXACT_DEPTH)                    # positions per product
    x_buffer = np.empty(samples * c * (h + 2 * ph) * (w + 2 * pw), np.float32)
    g_buffer = np.empty(f * samples * p, np.float32)
    patch_buffer = np.empty(k * samples * p, np.float32)
    grad_w = np.zeros((f, k))
    grad_b = np.zeros(f)
    with threadpool_limits(1, user_api="blas"):
        for n0 in range(0, n, samples):
            m = min(samples, n - n0)
            x_padded = x_buffer[:m * c * (h + 2 * ph) * (w + 2 * pw)].reshape(
                m, c, h + 2 * ph, w + 2 * pw)
            x_padded[...] = 0
            x_padded[:, :, ph:ph + h, pw:pw + w] = x[n0:n0 + m]
            # grad_y as (F, m, P), the patch rows as (C*KH*KW, m, P), k = (c, a, b)
            g = g_buffer[:f * m * p].reshape(f, m, p)
            g[...] = grad_y[n0:n0 + m].reshape(m, f, p).transpose(1, 0, 2)
            patches = patch_buffer[:k * m * p].reshape(c, kh, kw, m, ho, wo)
            for a in range(kh):
                for b in range(kw):
                    patches[:, a, b] = x_padded[:, :, a:a + sh * (ho - 1) + 1:sh,
                                                b:b + sw * (wo - 1) + 1:sw].transpose(1, 0, 2, 3)
            patches = patches.reshape(k, m, p)
            grad_b += g.sum(axis=(1, 2), dtype=np.float64)
            for p0 in range(0, p, depth):
                grad_w += (g[:, :, p0:p0 + depth].reshape(f, -1)
                           @ patches[:, :, p0:p0 + depth].reshape(k, -1).T)
    return grad_w.reshape(w_shape), grad_b


# ========================================== a 512 x 3 x 224 x 224 batch

BATCH_2D = (512, 3, 224, 224)
FILTERS_2D = 24          # the output passes 2**31 bytes (see the docstring)


@pytest.fixture(scope="module")
def batch2d():
    """x (512, 3, 224, 224), w (24, 3, 3, 3) and bias: integers in [-2, 2]."""
    require_memory(math.prod(BATCH_2D) * 4, "the 512 x 3 x 224 x 224 batch")
    rng = np.random.default_rng(224)
    return (small_ints(rng, BATCH_2D), small_ints(rng, (FILTERS_2D, 3, 3, 3)),
            small_ints(rng, (FILTERS_2D,)))


def test_conv_pool_layer_past_2_31_bytes(batch2d, ref, assert_close):
    """A convolution layer and a max pooling after it, forward and back, as
    a network runs them: the correlation's output y, and the output gradient
    that max pooling's gradient writes over it, are 2.47 GB (one array,
    reused, to stay within the budget). Checked on the landmark samples,
    and the kernel gradient over the whole batch."""
    x, w, bias = batch2d
    n = len(x)
    y_bytes = n * FILTERS_2D * 224 * 224 * 4
    pooled_bytes = y_bytes // 4
    # x, y, then two pooled-size arrays at a time (pooled + argmax, or
    # argmax + its gradient)
    require_memory(x.nbytes + y_bytes + 2 * pooled_bytes, "a layer with a 2.47 GB output")

    y = fcf.correlate2d(x, w, bias, padding=1, n_threads=N_THREADS)
    assert y.nbytes > 2**31
    samples = landmark_samples(y)
    assert {445, n - 1} <= set(samples)      # the sample holding byte 2**31, the last
    for s in samples:
        assert_exact(y[s:s + 1], ref.correlate(x[s:s + 1], w, bias, 1, 1),
                     f"correlate2d, {describe(y, s)}")

    # Pooled arrays go into two buffers, reused (fresh memory is slow here)
    values = np.empty(pooled_bytes // 4, np.float32)
    indices = np.empty(pooled_bytes // 4, np.int32)

    def buffer(memory, shape):
        return memory[:math.prod(shape)].reshape(shape)

    # (3, 3) windows at stride 2: the general row kernel, overlapping windows
    shape = (n, FILTERS_2D, 111, 111)
    pooled, argmax = fcf.max_pool2d(y, 3, 2, n_threads=N_THREADS,
                                    out=(buffer(values, shape), buffer(indices, shape)))
    for s in samples:
        expected, expected_argmax = ref.max_pool(y[s:s + 1], 3, 2)
        assert_exact(pooled[s:s + 1], expected, f"max_pool2d 3/2, {describe(pooled, s)}")
        assert_exact(argmax[s:s + 1], expected_argmax,
                     f"max_pool2d 3/2 argmax, {describe(argmax, s)}")
    averaged = fcf.avg_pool2d(y, 3, 2, n_threads=N_THREADS, out=pooled)
    for s in samples:
        in_context(f"avg_pool2d 3/2, {describe(averaged, s)}", assert_close,
                   averaged[s:s + 1], ref.avg_pool(y[s:s + 1], 3, 2),
                   scale=ref.avg_pool(np.abs(y[s:s + 1]), 3, 2))

    # 2 x 2 windows: the vectorised kernel, whose blocks run past row ends
    shape = (n, FILTERS_2D, 112, 112)
    pooled, argmax = fcf.max_pool2d(y, 2, n_threads=N_THREADS,
                                    out=(buffer(values, shape), buffer(indices, shape)))
    expected_argmax = {}
    for s in samples:
        expected, expected_argmax[s] = ref.max_pool(y[s:s + 1], 2)
        assert_exact(pooled[s:s + 1], expected, f"max_pool2d 2x2, {describe(pooled, s)}")
        assert_exact(argmax[s:s + 1], expected_argmax[s],
                     f"max_pool2d 2x2 argmax, {describe(argmax, s)}")
    averaged = fcf.avg_pool2d(y, 2, n_threads=N_THREADS, out=pooled)
    for s in samples:   # a mean of 4 integers: exact
        assert_exact(averaged[s:s + 1], ref.avg_pool(y[s:s + 1], 2),
                     f"avg_pool2d 2x2, {describe(averaged, s)}")

    # back through the pooling, into y's memory: y becomes grad_y
    grad_pooled = small_ints(np.random.default_rng(2), shape, -3, 3, out=values)
    grad_y = fcf.max_pool2d_backward(grad_pooled, argmax, y.shape,
                                     n_threads=N_THREADS, out=y)
    del y, argmax, indices
    for s in samples:
        assert_exact(grad_y[s:s + 1],
                     ref.max_pool_backward(grad_pooled[s:s + 1], expected_argmax[s],
                                           (1,) + grad_y.shape[1:]),
                     f"max_pool2d_backward, {describe(grad_y, s)}")
    del grad_pooled, values

    # back through the correlation
    grad_x = fcf.correlate2d_backward_input(grad_y, w, x.shape, padding=1,
                                            n_threads=N_THREADS)
    for s in sorted(set(samples) | set(landmark_samples(grad_x))):
        assert_exact(grad_x[s:s + 1],
                     ref.correlate_backward_input(grad_y[s:s + 1], w,
                                                  (1,) + x.shape[1:], 1, 1),
                     f"correlate2d_backward_input, {describe(grad_x, s)}")
    del grad_x
    grad_w, grad_b = fcf.correlate2d_backward_kernel(x, grad_y, w.shape, padding=1,
                                                     n_threads=N_THREADS)
    expected_w, expected_b = backward_kernel_exact(x, grad_y, w.shape, (1, 1), (1, 1))
    assert_exact(grad_w, expected_w, "correlate2d_backward_kernel grad_w (whole batch)")
    assert_exact(grad_b, expected_b, "correlate2d_backward_kernel grad_b (whole batch)")


def test_correlate2d_strided_forward_and_backward(batch2d, ref):
    """Stride 2 (the interleaved frames): 512 x 24 x 112 x 112 outputs."""
    x, w, bias = batch2d
    y_bytes = x.nbytes * FILTERS_2D // 3 // 4
    require_memory(2 * x.nbytes + 2 * y_bytes, "correlate2d at stride 2")
    y = fcf.correlate2d(x, w, bias, stride=2, padding=1, n_threads=N_THREADS)
    assert y.shape == (512, FILTERS_2D, 112, 112)
    samples = landmark_samples(y)
    for s in samples:
        assert_exact(y[s:s + 1], ref.correlate(x[s:s + 1], w, bias, 2, 1),
                     f"correlate2d stride 2, {describe(y, s)}")
    grad_y = small_ints(np.random.default_rng(112), y.shape, out=y)   # y's memory
    del y
    grad_x = fcf.correlate2d_backward_input(grad_y, w, x.shape, stride=2, padding=1,
                                            n_threads=N_THREADS)
    for s in samples:
        assert_exact(grad_x[s:s + 1],
                     ref.correlate_backward_input(grad_y[s:s + 1], w,
                                                  (1,) + x.shape[1:], 2, 1),
                     f"correlate2d_backward_input stride 2, {describe(grad_x, s)}")
    del grad_x
    grad_w, grad_b = fcf.correlate2d_backward_kernel(x, grad_y, w.shape, stride=2,
                                                     padding=1, n_threads=N_THREADS)
    expected_w, expected_b = backward_kernel_exact(x, grad_y, w.shape, (2, 2), (1, 1))
    assert_exact(grad_w, expected_w, "correlate2d_backward_kernel stride 2 grad_w")
    assert_exact(grad_b, expected_b, "correlate2d_backward_kernel stride 2 grad_b")


# ============================================= signals of 10**7 samples

SIGNAL = (2, 2, 10**7)
# Outputs compared at a time: references of 16 MB, whose memory malloc reuses
CHUNK_1D = 2**17


def _input_segment(x, lo, hi, size, stride, padding):
    """The inputs that outputs [lo, hi) of a 1-D window operation read, with
    the padding they read as zeros: an operation without padding on it gives
    those outputs."""
    length = x.shape[-1]
    start, stop = lo * stride - padding, (hi - 1) * stride - padding + size
    segment = x[..., max(0, start):min(length, stop)]
    return np.pad(segment, ((0, 0), (0, 0), (max(0, -start), max(0, stop - length))))


@pytest.mark.parametrize("stride", [1, 2])
def test_correlate1d_on_long_signals(stride, ref):
    """Forward, input and kernel gradients of (2, 2, 10**7) signals with 8
    filters of 3, padding 1, compared everywhere."""
    n, c, length = SIGNAL
    f = 8
    out = (length - 3 + 2) // stride + 1
    x_bytes, y_bytes = n * c * length * 4, n * f * out * 4
    # x, y, grad_y, then grad_x and its reference, patches and their product
    require_memory(4 * x_bytes + 2 * y_bytes, "correlate1d on 10**7 samples")
    rng = np.random.default_rng(10 + stride)
    x = small_ints(rng, SIGNAL)
    w = small_ints(rng, (f, c, 3))
    bias = small_ints(rng, (f,))

    y = fcf.correlate1d(x, w, bias, stride=stride, padding=1, n_threads=N_THREADS)
    for lo in range(0, out, CHUNK_1D):
        hi = min(out, lo + CHUNK_1D)
        assert_exact(y[:, :, lo:hi],
                     ref.correlate(_input_segment(x, lo, hi, 3, stride, 1), w, bias,
                                   stride, 0),
                     f"correlate1d stride {stride}, outputs {lo}..{hi - 1}")
    grad_y = small_ints(rng, y.shape, out=y)   # y's memory
    del y
    grad_x = fcf.correlate1d_backward_input(grad_y, w, x.shape, stride=stride,
                                            padding=1, n_threads=N_THREADS)
    as_4d = (slice(None), slice(None), np.newaxis)
    geometry = ((1, stride), (0, 1))
    assert_exact(grad_x, backward_input_exact(grad_y[as_4d], w[as_4d],
                                              (n, c, 1, length), *geometry)[:, :, 0],
                 f"correlate1d_backward_input stride {stride}")
    del grad_x

    grad_w, grad_b = fcf.correlate1d_backward_kernel(x, grad_y, w.shape, stride=stride,
                                                     padding=1, n_threads=N_THREADS)
    expected_w, expected_b = backward_kernel_exact(x[as_4d], grad_y[as_4d],
                                                   (f, c, 1, 3), *geometry)
    assert_exact(grad_w, expected_w[:, :, 0], "correlate1d_backward_kernel grad_w")
    assert_exact(grad_b, expected_b, "correlate1d_backward_kernel grad_b")


@pytest.mark.parametrize("size, stride", [(3, 2), (4, None)])
def test_pooling1d_on_long_signals(size, stride, ref, assert_close):
    """Max pooling (and its gradient) and average pooling of (2, 2, 10**7)
    normal signals (no ties), compared everywhere."""
    x_bytes = math.prod(SIGNAL) * 4
    # x, y, argmax, its gradient, grad_x, and per plane the float64 reference
    require_memory(4 * x_bytes, "pooling on 10**7 samples")
    rng = np.random.default_rng(size)
    x = rng.standard_normal(SIGNAL, dtype=np.float32)
    step = size if stride is None else stride
    out = (SIGNAL[-1] - size) // step + 1

    y, argmax = fcf.max_pool1d(x, size, stride, n_threads=N_THREADS)
    averaged = fcf.avg_pool1d(x, size, stride, n_threads=N_THREADS)
    for lo in range(0, out, CHUNK_1D):
        hi = min(out, lo + CHUNK_1D)
        segment = _input_segment(x, lo, hi, size, step, 0)
        expected, expected_argmax = ref.max_pool(segment, size, step)
        where = f"max_pool1d {size}/{stride}, outputs {lo}..{hi - 1}"
        assert_exact(y[:, :, lo:hi], expected, where)
        assert_exact(argmax[:, :, lo:hi], expected_argmax + lo * step, where + " argmax")
        in_context(f"avg_pool1d {size}/{stride}, outputs {lo}..{hi - 1}", assert_close,
                   averaged[:, :, lo:hi], ref.avg_pool(segment, size, step),
                   scale=ref.avg_pool(np.abs(segment), size, step))
    del y, averaged

    # argmax is now known right: each gradient goes to its input position
    grad = rng.standard_normal(argmax.shape, dtype=np.float32)
    grad_x = fcf.max_pool1d_backward(grad, argmax, x.shape, n_threads=N_THREADS)
    for s, c in np.ndindex(SIGNAL[:2]):
        index = argmax[s, c].astype(np.intp)
        in_context(f"max_pool1d_backward {size}/{stride}, plane ({s}, {c})", assert_close,
                   grad_x[s, c],
                   np.bincount(index, grad[s, c].astype(np.float64), SIGNAL[-1]),
                   scale=np.bincount(index, np.abs(grad[s, c]).astype(np.float64),
                                     SIGNAL[-1]))


# ================================== past 2**31 and 2**32 elements, lazily

def _row_regions(shape, flat_offsets, radius):
    """(sample, channel, lo, hi): disjoint runs of a (N, C, L) array's rows
    within ``radius`` of each flat element offset, split at row ends."""
    length = shape[-1]
    size = math.prod(shape)
    spans = []                   # flat [lo, hi), overlapping ones merged
    for offset in sorted(flat_offsets):
        lo, hi = max(0, offset - radius), min(size, offset + radius)
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    regions = []
    for lo, hi in spans:
        while lo < hi:
            row, start = divmod(lo, length)
            end = min(hi, (row + 1) * length)
            regions.append((row // shape[1], row % shape[1], start, start + end - lo))
            lo = end
    return regions


def _landmarks(size, itemsize):
    """Flat element offsets worth filling in an array of ``size`` elements:
    its ends and the element and byte offsets of LIMITS inside it."""
    marks = {0, size - 1}
    for limit in LIMITS:
        for unit in (1, itemsize):
            if -(-limit // unit) < size:
                marks.add(-(-limit // unit))
    return sorted(marks)


@pytest.mark.parametrize("shape", [(1, 1, 2**31 + 2**16 + 3), (4, 1, 2**30 + 77)],
                         ids=["one-row-past-2^31", "batch-past-2^32"])
def test_correlate1d_backward_kernel_past_2_31_elements(shape):
    """The kernel gradient of x and grad_y of 8.6 GB (one row of more than
    2**31 samples) or 17 GB each (four rows, 2**32 elements in all), read
    in place by the row products. Only regions around the landmarks hold
    values, so the exact sum is that over those regions."""
    n, _, length = shape
    x = lazy_zeros(shape)
    grad_y = lazy_zeros((n, 1, length - 2))      # kernel 3, stride 1, no padding
    require_memory(64 * MiB, "the kernel gradient on lazily zeroed inputs")
    rng = np.random.default_rng(length)
    regions = _row_regions(shape, _landmarks(x.size, x.itemsize), radius=300)
    for s, c, lo, hi in regions:
        x[s, c, lo:hi] = small_ints(rng, hi - lo)
        hi = min(hi, length - 2)
        if lo < hi:
            grad_y[s, c, lo:hi] = small_ints(rng, hi - lo)

    grad_w, grad_b = fcf.correlate1d_backward_kernel(x, grad_y, (1, 1, 3),
                                                     n_threads=N_THREADS)
    # grad_w[0, 0, a] = sum_i grad_y[i] x[i + a]: grad_y is zero outside the
    # regions, and there x is read as it is
    expected_w, expected_b = np.zeros(3), 0.0
    for s, c, lo, hi in regions:
        hi = min(hi, length - 2)
        g = grad_y[s, c, lo:hi].astype(np.float64)
        expected_b += g.sum()
        for a in range(3):
            expected_w[a] += g @ x[s, c, lo + a:hi + a]
    assert_exact(grad_w.reshape(3), expected_w, f"correlate1d_backward_kernel on {shape}")
    assert_exact(grad_b, [expected_b], f"correlate1d_backward_kernel grad_b on {shape}")


def test_avg_pool1d_on_a_row_past_2_31_elements():
    """One row of 2**31 + 2**20 samples (8.6 GB) in windows of 2**20: the
    last window starts at 2**31. Values around the landmarks; the means
    (sums of integers times 2**-20) are exact."""
    window = 2**20
    x = lazy_zeros((1, 1, 2**31 + window))
    require_memory(64 * MiB, "avg_pool1d on a lazily zeroed row")
    rng = np.random.default_rng(20)
    expected = np.zeros(x.shape[-1] // window)
    for _, _, lo, hi in _row_regions(x.shape, _landmarks(x.size, x.itemsize), 300):
        values = small_ints(rng, hi - lo, -3, 3)
        x[0, 0, lo:hi] = values
        np.add.at(expected, np.arange(lo, hi) // window, values)
    y = fcf.avg_pool1d(x, window, n_threads=N_THREADS)
    assert_exact(y[0, 0], expected / window, "avg_pool1d on a row of 2**31 + 2**20")


def _fill_windows(x, windows, size, rng):
    """Normal values in the given (i, j) windows of x's single plane, the
    last window's largest at its last element (the plane's largest index
    that a window reaches); returns each window's expected max and argmax
    (index in the plane of the first maximum)."""
    width = x.shape[-1]
    expected = {}
    for i, j in windows:
        block = rng.standard_normal((size, size), dtype=np.float32)
        if (i, j) == windows[-1]:
            block[-1, -1] = np.abs(block).max() + 1
        x[0, 0, i * size:(i + 1) * size, j * size:(j + 1) * size] = block
        r, c = np.unravel_index(np.argmax(block), block.shape)
        expected[i, j] = (block[r, c], (i * size + r) * width + j * size + c)
    return expected


def test_max_pool2d_on_a_plane_just_below_the_int32_limit():
    """A plane of 32768 x 65535 = 2**31 - 2**15 elements (8.6 GB), in 8 x 8
    windows: argmax values up to 2**31 - 2**15 - 1 fit int32 and must come
    out exact. Windows of zeros have their maximum at their first element."""
    size, height, width = 8, 32768, 65535
    x = lazy_zeros((1, 1, height, width))
    out = (height // size, width // size)
    require_memory(3 * math.prod(out) * 8, "max_pool2d of a lazily zeroed plane")
    middle = (2**30 // width) // size
    windows = [(0, 0), (0, out[1] - 1), (middle, out[1] // 2), (out[0] - 1, 0),
               (out[0] - 1, out[1] - 2), (out[0] - 1, out[1] - 1)]
    filled = _fill_windows(x, windows, size, np.random.default_rng(8))

    y, argmax = fcf.max_pool2d(x, size, n_threads=N_THREADS)
    assert y.shape == (1, 1) + out
    for (i, j), (value, index) in filled.items():
        assert y[0, 0, i, j] == value, f"max of window {(i, j)}"
        assert argmax[0, 0, i, j] == index, (
            f"argmax of window {(i, j)}: got {argmax[0, 0, i, j]}, expected {index}")
        y[0, 0, i, j], argmax[0, 0, i, j] = 0, (i * size) * width + j * size
    assert filled[out[0] - 1, out[1] - 1][1] == 2**31 - 2**15 - 8   # its last element
    # every other window: zeros, maximum at its corner
    assert not y.any(), f"nonzero maxima of windows of zeros at {np.argwhere(y)[:5]}"
    columns = np.arange(out[1], dtype=np.int64) * size
    for i0 in range(0, out[0], 512):
        rows = np.arange(i0, min(i0 + 512, out[0]), dtype=np.int64)
        assert_exact(argmax[0, 0, i0:i0 + len(rows)],
                     (rows * size * width)[:, None] + columns,
                     f"argmax of the windows of zeros in rows {i0}..")


def test_max_pool2d_on_a_plane_past_the_int32_limit_is_refused_or_exact():
    """A plane of 32768 x 65537 = 2**31 + 2**15 elements: its last windows'
    maxima lie past index 2**31 - 1, which int32 cannot hold. A ValueError
    that says so is fine; wrapped (negative or wrong) indices are not."""
    size, height, width = 8, 32768, 65537
    x = lazy_zeros((1, 1, height, width))
    out = (height // size, width // size)
    require_memory(3 * math.prod(out) * 8, "max_pool2d of a lazily zeroed plane")
    last = (out[0] - 1, out[1] - 1)
    filled = _fill_windows(x, [(0, 0), last], size, np.random.default_rng(9))
    assert filled[last][1] > 2**31
    try:
        y, argmax = fcf.max_pool2d(x, size, n_threads=N_THREADS)
    except ValueError as error:
        assert "int32" in str(error) or str(2**31 - 1) in str(error), error
        return
    for (i, j), (value, index) in filled.items():
        assert y[0, 0, i, j] == value
        assert argmax[0, 0, i, j] == index, (
            f"argmax of window {(i, j)} of a plane of {height * width} elements: got "
            f"{argmax[0, 0, i, j]} ({argmax.dtype}), expected {index}; a plane "
            "this large must be refused or indexed with 64 bits")


def test_pooling1d_past_2_32_elements_in_the_batch(ref, assert_close):
    """(131075, 2, 16389) signals, 4.3e9 elements (17 GB) in all: planes
    start past 2**31 and 2**32 elements. The planes holding the landmarks
    get normal values; every other plane is zeros."""
    shape, size = (2**17 + 3, 2, 2**14 + 5), 256
    x = lazy_zeros(shape)
    planes = shape[0] * shape[1]
    out = shape[2] // size
    require_memory(4 * planes * out * 8, "pooling a lazily zeroed batch")
    assert x.size > 2**32
    rng = np.random.default_rng(256)
    probes = sorted({offset // shape[2] for offset in _landmarks(x.size, x.itemsize)})
    as_nc = [divmod(p, shape[1]) for p in probes]
    for s, c in as_nc:
        x[s, c] = rng.standard_normal(shape[2], dtype=np.float32)

    y, argmax = fcf.max_pool1d(x, size, n_threads=N_THREADS)
    averaged = fcf.avg_pool1d(x, size, n_threads=N_THREADS)
    corners = np.arange(out) * size
    for s, c in as_nc:
        where = f"plane ({s}, {c}), elements from {(s * shape[1] + c) * shape[2]:,}"
        expected, expected_argmax = ref.max_pool(x[s:s + 1, c:c + 1], size)
        assert_exact(y[s, c], expected[0, 0], f"max_pool1d, {where}")
        assert_exact(argmax[s, c], expected_argmax[0, 0], f"max_pool1d argmax, {where}")
        in_context(f"avg_pool1d, {where}", assert_close,
                   averaged[s, c], ref.avg_pool(x[s:s + 1, c:c + 1], size)[0, 0],
                   scale=ref.avg_pool(np.abs(x[s:s + 1, c:c + 1]), size)[0, 0])
        y[s, c], argmax[s, c], averaged[s, c] = 0, corners, 0
    assert_all_equal_to(y, 0, "max_pool1d of planes of zeros")
    assert_all_equal_to(argmax, corners, "max_pool1d argmax of planes of zeros")
    assert_all_equal_to(averaged, 0, "avg_pool1d of planes of zeros")


def test_correlate2d_past_2_31_elements_in_the_batch(ref):
    """x of 14300 x 3 x 224 x 224 = 2.15e9 elements (8.6 GB), at stride 8
    so the output (359 MB) stays small: forward, and the kernel gradient
    from an output gradient that is zero but on the landmark samples."""
    shape, stride, padding = (14300, 3, 224, 224), 8, 1
    x = lazy_zeros(shape)
    assert x.size > 2**31
    out = (224 - 3 + 2 * padding) // stride + 1
    y_shape = (shape[0], 8, out, out)
    require_memory(2 * math.prod(y_shape) * 4, "correlate2d of a lazily zeroed batch")
    rng = np.random.default_rng(14300)
    w = small_ints(rng, (8, 3, 3, 3))
    bias = small_ints(rng, (8,))
    samples = landmark_samples(x)
    # the samples holding element 2**31, bytes 2**31 and 2**32, the last
    assert {14266, 3566, 7133, 14299} <= set(samples)
    for s in samples:
        x[s] = small_ints(rng, shape[1:])

    y = fcf.correlate2d(x, w, bias, stride=stride, padding=padding, n_threads=N_THREADS)
    for s in samples:
        assert_exact(y[s:s + 1], ref.correlate(x[s:s + 1], w, bias, stride, padding),
                     f"correlate2d, {describe(x, s)}")
    assert_all_equal_to(y, bias[:, None, None], "correlate2d of samples of zeros",
                        skip=samples)
    del y

    grad_y = np.zeros(y_shape, np.float32)
    for s in samples:
        grad_y[s] = small_ints(rng, y_shape[1:])
    grad_w, grad_b = fcf.correlate2d_backward_kernel(
        x, grad_y, w.shape, stride=stride, padding=padding, n_threads=N_THREADS)
    expected_w, expected_b = np.zeros(w.shape), np.zeros(8)
    for s in samples:
        part_w, part_b = ref.correlate_backward_kernel(x[s:s + 1], grad_y[s:s + 1],
                                                       w.shape, stride, padding)
        expected_w += part_w
        expected_b += part_b
    assert_exact(grad_w, expected_w, "correlate2d_backward_kernel grad_w")
    assert_exact(grad_b, expected_b, "correlate2d_backward_kernel grad_b")
