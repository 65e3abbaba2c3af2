"""Fixtures, parametrisations and markers of the fastcnn tests.

What they hand out is defined in the importable helper modules of
tests/_helpers (tests/ is on sys.path through pyproject.toml's
``pythonpath``): the references (_helpers.references), the test geometries
(_helpers.cases), one call of every kernel (_helpers.kernel_calls), the
assertions (_helpers.checks) and the estimator's small configuration
(_helpers.estimators). Test modules may import those directly or take the
fixtures below.
"""
import sys
import types
import zlib

import numpy as np
import pytest
from sklearn.datasets import load_digits

import fastcnn._network as network_module
from fastcnn._kernels import correlation as correlation_kernels
from fastcnn._kernels import winograd as winograd_kernels
from _helpers import references
from _helpers.cases import (
    CONV1D_CASES, CONV2D_CASES, DILATED_CONV_CASES, FLOAT_DTYPES, KERNEL_GRADIENT_CASES,
    LARGE_CONV_CASES, POOL1D_CASES, POOL2D_CASES, TINY_CONV_CASES,
    TINY_DILATED_CONV_CASES, TINY_POOL_CASES)
from _helpers.checks import assert_close, central_differences, guarded_copy
from _helpers.kernel_calls import KERNEL_NAMES, POOLING_KERNEL_NAMES, make_kernel_call

# ================================================================= markers

def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "large_memory: arrays of gigabytes, up to about 6 GB resident and a "
        "minute on two cores (tests/test_large_tensors.py); each test skips "
        "when /proc/meminfo shows too little memory available. Deselect with "
        "-m 'not large_memory'.")


# ========================================================= parametrisation

_PARAMETRISATIONS = {
    "conv_case": CONV2D_CASES + CONV1D_CASES,
    "conv2d_case": CONV2D_CASES,
    "tiny_conv_case": TINY_CONV_CASES,
    "kernel_gradient_case": KERNEL_GRADIENT_CASES,
    "dilated_conv_case": DILATED_CONV_CASES,
    "tiny_dilated_conv_case": TINY_DILATED_CONV_CASES,
    "bounds_conv_case": CONV2D_CASES + CONV1D_CASES + KERNEL_GRADIENT_CASES
                        + LARGE_CONV_CASES,
    "pool_case": POOL2D_CASES + POOL1D_CASES,
    "tiny_pool_case": TINY_POOL_CASES,
    "kernel_name": KERNEL_NAMES,
    "pooling_kernel_name": POOLING_KERNEL_NAMES,
}


def pytest_generate_tests(metafunc):
    for argument, values in _PARAMETRISATIONS.items():
        if argument in metafunc.fixturenames:
            metafunc.parametrize(argument, values, ids=str)


# ================================================================ fixtures

@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, yet different
    data in every test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=["generic", "avx512"])
def gemm_kernel(request):
    """Runs the test under each matrix-product micro-kernel; restores the
    default (AVX-512 when available) afterwards. Without AVX-512 the
    'avx512' run would repeat the 'generic' one, so it is skipped."""
    active = correlation_kernels.select_gemm_kernel(request.param == "avx512")
    winograd_kernels.select_transforms(request.param == "avx512")
    try:
        if active != request.param:
            pytest.skip(f"no {request.param} micro-kernel on this CPU "
                        f"(got {active!r}); the run would be a duplicate")
        yield active
    finally:
        correlation_kernels.select_gemm_kernel(True)
        winograd_kernels.select_transforms(True)


@pytest.fixture(scope="session")
def ref():
    """The NumPy and SciPy references of _helpers.references, by operation name."""
    return types.SimpleNamespace(
        correlate=references.correlate_ref,
        correlate_backward_input=references.correlate_backward_input_ref,
        correlate_backward_kernel=references.correlate_backward_kernel_ref,
        correlate_scipy=references.correlate_scipy,
        correlate_backward_input_scipy=references.correlate_backward_input_scipy,
        correlate_backward_kernel_scipy=references.correlate_backward_kernel_scipy,
        max_pool=references.max_pool_ref,
        max_pool_backward=references.max_pool_backward_ref,
        avg_pool=references.avg_pool_ref,
        avg_pool_backward=references.avg_pool_backward_ref,
    )


@pytest.fixture(scope="session", name="assert_close")
def assert_close_fixture():
    return assert_close


@pytest.fixture(scope="session", name="central_differences")
def central_differences_fixture():
    """central_differences(loss, array, step): the finite-difference gradient."""
    return central_differences


@pytest.fixture(name="make_kernel_call")
def make_kernel_call_fixture(rng):
    """make_kernel_call(name, dtype, batch, geometry) with the test's rng."""
    def make(name, dtype=np.float64, batch=3, geometry="strided-padded"):
        return make_kernel_call(name, rng, dtype, batch, geometry)
    return make


@pytest.fixture(scope="session", name="guarded_copy")
def guarded_copy_fixture():
    """guarded_copy(array, side), on systems with mprotect."""
    if sys.platform == "win32":
        pytest.skip("guard pages need mprotect (POSIX)")
    return guarded_copy


# ====================================================== estimator fixtures

@pytest.fixture(scope="module")
def digits():
    """The first 300 digits, flat (n, 64), scaled to [0, 1] (exact in
    float32: multiples of 1/16)."""
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16.0, y[:300]


@pytest.fixture(scope="module")
def small_digits(digits):
    X, y = digits
    return X[:120], y[:120]


@pytest.fixture
def no_training(monkeypatch):
    """Makes any forward or backward pass of a network an error: a
    ValueError raised under this fixture was raised before training."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was validated")
    monkeypatch.setattr(network_module.Network, "forward", refuse)
    monkeypatch.setattr(network_module.Network, "backward", refuse)
