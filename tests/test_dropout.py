"""Dropout: the functions of fastcnn.functional against NumPy references
written here, and the layers (Dropout, SpatialDropout1D/2D) in networks and
in the estimator: their expectation and gradient, inference, and the
reproducibility of their random masks."""
import pickle
import tracemalloc
import warnings

import numpy as np
import pytest

import fastcnn.functional as fcf
from _helpers.arrays import check_thread_independence, normal
from fastcnn import CNNClassifier
from fastcnn._network import Network
from fastcnn.layers import (Conv1D, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                            ReLU, SpatialDropout1D, SpatialDropout2D)

# ================================================================ references


def mask_ref(uniforms, rate, ndim):
    """The scaled mask, in the uniforms' dtype, broadcast over the trailing
    axes of an array of ``ndim`` dimensions (one uniform per channel)."""
    dtype = uniforms.dtype.type
    mask = np.where(uniforms >= dtype(rate), dtype(1 / (1 - rate)), dtype(0))
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def dropout_ref(x, uniforms, rate):
    return x * mask_ref(uniforms, rate, x.ndim)


# (shape of x, shape of the uniforms): one uniform per value, or per
# sample and channel
LAYOUTS = {
    "values-1d": ((37,), (37,)),
    "values-4d": ((4, 3, 9, 8), (4, 3, 9, 8)),
    "channels-signals": ((5, 3, 11), (5, 3)),
    "channels-images": ((4, 6, 5, 7), (4, 6)),
    "channels-flat": ((6, 9), (6, 9)),
}


def _arrays(rng, layout, dtype):
    x_shape, u_shape = LAYOUTS[layout]
    return normal(rng, x_shape, dtype), rng.random(u_shape).astype(dtype)


# ================================================================ functions

@pytest.mark.parametrize("rate", [0.0, 0.3, 0.75])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_dropout_and_its_backward_match_numpy(layout, rate, dtype, rng):
    x, uniforms = _arrays(rng, layout, dtype)
    grad_y = normal(rng, x.shape, dtype)
    y = fcf.dropout(x, uniforms, rate)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, dropout_ref(x, uniforms, rate))
    grad_x = fcf.dropout_backward(grad_y, uniforms, rate)
    np.testing.assert_array_equal(grad_x, dropout_ref(grad_y, uniforms, rate))
    if rate > 0:    # the mask drops some and keeps some
        assert (y == 0).any() and (y != 0).any()


def test_rate_zero_is_the_identity_bit_for_bit(dtype, rng):
    x = normal(rng, (4, 3, 5), dtype)
    x.flat[::7] = -0.0
    x.flat[3::11] = np.inf
    uniforms = np.zeros((4, 3), dtype)      # the lowest uniform: still kept
    for u in (uniforms, np.zeros(x.shape, dtype)):
        assert fcf.dropout(x, u, 0.0).tobytes() == x.tobytes()


def test_dropped_nan_and_infinity_give_nan_as_a_product_does(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 2.0, np.nan, np.inf], dtype)
    uniforms = np.array([0.1, 0.1, 0.1, 0.1, 0.9, 0.9], dtype)
    y = fcf.dropout(x, uniforms, 0.5)
    np.testing.assert_array_equal(y, [np.nan, np.nan, np.nan, 0.0, np.nan, np.inf])


def test_uniform_equal_to_the_rate_is_kept(dtype):
    rate = dtype.type(0.25)
    uniforms = np.array([np.nextafter(rate, dtype.type(0)), rate], dtype)
    y = fcf.dropout(np.ones(2, dtype), uniforms, 0.25)
    np.testing.assert_array_equal(y, [0, dtype.type(1 / 0.75)])


@pytest.mark.parametrize("layout", ["values-4d", "channels-images"])
def test_in_place_equals_out_of_place(layout, dtype, rng):
    x, uniforms = _arrays(rng, layout, dtype)
    expected = dropout_ref(x, uniforms, 0.4)
    assert fcf.dropout(x, uniforms, 0.4, out=x) is x
    np.testing.assert_array_equal(x, expected)
    grad_y = normal(rng, x.shape, dtype)
    expected = dropout_ref(grad_y, uniforms, 0.4)
    assert fcf.dropout_backward(grad_y, uniforms, 0.4, out=grad_y) is grad_y
    np.testing.assert_array_equal(grad_y, expected)


@pytest.mark.parametrize("channel_wise", [False, True], ids=["values", "channels"])
def test_bitwise_identical_for_any_thread_count(channel_wise, dtype, rng):
    x = normal(rng, (61, 33, 57), dtype)        # 114741 values, not a block multiple
    uniforms = rng.random(x.shape[:2] if channel_wise else x.shape).astype(dtype)
    check_thread_independence(lambda t: fcf.dropout(x, uniforms, 0.3, n_threads=t))
    check_thread_independence(
        lambda t: fcf.dropout_backward(x, uniforms, 0.3, n_threads=t))
    np.testing.assert_array_equal(fcf.dropout(x, uniforms, 0.3, n_threads=3),
                                  dropout_ref(x, uniforms, 0.3))


@pytest.mark.parametrize("layout", ["values-4d", "channels-signals"])
def test_backward_matches_finite_differences(layout, rng, central_differences):
    x, uniforms = _arrays(rng, layout, np.float64)
    weights = rng.standard_normal(x.shape)

    def loss():     # linear in x: a central difference is exact up to rounding
        return np.sum(fcf.dropout(x, uniforms, 0.45) * weights)
    numeric = central_differences(loss, x, 1e-3)
    analytic = fcf.dropout_backward(weights, uniforms, 0.45)
    assert (analytic == 0).any() and (analytic != 0).any()
    np.testing.assert_allclose(analytic, numeric, rtol=1e-9, atol=1e-12)


def test_prepared_calls_follow_their_arrays(rng):
    x, uniforms = _arrays(rng, "channels-images", np.float64)
    grad_y = rng.standard_normal(x.shape)
    forward = fcf.prepare(fcf.dropout, x, uniforms, 0.3)
    backward = fcf.prepare(fcf.dropout_backward, grad_y, uniforms, 0.3,
                           out=grad_y.copy())
    for _ in range(3):
        np.testing.assert_array_equal(forward.run(2), dropout_ref(x, uniforms, 0.3))
        np.testing.assert_array_equal(backward.run(2), dropout_ref(grad_y, uniforms, 0.3))
        uniforms[...] = rng.random(uniforms.shape)      # a new mask, read again
        x[...] = rng.standard_normal(x.shape)


def test_prepare_refuses_uniforms_it_would_copy(rng):
    x = rng.standard_normal((4, 6))
    with pytest.raises(ValueError, match="uniforms"):
        fcf.prepare(fcf.dropout, x, rng.random((6, 4)).T, 0.3)


@pytest.mark.parametrize("call, error, match", [
    (lambda x, u: fcf.dropout(x, u, 1.0), ValueError, "rate"),
    (lambda x, u: fcf.dropout(x, u, -0.1), ValueError, "rate"),
    (lambda x, u: fcf.dropout(x, u, np.nan), ValueError, "rate"),
    (lambda x, u: fcf.dropout(x, u, "0.5"), TypeError, "rate"),
    (lambda x, u: fcf.dropout(x, u[:, :2], 0.5), ValueError, "uniforms"),
    (lambda x, u: fcf.dropout(x, u[:, :, 0, 0], 0.5), None, None),
    (lambda x, u: fcf.dropout(x, u[:, 0], 0.5), ValueError, "uniforms"),
    (lambda x, u: fcf.dropout(x, u.astype(np.float32), 0.5), TypeError, "dtype"),
    (lambda x, u: fcf.dropout(x.astype(int), u, 0.5), TypeError, "float32"),
    (lambda x, u: fcf.dropout(x, u, 0.5, out=u), ValueError, "uniforms"),
    (lambda x, u: fcf.dropout(x, u, 0.5, out=np.empty(3)), ValueError, "shape"),
    (lambda x, u: fcf.dropout_backward(x, u, 0.5, out=u), ValueError, "uniforms"),
], ids=["rate-1", "rate-negative", "rate-nan", "rate-str", "uniforms-shape",
        "uniforms-per-channel-ok", "uniforms-per-sample", "mixed-dtypes",
        "int-x", "out-is-uniforms", "out-shape", "backward-out-is-uniforms"])
def test_bad_arguments_raise_errors_naming_them(call, error, match, rng):
    x, uniforms = rng.standard_normal((3, 4, 2, 2)), rng.random((3, 4, 2, 2))
    if error is None:
        call(x, uniforms)
        return
    with pytest.raises(error, match=match):
        call(x, uniforms)


def test_out_overlapping_x_otherwise_than_exactly_is_refused(rng):
    memory = rng.standard_normal(11)
    x, out = memory[:10], memory[1:]
    with pytest.raises(ValueError, match="shares memory with x"):
        fcf.dropout(x, rng.random(10), 0.5, out=out)


# ============================================================ specifications

@pytest.mark.parametrize("spec", [Dropout, SpatialDropout1D, SpatialDropout2D])
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, np.nan, "0.5", None, True])
def test_specs_refuse_rates_outside_0_1_naming_the_layer(spec, rate):
    with pytest.raises(ValueError, match=f"{spec.__name__}: rate"):
        spec(rate)


def test_specs_take_rates_in_0_1_and_compare_by_value():
    for rate in (0, 0.0, 0.5, np.float32(0.99)):
        assert Dropout(rate) == pickle.loads(pickle.dumps(Dropout(rate)))
    assert Dropout(0.5) != SpatialDropout2D(0.5)
    assert len({SpatialDropout1D(0.2), SpatialDropout1D(0.2), Dropout(0.2)}) == 2


@pytest.mark.parametrize("specs, shape", [
    ([SpatialDropout2D(0.5), Dense(2)], (3, 10)),
    ([SpatialDropout1D(0.5), Dense(2)], (3, 4, 4)),
    ([Flatten(), SpatialDropout2D(0.5), Dense(2)], (3, 4, 4)),
], ids=["2d-on-signals", "1d-on-images", "2d-on-flat"])
def test_channel_wise_dropout_needs_its_kind_of_input(specs, shape):
    name = type(next(s for s in specs if s.spatial_ndim)).__name__
    with pytest.raises(ValueError, match=f"{name} works on"):
        Network(specs, shape, np.float64)


# ==================================================================== layers

def _training_network(specs, input_shape, capacity, seed=0):
    network = Network(specs, input_shape, np.float64)
    network.initialize(np.random.RandomState(seed))
    network.allocate(capacity, training=True)
    return network


@pytest.mark.parametrize("spec, shape", [(Dropout(0.3), (3, 5, 4)),
                                         (SpatialDropout2D(0.6), (8, 3, 3)),
                                         (SpatialDropout1D(0.3), (8, 5))],
                         ids=["values", "channels-2d", "channels-1d"])
def test_the_mean_of_many_masks_approaches_the_input(spec, shape, rng):
    network = _training_network([spec, Dense(2)], shape, capacity=6)
    layer = network.layers[0]
    x = rng.uniform(0.5, 2.0, (6,) + shape)
    draws = 4000
    total, dropped = np.zeros_like(x), 0
    for _ in range(draws):
        y = layer.forward(x, 1)
        kept = y != 0
        np.testing.assert_array_equal(y[kept], x[kept] * (1 / (1 - spec.rate)))
        if spec.spatial_ndim:   # whole channels: all of a channel or none
            per_channel = kept.reshape(kept.shape[:2] + (-1,))
            assert (per_channel.all(axis=2) | ~per_channel.any(axis=2)).all()
        total += y
        dropped += (~kept).sum()
    # each mask value has mean 1 and variance rate / (1 - rate)
    sigma = x * np.sqrt(spec.rate / (1 - spec.rate) / draws)
    assert (np.abs(total / draws - x) <= 5 * sigma).all()
    assert abs(dropped / (draws * x.size) - spec.rate) < 0.02


def test_layer_backward_is_the_mask_times_the_gradient(rng):
    network = _training_network([Conv2D(4, 3, padding=1), SpatialDropout2D(0.5),
                                 Dropout(0.5), Dense(3)], (2, 5, 5), capacity=6)
    conv, spatial, values = network.layers[:3]
    x = rng.standard_normal((6, 2, 5, 5))
    before = conv.forward(x, 1).copy()
    after = values.forward(spatial.forward(conv.output_rows(6), 1), 1).copy()
    mask = np.where(after != 0, after / before, 0)      # no exact zeros in before
    np.testing.assert_allclose(mask[mask != 0], 4.0, rtol=1e-15)
    grad_y = rng.standard_normal(after.shape)
    grad_x = spatial.backward(values.backward(grad_y.copy(), True, 1), True, 1)
    np.testing.assert_array_equal(grad_x, grad_y * mask)


def test_network_gradient_with_masks_held_fixed_matches_finite_differences(
        central_differences):
    specs = [Conv2D(3, 3, padding=1), SpatialDropout2D(0.4), ReLU(), MaxPool2D(2),
             Flatten(), Dense(6), Dropout(0.5), ReLU(), Dense(3)]
    network = _training_network(specs, (2, 6, 6), capacity=4)
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((4, 2, 6, 6)), rng.integers(0, 3, size=4)
    drawing = network.drawing_layers
    assert len(drawing) == 2
    states = [layer.random.bit_generator.state for layer in drawing]

    def loss():
        for layer, state in zip(drawing, states):   # the same masks each time
            layer.random.bit_generator.state = state
        return fcf.softmax_cross_entropy(network.forward(x, 1), target)
    network.backward(loss()[1], 1)
    analytic = network.grads.copy()
    numeric = central_differences(lambda: loss()[0], network.params, 1e-6)
    assert np.abs(analytic).max() > 1e-3
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("spec", [Dropout(0.0), SpatialDropout1D(0.0)])
def test_rate_zero_trains_as_the_network_without_it(spec, rng):
    with_it = [Conv1D(3, 3), spec, ReLU(), Dense(4), Dense(3)]
    without = [Conv1D(3, 3), ReLU(), Dense(4), Dense(3)]
    x, target = rng.standard_normal((5, 2, 9)), rng.integers(0, 3, size=5)
    results = []
    for specs in (with_it, without):
        network = _training_network(specs, (2, 9), capacity=5)
        scores = network.forward(x, 1).copy()
        network.backward(fcf.softmax_cross_entropy(scores, target)[1], 1)
        results.append((scores, network.grads.copy()))
    for ours, theirs in zip(*results):
        assert ours.tobytes() == theirs.tobytes()


def test_a_training_step_allocates_no_array_of_batch_size(rng):
    specs = [Conv2D(8, 3, padding=1), SpatialDropout2D(0.3), Dropout(0.3), ReLU(),
             Dense(3)]
    network = _training_network(specs, (2, 16, 16), capacity=32)
    x, target = rng.standard_normal((32, 2, 16, 16)), rng.integers(0, 3, size=32)

    def step():
        scores = network.forward(x, 2)
        network.backward(fcf.softmax_cross_entropy(scores, target)[1], 2)
    step()      # the first step prepares its calls
    tracemalloc.start()
    try:
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # numpy reports its arrays to tracemalloc; one mask of uniforms per value
    # of a batch would be 32 * 8 * 16 * 16 * 8 bytes
    assert peak < 32 * 8 * 16 * 16 * 8 // 8


# ============================================================ in the estimator

LAYERS = [Conv2D(8, 3, padding=1), SpatialDropout2D(0.25), ReLU(), MaxPool2D(2),
          Flatten(), Dense(16), ReLU(), Dropout(0.5)]


def _data(n=64, shape=(2, 16, 16)):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n,) + shape)
    y = (X[:, 0].mean(axis=(1, 2)) > 0).astype(int)
    return X, y


def _classifier(layers=LAYERS, **params):
    # batches of 32 images of 8 x 16 x 16: the first dropout's kernel runs
    # on several threads
    return CNNClassifier(**{"layers": layers, "input_shape": (2, 16, 16),
                            "max_iter": 3, "batch_size": 32, "random_state": 0,
                            "n_threads": 1, **params})


def _fit(clf, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # ConvergenceWarning of short fits
        return clf.fit(X, y)


def test_prediction_is_deterministic_and_that_of_the_network_without_dropout():
    X, y = _data()
    clf = _fit(_classifier(), X, y)
    network = clf.network_
    state = [layer.random.bit_generator.state for layer in network.drawing_layers]
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    assert [layer.random.bit_generator.state for layer in network.drawing_layers] == state
    without = [spec for spec in LAYERS if not isinstance(spec, (Dropout, SpatialDropout2D))]
    plain = _fit(_classifier(without, max_iter=1), X, y)
    assert plain.network_.params.shape == network.params.shape
    plain.network_.params[...] = network.params
    np.testing.assert_array_equal(plain.predict_proba(X), proba)


def test_fits_are_reproducible_and_the_masks_come_from_random_state():
    X, y = _data()
    first, again = (_fit(_classifier(), X, y) for _ in range(2))
    np.testing.assert_array_equal(first.network_.params, again.network_.params)
    other = _fit(_classifier(random_state=1), X, y)
    assert not np.array_equal(first.network_.params, other.network_.params)
    # the same initial weights, other masks: other weights
    one, two = _classifier(), _classifier()
    for clf in (one, two):
        clf.partial_fit(X, y, classes=[0, 1])
    np.testing.assert_array_equal(one.network_.params, two.network_.params)
    two.network_.drawing_layers[0].random = np.random.default_rng(12345)
    for clf in (one, two):
        clf.partial_fit(X, y)
    assert not np.array_equal(one.network_.params, two.network_.params)


def test_fits_are_bitwise_identical_for_any_thread_count():
    X, y = _data()
    fits = [_fit(_classifier(n_threads=n), X, y) for n in (1, 2, 3)]
    for clf in fits[1:]:
        assert clf.network_.params.tobytes() == fits[0].network_.params.tobytes()


def test_pickling_mid_training_continues_the_random_stream():
    X, y = _data()
    straight = _classifier()
    for _ in range(4):
        straight.partial_fit(X, y, classes=[0, 1])
    halfway = _classifier()
    for _ in range(2):
        halfway.partial_fit(X, y, classes=[0, 1])
    loaded = pickle.loads(pickle.dumps(halfway))
    for _ in range(2):
        loaded.partial_fit(X, y)
    np.testing.assert_array_equal(loaded.network_.params, straight.network_.params)
    states = [layer.random.bit_generator.state
              for clf in (loaded, straight) for layer in clf.network_.drawing_layers]
    assert states[:2] == states[2:]


def test_warm_start_after_pickling_continues_the_random_stream():
    X, y = _data()
    clf = _fit(_classifier(), X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    for model in (clf, loaded):
        _fit(model.set_params(warm_start=True, max_iter=2), X, y)
    np.testing.assert_array_equal(loaded.network_.params, clf.network_.params)
