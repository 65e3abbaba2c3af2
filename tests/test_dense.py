"""Dense maps of fastcnn.functional (linear and its backward functions): values, gradients, bits independent of threads, bad input, and the micro-kernel they run on.

Every value is checked against a plain NumPy (or SciPy) reference written
here, computed in float64, never against fastcnn itself.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as fcf
from fastcnn._kernels import gemm as gemm_kernels
from _helpers.arrays import abs64, check_thread_independence, f64, normal

# ================================================================ helpers

@pytest.fixture(params=["generic", "avx512"])
def dense_gemm(request):
    """Runs the test under each micro-kernel of the matrix product; AVX-512
    afterwards."""
    active = gemm_kernels.select_gemm_kernel(request.param == "avx512")
    try:
        if active != request.param:
            pytest.skip(f"no {request.param} micro-kernel on this CPU (got {active!r})")
        yield active
    finally:
        gemm_kernels.select_gemm_kernel(True)



# ===================================================== 1. dense vs NumPy

# (N, D, U): ones everywhere, sizes off the 8-row / 16- and 32-column panels,
# depths beyond the float64 (128) and float32 (256) depth blocks.
LINEAR_SHAPES = [
    (1, 1, 1), (1, 5, 3), (7, 1, 4), (6, 9, 1), (1, 300, 1), (9, 17, 33),
    (8, 16, 32), (37, 53, 29), (33, 129, 17), (19, 257, 45), (300, 700, 130),
]


@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "N{}-D{}-U{}".format(*s))
def test_linear_and_backward_match_numpy(shape, dtype, dense_gemm, rng, assert_close):
    n, d, u = shape
    x, w, b, g = (normal(rng, s, dtype) for s in [(n, d), (u, d), (u,), (n, u)])
    x64, w64, b64, g64 = map(f64, (x, w, b, g))

    y = fcf.linear(x, w, b)
    assert y.dtype == dtype and y.shape == (n, u)
    assert_close(y, x64 @ w64.T + b64, scale=abs64(x) @ abs64(w).T + abs64(b))
    y0 = fcf.linear(x, w)
    assert_close(y0, x64 @ w64.T, scale=abs64(x) @ abs64(w).T)

    grad_x = fcf.linear_backward_input(g, w)
    assert grad_x.dtype == dtype and grad_x.shape == (n, d)
    assert_close(grad_x, g64 @ w64, scale=abs64(g) @ abs64(w))

    grad_w, grad_b = fcf.linear_backward_weight(x, g)
    assert grad_w.dtype == dtype and grad_w.shape == (u, d)
    assert grad_b.dtype == dtype and grad_b.shape == (u,)
    assert_close(grad_w, g64.T @ x64, scale=abs64(g).T @ abs64(x))
    assert_close(grad_b, g64.sum(axis=0), scale=abs64(g).sum(axis=0))

    all_three = fcf.linear_backward(x, w, g)
    assert len(all_three) == 3
    assert_close(all_three[0], g64 @ w64, scale=abs64(g) @ abs64(w))
    assert_close(all_three[1], g64.T @ x64, scale=abs64(g).T @ abs64(x))
    assert_close(all_three[2], g64.sum(axis=0), scale=abs64(g).sum(axis=0))


def test_linear_accepts_non_contiguous_inputs(rng, assert_close):
    x = normal(rng, (40, 23), np.float64)[:, ::2]          # (40, 12), strided
    w = normal(rng, (12, 9), np.float64).T                 # (9, 12), transposed
    y = fcf.linear(x, w)
    assert_close(y, x @ w.T, scale=np.abs(x) @ np.abs(w).T)


# ====================================== 2. finite differences, float64

@pytest.mark.parametrize("shape", [(3, 5, 4), (1, 9, 2), (10, 1, 1)],
                         ids=lambda s: "N{}-D{}-U{}".format(*s))
def test_linear_gradients_match_finite_differences(shape, dense_gemm, rng,
                                                   central_differences):
    n, d, u = shape
    x, w, b, g = (normal(rng, s, np.float64) for s in [(n, d), (u, d), (u,), (n, u)])

    def loss():  # a random linear function of the output
        return float(np.sum(g * fcf.linear(x, w, b)))

    grad_x, grad_w, grad_b = fcf.linear_backward(x, w, g)
    for name, analytic, array in [("x", grad_x, x), ("w", grad_w, w), ("b", grad_b, b)]:
        numeric = central_differences(loss, array, 1e-3)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8,
                                   err_msg=f"gradient with respect to {name}")


# ======================================= 3. bits independent of threads

@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
def test_dense_bitwise_identical_for_any_thread_count(dtype_, dense_gemm, rng):
    n, d, u = 256, 1000, 300
    x, w, b, g = (normal(rng, s, dtype_) for s in [(n, d), (u, d), (u,), (n, u)])
    check_thread_independence(lambda t: fcf.linear(x, w, b, n_threads=t))
    check_thread_independence(lambda t: fcf.linear_backward_input(g, w, n_threads=t))
    check_thread_independence(lambda t: fcf.linear_backward_weight(x, g, n_threads=t))


@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
def test_edge_tiles_give_the_bits_of_full_tiles(dtype_, dense_gemm, rng):
    """A micro-tile at the edge of a product computes only its rows and
    columns (1 to 8 rows, one vector of columns or two), each element's sum
    over k in the order of a full tile's: every row and column of a product
    has the same bits as in a product with more of them."""
    d = 300    # past the float64 depth block
    x, w, b = (normal(rng, s, dtype_) for s in [(8, d), (64, d), (64,)])
    full = fcf.linear(x, w, b, n_threads=1)
    for rows in range(1, 9):
        np.testing.assert_array_equal(fcf.linear(x[:rows], w, b, n_threads=1), full[:rows])
    for units in (1, 5, 8, 13, 16, 17, 31, 33, 40):
        np.testing.assert_array_equal(
            fcf.linear(x, w[:units], b[:units], n_threads=1), full[:, :units])
    g = normal(rng, (8, 64), dtype_)
    full_input = fcf.linear_backward_input(g, w, n_threads=1)
    for rows in (1, 3, 6, 7):
        np.testing.assert_array_equal(fcf.linear_backward_input(g[:rows], w, n_threads=1),
                                      full_input[:rows])
    np.testing.assert_allclose(f64(full), f64(x) @ f64(w).T + f64(b), rtol=0,
                               atol=1e-5 * float((abs64(x) @ abs64(w).T).max()))


@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_few_rows_give_the_bits_of_a_batch(dtype_, relu, dense_gemm, rng):
    """A forward of a few rows (up to one panel's width) may run as
    y^T = w . x^T, which packs x instead of w: each row's outputs have the
    bits they have in a batch of 40 rows, which runs the other way, for
    depths of several passes over k and for any thread count."""
    d = 300     # past both depth blocks: sums of two or three passes
    x = normal(rng, (40, d), dtype_)
    for units in (10, 84, 120, 130):
        w, b = normal(rng, (units, d), dtype_), normal(rng, (units,), dtype_)
        batch = fcf.linear(x, w, b, n_threads=1, relu=relu)
        for rows in (1, 9, 16, 24, 32):
            for n_threads in (1, 2, 3):
                np.testing.assert_array_equal(
                    fcf.linear(x[:rows], w, b, n_threads=n_threads, relu=relu),
                    batch[:rows])


@pytest.mark.parametrize("dtype_", [np.float32, np.float64], ids=["float32", "float64"])
def test_linear_with_relu_is_relu_of_linear(dtype_, dense_gemm, rng):
    """relu=True returns the bits of relu applied after, NaN included, for
    any thread count (each thread's columns take their ReLU in turn)."""
    n, d, u = 64, 100, 70    # enough multiply-adds for three threads
    x, w, b = (normal(rng, s, dtype_) for s in [(n, d), (u, d), (u,)])
    x[3, 5] = np.nan
    unfused = fcf.relu(fcf.linear(x, w, b, n_threads=1))
    assert np.isnan(unfused[3]).all() and (unfused == 0).any()
    for n_threads in (1, 2, 3):
        np.testing.assert_array_equal(fcf.linear(x, w, b, n_threads=n_threads, relu=True),
                                      unfused)
    np.testing.assert_array_equal(fcf.linear(x, w, relu=True),
                                  fcf.relu(fcf.linear(x, w)))


# ============================================================ 8. bad input

def test_linear_rejects_mismatched_features():
    with pytest.raises(ValueError, match="features"):
        fcf.linear(np.zeros((4, 5)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="features"):
        fcf.linear(np.zeros((4, 5)), np.zeros((5, 4)))     # w given as (D, U)
    with pytest.raises(ValueError):
        fcf.linear(np.zeros((4, 5)), np.zeros((3, 5)), np.zeros(4))     # bias (U,)
    with pytest.raises(ValueError):
        fcf.linear_backward_input(np.zeros((4, 2)), np.zeros((3, 5)))   # U mismatch
    with pytest.raises(ValueError):
        fcf.linear_backward_weight(np.zeros((4, 5)), np.zeros((3, 2)))  # N mismatch
    with pytest.raises(ValueError):
        fcf.linear(np.zeros(5), np.zeros((3, 5)))                       # 1-D x
    with pytest.raises(ValueError):
        fcf.linear(np.zeros((2, 4, 5)), np.zeros((3, 5)))               # 3-D x
    with pytest.raises(ValueError):
        fcf.linear(np.zeros((0, 5)), np.zeros((3, 5)))                  # empty


@pytest.mark.parametrize("bad_dtype", [np.int32, np.int64, np.float16, np.complex128, bool])
def test_dense_and_relu_reject_non_float_dtypes(bad_dtype):
    a = np.ones((4, 5), dtype=bad_dtype)
    w = np.ones((3, 5), dtype=bad_dtype)
    with pytest.raises(TypeError):
        fcf.linear(a, w)
    with pytest.raises(TypeError):
        fcf.linear(np.ones((4, 5)), w)
    with pytest.raises(TypeError):
        fcf.linear_backward_input(np.ones((4, 3), dtype=bad_dtype), w)
    with pytest.raises(TypeError):
        fcf.linear_backward_weight(a, np.ones((4, 3), dtype=bad_dtype))
    with pytest.raises(TypeError):
        fcf.relu(a)
    with pytest.raises(TypeError):
        fcf.relu_backward(a, a)


@pytest.mark.parametrize("first, second", [(np.float32, np.float64), (np.float64, np.float32)],
                         ids=["f32-f64", "f64-f32"])
def test_mixed_float_dtypes_raise_type_error(first, second):
    with pytest.raises(TypeError):
        fcf.linear(np.ones((4, 5), first), np.ones((3, 5), second))
    with pytest.raises(TypeError):
        fcf.linear(np.ones((4, 5), first), np.ones((3, 5), first), np.ones(3, second))
    with pytest.raises(TypeError):
        fcf.linear_backward_input(np.ones((4, 3), first), np.ones((3, 5), second))
    with pytest.raises(TypeError):
        fcf.linear_backward_weight(np.ones((4, 5), first), np.ones((4, 3), second))
    with pytest.raises(TypeError):
        fcf.linear_backward(np.ones((4, 5), first), np.ones((3, 5), first),
                            np.ones((4, 3), second))
    with pytest.raises(TypeError):
        fcf.relu_backward(np.ones(6, first), np.ones(6, second))


# ====================================================== micro-kernel default

def test_dense_uses_avx512_micro_kernel_by_default():
    script = (
        "import numpy as np\n"
        "import fastcnn.functional as fcf\n"
        "from fastcnn._kernels import dense\n"
        "rng = np.random.default_rng(0)\n"
        "x, w = rng.standard_normal((37, 300)), rng.standard_normal((29, 300))\n"
        "default = fcf.linear(x, w)\n"
        "name = dense.select_gemm_kernel(True)\n"
        "avx = fcf.linear(x, w)\n"
        "dense.select_gemm_kernel(False)\n"
        "generic = fcf.linear(x, w)\n"
        "print(name, int(np.array_equal(avx, generic)), int(np.array_equal(default, avx)))\n"
    )
    env = dict(os.environ)
    package_root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    name, kernels_agree, default_is_avx = result.stdout.split()
    if name != "avx512":
        pytest.skip("no AVX-512 on this CPU")
    if kernels_agree == "1":
        pytest.skip("both micro-kernels give the same bits here: cannot tell them apart")
    assert default_is_avx == "1", "linear ran on the generic micro-kernel by default"

