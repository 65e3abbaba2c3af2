"""Softmax cross-entropy of fastcnn.functional: values, stability, gradient, and the targets it accepts.

Every value is checked against a plain NumPy (or SciPy) reference written
here, computed in float64, never against fastcnn itself.
"""
import numpy as np
import pytest
import scipy.special

import fastcnn.functional as fcf
from _helpers.arrays import f64

# ================================================ 5. softmax cross-entropy

def _cross_entropy_ref(logits, target):
    z = f64(logits)
    n = z.shape[0]
    log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
    loss = -log_p[np.arange(n), target].mean()
    onehot = np.zeros_like(z)
    onehot[np.arange(n), target] = 1
    return loss, (np.exp(log_p) - onehot) / n


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 3), (64, 10), (33, 257)], ids=str)
def test_softmax_cross_entropy_matches_reference(shape, dtype, rng):
    n, k = shape
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.integers(0, k, n)
    saved = logits.copy()
    loss, grad = fcf.softmax_cross_entropy(logits, target)
    np.testing.assert_array_equal(logits, saved)
    ref_loss, ref_grad = _cross_entropy_ref(logits, target)
    assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == shape
    eps = np.finfo(dtype).eps
    assert abs(loss - ref_loss) <= 16 * eps * max(1.0, abs(ref_loss))
    np.testing.assert_allclose(grad, ref_grad, rtol=16 * eps, atol=16 * eps / n)
    # every row of the gradient sums to zero, the target entry is negative
    np.testing.assert_allclose(f64(grad).sum(axis=1), 0, atol=16 * eps * k / n)
    assert (grad[np.arange(n), target] <= 0).all()


def test_softmax_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1000, -1000, 0],
                       [-1000, -1000, -1000],
                       [1000, 1000, -1000],
                       [-1000, 1000, -1000]], dtype=dtype)
    target = np.array([0, 2, 2, 0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is fine
        loss, grad = fcf.softmax_cross_entropy(logits, target)
        p = fcf.softmax(logits)
        log_p = fcf.log_softmax(logits)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert np.isfinite(p).all() and np.isfinite(log_p).all()
    # per row: 0, log 3, 2000 + log 2, 2000
    expected = np.mean([0, np.log(3), 2000 + np.log(2), 2000])
    assert loss == pytest.approx(expected, rel=1e-6 if dtype == np.float32 else 1e-13)
    expected_p = np.array([[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0], [0, 1, 0]])
    np.testing.assert_allclose(p, expected_p, atol=4 * np.finfo(dtype).eps)
    onehot = np.eye(3)[target]
    np.testing.assert_allclose(grad, (expected_p - onehot) / 4, atol=4 * np.finfo(dtype).eps)


def test_softmax_cross_entropy_gradient_matches_finite_differences(rng, central_differences):
    logits = 2 * rng.standard_normal((4, 6))
    target = np.array([5, 0, 3, 3])
    _, grad = fcf.softmax_cross_entropy(logits, target)
    numeric = central_differences(
        lambda: fcf.softmax_cross_entropy(logits, target)[0], logits, 1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (50, 1000)], ids=str)
def test_softmax_rows_sum_to_one(shape, dtype, rng):
    logits = (30 * rng.standard_normal(shape)).astype(dtype)
    p = fcf.softmax(logits)
    log_p = fcf.log_softmax(logits)
    assert p.dtype == dtype and log_p.dtype == dtype and p.shape == shape
    assert ((p >= 0) & (p <= 1)).all()
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(f64(p).sum(axis=1), 1, rtol=0,
                               atol=8 * eps * shape[1] ** 0.5 + 4 * eps)
    reference = scipy.special.log_softmax(f64(logits), axis=1)
    np.testing.assert_allclose(log_p, reference, rtol=8 * eps,
                               atol=8 * eps * np.abs(reference).max())
    # exp(z - max) carries the rounding of z - max, relative to its size
    expected = scipy.special.softmax(f64(logits), axis=1)
    spread = 4 + np.abs(f64(logits) - f64(logits).max(axis=1, keepdims=True))
    assert (np.abs(f64(p) - expected) <= 4 * eps * spread * expected
            + np.finfo(dtype).tiny).all()


def test_softmax_of_rows_with_nan_or_infinities(dtype):
    """A NaN or +inf in a row makes the whole row NaN; -inf is probability
    0; other rows are untouched; any leading shape."""
    logits = np.zeros((2, 3, 4), dtype)
    logits[0, 0, 2] = np.nan
    logits[0, 1, 0] = np.inf
    logits[1, 0, 1] = -np.inf
    p = fcf.softmax(logits)
    assert p.shape == logits.shape and p.dtype == dtype
    assert np.isnan(p[0, 0]).all() and np.isnan(p[0, 1]).all()
    np.testing.assert_array_equal(p[1, 0], np.array([1, 0, 1, 1], dtype) / 3)
    np.testing.assert_allclose(p[0, 2], 0.25, rtol=np.finfo(dtype).eps)
    assert fcf.softmax(np.zeros((0, 4), dtype)).shape == (0, 4)


@pytest.mark.parametrize("target", [
    np.array([0, 3, 1]),                 # 3 is out of range for K = 3
    np.array([0, -1, 1]),                # negative
    np.array([[0], [1], [2]]),           # (N, 1)
    np.array([0, 1]),                    # too short
    np.array([0, 1, 2, 0]),              # too long
    np.array([0.0, 1.0, 2.0]),           # float dtype
    np.array([True, False, True]),       # bool dtype
    np.array(1),                         # scalar
], ids=["too-large", "negative", "column", "short", "long", "float", "bool", "scalar"])
def test_softmax_cross_entropy_rejects_bad_target(target):
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros((3, 3)), target)


def test_softmax_cross_entropy_rejects_bad_logits():
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros((2, 3, 4)), np.array([0, 1]))
    with pytest.raises(TypeError):
        fcf.softmax_cross_entropy(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))


def test_softmax_cross_entropy_rejects_empty_batch():
    with pytest.raises(ValueError):
        fcf.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))



@pytest.mark.parametrize("bad", [-1, 3, np.iinfo(np.int64).max])
def test_softmax_cross_entropy_rejects_targets_outside_the_classes(bad):
    logits = np.zeros((4, 3))
    target = np.array([0, 1, bad, 2], dtype=np.int64)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\)"):
        fcf.softmax_cross_entropy(logits, target)
    big = np.array([0, 1, 2, 2**63], dtype=np.uint64)  # wraps to negative as intp
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\)"):
        fcf.softmax_cross_entropy(logits, big)


def test_int32_indices_are_taken_as_they_are(rng):
    """int32 targets and sample indices (what the estimator keeps for large
    training sets) give what intp ones give, and are checked the same way."""
    logits = rng.standard_normal((6, 4))
    target = np.array([3, 0, 1, 3, 2, 0])
    loss, grad = fcf.softmax_cross_entropy(logits, target.astype(np.intp))
    loss32, grad32 = fcf.softmax_cross_entropy(logits, target.astype(np.int32))
    assert loss32 == loss
    np.testing.assert_array_equal(grad32, grad)
    for bad in (-1, 4):
        with pytest.raises(ValueError, match=r"target values must lie in \[0, 4\)"):
            fcf.softmax_cross_entropy(logits[:2], np.array([0, bad], dtype=np.int32))
    x = rng.standard_normal((10, 3))
    out = np.full((2, 3), -7.0)
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        fcf.take_samples(x, np.array([1, -1], dtype=np.int32), out=out)
    assert np.all(out == -7.0)


# ===================================================== squared error

def _squared_error_ref(prediction, target):
    """sum (prediction - target)^2 / (2N) and its gradient, in float64."""
    d = f64(prediction) - f64(target)
    n = d.shape[0]
    return float((d ** 2).sum() / (2 * n)), d / n


@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (5, 3), (64, 10), (33, 257)], ids=str)
def test_squared_error_matches_reference(shape, dtype, rng):
    prediction = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    saved = prediction.copy(), target.copy()
    loss, grad = fcf.squared_error(prediction, target)
    np.testing.assert_array_equal(prediction, saved[0])
    np.testing.assert_array_equal(target, saved[1])
    ref_loss, ref_grad = _squared_error_ref(prediction, target)
    assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == shape
    # the loss is summed in float64 whatever the dtype
    assert abs(loss - ref_loss) <= 1e-12 * ref_loss
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(grad, ref_grad, rtol=eps, atol=0)


def test_squared_error_is_pytorchs_half_mse_sum_over_n():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    prediction, target = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    tensor = torch.from_numpy(prediction).requires_grad_()
    torch_loss = 0.5 * torch.nn.functional.mse_loss(
        tensor, torch.from_numpy(target), reduction="sum") / 6
    torch_loss.backward()
    loss, grad = fcf.squared_error(prediction, target)
    assert loss == pytest.approx(torch_loss.item(), rel=1e-14)
    np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=1e-14)


def test_squared_error_gradient_matches_finite_differences(rng, central_differences):
    prediction = 2 * rng.standard_normal((5, 3))
    target = rng.standard_normal((5, 3))
    _, grad = fcf.squared_error(prediction, target)
    numeric = central_differences(
        lambda: fcf.squared_error(prediction, target)[0], prediction, 1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-10)


def test_squared_error_writes_into_out(rng):
    prediction, target = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    out = np.full((4, 2), np.nan)
    loss, grad = fcf.squared_error(prediction, target, out=out)
    assert grad is out
    np.testing.assert_allclose(out, (prediction - target) / 4, rtol=1e-15)
    with pytest.raises(ValueError, match="out shares memory with prediction"):
        fcf.squared_error(prediction, target, out=prediction)
    with pytest.raises(ValueError, match=r"out must have shape \(4, 2\)"):
        fcf.squared_error(prediction, target, out=np.empty((4, 3)))
    with pytest.raises(TypeError, match="out must have dtype float64"):
        fcf.squared_error(prediction, target, out=np.empty((4, 2), np.float32))


def test_squared_error_takes_any_layout_and_gives_the_same_bits(rng):
    """Non-contiguous inputs are copied first; the loss of a batch does not
    depend on how its rows are laid out (a fixed order of summation)."""
    wide_prediction = rng.standard_normal((6, 10))
    wide_target = rng.standard_normal((6, 10))
    loss, grad = fcf.squared_error(wide_prediction[:, ::2].copy(), wide_target[:, ::2].copy())
    loss_strided, grad_strided = fcf.squared_error(wide_prediction[:, ::2],
                                                   wide_target[:, ::2])
    assert loss_strided == loss
    np.testing.assert_array_equal(grad_strided, grad)


@pytest.mark.parametrize("prediction, target, error, match", [
    (np.zeros((3, 2)), np.zeros((3, 3)), ValueError, r"target must have the shape of prediction \(3, 2\)"),
    (np.zeros((3, 2)), np.zeros(3), ValueError, "target must have 2 dimensions"),
    (np.zeros(3), np.zeros(3), ValueError, "prediction must have 2 dimensions"),
    (np.zeros((0, 2)), np.zeros((0, 2)), ValueError, "prediction must not be empty"),
    (np.zeros((3, 2)), np.zeros((3, 2), np.float32), TypeError, "target has dtype float32"),
    (np.zeros((3, 2)), np.zeros((3, 2), np.int64), TypeError, "target must be a float32 or float64"),
    (np.zeros((3, 2), np.int64), np.zeros((3, 2)), TypeError, "prediction must be a float32 or float64"),
], ids=["shapes", "target-1d", "prediction-1d", "empty", "mixed-dtypes", "int-target", "int-prediction"])
def test_squared_error_rejects_bad_input(prediction, target, error, match):
    with pytest.raises(error, match=match):
        fcf.squared_error(prediction, target)


# ================================================ weighted losses

def _weighted_cross_entropy_ref(logits, target, weight):
    """sum_n w_n loss_n / sum_n w_n and its gradient, in float64."""
    z = f64(logits)
    n = z.shape[0]
    log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
    onehot = np.zeros_like(z)
    onehot[np.arange(n), target] = 1
    total = weight.sum()
    loss = -(weight * log_p[np.arange(n), target]).sum() / total
    return loss, (np.exp(log_p) - onehot) * weight[:, None] / total


def _weighted_squared_error_ref(prediction, target, weight):
    d = f64(prediction) - f64(target)
    total = weight.sum()
    return 0.5 * (weight[:, None] * d * d).sum() / total, d * weight[:, None] / total


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 10), (33, 257)], ids=str)
def test_weighted_softmax_cross_entropy_matches_reference(shape, dtype, rng):
    n, k = shape
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    target = rng.integers(0, k, n)
    weight = rng.uniform(0.1, 5, n)
    weight[::3] = 0                      # zero weights count for nothing
    weight[-1] = 2.5
    loss, grad = fcf.softmax_cross_entropy(logits, target, sample_weight=weight)
    ref_loss, ref_grad = _weighted_cross_entropy_ref(logits, target, weight)
    eps = np.finfo(dtype).eps
    assert abs(loss - ref_loss) <= 16 * eps * max(1.0, abs(ref_loss))
    np.testing.assert_allclose(grad, ref_grad, rtol=16 * eps, atol=16 * eps / n)
    assert np.all(grad[weight == 0] == 0)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 2)], ids=str)
def test_weighted_squared_error_matches_reference(shape, dtype, rng):
    prediction = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    weight = rng.uniform(0, 4, shape[0])
    loss, grad = fcf.squared_error(prediction, target, sample_weight=weight)
    ref_loss, ref_grad = _weighted_squared_error_ref(prediction, target, weight)
    eps = np.finfo(dtype).eps
    assert abs(loss - ref_loss) <= 16 * eps * max(1.0, abs(ref_loss))
    np.testing.assert_allclose(grad, ref_grad, rtol=16 * eps, atol=16 * eps)


@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "squared_error"])
def test_weighted_loss_gradient_matches_finite_differences(loss_name, rng,
                                                           central_differences):
    scores = 2 * rng.standard_normal((5, 4))
    target = (np.array([3, 0, 1, 1, 2]) if loss_name == "softmax_cross_entropy"
              else rng.standard_normal((5, 4)))
    weight = np.array([0.5, 0.0, 3.0, 1.25, 2.0])
    loss = getattr(fcf, loss_name)
    _, grad = loss(scores, target, sample_weight=weight)
    numeric = central_differences(
        lambda: loss(scores, target, sample_weight=weight)[0], scores, 1e-5)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "squared_error"])
def test_unit_and_integer_weights(loss_name, dtype, rng):
    """Unit weights give the bits of no weights; integer weights equal
    repeating the rows (to float rounding: the sums run in another order)."""
    scores = (2 * rng.standard_normal((6, 3))).astype(dtype)
    target = (rng.integers(0, 3, 6) if loss_name == "softmax_cross_entropy"
              else rng.standard_normal((6, 3)).astype(dtype))
    loss = getattr(fcf, loss_name)
    plain_loss, plain_grad = loss(scores, target)
    unit_loss, unit_grad = loss(scores, target, sample_weight=np.ones(6))
    assert unit_loss == plain_loss
    np.testing.assert_array_equal(unit_grad, plain_grad)

    counts = np.array([2, 0, 1, 3, 1, 1])
    weighted_loss, weighted_grad = loss(scores, target, sample_weight=counts)
    repeated_loss, repeated_grad = loss(np.repeat(scores, counts, axis=0),
                                        np.repeat(target, counts, axis=0))
    eps = float(np.finfo(dtype).eps)
    assert weighted_loss == pytest.approx(repeated_loss, rel=16 * eps)
    # a repeated row's gradient is shared by its copies
    starts = (np.cumsum(counts) - counts)[counts > 0]
    summed = np.add.reduceat(f64(repeated_grad), starts)
    np.testing.assert_allclose(weighted_grad[counts > 0], summed, rtol=64 * eps, atol=64 * eps)
    assert np.all(weighted_grad[counts == 0] == 0)


@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "squared_error"])
def test_weights_summing_to_zero_give_zero_loss_and_gradient(loss_name):
    scores = np.array([[1.0, -2.0], [0.5, 3.0]])
    target = np.array([0, 1]) if loss_name == "softmax_cross_entropy" else scores + 1
    loss, grad = getattr(fcf, loss_name)(scores, target, sample_weight=np.zeros(2))
    assert loss == 0.0
    np.testing.assert_array_equal(grad, 0)


@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "squared_error"])
@pytest.mark.parametrize("weight", [np.ones(3), np.ones((2, 1)), np.array([1.0, -1.0]),
                                    np.array([1.0, np.nan]), np.array(["a", "b"])],
                         ids=["long", "2d", "negative", "nan", "text"])
def test_bad_weights_are_refused(loss_name, weight):
    scores = np.zeros((2, 3))
    target = np.array([0, 1]) if loss_name == "softmax_cross_entropy" else scores
    with pytest.raises(ValueError, match="sample_weight"):
        getattr(fcf, loss_name)(scores, target, sample_weight=weight)


@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "squared_error"])
def test_out_sharing_memory_with_the_weights_is_refused(loss_name):
    out = np.zeros((2, 2))
    scores = np.ones((2, 2))
    target = np.array([0, 1]) if loss_name == "softmax_cross_entropy" else scores
    with pytest.raises(ValueError, match="out shares memory with sample_weight"):
        getattr(fcf, loss_name)(scores, target, out=out, sample_weight=out[0])
