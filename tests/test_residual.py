"""Residual blocks (fastcnn.layers.Residual and the runtime block of
fastcnn._network): the specification, the block against the same layers
run by hand, whole-network gradients by finite differences, the default
shortcut, and an estimator built of blocks (threads, pickling, warm_start,
clone and grid search)."""
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import fastcnn.functional as F
from fastcnn import CNNClassifier
from fastcnn._network import Network
from fastcnn.layers import (Conv1D, Conv2D, Dense, Flatten, MaxPool1D,
                            MaxPool2D, ReLU, Residual)
from _helpers.checks import check_network_gradient

# ======================================================= the specification

NESTED = Residual([Conv2D(4, 3, padding=1), ReLU(),
                   Residual([Conv2D(4, 3, padding=1)], shortcut=[])],
                  shortcut=[Conv2D(4, 1)])


def test_spec_pickles_hashes_and_compares_by_value():
    loaded = pickle.loads(pickle.dumps(NESTED))
    assert loaded == NESTED and hash(loaded) == hash(NESTED)
    assert {NESTED: 1}[loaded] == 1
    assert Residual([ReLU()]) != Residual([ReLU()], shortcut=[])
    assert Residual([Conv2D(4, 3)]) != Residual([Conv2D(5, 3)])
    with pytest.raises(AttributeError):
        NESTED.__setattr__("layers", ())


def test_spec_stores_lists_as_tuples():
    spec = Residual([Conv1D(2, 3)], shortcut=[Conv1D(2, 1)])
    assert spec.layers == (Conv1D(2, 3),) and spec.shortcut == (Conv1D(2, 1),)
    assert spec == Residual((Conv1D(2, 3),), shortcut=(Conv1D(2, 1),))
    assert spec.spatial_ndim == 1
    assert Residual([ReLU(), Residual([Conv2D(1, 1)])]).spatial_ndim == 2


@pytest.mark.parametrize("make, match", [
    (lambda: Residual([]), "layers must be a non-empty list"),
    (lambda: Residual(Conv2D(2, 3)), "layers must be"),
    (lambda: Residual([Conv2D(2, 3), "relu"]), "layers must be"),
    (lambda: Residual([ReLU()], shortcut=ReLU()), "shortcut must be"),
    (lambda: Residual([ReLU()], shortcut=[None]), "shortcut must be"),
], ids=["empty", "not-a-list", "not-a-spec", "shortcut-not-a-list", "shortcut-item"])
def test_spec_validates_on_construction(make, match):
    with pytest.raises(ValueError, match="Residual: " + match):
        make()


# ============================================ the block against the layers


def _conv(layer, x):
    function = F.correlate2d if x.ndim == 4 else F.correlate1d
    return function(x, layer.weight, layer.bias, layer.stride, layer.padding)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_compute_their_layers_plus_their_shortcut(dtype):
    specs = [Residual([Conv2D(3, 3, padding=1), ReLU(), Conv2D(3, 3, padding=1)]),
             Residual([Conv2D(5, 3, stride=2, padding=1), ReLU()]),
             Flatten(), Dense(4)]
    network = Network(specs, (3, 7, 7), dtype)
    network.initialize(np.random.RandomState(0))
    x = np.random.default_rng(1).standard_normal((6, 3, 7, 7)).astype(dtype)
    network.allocate(6, training=True)
    got = network.forward(x, 2)

    first, second, _, dense = network.layers
    conv_a, _, conv_b = first.main
    block1 = _conv(conv_b, F.relu(_conv(conv_a, x))) + x       # identity
    (conv_c, _), (projection,) = second.main, second.shortcut
    assert projection.spec == Conv2D(5, 1, stride=2)
    block2 = F.relu(_conv(conv_c, block1)) + _conv(projection, block1)
    want = F.linear(block2.reshape(6, -1), dense.weight, dense.bias)
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)


def test_parameters_of_blocks_join_the_flat_arrays_in_layer_order():
    network = Network([NESTED, Flatten(), Dense(3)], (2, 5, 5), np.float64)
    leaves = network.parametric_layers
    block = network.layers[0]
    inner = block.main[2]
    assert leaves == [block.main[0], inner.main[0], block.shortcut[0], network.layers[2]]
    assert network.n_weights == sum(layer.weight.size for layer in leaves)
    for layer in leaves:
        assert np.shares_memory(layer.weight, network.params[:network.n_weights])
        assert np.shares_memory(layer.grad_bias, network.grads[network.n_weights:])
    assert network.params.size == network.n_weights + sum(layer.bias.size for layer in leaves)


def test_fitted_coefs_list_the_weights_of_blocks_too(small_digits):
    X, y = small_digits
    clf = CNNClassifier(layers=[Conv2D(3, 3, padding=1),
                                Residual([Conv2D(4, 3, stride=2, padding=1), ReLU()])],
                        input_shape=(1, 8, 8), max_iter=1, random_state=0).fit(X, y)
    assert [w.shape for w in clf.coefs_] == [(3, 1, 3, 3), (4, 3, 3, 3), (4, 3, 1, 1),
                                             (10, 64)]
    assert [b.shape for b in clf.intercepts_] == [(3,), (4,), (4,), (10,)]


# ===================================================== gradients

GRADIENT_NETS = {
    "2d-identity": ([Conv2D(3, 3, padding=1), ReLU(),
                     Residual([Conv2D(3, 3, padding=1), ReLU(), Conv2D(3, 3, padding=1)]),
                     ReLU(), Flatten(), Dense(3)], (2, 5, 5)),
    "2d-projection-and-pool": ([Residual([Conv2D(4, 3, stride=2, padding=1), ReLU(),
                                          MaxPool2D(2, stride=1)]), ReLU(), Dense(3)],
                               (2, 6, 6)),
    "2d-nested": ([Residual([Conv2D(3, 3, padding=1), ReLU(),
                             Residual([Conv2D(3, 3, padding=1), ReLU()]),
                             Residual([Conv2D(4, 1, stride=2)])]),
                   Flatten(), Dense(3)], (3, 5, 5)),
    "1d-identity": ([Conv1D(3, 3, padding=1),
                     Residual([ReLU(), Conv1D(3, 3, padding="same")]),
                     Residual([Conv1D(3, 3, padding=1), ReLU()]), Dense(3)], (2, 9)),
    "1d-projection": ([Residual([Conv1D(4, 5, stride=3, padding=2), ReLU(),
                                 Conv1D(4, 3, padding=1)]),
                       Residual([Conv1D(2, 3), MaxPool1D(2)], shortcut=[Conv1D(2, 4, stride=2)]),
                       Dense(3)], (2, 13)),
    # gradients that write over what they receive, in a path and in a
    # shortcut, and a block on flat vectors
    "in-place-paths": ([Conv1D(2, 3, padding=1),
                        Residual([ReLU()], shortcut=[ReLU()]),
                        Flatten(), Dense(5), Residual([ReLU(), Dense(5), ReLU()]),
                        Residual([Flatten()]), Dense(3)], (2, 6)),
    "first-layer-block": ([Residual([Conv1D(2, 3, padding=1)]), Residual([ReLU()]),
                           Dense(3)], (2, 7)),
}


@pytest.mark.parametrize("name", GRADIENT_NETS)
def test_network_gradient_matches_finite_differences(name):
    check_network_gradient(*GRADIENT_NETS[name], n_threads=2)


@pytest.mark.parametrize("name", GRADIENT_NETS)
def test_shared_buffers_give_the_bits_of_unshared_ones(name):
    specs, input_shape = GRADIENT_NETS[name]
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((5,) + input_shape), rng.standard_normal((3,) + input_shape)]
    results = []
    for share in (True, False):
        network = Network(specs, input_shape, np.float64)
        network.initialize(np.random.RandomState(0))
        network.allocate(5, training=True, share_buffers=share)
        steps = []
        for x in batches:
            scores = network.forward(x, 2).copy()
            network.backward(F.softmax_cross_entropy(scores, np.arange(len(x)) % 3)[1], 2)
            steps += [scores, network.grads.copy()]
        results.append(steps)
    for shared, alone in zip(*results):
        assert shared.tobytes() == alone.tobytes()


# ===================================================== bad blocks


@pytest.mark.parametrize("specs, match", [
    ([Residual([Conv2D(4, 3)])], r"layers\[0\] Residual: .*\(4, 6, 6\).*no shortcut"),
    ([ReLU(), Residual([Flatten(), Dense(5)])], r"layers\[1\] Residual: .*no shortcut"),
    ([Residual([ReLU(), Residual([Conv2D(2, 3)])])],
     r"layers\[0\]\.layers\[1\] Residual: .*no shortcut"),
    ([Residual([Conv2D(4, 3, padding=1)], shortcut=[Conv2D(4, 1, stride=2)])],
     r"layers\[0\] Residual: its shortcut gives samples of shape \(4, 4, 4\)"),
    ([Residual([Conv2D(2, 9)])], r"layers\[0\]\.layers\[0\] Conv2D: kernel_size"),
    ([Residual([Conv1D(2, 3)])], r"layers\[0\]\.layers\[0\] Conv1D works on signals"),
], ids=["spatial-size", "flattened", "nested", "explicit-shortcut", "inner-layer", "1d-on-images"])
def test_blocks_that_cannot_be_joined_fail_before_training(specs, match, small_digits,
                                                           no_training):
    X, y = small_digits
    clf = CNNClassifier(layers=specs, input_shape=(1, 8, 8), max_iter=1)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


def test_default_shortcut_finds_the_stride_of_each_axis():
    block = Network([Residual([Conv2D(3, (3, 1), stride=(2, 3), padding=(1, 0))]), Dense(2)],
                    (2, 7, 7), np.float64).layers[0]
    assert block.output_shape == (3, 4, 3)
    assert [layer.spec for layer in block.shortcut] == [Conv2D(3, 1, stride=(2, 3))]
    same = Network([Residual([Conv1D(2, 3, padding=1)]), Dense(2)], (2, 9), np.float64)
    assert same.layers[0].shortcut == []


# ================================================== blocks in the estimator

RESNET_1D = [Conv1D(4, 3, padding=1), ReLU(),
             Residual([Conv1D(4, 3, padding=1), ReLU(), Conv1D(4, 3, padding=1)]), ReLU(),
             Residual([Conv1D(6, 3, stride=2, padding=1), ReLU(), Conv1D(6, 3, padding=1)]),
             ReLU(), Flatten()]


def _signals(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.standard_normal((n, 2, 16)) + y[:, None, None] * np.linspace(-1, 1, 16)
    return X, y


def _resnet(**params):
    return CNNClassifier(layers=RESNET_1D, max_iter=3, batch_size=16, random_state=0,
                         **params)


def test_fit_is_bitwise_the_same_for_any_thread_count():
    X, y = _signals()
    fits = [_resnet(n_threads=n).fit(X, y) for n in (1, 2, 3)]
    for clf in fits[1:]:
        assert clf.network_.params.tobytes() == fits[0].network_.params.tobytes()
    assert clf.score(X, y) > 0.5


def test_fitted_network_of_blocks_survives_pickling_and_warm_start():
    X, y = _signals()
    clf = _resnet().fit(X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    for model in (clf, loaded):
        before = model.network_.params.copy()
        model.set_params(warm_start=True, max_iter=2).fit(X, y)
        assert not np.array_equal(model.network_.params, before)
    np.testing.assert_array_equal(loaded.network_.params, clf.network_.params)


def test_clone_and_grid_search_over_a_network_of_blocks():
    X, y = _signals()
    base = _resnet()
    copy = clone(base)
    assert copy.layers == RESNET_1D and copy.get_params() == base.get_params()
    shallow = [Residual([Conv1D(2, 3, padding=1)]), Flatten()]
    search = GridSearchCV(base, {"alpha": [1e-4, 1e-2], "layers": [RESNET_1D, shallow]},
                          cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and len(set(scores)) > 1
    assert search.best_estimator_.layers in (RESNET_1D, shallow)


def test_three_dimensional_x_follows_the_first_spatial_layer_inside_a_block():
    X, y = _signals(30)
    clf = CNNClassifier(layers=[Residual([Conv1D(2, 3, padding=1)])], max_iter=1,
                        random_state=0).fit(X, y)
    assert clf.input_shape_ == (2, 16)


def test_profile_times_the_layers_inside_blocks():
    network = Network(RESNET_1D + [Dense(3)], (2, 16), np.float64)
    network.initialize(np.random.RandomState(0))
    network.allocate(4, training=True)
    network.profile = {}
    x = np.random.default_rng(0).standard_normal((4, 2, 16))
    network.backward(F.softmax_cross_entropy(network.forward(x, 1), np.arange(4) % 3)[1], 1)
    keys = {key[:2] for key in network.profile}
    assert {(2, "Residual"), ((2, "layers", 0), "Conv1D"), ((4, "shortcut", 0), "Conv1D"),
            ((4, "layers", 2), "Conv1D"), (7, "Dense")} <= keys
    assert {kind for *_, kind in network.profile} == {"forward", "backward"}


def test_a_training_step_of_blocks_allocates_and_prepares_nothing_new(monkeypatch):
    """After the first step, a step of a network of blocks prepares no call
    and allocates nothing of the size of a batch (numpy reports its data
    buffers to tracemalloc): the paths and sums write into their buffers."""
    import tracemalloc
    network = Network(RESNET_1D + [Dense(3)], (2, 64), np.float64)
    network.initialize(np.random.RandomState(0))
    network.allocate(64, training=True)
    x = np.random.default_rng(0).standard_normal((64, 2, 64))
    grad = np.zeros((64, 3))

    def step():
        network.forward(x, 2)
        network.backward(grad, 2)
    step()
    prepared = []
    original = F.prepare
    monkeypatch.setattr(F, "prepare", lambda f, *a, **k: prepared.append(f) or original(f, *a, **k))
    tracemalloc.start()
    try:
        step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prepared == []
    # a batch of the smallest activation (6 x 32 values a sample) is 1.5 x.nbytes
    assert peak < x.nbytes / 4, peak
