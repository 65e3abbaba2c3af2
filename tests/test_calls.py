"""functional.prepare: a call validated once and run again on the same
arrays gives what the function gives, also after the arrays' values change;
arrays the kernels would not read as they are are refused, not copied; and
the network keeps prepared calls only for its own training buffers."""
import numpy as np
import pytest

import fastcnn.functional as fcf
from fastcnn import CNNClassifier
from fastcnn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

GEOMETRIES = ["strided-padded", "unit-stride-padded-8-channels", "unit-stride-unpadded"]
PREPARED_NAMES = sorted(f.__name__ for f in fcf._calls.PREPARABLE
                        if f.__name__.startswith(("correlate", "max_pool", "avg_pool")))


def _arrays_of(args):
    return [a for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"]


@pytest.mark.parametrize("name", PREPARED_NAMES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_prepared_call_runs_as_the_function_again_and_again(name, geometry, dtype,
                                                           make_kernel_call, rng):
    """Every correlation and pooling function prepare takes (the input
    gradient both ways: the 8-channel geometry takes the mirrored form)."""
    call = make_kernel_call(name, dtype, batch=5, geometry=geometry)
    prepared = fcf.prepare(call.function, *call.args, **call.kwargs)
    for n_threads in (1, 3, 2):
        got = prepared.run(n_threads)
        got = got if isinstance(got, tuple) else (got,)
        want = call(n_threads=1)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        # new values in the same arrays: the next run must read them
        for a in _arrays_of(call.args):
            a[...] = rng.standard_normal(a.shape).astype(dtype)
        if "max_pool_backward" in name.replace("2d", "").replace("1d", ""):
            break   # argmax must stay valid for the gradient it routes


def test_prepared_dense_and_relu_calls_follow_their_arrays(rng):
    x = rng.standard_normal((6, 7))
    w = rng.standard_normal((4, 7))
    b = rng.standard_normal(4)
    grad_y = rng.standard_normal((6, 4))
    y = np.empty((6, 4))
    calls = [(fcf.linear, (x, w, b), {"out": y}),
             (fcf.linear_backward_input, (grad_y, w), {}),
             (fcf.linear_backward_weight, (x, grad_y), {}),
             (fcf.relu, (x,), {}),
             (fcf.relu_backward, (grad_y, y), {})]
    prepared = [fcf.prepare(f, *args, **kwargs) for f, args, kwargs in calls]
    for step in range(3):
        for (f, args, kwargs), call in zip(calls, prepared):
            got = call.run(2)
            want = f(*args, n_threads=1)
            for g, v in zip(got if isinstance(got, tuple) else (got,),
                            want if isinstance(want, tuple) else (want,)):
                np.testing.assert_array_equal(g, v)
        for a in (x, w, b, grad_y):
            a[...] = rng.standard_normal(a.shape)


def test_prepared_max_pool_backward_still_checks_argmax(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    y, argmax = fcf.max_pool2d(x, 2)
    call = fcf.prepare(fcf.max_pool2d_backward, np.ones_like(y), argmax, x.shape)
    call.run(1)
    argmax[0, 0, 0, 0] = 16      # past the 4 x 4 plane: skipped, then reported
    with pytest.raises(ValueError, match="argmax values must index the input plane"):
        call.run(2)


def test_prepare_refuses_what_it_would_have_to_copy(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    with pytest.raises(ValueError, match="C-contiguous"):
        fcf.prepare(fcf.correlate2d, x[:, :, ::2], w)          # a strided view
    with pytest.raises(ValueError, match="C-contiguous"):
        fcf.prepare(fcf.correlate2d, x.tolist(), w)             # a list
    y, argmax = fcf.max_pool2d(x, 2)
    with pytest.raises(ValueError, match="int32"):
        fcf.prepare(fcf.max_pool2d_backward, y, argmax.astype(np.int64), x.shape)
    with pytest.raises(TypeError, match="n_threads"):
        fcf.prepare(fcf.correlate2d, x, w, n_threads=2)
    with pytest.raises(ValueError, match="prepare does not take"):
        fcf.prepare(fcf.adam_update, x.ravel(), x.ravel(), x.ravel(), x.ravel(), 1, 0.1)
    # and what the function itself refuses, prepare refuses the same way
    with pytest.raises(ValueError, match="channels"):
        fcf.prepare(fcf.correlate2d, x, np.ascontiguousarray(w[:, :2]))


def test_network_prepares_each_call_once_per_batch_shape(monkeypatch):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    layers = [Conv2D(4, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(4, 3),
              ReLU(), AvgPool2D(1), Flatten(), Dense(8), ReLU()]
    prepared = []
    original = fcf.prepare
    monkeypatch.setattr(fcf, "prepare",
                        lambda f, *a, **k: prepared.append(f) or original(f, *a, **k))
    counts = []
    for n in (32, 32 * 6):       # one batch, six batches of the same size
        prepared.clear()
        clf = CNNClassifier(layers=layers, input_shape=(1, 8, 8), batch_size=32,
                            max_iter=1, random_state=0, n_threads=2)
        clf.partial_fit(X[:n], y[:n], classes=np.unique(y))
        counts.append(len(prepared))
    assert counts[0] == counts[1] > 0      # prepared in the first step only
    prepared.clear()
    clf.partial_fit(X[:32 * 6 + 5], y[:32 * 6 + 5])
    assert len(prepared) == 2 * counts[0]  # and again for a last batch of 5
    prepared.clear()
    clf.set_params(max_iter=3, warm_start=True).fit(X[:32 * 6 + 5], y[:32 * 6 + 5])
    assert len(prepared) == 2 * counts[0]  # later epochs prepare nothing new
    assert all(not layer.prepared_calls for layer in clf.network_.layers)
    # A prediction copies the caller's array into the predictor's own
    # buffer and keeps every call, none made on the caller's array: the
    # next one of as many samples prepares nothing, and reads the new
    # values.
    runs = len(prepared)
    X_predict = np.ascontiguousarray(X[:50], dtype=np.float32)
    expected = clf.predict(X_predict)
    first = len(prepared) - runs
    predictor = clf.network_._idle_predictors[0]
    for layer in predictor.layers:
        for arrays, _ in (c for kept in layer.prepared_calls.values()
                          for c in kept.values()):
            assert not any(np.shares_memory(a, X_predict) for a in arrays)
    X_predict[...] = X[50:100]
    np.testing.assert_array_equal(clf.predict(X_predict), clf.predict(X[50:100].copy()))
    assert not np.array_equal(clf.predict(X_predict), expected)
    prepared.clear()
    clf.predict(X_predict)
    assert len(prepared) == 0 < first
