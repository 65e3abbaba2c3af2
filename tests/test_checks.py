"""The argument checks of fastcnn.functional: accepted layouts and dtypes,
the error (type and message) for every kind of bad input, and the ``out=``
parameter of every function that has one (returned, filled, and refused
when of the wrong shape, dtype, layout or type)."""
import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import abs64, f64, normal

# ---------------------------------------------------------------- layouts


def channels_last_view(a):
    """a's values, as a transposed view of a channels-last array (arrays
    without spatial axes, like bias, are returned as they are)."""
    if a.ndim < 3:
        return a
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)


def strided_view(a):
    """a's values, as every other element of a twice larger array."""
    every_other = tuple(slice(None, None, 2) for _ in a.shape)
    big = np.full(tuple(2 * n for n in a.shape), 7, dtype=a.dtype)
    big[every_other] = a
    return big[every_other]


def reversed_view(a):
    """a's values, with negative strides on every axis."""
    return np.flip(np.flip(a).copy())


def read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def read_only_strided(a):
    view = strided_view(a)
    view.setflags(write=False)
    return view


def misaligned(a):
    """a's values in C order, at an address that is not a multiple of the
    item size."""
    buffer = np.empty(a.nbytes + 1, dtype=np.uint8)
    view = buffer[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned
    return view


LAYOUTS = {
    "fortran": np.asfortranarray,
    "channels_last": channels_last_view,
    "strided": strided_view,
    "negative_strides": reversed_view,
    "read_only": read_only,
    "read_only_strided": read_only_strided,
    "misaligned": misaligned,
}
# these give the kernels something other than a C-contiguous array
NON_CONTIGUOUS_LAYOUTS = {"fortran", "channels_last", "strided", "negative_strides",
                          "read_only_strided"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_layout_gives_the_contiguous_result(kernel_name, layout, dtype,
                                                make_kernel_call):
    """Every array argument (data, kernels, bias, gradients, argmax) in
    another memory layout: same bits as with C-contiguous arrays."""
    call = make_kernel_call(kernel_name, dtype)
    expected = call()
    transform = LAYOUTS[layout]
    arrays = [transform(a) if isinstance(a, np.ndarray) else a for a in call.args]
    for original, changed in zip(call.args, arrays):
        if isinstance(original, np.ndarray):
            assert np.array_equal(original, changed)
            if layout in NON_CONTIGUOUS_LAYOUTS and original.ndim > 1:
                assert not changed.flags.c_contiguous
    outputs = call.with_args(arrays)()
    for got, want in zip(outputs, expected):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_inputs_are_not_modified(kernel_name, dtype, make_kernel_call):
    call = make_kernel_call(kernel_name, dtype)
    copies = [a.copy() if isinstance(a, np.ndarray) else a for a in call.args]
    call()
    for before, after in zip(copies, call.args):
        if isinstance(before, np.ndarray):
            assert np.array_equal(before, after)


# ----------------------------------------------------------------- dtypes

def test_every_function_returns_the_input_dtype(kernel_name, dtype, make_kernel_call):
    outputs = make_kernel_call(kernel_name, dtype)()
    for output in outputs:
        if kernel_name.startswith("max_pool") and output.dtype.kind == "i":
            assert output.dtype == np.int32  # argmax
        else:
            assert output.dtype == dtype


def test_float32_agrees_with_float64(kernel_name, make_kernel_call):
    """The same values (float32-representable) computed in float32 and in
    float64: close relative to the magnitude of the result."""
    call32 = make_kernel_call(kernel_name, np.float32)
    call64 = call32.with_args([
        a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a
        for a in call32.args])
    for got32, got64 in zip(call32(), call64()):
        if got32.dtype.kind == "i":  # argmax: the same values have the same maxima
            np.testing.assert_array_equal(got32, got64)
        else:
            assert got32.dtype == np.float32 and got64.dtype == np.float64
            np.testing.assert_allclose(got32, got64, rtol=0,
                                       atol=1e-4 * np.abs(got64).max())


# ----------------------------------------------------------------- errors

# A valid 2-D problem (stride 1, no padding: output 4x4) ...
X = np.ones((2, 3, 6, 5))
W = np.ones((4, 3, 3, 2))
BIAS = np.ones(4)
GRAD_Y = np.ones((2, 4, 4, 4))
# ... a valid 1-D one (output length 8) ...
X1 = np.ones((2, 3, 10))
W1 = np.ones((4, 3, 3))
GRAD_Y1 = np.ones((2, 4, 8))
# ... and a pooling (2x2 windows: output 3x2).
POOLED_GRAD = np.ones((2, 3, 3, 2))
ARGMAX = np.zeros((2, 3, 3, 2), dtype=np.int32)


def _with(a, dtype):
    return a.astype(dtype)


def _argmax_with(value):
    argmax = ARGMAX.copy()
    argmax[1, 2, 2, 1] = value
    return argmax


# re.search of this pattern succeeds when the message names both dtypes
BOTH_FLOAT_DTYPES = r"(?=.*float32)(?=.*float64)"

ERROR_CASES = [
    # wrong number of dimensions
    ("correlate2d-x-3d", lambda: fcf.correlate2d(X[0], W), ValueError, "x must have 4 dimensions"),
    ("correlate2d-x-5d", lambda: fcf.correlate2d(X[None], W), ValueError, "x must have 4 dimensions"),
    ("correlate2d-w-3d", lambda: fcf.correlate2d(X, W[0]), ValueError, "w must have 4 dimensions"),
    ("correlate1d-x-4d", lambda: fcf.correlate1d(X, W1), ValueError, "x must have 3 dimensions"),
    ("correlate1d-w-4d", lambda: fcf.correlate1d(X1, W), ValueError, "w must have 3 dimensions"),
    ("backward_input-grad_y-3d", lambda: fcf.correlate2d_backward_input(GRAD_Y[0], W, X.shape),
     ValueError, "grad_y"),
    ("max_pool2d-x-3d", lambda: fcf.max_pool2d(X[0], 2), ValueError, "x must have 4 dimensions"),
    ("max_pool1d-x-4d", lambda: fcf.max_pool1d(X, 2), ValueError, "x must have 3 dimensions"),
    ("avg_pool2d-x-2d", lambda: fcf.avg_pool2d(X[0, 0], 2), ValueError, "x must have 4 dimensions"),
    ("correlate2d-x-0d", lambda: fcf.correlate2d(np.float64(1), W), ValueError, "x"),
    # channel mismatch
    ("correlate2d-channels", lambda: fcf.correlate2d(X, W[:, :2]), ValueError, "channels"),
    ("correlate1d-channels", lambda: fcf.correlate1d(X1[:, :1], W1), ValueError, "channels"),
    ("backward-channels", lambda: fcf.correlate2d_backward(X, W[:, :2], GRAD_Y),
     ValueError, "channels"),
    ("backward_input-channels",
     lambda: fcf.correlate2d_backward_input(GRAD_Y, W, (2, 2, 6, 5)), ValueError, "channels"),
    ("backward_kernel-channels",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, (4, 2, 3, 2)), ValueError, "channels"),
    ("mirrored-channels",
     lambda: fcf.correlate2d_backward_input_mirrored(GRAD_Y, W, (2, 5, 6, 5)),
     ValueError, "channels"),
    # kernel larger than the padded input
    ("correlate2d-kernel-too-tall", lambda: fcf.correlate2d(X, np.ones((4, 3, 7, 2))),
     ValueError, "larger than the padded input"),
    ("correlate2d-kernel-too-wide-padded",
     lambda: fcf.correlate2d(X, np.ones((4, 3, 3, 8)), padding=1),
     ValueError, "larger than the padded input"),
    ("correlate1d-kernel-too-long", lambda: fcf.correlate1d(X1, np.ones((4, 3, 11))),
     ValueError, "larger than the padded input"),
    ("backward_kernel-kernel-too-large",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, (4, 3, 9, 2)),
     ValueError, "larger than the padded input"),
    # stride and padding out of range
    ("correlate2d-stride-0", lambda: fcf.correlate2d(X, W, stride=0), ValueError, "stride"),
    ("correlate2d-stride-negative", lambda: fcf.correlate2d(X, W, stride=-1), ValueError, "stride"),
    ("correlate2d-stride-0-one-axis", lambda: fcf.correlate2d(X, W, stride=(1, 0)),
     ValueError, "stride"),
    ("correlate1d-stride-0", lambda: fcf.correlate1d(X1, W1, stride=0), ValueError, "stride"),
    ("backward_input-stride-0",
     lambda: fcf.correlate2d_backward_input(GRAD_Y, W, X.shape, stride=0), ValueError, "stride"),
    ("max_pool2d-stride-0", lambda: fcf.max_pool2d(X, 2, stride=0), ValueError, "stride"),
    ("avg_pool1d-stride-negative", lambda: fcf.avg_pool1d(X1, 2, stride=-2), ValueError, "stride"),
    ("correlate2d-padding-negative", lambda: fcf.correlate2d(X, W, padding=-1),
     ValueError, "padding"),
    ("correlate2d-padding-negative-one-axis", lambda: fcf.correlate2d(X, W, padding=(0, -2)),
     ValueError, "padding"),
    ("backward_kernel-padding-negative",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, W.shape, padding=-1),
     ValueError, "padding"),
    # empty arrays
    ("correlate2d-empty-batch", lambda: fcf.correlate2d(X[:0], W), ValueError, "empty"),
    ("correlate1d-empty-batch", lambda: fcf.correlate1d(X1[:0], W1), ValueError, "empty"),
    ("correlate2d-no-filters", lambda: fcf.correlate2d(X, W[:0]), ValueError, "empty"),
    ("backward-empty-batch", lambda: fcf.correlate2d_backward(X[:0], W, GRAD_Y[:0]),
     ValueError, "empty"),
    ("backward_input-empty-x_shape",
     lambda: fcf.correlate2d_backward_input(GRAD_Y[:0], W, (0, 3, 6, 5)), ValueError, "empty|x_shape"),
    ("max_pool2d-empty-batch", lambda: fcf.max_pool2d(X[:0], 2), ValueError, "empty"),
    ("avg_pool2d-backward-empty-batch",
     lambda: fcf.avg_pool2d_backward(POOLED_GRAD[:0], (0, 3, 6, 5), 2), ValueError, "empty|x_shape"),
    # float32 mixed with float64
    ("correlate2d-x32-w64", lambda: fcf.correlate2d(_with(X, np.float32), W),
     TypeError, BOTH_FLOAT_DTYPES),
    ("correlate2d-x64-w32", lambda: fcf.correlate2d(X, _with(W, np.float32)),
     TypeError, BOTH_FLOAT_DTYPES),
    ("correlate2d-bias32", lambda: fcf.correlate2d(X, W, _with(BIAS, np.float32)),
     TypeError, BOTH_FLOAT_DTYPES),
    ("correlate1d-x32-w64", lambda: fcf.correlate1d(_with(X1, np.float32), W1),
     TypeError, BOTH_FLOAT_DTYPES),
    ("backward-x32-w64", lambda: fcf.correlate2d_backward(_with(X, np.float32), W, GRAD_Y),
     TypeError, BOTH_FLOAT_DTYPES),
    ("backward-grad_y32", lambda: fcf.correlate2d_backward(X, W, _with(GRAD_Y, np.float32)),
     TypeError, BOTH_FLOAT_DTYPES),
    ("backward_input-grad_y32",
     lambda: fcf.correlate2d_backward_input(_with(GRAD_Y, np.float32), W, X.shape),
     TypeError, BOTH_FLOAT_DTYPES),
    ("backward_kernel-x32",
     lambda: fcf.correlate2d_backward_kernel(_with(X, np.float32), GRAD_Y, W.shape),
     TypeError, BOTH_FLOAT_DTYPES),
    ("mirrored-w32",
     lambda: fcf.correlate2d_backward_input_mirrored(GRAD_Y, _with(W, np.float32), X.shape),
     TypeError, BOTH_FLOAT_DTYPES),
    ("correlate1d_backward_kernel-grad_y32",
     lambda: fcf.correlate1d_backward_kernel(X1, _with(GRAD_Y1, np.float32), W1.shape),
     TypeError, BOTH_FLOAT_DTYPES),
    # dtypes other than float32 and float64
    ("correlate2d-int64", lambda: fcf.correlate2d(_with(X, np.int64), W), TypeError, "int64"),
    ("correlate2d-w-int32", lambda: fcf.correlate2d(X, _with(W, np.int32)), TypeError, "int32"),
    ("correlate2d-bool", lambda: fcf.correlate2d(_with(X, bool), W), TypeError, "bool"),
    ("correlate2d-complex", lambda: fcf.correlate2d(_with(X, complex), _with(W, complex)),
     TypeError, "complex128"),
    ("correlate2d-float16", lambda: fcf.correlate2d(_with(X, np.float16), _with(W, np.float16)),
     TypeError, "float16"),
    ("correlate2d-bias-int", lambda: fcf.correlate2d(X, W, _with(BIAS, int)), TypeError, "bias"),
    ("correlate2d-nested-lists-of-ints", lambda: fcf.correlate2d(X.astype(int).tolist(), W),
     TypeError, "int"),
    ("correlate1d-float16", lambda: fcf.correlate1d(_with(X1, np.float16), W1),
     TypeError, "float16"),
    ("backward_input-grad_y-float16",
     lambda: fcf.correlate2d_backward_input(_with(GRAD_Y, np.float16), W, X.shape),
     TypeError, "float16"),
    ("max_pool2d-int", lambda: fcf.max_pool2d(_with(X, np.int32), 2), TypeError, "int32"),
    ("avg_pool2d-bool", lambda: fcf.avg_pool2d(_with(X, bool), 2), TypeError, "bool"),
    ("max_pool1d-complex", lambda: fcf.max_pool1d(_with(X1, np.complex64), 2),
     TypeError, "complex64"),
    ("max_pool2d_backward-grad_y-int",
     lambda: fcf.max_pool2d_backward(_with(POOLED_GRAD, int), ARGMAX, X.shape), TypeError, "int"),
    # bias of the wrong shape
    ("bias-too-long", lambda: fcf.correlate2d(X, W, np.ones(5)), ValueError, "bias"),
    ("bias-2d", lambda: fcf.correlate2d(X, W, np.ones((4, 1))), ValueError, "bias"),
    ("bias-scalar", lambda: fcf.correlate2d(X, W, np.float64(1.0)), ValueError, "bias"),
    ("correlate1d-bias-too-short", lambda: fcf.correlate1d(X1, W1, np.ones(3)),
     ValueError, "bias"),
    # output gradient of the wrong shape
    ("backward-grad_y-rows", lambda: fcf.correlate2d_backward(X, W, GRAD_Y[:, :, :3]),
     ValueError, "grad_y"),
    ("backward-grad_y-filters", lambda: fcf.correlate2d_backward(X, W, GRAD_Y[:, :3]),
     ValueError, "grad_y"),
    ("backward-grad_y-batch", lambda: fcf.correlate2d_backward(X, W, GRAD_Y[:1]),
     ValueError, "grad_y"),
    ("backward-grad_y-for-other-stride",
     lambda: fcf.correlate2d_backward(X, W, GRAD_Y, stride=2), ValueError, "grad_y"),
    ("backward_input-grad_y-cols",
     lambda: fcf.correlate2d_backward_input(GRAD_Y[..., :3], W, X.shape), ValueError, "grad_y"),
    ("backward_kernel-grad_y-padding",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, W.shape, padding=1),
     ValueError, "grad_y"),
    ("mirrored-grad_y-rows",
     lambda: fcf.correlate2d_backward_input_mirrored(GRAD_Y[:, :, 1:], W, X.shape),
     ValueError, "grad_y"),
    ("correlate1d_backward-grad_y-length",
     lambda: fcf.correlate1d_backward(X1, W1, GRAD_Y1[..., :7]), ValueError, "grad_y"),
    ("correlate1d_backward_input-grad_y-length",
     lambda: fcf.correlate1d_backward_input(GRAD_Y1[..., :7], W1, X1.shape), ValueError, "grad_y"),
    ("avg_pool2d_backward-grad_y-shape",
     lambda: fcf.avg_pool2d_backward(POOLED_GRAD[:, :, :2], X.shape, 2), ValueError, "grad_y"),
    ("avg_pool1d_backward-grad_y-shape",
     lambda: fcf.avg_pool1d_backward(np.ones((2, 3, 4)), X1.shape, 2), ValueError, "grad_y"),
    ("max_pool2d_backward-grad_y-channels",
     lambda: fcf.max_pool2d_backward(POOLED_GRAD[:, :2], ARGMAX[:, :2], X.shape),
     ValueError, "grad_y"),
    # shapes passed as tuples
    ("backward_input-x_shape-3", lambda: fcf.correlate2d_backward_input(GRAD_Y, W, (2, 3, 6)),
     ValueError, "x_shape"),
    ("backward_input-x_shape-not-ints",
     lambda: fcf.correlate2d_backward_input(GRAD_Y, W, (2, 3, 6.5, 5)), TypeError, "x_shape"),
    ("backward_kernel-w_shape-5",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, (4, 3, 3, 2, 1)), ValueError, "w_shape"),
    ("backward_kernel-w_shape-negative",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, (4, 3, -3, 2)), ValueError, "w_shape"),
    ("max_pool2d_backward-x_shape-int",
     lambda: fcf.max_pool2d_backward(POOLED_GRAD, ARGMAX, 6), TypeError, "x_shape"),
    # pool windows
    ("max_pool2d-size-too-tall", lambda: fcf.max_pool2d(X, (7, 2)), ValueError, "pool size"),
    ("avg_pool2d-size-too-wide", lambda: fcf.avg_pool2d(X, (2, 6)), ValueError, "pool size"),
    ("max_pool1d-size-too-long", lambda: fcf.max_pool1d(X1, 11), ValueError, "pool size"),
    ("avg_pool2d_backward-size-too-large",
     lambda: fcf.avg_pool2d_backward(np.ones((2, 3, 1, 1)), X.shape, 7), ValueError, "pool size"),
    ("max_pool2d-size-0", lambda: fcf.max_pool2d(X, 0), ValueError, "size"),
    ("avg_pool2d-size-negative", lambda: fcf.avg_pool2d(X, (2, -1)), ValueError, "size"),
    # argmax
    ("argmax-past-the-plane", lambda: fcf.max_pool2d_backward(POOLED_GRAD, _argmax_with(30), X.shape),
     ValueError, "argmax"),
    ("argmax-negative", lambda: fcf.max_pool2d_backward(POOLED_GRAD, _argmax_with(-1), X.shape),
     ValueError, "argmax"),
    ("argmax-huge-int64",
     lambda: fcf.max_pool2d_backward(POOLED_GRAD, _argmax_with(-1).astype(np.int64) + 2**40,
                                     X.shape), ValueError, "argmax"),
    ("argmax-wraps-in-int32",  # 2**32 would be 0 after a blind cast to int32
     lambda: fcf.max_pool2d_backward(POOLED_GRAD, ARGMAX.astype(np.uint64) + 2**32, X.shape),
     ValueError, "argmax"),
    ("max_pool1d_backward-argmax-past-the-signal",
     lambda: fcf.max_pool1d_backward(np.ones((2, 3, 5)), np.full((2, 3, 5), 10), X1.shape),
     ValueError, "argmax"),
    ("argmax-wrong-shape",
     lambda: fcf.max_pool2d_backward(POOLED_GRAD, ARGMAX[:, :, :2], X.shape), ValueError, "argmax"),
    ("argmax-float", lambda: fcf.max_pool2d_backward(POOLED_GRAD, _with(ARGMAX, float), X.shape),
     TypeError, "argmax"),
    ("argmax-bool", lambda: fcf.max_pool2d_backward(POOLED_GRAD, _with(ARGMAX, bool), X.shape),
     TypeError, "argmax"),
    # per-axis tuples of the wrong length
    ("stride-3-tuple", lambda: fcf.correlate2d(X, W, stride=(1, 1, 1)), ValueError, "stride"),
    ("stride-1-tuple-2d", lambda: fcf.correlate2d(X, W, stride=(1,)), ValueError, "stride"),
    ("padding-3-tuple", lambda: fcf.correlate2d(X, W, padding=[0, 0, 0]), ValueError, "padding"),
    ("correlate1d-stride-2-tuple", lambda: fcf.correlate1d(X1, W1, stride=(1, 1)),
     ValueError, "stride"),
    ("max_pool2d-size-3-tuple", lambda: fcf.max_pool2d(X, (2, 2, 2)), ValueError, "size"),
    ("avg_pool2d-stride-empty-tuple", lambda: fcf.avg_pool2d(X, 2, stride=()), ValueError, "stride"),
    # parameters that are not ints
    ("stride-1.5", lambda: fcf.correlate2d(X, W, stride=1.5), TypeError, "stride"),
    ("stride-float-2.0", lambda: fcf.correlate2d(X, W, stride=2.0), TypeError, "stride"),
    ("stride-numpy-float", lambda: fcf.correlate2d(X, W, stride=np.float64(2)), TypeError, "stride"),
    ("stride-string", lambda: fcf.correlate2d(X, W, stride="2"), TypeError, "stride"),
    ("stride-bool", lambda: fcf.correlate2d(X, W, stride=True), TypeError, "stride"),
    ("stride-tuple-with-float", lambda: fcf.correlate2d(X, W, stride=(1, 1.5)), TypeError, "stride"),
    ("padding-0.5", lambda: fcf.correlate2d(X, W, padding=0.5), TypeError, "padding"),
    ("padding-None", lambda: fcf.correlate2d(X, W, padding=None), TypeError, "padding"),
    ("correlate1d-stride-1.5", lambda: fcf.correlate1d(X1, W1, stride=1.5), TypeError, "stride"),
    ("max_pool2d-size-2.0", lambda: fcf.max_pool2d(X, 2.0), TypeError, "size"),
    ("avg_pool2d-stride-1.5", lambda: fcf.avg_pool2d(X, 2, stride=1.5), TypeError, "stride"),
    # n_threads
    ("correlate2d-n_threads-0", lambda: fcf.correlate2d(X, W, n_threads=0), ValueError, "n_threads"),
    ("backward-n_threads-1.5", lambda: fcf.correlate2d_backward(X, W, GRAD_Y, n_threads=1.5),
     ValueError, "n_threads"),
    ("backward_kernel-n_threads-True",
     lambda: fcf.correlate2d_backward_kernel(X, GRAD_Y, W.shape, n_threads=True),
     ValueError, "n_threads"),
    ("max_pool2d-n_threads-0", lambda: fcf.max_pool2d(X, 2, n_threads=0), ValueError, "n_threads"),
    ("avg_pool1d_backward-n_threads-0",
     lambda: fcf.avg_pool1d_backward(np.ones((2, 3, 5)), X1.shape, 2, n_threads=0),
     ValueError, "n_threads"),
    ("max_pool2d_backward-n_threads-0",
     lambda: fcf.max_pool2d_backward(POOLED_GRAD, ARGMAX, X.shape, n_threads=0),
     ValueError, "n_threads"),
]


@pytest.mark.parametrize("call, error, message",
                         [pytest.param(*case[1:], id=case[0]) for case in ERROR_CASES])
def test_bad_input_raises_a_helpful_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_valid_problems_behind_the_error_cases_are_valid():
    """The error cases each change one thing of these: they must be valid."""
    y = fcf.correlate2d(X, W, BIAS)
    assert y.shape == GRAD_Y.shape
    fcf.correlate2d_backward(X, W, GRAD_Y)
    fcf.correlate2d_backward_input_mirrored(GRAD_Y, W, X.shape)
    assert fcf.correlate1d(X1, W1, BIAS).shape == GRAD_Y1.shape
    fcf.correlate1d_backward(X1, W1, GRAD_Y1)
    pooled, argmax = fcf.max_pool2d(X, 2)
    assert pooled.shape == argmax.shape == ARGMAX.shape == POOLED_GRAD.shape
    fcf.max_pool2d_backward(POOLED_GRAD, ARGMAX, X.shape)
    fcf.avg_pool2d_backward(POOLED_GRAD, X.shape, 2)
    assert fcf.max_pool1d(X1, 2)[0].shape == (2, 3, 5)
    fcf.avg_pool1d_backward(np.ones((2, 3, 5)), X1.shape, 2)


def test_zero_dimensional_array_stride_is_an_int():
    x = np.ones((1, 1, 5, 5))
    w = np.ones((1, 1, 2, 2))
    expected = fcf.correlate2d(x, w, stride=2)
    np.testing.assert_array_equal(fcf.correlate2d(x, w, stride=np.array(2)), expected)


# ============================================================ out= arrays

class Output:
    """One output of a function: its reference value, the magnitude bounding
    its rounding error (None: must be exact) and its dtype."""

    def __init__(self, expected, scale, dtype):
        self.expected, self.scale, self.dtype = np.asarray(expected), scale, np.dtype(dtype)

    @property
    def shape(self):
        return self.expected.shape


def _conv(rng, dtype, ref, x_shape, w_shape, stride, padding):
    x, w, b = (normal(rng, s, dtype) for s in (x_shape, w_shape, w_shape[:1]))
    y_shape = ref.correlate(x, w, b, stride, padding).shape
    return x, w, b, normal(rng, y_shape, dtype)


# (x shape, w shape, stride, padding): the transposed product for the input
# gradient, and the mirrored correlation (8+ channels, stride 1).
CONV_GEOMETRY = {
    2: ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 0)),
    1: ((2, 3, 11), (4, 3, 3), 2, 1),
}
CONV_GEOMETRY_MIRRORED = {
    2: ((2, 9, 6, 5), (3, 9, 3, 2), 1, 1),
    1: ((2, 9, 10), (3, 9, 3), 1, 2),
}
POOL_GEOMETRY = {2: ((2, 3, 7, 8), (3, 2), (2, 3)), 1: ((2, 3, 13), 3, 2)}


def _make_out_case(name, rng, dtype, ref):
    """call(out) -> the function's result, and its Outputs."""
    function_name = name.split(":")[0]
    op = function_name.replace("1d", "").replace("2d", "")
    fn = getattr(fcf, function_name)
    if op in _ELEMENTWISE_OUT_CASES:
        return _ELEMENTWISE_OUT_CASES[op](fn, rng, dtype)
    ndim = 1 if "1d" in name else 2
    if op.startswith("correlate"):
        return _correlation_out_case(name, op, fn, ndim, rng, dtype, ref)
    return _pooling_out_case(name, op, fn, ndim, rng, dtype, ref)


def _linear_out_case(fn, rng, dtype):
    x, w, b = (normal(rng, s, dtype) for s in [(13, 21), (10, 21), (10,)])
    return (lambda out: fn(x, w, b, out=out),
            [Output(f64(x) @ f64(w).T + f64(b), abs64(x) @ abs64(w).T + abs64(b), dtype)])


def _linear_backward_input_out_case(fn, rng, dtype):
    g, w = normal(rng, (13, 10), dtype), normal(rng, (10, 21), dtype)
    return (lambda out: fn(g, w, out=out),
            [Output(f64(g) @ f64(w), abs64(g) @ abs64(w), dtype)])


def _linear_backward_weight_out_case(fn, rng, dtype):
    x, g = normal(rng, (13, 21), dtype), normal(rng, (13, 10), dtype)
    return (lambda out: fn(x, g, out=out),
            [Output(f64(g).T @ f64(x), abs64(g).T @ abs64(x), dtype),
             Output(f64(g).sum(0), abs64(g).sum(0), dtype)])


def _relu_out_case(fn, rng, dtype):
    x = normal(rng, (6, 7), dtype)
    return lambda out: fn(x, out=out), [Output(np.maximum(x, 0), None, dtype)]


def _relu_backward_out_case(fn, rng, dtype):
    g, y = normal(rng, (6, 7), dtype), np.maximum(normal(rng, (6, 7), dtype), 0)
    return lambda out: fn(g, y, out=out), [Output(np.where(y > 0, g, 0), None, dtype)]


_ELEMENTWISE_OUT_CASES = {
    "linear": _linear_out_case,
    "linear_backward_input": _linear_backward_input_out_case,
    "linear_backward_weight": _linear_backward_weight_out_case,
    "relu": _relu_out_case,
    "relu_backward": _relu_backward_out_case,
}


def _activation_out_case(reference, takes_y=False, backward=None, keywords=None):
    """The out case of an activation (``backward``: the derivative from the
    activation the backward pass reads, y when ``takes_y``, else x)."""
    keywords = keywords or {}

    def case(fn, rng, dtype):
        x = normal(rng, (6, 7), dtype)
        if backward is None:
            return (lambda out: fn(x, **keywords, out=out),
                    [Output(reference(f64(x)), abs64(reference(f64(x))) + 1e-30, dtype)])
        g = normal(rng, (6, 7), dtype)
        read = reference(f64(x)).astype(dtype) if takes_y else x
        expected = f64(g) * backward(f64(read))
        return (lambda out: fn(g, read, **keywords, out=out),
                [Output(expected, np.abs(expected) + 1e-30, dtype)])
    return case


def _sigmoid_ref(x):
    return 1 / (1 + np.exp(-x))


def _gelu_ref(x):
    from scipy.special import ndtr
    return x * ndtr(x)


def _gelu_derivative(x):
    from scipy.special import ndtr
    return ndtr(x) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


_ELEMENTWISE_OUT_CASES.update({
    "tanh": _activation_out_case(np.tanh),
    "tanh_backward": _activation_out_case(np.tanh, True, lambda y: 1 - y * y),
    "sigmoid": _activation_out_case(_sigmoid_ref),
    "sigmoid_backward": _activation_out_case(_sigmoid_ref, True, lambda y: y * (1 - y)),
    "leaky_relu": _activation_out_case(lambda x: np.where(x > 0, x, 0.3 * x),
                                       keywords={"negative_slope": 0.3}),
    "leaky_relu_backward": _activation_out_case(
        lambda x: np.where(x > 0, x, 0.3 * x), True, lambda y: np.where(y > 0, 1, 0.3),
        {"negative_slope": 0.3}),
    "elu": _activation_out_case(lambda x: np.where(x > 0, x, 2 * np.expm1(x)),
                                keywords={"alpha": 2.0}),
    "elu_backward": _activation_out_case(
        lambda x: np.where(x > 0, x, 2 * np.expm1(x)), True,
        lambda y: np.where(y > 0, 1, y + 2), {"alpha": 2.0}),
    "gelu": _activation_out_case(_gelu_ref),
    "gelu_backward": _activation_out_case(_gelu_ref, False, _gelu_derivative),
})


def _correlation_out_case(name, op, fn, ndim, rng, dtype, ref):
    geometry = CONV_GEOMETRY_MIRRORED if "mirrored" in name else CONV_GEOMETRY
    x_shape, w_shape, stride, padding = geometry[ndim]
    if name.endswith(":strided"):
        stride = 2
    x, w, b, g = _conv(rng, dtype, ref, x_shape, w_shape, stride, padding)
    kw = dict(stride=stride, padding=padding)
    if op == "correlate":
        return (lambda out: fn(x, w, b, **kw, out=out),
                [Output(ref.correlate(x, w, b, stride, padding),
                        ref.correlate(abs64(x), abs64(w), abs64(b), stride, padding), dtype)])
    if op.startswith("correlate_backward_input"):
        return (lambda out: fn(g, w, x_shape, **kw, out=out),
                [Output(ref.correlate_backward_input(g, w, x_shape, stride, padding),
                        ref.correlate_backward_input(abs64(g), abs64(w), x_shape, stride,
                                                     padding), dtype)])
    if op == "correlate_backward_kernel":
        expected = ref.correlate_backward_kernel(x, g, w_shape, stride, padding)
        scale = ref.correlate_backward_kernel(abs64(x), abs64(g), w_shape, stride, padding)
        return (lambda out: fn(x, g, w_shape, **kw, out=out),
                [Output(e, s, dtype) for e, s in zip(expected, scale)])
    raise AssertionError(name)


def _pooling_out_case(name, op, fn, ndim, rng, dtype, ref):
    x_shape, size, stride = POOL_GEOMETRY[ndim]
    count = int(np.prod(x_shape))
    x = (rng.permutation(count).reshape(x_shape) * 0.25 - count / 8).astype(dtype)  # no ties
    y, argmax = ref.max_pool(x, size, stride)
    g = normal(rng, y.shape, dtype)
    if op == "max_pool":
        return (lambda out: fn(x, size, stride, out=out),
                [Output(y, None, dtype), Output(argmax, None, np.int32)])
    if op == "max_pool_backward":
        return (lambda out: fn(g, argmax.astype(np.int32), x_shape, out=out),
                [Output(ref.max_pool_backward(g, argmax, x_shape),
                        ref.max_pool_backward(abs64(g), argmax, x_shape), dtype)])
    if op == "avg_pool":
        return (lambda out: fn(x, size, stride, out=out),
                [Output(ref.avg_pool(x, size, stride), ref.avg_pool(abs64(x), size, stride),
                        dtype)])
    if op == "avg_pool_backward":
        return (lambda out: fn(g, x_shape, size, stride, out=out),
                [Output(ref.avg_pool_backward(g, x_shape, size, stride),
                        ref.avg_pool_backward(abs64(g), x_shape, size, stride), dtype)])
    raise AssertionError(name)


OUT_CASES = [
    "linear", "linear_backward_input", "linear_backward_weight", "relu", "relu_backward",
    "correlate2d", "correlate1d",
    "correlate2d_backward_input", "correlate2d_backward_input:mirrored-path",
    "correlate2d_backward_input_mirrored:mirrored",
    "correlate2d_backward_input_mirrored:mirrored:strided",
    "correlate1d_backward_input", "correlate1d_backward_input:mirrored-path",
    "correlate2d_backward_kernel", "correlate1d_backward_kernel",
    "max_pool2d", "max_pool1d", "max_pool2d_backward", "max_pool1d_backward",
    "avg_pool2d", "avg_pool1d", "avg_pool2d_backward", "avg_pool1d_backward",
]
OUT_CASES += ["tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "leaky_relu",
              "leaky_relu_backward", "elu", "elu_backward", "gelu", "gelu_backward"]


def _pack(outs):
    return outs[0] if len(outs) == 1 else tuple(outs)


def _fresh_outs(outputs):
    return [np.empty(o.shape, o.dtype) for o in outputs]


def _each_replaced(outputs, make):
    """For each output position k: (k, out argument with position k replaced
    by make(output k), the others valid)."""
    for k, output in enumerate(outputs):
        outs = _fresh_outs(outputs)
        outs[k] = make(output)
        yield k, _pack(outs)


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_is_returned_and_filled(case, dtype, rng, ref, assert_close):
    call, outputs = _make_out_case(case, rng, dtype, ref)
    for _ in range(2):   # twice: a reused out must be overwritten, not added to
        outs = [np.full(o.shape, np.nan if o.dtype.kind == "f" else -7, o.dtype)
                for o in outputs]
        result = call(_pack(outs))
        results = result if isinstance(result, tuple) else (result,)
        assert len(results) == len(outs)
        for got, out, output in zip(results, outs, outputs):
            assert got is out
            if output.scale is None:
                np.testing.assert_array_equal(got, output.expected.astype(output.dtype))
            else:
                assert_close(got, output.expected, scale=output.scale)
    # and the same values without out=
    fresh = call(None)
    fresh = fresh if isinstance(fresh, tuple) else (fresh,)
    for got, out in zip(fresh, outs):
        assert got is not out
        np.testing.assert_array_equal(got, out)


def _wrong_shapes(shape):
    yield shape[:-1] + (shape[-1] + 1,)                 # one too many
    yield shape[:2] + (1,) + shape[2:]                  # an extra axis (a 4-D out for 1-D)
    yield (int(np.prod(shape)),)                        # flattened
    if len(shape) > 1:
        yield shape[::-1] if shape[::-1] != shape else shape + (1,)


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_wrong_shape_raises_value_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)
    for k, output in enumerate(outputs):
        for shape in _wrong_shapes(output.shape):
            if shape == output.shape:
                continue
            outs = _fresh_outs(outputs)
            outs[k] = np.empty(shape, output.dtype)
            with pytest.raises(ValueError, match="shape"):
                call(_pack(outs))


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_wrong_dtype_raises_type_error(case, dtype, rng, ref):
    call, outputs = _make_out_case(case, rng, dtype, ref)
    other_float = np.float32 if dtype == np.float64 else np.float64
    for k, output in enumerate(outputs):
        wrong = ([other_float, np.int32] if output.dtype.kind == "f"
                 else [np.int64, np.uint32, dtype])
        for wrong_dtype in wrong:
            outs = _fresh_outs(outputs)
            outs[k] = np.empty(output.shape, wrong_dtype)
            with pytest.raises(TypeError, match="dtype"):
                call(_pack(outs))


def _non_contiguous(output):
    """Views of output's shape and dtype that are not C-contiguous."""
    shape, dtype = output.shape, output.dtype
    strided = np.empty(tuple(2 * s for s in shape), dtype)[tuple(slice(None, None, 2)
                                                               for _ in shape)]
    views = [strided]
    if len(shape) >= 2:
        views.append(np.empty(shape[::-1], dtype).T)                         # transposed
        views.append(np.empty(shape[:-1] + (shape[-1] + 3,), dtype)[..., 1:-2])  # sliced
    for view in views:
        assert view.shape == shape and not view.flags.c_contiguous
    return views


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_not_contiguous_raises_value_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)
    for k, output in enumerate(outputs):
        for view in _non_contiguous(output):
            outs = _fresh_outs(outputs)
            outs[k] = view
            with pytest.raises(ValueError, match="contiguous"):
                call(_pack(outs))


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_read_only_raises_value_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)

    def read_only(output):
        a = np.zeros(output.shape, output.dtype)
        a.flags.writeable = False
        return a
    for k, out in _each_replaced(outputs, read_only):
        with pytest.raises(ValueError, match="writeable"):
            call(out)
        assert not (out if len(outputs) == 1 else out[k]).any()   # nothing written


@pytest.mark.parametrize("case", OUT_CASES)
def test_out_list_raises_type_error(case, rng, ref):
    call, outputs = _make_out_case(case, rng, np.float64, ref)
    for _, out in _each_replaced(outputs, lambda o: np.zeros(o.shape, o.dtype).tolist()):
        with pytest.raises(TypeError, match="NumPy array"):
            call(out)


def test_correlate1d_out_has_the_signal_shape(rng, ref):
    x_shape, w_shape, stride, padding = CONV_GEOMETRY[1]
    x, w, b, _ = _conv(rng, np.float64, ref, x_shape, w_shape, stride, padding)
    expected = ref.correlate(x, w, b, stride, padding)
    assert expected.ndim == 3
    out = np.empty(expected.shape)
    assert fcf.correlate1d(x, w, b, stride, padding, out=out) is out
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):    # the internal image layout is not accepted
        fcf.correlate1d(x, w, b, stride, padding,
                        out=np.empty(expected.shape[:2] + (1,) + expected.shape[2:]))
