"""Input that once corrupted memory or gave wrong answers: arrays reshaped
under a prepared call, outputs that overlap inputs, strides and padding far
beyond the input, planes past int32 indices, misaligned arrays, huge
integers, 0-d arrays. Each must give the right answer or a ValueError /
TypeError naming what is wrong."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcnn.functional as F


def misaligned(a):
    """A copy of ``a`` one byte past an aligned address."""
    a = np.asarray(a)
    buffer = np.zeros(a.nbytes + 1, np.uint8)
    view = buffer[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned
    return view


# ------------------------------------------------ prepared call, reshaped

def test_prepared_call_refuses_an_input_reshaped_in_place():
    x = np.ones((1, 2, 8, 8), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    call = F.prepare(F.correlate2d, x, w)
    call.run(1)
    x.shape = (2, 1, 8, 8)   # the same buffer: legal NumPy
    with pytest.raises(ValueError, match=r"shape \(2, 1, 8, 8\).*\(1, 2, 8, 8\)"):
        call.run(1)
    x.shape = (1, 2, 8, 8)   # back as prepared: runs again
    np.testing.assert_array_equal(call.run(1), np.full((1, 3, 6, 6), 18, np.float32))


@pytest.mark.parametrize("reshaped", ["x", "w", "out"])
def test_prepared_linear_refuses_any_array_reshaped_in_place(reshaped, rng):
    arrays = {"x": rng.standard_normal((4, 6)), "w": rng.standard_normal((3, 6)),
              "out": np.empty((4, 3))}
    call = F.prepare(F.linear, arrays["x"], arrays["w"], out=arrays["out"])
    np.testing.assert_allclose(call.run(2), arrays["x"] @ arrays["w"].T)
    a = arrays[reshaped]
    a.shape = a.shape[::-1]
    with pytest.raises(ValueError, match="prepare the call again"):
        call.run(2)


def test_prepared_call_refuses_its_own_result_reshaped():
    x = np.ones((2, 3, 4, 4))
    call = F.prepare(F.max_pool2d, x, 2)
    y, argmax = call.run(1)
    y.shape = (3, 2, 2, 2)
    with pytest.raises(ValueError, match="prepare the call again"):
        call.run(1)


def test_prepare_refuses_a_misaligned_array():
    with pytest.raises(ValueError, match="aligned"):
        F.prepare(F.relu, misaligned(np.ones(8, np.float32)))


# ------------------------------------------------------ overlapping outputs

def _aliasing_calls():
    """(name, call) pairs: each passes an out= that overlaps an input or
    another output."""
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((3, 3, 3, 3))
    rows = rng.standard_normal((4, 4))
    dense_w = rng.standard_normal((4, 4))
    logits = rng.standard_normal((4, 5))
    pooled = np.empty((2, 3, 4, 4), np.float32)
    params = np.zeros(10)
    return [
        ("correlate2d out=x", lambda: F.correlate2d(img, w, padding=1, out=img)),
        ("correlate2d out=w", lambda: F.correlate2d(
            img[:, :, :3, :3], w, padding=1, out=w.reshape(-1)[:54].reshape(2, 3, 3, 3))),
        ("backward_input out=grad_y", lambda: F.correlate2d_backward_input(
            img, w, (2, 3, 8, 8), padding=1, out=img)),
        ("backward_input_mirrored out=w", lambda: F.correlate2d_backward_input_mirrored(
            img[:, :, :3, :3].copy(), w, (2, 3, 3, 3), padding=1, out=w.reshape(3, 3, 3, 3))),
        ("backward_kernel grad_w=x", lambda: F.correlate2d_backward_kernel(
            img, img, (3, 3, 3, 3), padding=1, out=(img.reshape(-1)[:81].reshape(3, 3, 3, 3),
                                                   np.empty(3)))),
        ("backward_kernel grad_w overlaps grad_b", lambda: F.correlate2d_backward_kernel(
            img, img, (3, 3, 3, 3), padding=1,
            out=(w, w.reshape(-1)[:3]))),
        ("max_pool2d y and argmax", lambda: F.max_pool2d(
            img.astype(np.float32), 2, out=(pooled, pooled.view(np.int32)))),
        ("avg_pool2d out=x", lambda: F.avg_pool2d(
            img, 2, out=img.reshape(-1)[:96].reshape(2, 3, 4, 4))),
        ("linear out=x", lambda: F.linear(rows, dense_w, out=rows)),
        ("linear_backward_input out=w", lambda: F.linear_backward_input(
            rows, dense_w, out=dense_w)),
        ("linear_backward_weight out=x", lambda: F.linear_backward_weight(
            rows, dense_w, out=(rows, np.empty(4)))),
        ("relu shifted", lambda: F.relu(rows.reshape(-1)[:8], out=rows.reshape(-1)[1:9])),
        ("relu_backward shifted", lambda: F.relu_backward(
            rows.reshape(-1)[:8], rows.reshape(-1)[8:], out=rows.reshape(-1)[1:9])),
        ("take_samples out=x", lambda: F.take_samples(rows, [1, 2, 3, 0], out=rows)),
        ("softmax_cross_entropy out=logits", lambda: F.softmax_cross_entropy(
            logits, [0, 1, 2, 3], out=logits)),
        ("sgd params=velocity", lambda: F.sgd_update(
            params, np.ones(10), params, 0.1)),
        ("adam moments overlap", lambda: F.adam_update(
            params, np.ones(10), params.copy(), params, 1, 0.1)),
    ]


@pytest.mark.parametrize("name,call", _aliasing_calls(),
                         ids=[n.replace(" ", "-") for n, _ in _aliasing_calls()])
def test_an_output_overlapping_an_input_or_output_is_refused(name, call):
    with pytest.raises(ValueError, match="shares memory"):
        call()


def test_relu_runs_in_place_on_the_very_same_array(rng):
    x = rng.standard_normal((3, 5))
    expected = np.maximum(x, 0)
    assert F.relu(x, out=x) is x
    np.testing.assert_array_equal(x, expected)
    grad = rng.standard_normal((3, 5))
    expected = np.where(x > 0, grad, 0)
    assert F.relu_backward(grad, x, out=grad) is grad
    np.testing.assert_array_equal(grad, expected)


# ---------------------------------------- scratch sized by what is read

def test_scratch_does_not_grow_with_stride_or_padding():
    """Strides and padding far beyond a 4x4 input read a few values; before,
    the kernels' frames spanned stride x output width (stride 2**24: 369
    MiB) and the whole padding."""
    script = textwrap.dedent("""
        import json, resource
        import numpy as np
        import fastcnn.functional as F
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 2, 2), np.float32)
        F.correlate2d(x, w)
        before = peak()
        for stride, padding in [(2**24, 0), (2**31 - 1, 1), (2**20, 2**20),
                                ((1, 2**22), (0, 2**21))]:
            y = F.correlate2d(x, w, stride=stride, padding=padding)
            F.correlate2d_backward(x, w, np.ones_like(y), stride=stride, padding=padding)
        print(json.dumps(peak() - before))
    """)
    grown = json.loads(subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        check=True).stdout)
    assert grown < 32, f"{grown:.0f} MiB of scratch for a 4x4 input"


@pytest.mark.parametrize("geometry", [
    dict(stride=7, padding=9),          # windows in the padding on both sides
    dict(stride=(5, 2), padding=(6, 2)),
    dict(stride=40, padding=20),        # no window reads the input
    dict(stride=(2**20, 1), padding=(0, 1)),  # one output row
])
def test_strides_and_padding_beyond_the_input_give_the_definition(geometry, rng, ref,
                                                                    assert_close):
    x = rng.standard_normal((2, 3, 5, 6))
    w = rng.standard_normal((4, 3, 2, 3))
    bias = rng.standard_normal(4)
    y = F.correlate2d(x, w, bias, **geometry)
    assert_close(y, ref.correlate(x, w, bias, **geometry))
    grad_y = rng.standard_normal(y.shape)
    grad_x, grad_w, grad_b = F.correlate2d_backward(x, w, grad_y, **geometry)
    assert_close(grad_x, ref.correlate_backward_input(grad_y, w, x.shape, **geometry))
    expected_w, expected_b = ref.correlate_backward_kernel(x, grad_y, w.shape, **geometry)
    assert_close(grad_w, expected_w)
    assert_close(grad_b, expected_b)
    # prepared, run twice on new values
    out = np.empty_like(y)
    call = F.prepare(F.correlate2d, x, w, bias, **geometry, out=out)
    for _ in range(2):
        x[...] = rng.standard_normal(x.shape)
        assert_close(call.run(2), ref.correlate(x, w, bias, **geometry))


# ------------------------------------------------------ int32 argmax planes

def test_max_pooling_refuses_planes_past_int32_indices():
    signal = np.broadcast_to(np.float32(1), (1, 1, 2**31 + 2**29))   # not copied
    with pytest.raises(ValueError, match="int32"):
        F.max_pool1d(signal, 2)
    grad_y = np.ones((1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="int32"):
        F.max_pool1d_backward(grad_y, np.zeros((1, 1, 1), np.int32), (1, 1, 2**31))


# --------------------------------------------------------- misaligned arrays

def test_misaligned_inputs_are_read_correctly(rng, ref, assert_close):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    assert_close(F.correlate2d(misaligned(x), misaligned(w), padding=1),
                 ref.correlate(x, w, padding=1))
    grad_y = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    assert_close(F.correlate2d_backward_input(misaligned(grad_y), misaligned(w),
                                              x.shape, padding=1),
                 ref.correlate_backward_input(grad_y, w, x.shape, padding=1))
    y, argmax = F.max_pool2d(misaligned(x), 2)
    expected_y, expected_argmax = ref.max_pool(x, 2)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(
        F.max_pool2d_backward(misaligned(grad_y[:, :3, :3, :3]), misaligned(argmax),
                              x.shape),
        ref.max_pool_backward(grad_y[:, :3, :3, :3], expected_argmax, x.shape))
    assert_close(F.avg_pool2d(misaligned(x), 3), ref.avg_pool(x, 3))
    rows, dense_w = x.reshape(2, -1), w.reshape(4, -1)[:, :18].copy()
    assert_close(F.linear(misaligned(rows[:, :18]), misaligned(dense_w)),
                 rows[:, :18] @ dense_w.T)
    np.testing.assert_array_equal(F.relu(misaligned(x)), np.maximum(x, 0))
    np.testing.assert_array_equal(
        F.take_samples(misaligned(x), misaligned(np.array([1, 0, 1]))), x[[1, 0, 1]])
    logits = rng.standard_normal((3, 4))
    loss, _ = F.softmax_cross_entropy(misaligned(logits), misaligned(np.array([0, 3, 1])))
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert loss == pytest.approx(-log_p[[0, 1, 2], [0, 3, 1]].mean(), rel=1e-12)


@pytest.mark.parametrize("call", [
    lambda out: F.correlate2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), out=out(1, 1, 2, 2)),
    lambda out: F.relu(np.ones(4), out=out(4)),
    lambda out: F.linear(np.ones((2, 3)), np.ones((2, 3)), out=out(2, 2)),
    lambda out: F.take_samples(np.ones((3, 2)), [0], out=out(1, 2)),
    lambda out: F.sgd_update(out(3), np.ones(3), np.zeros(3), 0.1),
], ids=["correlate2d", "relu", "linear", "take_samples", "sgd_update"])
def test_a_misaligned_output_is_refused(call):
    with pytest.raises(ValueError, match="aligned"):
        call(lambda *shape: misaligned(np.zeros(shape)))


# ------------------------------------------------------- exception types

@pytest.mark.parametrize("call,name", [
    (lambda: F.correlate2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), stride=2**63), "stride"),
    (lambda: F.correlate1d(np.ones((1, 1, 4)), np.ones((1, 1, 2)), padding=2**100), "padding"),
    (lambda: F.max_pool2d(np.ones((1, 1, 4, 4)), 2, stride=2**63), "stride"),
    (lambda: F.avg_pool1d(np.ones((1, 1, 4)), 2, stride=2**64), "stride"),
    (lambda: F.relu(np.ones(3), n_threads=2**31), "n_threads"),
    (lambda: F.relu(np.ones(3), n_threads=-2**63), "n_threads"),
    (lambda: F.output_size(4, 2, 0), "stride"),
    (lambda: F.output_size(4, 9), "kernel_size"),
    (lambda: F.output_size(0, 1), "input_size"),
    (lambda: F.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 1, 0.1,
                           beta_1=1.0), "beta_1"),
    (lambda: F.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 1, 0.1,
                           beta_2=1.5), "beta_2"),
    (lambda: F.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 1, 0.1,
                           epsilon=-1), "epsilon"),
    (lambda: F.adam_update(np.ones(3), np.ones(3), np.zeros(3), np.zeros(3), 1,
                           float("nan")), "learning_rate"),
    (lambda: F.sgd_update(np.ones(3), np.ones(3), np.zeros(3), -0.1), "learning_rate"),
    (lambda: F.sgd_update(np.ones(3), np.ones(3), np.zeros(3), 0.1, momentum=-1), "momentum"),
    (lambda: F.sgd_update(np.ones(3), np.ones(3), np.zeros(3), 0.1, l2=-1), "l2"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_a_padded_sample_larger_than_memory_is_refused():
    with pytest.raises(ValueError, match="padding"):
        F.correlate2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)),
                      padding=2**30, stride=2**31 - 1)


# --------------------------------------------------------------- 0-d relu

def test_relu_keeps_zero_dimensional_arrays():
    assert F.relu(np.array(-2.0)).shape == ()
    out = np.array(5.0)
    assert F.relu(np.array(3.0), out=out) is out and out == 3.0
    grad = F.relu_backward(np.array(2.0), np.array(1.0))
    assert grad.shape == () and grad == 2.0
    assert F.relu_backward(np.array(2.0), np.array(-1.0)) == 0.0
