"""The runtime network: whole-network gradients by finite differences, the
parameter layout, buffers and pickling."""
import pickle

import numpy as np
import pytest

import fastcnn.functional as F
from fastcnn._network import Network
from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Flatten, MaxPool1D, MaxPool2D, ReLU)
from fastcnn.layers import (GlobalAvgPool1D, GlobalMaxPool1D, GlobalMaxPool2D,
                            L2Pool1D, L2Pool2D)
from _helpers.checks import check_network_gradient

IMAGE_NET = ([Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2),
              Conv2D(4, (2, 3), stride=(1, 2), padding="valid"), ReLU(),
              AvgPool2D(2, stride=1), Flatten(), Dense(5), ReLU(), Dense(3)],
             (2, 9, 10))
SIGNAL_NET = ([Conv1D(3, 5, stride=2, padding=1), ReLU(), MaxPool1D(2, stride=1),
               Conv1D(2, 3, padding="same"), AvgPool1D(2), Dense(4), ReLU(),
               Dense(3)],
              (2, 23))
NETS = {"images": IMAGE_NET, "signals": SIGNAL_NET}
NETS["images-l2-global"] = ([Conv2D(3, 3, padding=1), L2Pool2D((2, 3), stride=1),
                             ReLU(), Conv2D(4, 2), GlobalMaxPool2D(), Dense(3)],
                            (2, 7, 8))
NETS["signals-l2-global"] = ([Conv1D(3, 3), L2Pool1D(3, stride=2), Conv1D(4, 2),
                              GlobalAvgPool1D(), ReLU(), Dense(3)],
                             (2, 15))


def _loss(network, x, target):
    logits = network.forward(x, 1)
    return F.softmax_cross_entropy(logits, target)


@pytest.mark.parametrize("name", NETS)
def test_network_gradient_matches_finite_differences(name):
    check_network_gradient(*NETS[name], n_threads=1)


def test_parameter_layout_weights_first_then_biases():
    specs, input_shape = IMAGE_NET
    network = Network(specs, input_shape, np.float32)
    layers = network.parametric_layers
    n_weights = sum(layer.weight.size for layer in layers)
    assert network.n_weights == n_weights
    assert network.params.size == n_weights + sum(layer.bias.size for layer in layers)
    for layer in layers:   # views, not copies
        assert np.shares_memory(layer.weight, network.params[:n_weights])
        assert np.shares_memory(layer.bias, network.params[n_weights:])
        assert np.shares_memory(layer.grad_weight, network.grads)
    assert [layer.weight_shape for layer in layers] == [
        (3, 2, 3, 3), (4, 3, 2, 3), (5, 4 * 2 * 1), (3, 5)]


def test_initialization_scales():
    network = Network([Conv2D(64, 3), ReLU(), Dense(50)], (16, 10, 10), np.float64)
    network.initialize(np.random.RandomState(0))
    conv, dense = network.parametric_layers
    he = np.sqrt(6 / (16 * 9))
    assert np.abs(conv.weight).max() <= he and np.abs(conv.weight).max() > 0.9 * he
    glorot = np.sqrt(6 / (dense.fan_in + 50))
    assert np.abs(dense.weight).max() <= glorot
    assert np.all(conv.bias == 0) and np.all(dense.bias == 0)


def test_smaller_batch_uses_leading_part_of_buffers():
    specs, input_shape = IMAGE_NET
    network = Network(specs, input_shape, np.float64)
    network.initialize(np.random.RandomState(0))
    x = np.random.default_rng(2).standard_normal((7,) + input_shape)
    network.allocate(7, training=False)
    full = network.forward(x, 2).copy()
    part = network.forward(np.ascontiguousarray(x[:3]), 2)
    np.testing.assert_array_equal(part, full[:3])


def test_relu_as_first_layer_leaves_the_input_alone():
    network = Network([ReLU(), Dense(2)], (1, 6), np.float64)
    network.initialize(np.random.RandomState(0))
    x = np.linspace(-1, 1, 12).reshape(2, 1, 6)
    before = x.copy()
    network.allocate(2, training=True)
    network.forward(x, 1)
    np.testing.assert_array_equal(x, before)


def test_pickle_keeps_parameters_and_drops_buffers():
    specs, input_shape = IMAGE_NET
    network = Network(specs, input_shape, np.float32)
    network.initialize(np.random.RandomState(3))
    network.allocate(64, training=True)
    blob = pickle.dumps(network)
    # buffers for 64 samples would be far larger than the parameters
    assert len(blob) < 4 * network.params.size + 20_000
    twin = pickle.loads(blob)
    np.testing.assert_array_equal(twin.params, network.params)
    assert np.shares_memory(twin.parametric_layers[0].weight, twin.params)
    x = np.random.default_rng(0).standard_normal((4,) + input_shape).astype(np.float32)
    network.allocate(4, training=False)
    twin.allocate(4, training=False)
    np.testing.assert_array_equal(twin.forward(x, 1), network.forward(x, 1))


def test_inference_copy_shares_parameters_not_buffers():
    specs, input_shape = IMAGE_NET
    network = Network(specs, input_shape, np.float32)
    network.initialize(np.random.RandomState(3))
    twin = network.inference_copy()
    assert np.shares_memory(twin.params, network.params)
    network.allocate(4, training=False)
    twin.allocate(4, training=False)
    assert not np.shares_memory(twin.layers[0].buf_y, network.layers[0].buf_y)


def test_borrowed_predictors_are_reused_but_never_shared():
    specs, input_shape = IMAGE_NET
    network = Network(specs, input_shape, np.float32)
    network.initialize(np.random.RandomState(3))
    first = network.borrow_predictor(4)
    second = network.borrow_predictor(4)      # while the first is out
    assert second is not first
    assert not np.shares_memory(first.layers[0].buf_y, second.layers[0].buf_y)
    network.return_predictor(first)
    network.return_predictor(second)          # one idle copy is enough
    assert network.borrow_predictor(4) is first
    assert network.borrow_predictor(4) is not second
    # the lent copy sees later changes to the parameters
    x = np.random.default_rng(0).standard_normal((4,) + input_shape).astype(np.float32)
    before = first.forward(x, 1).copy()
    network.params *= 2
    network.allocate(4, training=False)
    np.testing.assert_array_equal(first.forward(x, 1), network.forward(x, 1))
    assert not np.array_equal(before, network.forward(x, 1))


@pytest.mark.parametrize("specs, shape, match", [
    ([Conv2D(2, 3)], (1, 12), r"layers\[0\] Conv2D works on images"),
    ([Conv1D(2, 3)], (1, 4, 4), r"layers\[0\] Conv1D works on signals"),
    ([Conv2D(2, 5)], (1, 4, 4), r"layers\[0\] Conv2D: kernel_size"),
    ([Conv2D(2, 3), MaxPool2D(4)], (1, 4, 4), r"layers\[1\] MaxPool2D: pool_size"),
    ([Dense(3), Conv1D(2, 1)], (1, 4), r"layers\[1\] Conv1D works on signals"),
    (["conv"], (1, 4), r"layers\[0\] must be a layer specification"),
    ([Conv2D(2, 1), L2Pool2D((2, 5))], (1, 4, 4), r"layers\[1\] L2Pool2D: pool_size"),
    ([L2Pool1D(5)], (1, 4), r"layers\[0\] L2Pool1D: pool_size \(5,\) is larger"),
    ([GlobalMaxPool2D()], (1, 9), r"layers\[0\] GlobalMaxPool2D works on images"),
    ([GlobalMaxPool1D(), GlobalMaxPool1D()], (2, 9),
     r"layers\[1\] GlobalMaxPool1D works on signals"),
    ([Conv2D(2, 3, dilation=(1, 3))], (1, 6, 6), r"layers\[0\] Conv2D: dilation"),
    ([Conv1D(2, 3, dilation=5)], (1, 9), r"layers\[0\] Conv1D: dilation .* leaves no output"),
])
def test_bad_architectures_name_the_layer(specs, shape, match):
    with pytest.raises(ValueError, match=match):
        Network(specs, shape, np.float32)


@pytest.mark.parametrize("spec, shape, padding", [
    (Conv2D(3, 2, padding="same"), (2, 7, 6), ((0, 1), (0, 1))),
    (Conv2D(3, (4, 3), padding="same", dilation=(1, 2)), (2, 7, 6), ((1, 2), 2)),
    (Conv1D(3, 2, padding="same", dilation=2), (2, 9), (1,)),
    (Conv1D(3, 4, padding="same", dilation=3), (2, 9), ((4, 5),)),
    (Conv2D(3, 3, stride=2, padding="same", dilation=2), (2, 7, 6), (2, 2)),
])
def test_same_padding_keeps_the_size_at_stride_1(spec, shape, padding):
    """PyTorch's rule: d*(k - 1) zeros per axis, the odd one after."""
    layer = Network([spec], shape, np.float64).layers[0]
    assert layer.padding == padding
    if spec.stride == 1:
        assert layer.output_shape == (3,) + shape[1:]


def _run_step(network, x, target):
    loss, grad = _loss(network, x, target)
    network.backward(grad, 2)
    return loss, network.forward(x, 2).copy(), network.grads.copy()


@pytest.mark.parametrize("spatial", [2, 1])
def test_relu_before_max_pooling_runs_after_it_with_the_same_bits(spatial, monkeypatch):
    """ReLU then max pooling runs as pooling then ReLU (network_module's
    _execution_order), the ReLU inside the pooling's passes (MaxPool.fuse_relu):
    the scores, loss and gradients are bitwise those of the order as
    written, also where a window holds only negative values, zeros or
    ties."""
    import fastcnn._network as network_module
    if spatial == 2:
        specs = [Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2),
                 Conv2D(4, 2), ReLU(), MaxPool2D(2, stride=1), Flatten(), Dense(3)]
        input_shape = (2, 8, 9)
    else:
        specs = [Conv1D(3, 3, padding=1), ReLU(), MaxPool1D(3, stride=2),
                 ReLU(), MaxPool1D(2), Dense(3)]
        input_shape = (2, 21)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6,) + input_shape)
    x[0] = -1.0          # constant input: all-negative windows and ties
    x[1] = 0.0
    target = rng.integers(0, 3, size=6)
    runs = []
    for reorder in (True, False):
        if not reorder:
            monkeypatch.setattr(network_module, "_execution_order",
                                lambda specs: list(range(len(specs))))
            monkeypatch.setattr(network_module, "_fuses_relu", lambda *layers: False)
        network = Network(specs, input_shape, np.float64)
        network.initialize(np.random.RandomState(0))
        network.allocate(6, training=True)
        order = [layer.position for layer in network.layers]
        runs.append((order, _run_step(network, x, target)))
    (moved, (loss, scores, grads)), (kept, (loss0, scores0, grads0)) = runs
    assert moved != kept      # the swap did happen
    relus = {i for i, spec in enumerate(specs) if isinstance(spec, ReLU)}
    assert not relus & set(moved) and relus <= set(kept)   # and the fusion
    assert loss == loss0
    np.testing.assert_array_equal(scores, scores0)
    np.testing.assert_array_equal(grads, grads0)


def test_profile_names_a_pooling_with_its_fused_relu():
    specs = [Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2), Flatten(), Dense(3)]
    network = Network(specs, (2, 8, 8), np.float64)
    network.initialize(np.random.RandomState(0))
    network.allocate(4, training=True)
    network.profile = {}
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8))
    _run_step(network, x, np.array([0, 1, 2, 0]))
    keys = set(network.profile)
    assert (2, "MaxPool2D+ReLU", "forward") in keys
    assert (2, "MaxPool2D+ReLU", "backward") in keys
    assert not any(position == 1 for position, _, _ in keys)   # no ReLU of its own


def test_input_gradients_reuse_dead_outputs_and_two_shared_buffers():
    specs = [Conv2D(3, 3, padding=1), ReLU(), MaxPool2D(2),     # runs as conv, pool+relu
             Conv2D(4, 3), ReLU(), AvgPool2D(2), Flatten(), Dense(6), ReLU(), Dense(3)]
    network = Network(specs, (2, 12, 12), np.float32)
    network.allocate(5, training=True)
    layers = {layer.position: layer for layer in network.layers}
    # the max pooling writes its input gradient over the convolution's output,
    # which no backward pass reads
    assert layers[2].buf_grad_x is layers[0].buf_y or np.shares_memory(
        layers[2].buf_grad_x, layers[0].buf_y)
    # the others take turns in two arrays: consecutive writers never share
    writers = [layers[p] for p in (3, 5, 7, 9)]    # backward order: 9, 7, 5, 3
    bases = [layer.buf_grad_x.base for layer in writers]
    assert len({id(base) for base in bases}) == 2
    for a, b in zip(writers, writers[1:]):
        assert not np.shares_memory(a.buf_grad_x, b.buf_grad_x)
    assert layers[0].buf_grad_x is None      # the first layer's is never needed
    network.allocate(5, training=False)
    assert all(getattr(layer, "buf_grad_x", None) is None for layer in network.layers)


@pytest.mark.parametrize("spatial", [2, 1])
def test_batch_norm_takes_on_the_relu_after_it_with_the_same_bits(spatial, monkeypatch):
    """A ReLU after a batch norm runs inside the norm's passes
    (BatchNorm.fuse_relu): the scores, loss, gradients and running
    statistics of training steps, and the scores of inference, are
    bitwise those of the two layers apart."""
    import fastcnn._network as network_module
    from fastcnn.layers import BatchNorm1D, BatchNorm2D
    if spatial == 2:
        specs = [Conv2D(3, 3, padding=1), BatchNorm2D(), ReLU(), Flatten(),
                 Dense(5), BatchNorm1D(momentum=0.3), ReLU(), Dense(3)]
        input_shape = (2, 6, 7)
    else:
        specs = [Conv1D(3, 3, padding=1), BatchNorm1D(), ReLU(), Dense(3)]
        input_shape = (2, 15)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6,) + input_shape)
    target = rng.integers(0, 3, size=6)
    runs = []
    for fuse in (True, False):
        if not fuse:
            monkeypatch.setattr(network_module, "_fuses_relu", lambda *layers: False)
        network = Network(specs, input_shape, np.float64)
        network.initialize(np.random.RandomState(0))
        network.allocate(6, training=True)
        names = [layer.name for layer in network.layers]
        steps = [_run_step(network, x, target) for _ in range(2)]
        state = network.state.copy()
        network.allocate(6, training=False)
        runs.append((names, steps, state, network.forward(x, 2).copy()))
    (fused_names, fused, fused_state, fused_scores), (names, plain, state, scores) = runs
    assert "ReLU" not in fused_names and "ReLU" in names
    assert any(name.endswith("+ReLU") and name.startswith("BatchNorm") for name in fused_names)
    for (loss, step_scores, grads), (loss0, step_scores0, grads0) in zip(fused, plain):
        assert loss == loss0
        np.testing.assert_array_equal(step_scores, step_scores0)
        np.testing.assert_array_equal(grads, grads0)
    np.testing.assert_array_equal(fused_state, state)
    np.testing.assert_array_equal(fused_scores, scores)
