"""The layer contract of fastcnn._network: the buffer plan against what the
passes actually read, and a layer of the tests' own that declares a
parameter outside the L2 penalty, state, a training mode and random numbers."""
import hashlib
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

import fastcnn.functional as F
import fastcnn._network as network_module
import fastcnn
from fastcnn import CNNClassifier
from fastcnn._network import (Dataflow, Layer, Network, Parameter, ReLU,
                              State, he_glorot_uniform, zeros)
from fastcnn.layers import (AvgPool1D, AvgPool2D, Conv1D, Conv2D, Dense,
                            Flatten, LayerSpec, MaxPool1D, MaxPool2D,
                            Residual)
from fastcnn.layers import ReLU as ReLUSpec
from fastcnn.layers import (GlobalAvgPool1D, GlobalAvgPool2D, GlobalMaxPool1D,
                            GlobalMaxPool2D, L2Pool1D, L2Pool2D)
from fastcnn.layers import ELU, GELU, LeakyReLU, Sigmoid, Tanh
from fastcnn.layers import BatchNorm1D, BatchNorm2D, LocalResponseNorm

# ------------------------------------------------ the buffer plan

# Activations besides ReLU: tanh, sigmoid, leaky ReLU and ELU read their
# output in the backward pass, GELU its input.
OTHER_ACTIVATIONS = [Tanh(), Sigmoid(), LeakyReLU(0.1), ELU(0.5), GELU(), GELU("tanh")]


def _activation(rng):
    """ReLU half the time (max pooling takes it on), another activation
    otherwise."""
    if rng.random() < 0.5:
        return ReLUSpec()
    return OTHER_ACTIVATIONS[rng.integers(0, len(OTHER_ACTIVATIONS))]


def _random_specs(rng, ndim):
    """A layer sequence as users write them: spatial layers, then flat
    ones, then the output layer (not every one fits its input)."""
    conv, max_pool, avg_pool = ((Conv2D, MaxPool2D, AvgPool2D) if ndim == 2
                                else (Conv1D, MaxPool1D, AvgPool1D))
    l2_pool, global_pools = ((L2Pool2D, (GlobalAvgPool2D, GlobalMaxPool2D)) if ndim == 2
                             else (L2Pool1D, (GlobalAvgPool1D, GlobalMaxPool1D)))
    specs = []
    for _ in range(rng.integers(0, 6)):
        kind = rng.integers(0, 6)
        if kind >= 4:
            specs.append(_random_norm(rng, kind, ndim))
        elif kind == 0:
            kernel = int(rng.integers(1, 4))
            padding = ("same" if kernel % 2 and rng.random() < 0.3
                       else int(rng.integers(0, 2)))
            specs.append(conv(int(rng.integers(1, 4)), kernel,
                              stride=int(rng.integers(1, 3)), padding=padding))
        elif kind == 1:
            specs.append(_activation(rng))
        else:
            pool = max_pool if kind == 2 else avg_pool
            if kind == 3 and rng.random() < 0.5:
                pool = l2_pool
            specs.append(pool(int(rng.integers(1, 3)),
                              stride=None if rng.random() < 0.5 else 1))
    if rng.random() < 0.25:     # a global pooling ends the spatial layers
        specs.append(global_pools[rng.integers(0, 2)]())
    for _ in range(rng.integers(0, 4)):
        specs.append([Flatten(), _activation(rng), Dense(int(rng.integers(1, 5))),
                      BatchNorm1D()][rng.integers(0, 4)])
    return specs + [Dense(3)]


def _random_norm(rng, kind, ndim):
    if kind == 4:
        norm = BatchNorm2D if ndim == 2 else BatchNorm1D
        return norm(momentum=float(rng.random()), eps=float(10.0 ** rng.integers(-5, 0)))
    return LocalResponseNorm(int(rng.integers(1, 5)), alpha=float(rng.random()),
                             beta=0.75, k=float(1 + rng.random()))


def _valid_networks(count, seed, make_specs=None):
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        ndim = int(rng.integers(1, 3))
        input_shape = (2, 7, 6) if ndim == 2 else (2, 13)
        specs = (make_specs or _random_specs)(rng, ndim)
        try:
            Network(specs, input_shape, np.float64)
        except ValueError:
            continue
        found.append((specs, input_shape))
    return found


def _digest(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


class _Recorded:
    """A prepared call that logs a digest of every array it reads before it
    runs, and of what it returns after."""

    def __init__(self, log, function, args, kwargs, call):
        self.log, self.function, self.call = log, function, call
        self.reads = [a for a in list(args) + [v for k, v in kwargs.items() if k != "out"]
                      if isinstance(a, np.ndarray)]

    def run(self, n_threads):
        self.log.append((self.function.__name__, "reads",
                         [_digest(a) for a in self.reads]))
        result = self.call.run(n_threads)
        results = result if isinstance(result, tuple) else (result,)
        self.log.append((self.function.__name__, "returns",
                         [_digest(a) for a in results if isinstance(a, np.ndarray)]))
        return result


def _poison(network, value):
    for layer in network.all_layers:
        for name, array in vars(layer).items():
            if name.startswith("buf_") and array is not None and array.dtype.kind == "f":
                array[...] = value


def _steps(network, log, batches, target, poison):
    """Two training steps, then a prediction; the log of every kernel call
    and what the passes return."""
    for x in batches:
        scores = network.forward(x, 2)
        _, grad = F.softmax_cross_entropy(scores, target[:len(x)])
        log.append(("loss", "returns", [_digest(scores), _digest(grad)]))
        network.backward(grad, 2)
        log.append(("grads", "returns", [_digest(network.grads)]))
    network.allocate(len(batches[0]), training=False)
    _poison(network, poison)
    log.append(("predict", "returns", [_digest(network.forward(batches[0], 2))]))


def first_difference(specs, input_shape, monkeypatch):
    """Runs a network with its planned buffer sharing and the same network
    with none, every buffer poisoned with a different value: the first
    kernel call whose inputs or results differ bitwise between the two
    (None: none does). A value read after another step overwrote it, or
    before any step wrote it, makes them differ."""
    logs = []
    original = F.prepare
    for share, poison in ((True, np.nan), (False, 1e300)):
        log = []
        monkeypatch.setattr(F, "prepare", lambda f, *a, **k: _Recorded(
            log, f, a, k, original(f, *a, **k)))
        network = Network(specs, input_shape, np.float64)
        network.initialize(np.random.RandomState(0))
        network.allocate(5, training=True, share_buffers=share)
        _poison(network, poison)
        rng = np.random.default_rng(1)
        batches = [rng.standard_normal((5,) + input_shape),
                   rng.standard_normal((3,) + input_shape)]
        _steps(network, log, batches, rng.integers(0, 3, size=5), poison)
        logs.append(log)
    monkeypatch.setattr(F, "prepare", original)
    shared, alone = logs
    assert len(shared) == len(alone)
    for step, (a, b) in enumerate(zip(shared, alone)):
        if a != b:
            return f"step {step}: {a[0]} {a[1]} differ"
    return None


def _assert_nothing_shared(network):
    arrays = [a for layer in network.all_layers for name, a in vars(layer).items()
              if name.startswith("buf_") and a is not None]
    for i, a in enumerate(arrays):
        for b in arrays[i + 1:]:
            assert not np.shares_memory(a, b)


NETWORKS = _valid_networks(150, seed=0)


def test_random_sequences_cover_every_kind_of_sharing():
    places = set()
    for specs, input_shape in NETWORKS:
        plan = network_module.plan_buffers(Network(specs, input_shape, np.float64).layers,
                                           training=True)
        places |= {p.output for p in plan.placements}
        places |= {p.grad_input for p in plan.placements}
    assert {network_module.OVER_READ, network_module.OVER_ACTIVATION,
            network_module.SHARED, network_module.AS_VIEW} <= places


def test_no_buffer_is_overwritten_while_a_later_step_reads_it(monkeypatch):
    """Every kernel call of many layer sequences reads bitwise what it
    reads in the same network without shared buffers, over two training
    steps of different batch sizes and a prediction."""
    for specs, input_shape in NETWORKS:
        alone = Network(specs, input_shape, np.float64)
        alone.allocate(5, training=True, share_buffers=False)
        _assert_nothing_shared(alone)
        assert first_difference(specs, input_shape, monkeypatch) is None, specs


def _random_path(rng, ndim, depth):
    """Layers of random sequences and residual blocks of them, nested up to
    twice, with default shortcuts or explicit ones (identity, a ReLU, or a
    random path, which rarely fits)."""
    specs = []
    for _ in range(rng.integers(1, 4)):
        if depth < 2 and rng.random() < 0.4:
            shortcut = [None, None, None, [], [ReLUSpec()],
                        _random_path(rng, ndim, depth + 1)][rng.integers(0, 6)]
            specs.append(Residual(_random_path(rng, ndim, depth + 1), shortcut=shortcut))
        else:
            specs.append(_random_specs(rng, ndim)[0])
    return specs


def _random_residual_specs(rng, ndim):
    """A sequence of _random_specs after a path with at least one block."""
    while True:
        path = _random_path(rng, ndim, 0)
        if any(isinstance(spec, Residual) for spec in path):
            return path + _random_specs(rng, ndim)


RESIDUAL_NETWORKS = [(specs, shape) for specs, shape in _valid_networks(
    60, seed=1, make_specs=_random_residual_specs)]


def test_no_buffer_in_residual_blocks_is_overwritten_while_a_later_step_reads_it(
        monkeypatch):
    blocks = [layer for specs, shape in RESIDUAL_NETWORKS
              for layer in Network(specs, shape, np.float64).all_layers
              if isinstance(layer.spec, Residual)]
    # nested blocks, projections and explicit shortcuts among them
    assert sum(isinstance(block.position, tuple) for block in blocks) > 3
    assert sum(block.spec.shortcut is None and bool(block.shortcut) for block in blocks) > 3
    assert sum(block.spec.shortcut is not None for block in blocks) > 0
    for specs, input_shape in RESIDUAL_NETWORKS:
        alone = Network(specs, input_shape, np.float64)
        alone.allocate(5, training=True, share_buffers=False)
        _assert_nothing_shared(alone)
        assert first_difference(specs, input_shape, monkeypatch) is None, specs


def test_the_check_catches_a_declaration_that_claims_too_little(monkeypatch):
    # A ReLU that claimed its backward pass did not read its output would
    # let the average pooling after it write its input gradient over that
    # output, the ReLU's own, before the ReLU's backward pass reads it.
    specs = [Conv2D(2, 3, padding=1), ReLUSpec(), AvgPool2D(2), Dense(3)]
    assert first_difference(specs, (2, 6, 6), monkeypatch) is None
    monkeypatch.setattr(ReLU, "dataflow", Dataflow(
        output=network_module.OVER_INPUT, grad_input=network_module.OVER_INPUT,
        backward_reads=frozenset()))
    assert first_difference(specs, (2, 6, 6), monkeypatch) is not None


def test_random_sequences_hold_every_activation():
    held = {type(spec) for specs, _ in NETWORKS for spec in specs}
    assert {type(a) for a in OTHER_ACTIVATIONS} | {ReLUSpec} <= held


@pytest.mark.parametrize("activation, wrong", [
    (GELU(), frozenset({"output"})),       # it reads its input
    (Tanh(), frozenset()),                 # it reads its output
])
def test_the_check_catches_an_activation_that_claims_the_wrong_read(
        activation, wrong, monkeypatch):
    # GELU claiming to read its output would run in place over its input in
    # training, which its backward pass then reads overwritten; tanh claiming
    # to read nothing would let the average pooling after it write its input
    # gradient over tanh's output before tanh's backward pass reads it.
    specs = [Conv2D(2, 3, padding=1), activation, AvgPool2D(2), Conv2D(2, 1),
             Dense(3)]
    assert first_difference(specs, (2, 6, 6), monkeypatch) is None
    runtime = type(Network(specs, (2, 6, 6), np.float64).layers[1])
    monkeypatch.setattr(runtime, "dataflow", Dataflow(
        output=network_module.OVER_INPUT, grad_input=network_module.OVER_INPUT,
        backward_reads=wrong))
    assert first_difference(specs, (2, 6, 6), monkeypatch) is not None


# ------------------------------------- a layer with everything declared

@dataclass(frozen=True)
class Jitter(LayerSpec):
    """Test layer: ``y = x * gain[c] * mask`` in training, with a random
    mask of ±1 drawn each step, and ``y = x * gain[c]`` in inference; it
    counts the training steps it ran."""


class _JitterLayer(Layer):
    SPECS = (Jitter,)
    TRAINING_DIFFERS = True
    DRAWS_RANDOM = True

    def __init__(self, spec, input_shape, position):
        super().__init__(spec, input_shape, position)
        channels = self.input_shape[0]
        self.parameters = (
            Parameter("gain", (channels,), lambda rng, shape, output:
                      1 + 0.1 * rng.standard_normal(shape), l2_penalty=False),)
        self.states = (State("steps", (1,), zeros),)

    def forward(self, x, n_threads):
        gain = self.gain.reshape((-1,) + (1,) * (x.ndim - 2))
        self.x = x
        if self.training:
            self.mask = self.random.choice([-1.0, 1.0], size=x.shape)
            self.steps += 1
            gain = gain * self.mask
        out = self.output_rows(len(x))
        np.multiply(x, gain, out=out)
        return out

    def backward(self, grad_y, need_grad_x, n_threads):
        axes = (0,) + tuple(range(2, grad_y.ndim))
        self.grad_gain[...] = (grad_y * self.x * self.mask).sum(axis=axes)
        if not need_grad_x:
            return None
        gain = self.gain.reshape((-1,) + (1,) * (grad_y.ndim - 2)) * self.mask
        grad_x = self.buf_grad_x[:len(grad_y)]
        np.multiply(grad_y, gain, out=grad_x)
        return grad_x


JITTER_NET = [Conv1D(3, 3, padding=1), Jitter(), Dense(4), Dense(3)]


def test_parameters_outside_the_penalty_follow_the_penalised_ones():
    network = Network(JITTER_NET, (2, 9), np.float64)
    conv, jitter, dense, output = network.parametric_layers
    assert network.n_weights == conv.weight.size + dense.weight.size + output.weight.size
    rest = network.params[network.n_weights:]
    assert np.shares_memory(jitter.gain, rest) and np.shares_memory(conv.bias, rest)
    assert np.shares_memory(jitter.grad_gain, network.grads)
    network.initialize(np.random.RandomState(0))
    # drawn in layer order, then declaration order, from the one RandomState
    rng = np.random.RandomState(0)
    np.testing.assert_array_equal(conv.weight, he_glorot_uniform(rng, conv.weight.shape, False))
    np.testing.assert_array_equal(jitter.gain, 1 + 0.1 * rng.standard_normal(3))
    np.testing.assert_array_equal(dense.weight, he_glorot_uniform(rng, dense.weight.shape, False))
    np.testing.assert_array_equal(output.weight, he_glorot_uniform(rng, output.weight.shape, True))
    assert jitter.steps[0] == 0


def test_gradient_of_a_declared_parameter_matches_finite_differences(central_differences):
    network = Network(JITTER_NET, (2, 9), np.float64)
    network.initialize(np.random.RandomState(0))
    network.allocate(4, training=True)
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((4, 2, 9)), rng.integers(0, 3, size=4)
    jitter = network.layers[1]
    state = jitter.random.bit_generator.state

    def loss():
        jitter.random.bit_generator.state = state     # the same mask each time
        return F.softmax_cross_entropy(network.forward(x, 1), target)
    network.backward(loss()[1], 1)
    numeric = central_differences(lambda: loss()[0], network.params, 1e-6)
    np.testing.assert_allclose(network.grads, numeric, rtol=1e-4, atol=1e-7)


def _fit(n_threads, **params):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2, 9))
    y = (X[:, 0].sum(axis=1) > 0).astype(int)
    clf = CNNClassifier(layers=JITTER_NET[:-1], input_shape=(2, 9), max_iter=3,
                        random_state=0, n_threads=n_threads, batch_size=16, **params)
    return clf.fit(X, y), X, y


def test_random_numbers_are_reproducible_and_thread_independent():
    runs = [_fit(n)[0] for n in (1, 2, 1)]
    for clf in runs[1:]:
        np.testing.assert_array_equal(clf.network_.params, runs[0].network_.params)
    # 4 steps an epoch; the check of the loss after each epoch's last step
    # runs the training forward pass but leaves the state as it was
    # (Network.check_forward)
    assert runs[0].network_.layers[1].steps[0] == 3 * 4


def test_inference_does_not_draw_or_count(monkeypatch):
    clf, X, _ = _fit(1)
    jitter = clf.network_.layers[1]
    steps, state = jitter.steps.copy(), jitter.random.bit_generator.state
    proba = clf.predict_proba(X)
    assert jitter.steps == steps and jitter.random.bit_generator.state == state
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_state_and_random_numbers_survive_pickling_and_warm_start():
    clf, X, y = _fit(1)
    loaded = pickle.loads(pickle.dumps(clf))
    jitter, twin = clf.network_.layers[1], loaded.network_.layers[1]
    np.testing.assert_array_equal(twin.steps, jitter.steps)
    assert twin.random.bit_generator.state == jitter.random.bit_generator.state
    for model in (clf, loaded):
        model.set_params(warm_start=True, max_iter=1).fit(X, y)
    np.testing.assert_array_equal(loaded.network_.params, clf.network_.params)
    np.testing.assert_array_equal(loaded.network_.state, clf.network_.state)
    assert jitter.steps[0] == 3 * 4 + 4     # warm_start kept counting


def test_layers_that_declare_no_training_mode_compute_the_same_in_both():
    checked = 0
    for specs, input_shape in NETWORKS[:80]:
        network = Network(specs, input_shape, np.float64)
        network.initialize(np.random.RandomState(0))
        if any(layer.TRAINING_DIFFERS or layer.DRAWS_RANDOM for layer in network.layers):
            continue      # batch norms: their own tests
        checked += 1
        x = np.random.default_rng(0).standard_normal((4,) + input_shape)
        network.allocate(4, training=True)
        trained = network.forward(x.copy(), 1).copy()
        network.allocate(4, training=False)
        np.testing.assert_array_equal(network.forward(x, 1), trained)
    assert checked >= 20


@pytest.mark.parametrize("name", ["parameters", "states"])
def test_builtin_declarations_are_tuples_of_their_kind(name):
    kinds = {"parameters": Parameter, "states": State}
    network = Network([Conv2D(2, 3), ReLUSpec(), MaxPool2D(2), Flatten(), Dense(3)],
                      (1, 8, 8), np.float32)
    for layer in network.layers:
        assert all(isinstance(d, kinds[name]) for d in getattr(layer, name))
    assert [p.name for p in network.layers[0].parameters] == ["weight", "bias"]
    assert [p.init for p in network.layers[0].parameters] == [he_glorot_uniform, zeros]


# ------------------------------------------------ dropout in the sequences

def _with_dropout(rng, specs, ndim):
    """``specs`` with one to three dropout layers at random places, some
    channel-wise (those that land on flat values make the network invalid,
    and it is skipped)."""
    from fastcnn.layers import Dropout, SpatialDropout1D, SpatialDropout2D
    spatial = SpatialDropout2D if ndim == 2 else SpatialDropout1D
    specs = list(specs)
    for _ in range(rng.integers(1, 4)):
        kind = Dropout if rng.random() < 0.5 else spatial
        rate = float(rng.choice([0.0, 0.3, 0.6]))
        specs.insert(int(rng.integers(0, len(specs))), kind(rate))
    return specs


def _random_specs_with_dropout(rng, ndim):
    return _with_dropout(rng, _random_specs(rng, ndim), ndim)


DROPOUT_NETWORKS = _valid_networks(80, seed=1, make_specs=_random_specs_with_dropout)


def test_dropout_sequences_take_every_placement_of_the_dropout_layer():
    places = set()
    for specs, input_shape in DROPOUT_NETWORKS:
        network = Network(specs, input_shape, np.float64)
        plan = network_module.plan_buffers(network.layers, training=True)
        places |= {(p.output, p.grad_input) for layer, p
                   in zip(network.layers, plan.placements)
                   if isinstance(layer, network_module.Dropout)}
    outputs, grads = {o for o, _ in places}, {g for _, g in places}
    assert {network_module.OVER_READ, network_module.OWN} <= outputs
    assert {network_module.OVER_READ, None} <= grads


def test_no_buffer_is_overwritten_in_sequences_with_dropout(monkeypatch):
    """As test_no_buffer_is_overwritten_while_a_later_step_reads_it, with
    dropout layers, whose masks are the same in both networks (the same
    random_state)."""
    for specs, input_shape in DROPOUT_NETWORKS:
        assert first_difference(specs, input_shape, monkeypatch) is None, specs


def test_the_check_catches_a_dropout_reading_its_input_undeclared(monkeypatch):
    # A dropout layer whose backward pass read its input while declaring
    # that it reads nothing: the plan lets its forward pass run over that
    # input, so the backward pass would read the masked values instead.
    from fastcnn.layers import Dropout
    specs = [Conv2D(2, 3, padding=1), Dropout(0.5), ReLUSpec(), Dense(3)]
    assert first_difference(specs, (2, 6, 6), monkeypatch) is None
    original = network_module.Dropout.backward

    def reads_its_input(self, grad_y, need_grad_x, n_threads):
        if need_grad_x:
            self.uniforms[...] = np.abs(self.kept_input).reshape(self.uniforms.shape)
        return original(self, grad_y, need_grad_x, n_threads)
    original_forward = network_module.Dropout.forward

    def keeps_its_input(self, x, n_threads):
        self.kept_input = x
        return original_forward(self, x, n_threads)
    monkeypatch.setattr(network_module.Dropout, "forward", keeps_its_input)
    monkeypatch.setattr(network_module.Dropout, "backward", reads_its_input)
    assert first_difference(specs, (2, 6, 6), monkeypatch) is not None
@pytest.mark.parametrize("claimed", [frozenset({"input"}), frozenset({"output"})])
def test_the_check_catches_an_l2_pooling_that_claims_too_little(claimed, monkeypatch):
    # L2 pooling's gradient grad_y * x / y reads its input and its output:
    # without "output" the average pooling after it writes its input
    # gradient over y before the backward pass reads it; without "input"
    # its own input gradient is planned over x, which the pass reads
    # (functional refuses the overlap).
    specs = [Conv2D(2, 3, padding=1), L2Pool2D(2, stride=1), AvgPool2D(2), Dense(3)]
    assert first_difference(specs, (2, 6, 6), monkeypatch) is None
    monkeypatch.setattr(network_module.L2Pool, "dataflow",
                        Dataflow(backward_reads=claimed))
    try:
        caught = first_difference(specs, (2, 6, 6), monkeypatch) is not None
    except ValueError as error:
        caught = "shares memory" in str(error)
    assert caught
def test_the_check_catches_a_normalization_that_claims_too_little(monkeypatch):
    # Local response normalization's backward pass reads its output: one
    # that claimed otherwise would let the ReLU after it run in place over
    # that output before the backward pass reads it.
    specs = [Conv2D(3, 3, padding=1), LocalResponseNorm(3, alpha=0.5), ReLUSpec(), Dense(3)]
    assert first_difference(specs, (2, 6, 6), monkeypatch) is None
    monkeypatch.setattr(network_module.LocalResponseNorm, "dataflow",
                        Dataflow(backward_reads=frozenset({"input"})))
    assert first_difference(specs, (2, 6, 6), monkeypatch) is not None


# --------------------------------- batch normalization's running statistics

BN_NET = [Conv2D(3, 3, padding=1), BatchNorm2D(momentum=0.5), ReLUSpec(), MaxPool2D(2),
          Flatten(), Dense(8), BatchNorm1D(momentum=0.5), ReLUSpec()]


def _bn_classifier(**params):
    params = {"max_iter": 2, "batch_size": 25, "random_state": 0, **params}
    return CNNClassifier(layers=BN_NET, input_shape=(1, 8, 8), **params)


def _reset_running_statistics(clf):
    for layer in clf.network_.layers:
        if isinstance(layer, network_module.BatchNorm):
            layer.running_mean[...] = 0
            layer.running_var[...] = 1


def test_batch_norm_state_is_declared_and_trained(small_digits):
    X, y = small_digits
    clf = _bn_classifier().fit(X, y)
    norms = [layer for layer in clf.network_.layers
             if isinstance(layer, network_module.BatchNorm)]
    assert [layer.running_mean.size for layer in norms] == [3, 8]
    for layer in norms:
        assert [p.name for p in layer.parameters] == ["weight", "bias"]
        assert not any(p.l2_penalty for p in layer.parameters)
        assert [s.name for s in layer.states] == ["running_mean", "running_var"]
        assert np.shares_memory(layer.running_mean, clf.network_.state)
        # moved away from their initial 0 and 1 by the training steps
        assert np.all(layer.running_mean != 0) and np.all(layer.running_var != 1)
    # the L2 penalty covers the convolution's and dense layers' weights only
    conv, dense, output = (layer for layer in clf.network_.layers if layer.parameters
                           and not isinstance(layer, network_module.BatchNorm))
    assert clf.network_.n_weights == conv.weight.size + dense.weight.size + output.weight.size


def test_batch_norm_state_survives_pickling(small_digits):
    X, y = small_digits
    clf = _bn_classifier().fit(X, y)
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.network_.state, clf.network_.state)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    # inference reads the running statistics: without them it differs
    _reset_running_statistics(loaded)
    assert not np.allclose(loaded.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_batch_norm_state_carries_over_to_further_training(small_digits, how):
    X, y = small_digits
    clf = _bn_classifier().fit(X, y)
    kept, reset = pickle.loads(pickle.dumps(clf)), pickle.loads(pickle.dumps(clf))
    _reset_running_statistics(reset)
    for model in (clf, kept, reset):
        if how == "warm_start":
            model.set_params(warm_start=True, max_iter=1).fit(X, y)
        else:
            model.partial_fit(X, y)
    np.testing.assert_array_equal(kept.network_.state, clf.network_.state)
    np.testing.assert_array_equal(kept.network_.params, clf.network_.params)
    # a fit that started the statistics afresh would end where `reset` does
    assert not np.allclose(reset.network_.state, clf.network_.state)


def test_batch_norm_state_goes_back_with_the_weights_when_a_fit_diverges(small_digits):
    X, y = small_digits
    clf = _bn_classifier(solver="sgd").fit(X, y)
    params, state = clf.network_.params.copy(), clf.network_.state.copy()
    clf.set_params(warm_start=True, learning_rate_init=1e30)
    with pytest.raises(fastcnn.TrainingDivergedError):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.network_.params, params)
    np.testing.assert_array_equal(clf.network_.state, state)
    assert np.isfinite(clf.predict_proba(X)).all()


@pytest.mark.parametrize("n_samples", [26, 51])    # last batch of 1 sample; of 1 then 2
def test_batch_norm_trains_on_tiny_batches_without_nan(small_digits, n_samples):
    X, y = small_digits
    X, y = X[:n_samples], y[:n_samples]
    # batches of 25 and a last one of a single sample (flat features: one
    # value per channel), or of two; batches of 2 (and a last one of 1)
    for batch_size in (25, 2):
        clf = _bn_classifier(batch_size=batch_size).fit(X, y)
        assert np.isfinite(clf.network_.params).all()
        assert np.isfinite(clf.network_.state).all()
        assert np.isfinite(clf.predict_proba(X)).all()


def test_batch_norm_computes_other_values_in_training_than_in_inference():
    network = Network(BN_NET + [Dense(3)], (1, 8, 8), np.float64)
    network.initialize(np.random.RandomState(0))
    x = 2 + np.random.default_rng(0).standard_normal((6, 1, 8, 8))
    network.allocate(6, training=False)
    before = network.forward(x, 1).copy()
    state = network.state.copy()
    np.testing.assert_array_equal(network.forward(x, 2), before)
    np.testing.assert_array_equal(network.state, state)     # inference leaves it
    network.allocate(6, training=True)
    trained = network.forward(x, 1).copy()
    assert not np.allclose(trained, before)
    assert not np.allclose(network.state, state)             # training moves it


def test_the_check_catches_a_batch_norm_with_relu_that_claims_too_little(monkeypatch):
    # With the ReLU after it taken on, a batch norm's backward pass reads
    # its output (where the ReLU let gradients through): one that claimed
    # only its input would let the average pooling write its input gradient
    # over that output first.
    specs = [Conv2D(3, 3, padding=1), BatchNorm2D(), ReLUSpec(), AvgPool2D(2), Dense(3)]
    assert first_difference(specs, (2, 6, 6), monkeypatch) is None
    monkeypatch.setattr(network_module.BatchNorm, "fuse_relu",
                        lambda self: setattr(self, "relu", True))
    assert first_difference(specs, (2, 6, 6), monkeypatch) is not None


def test_random_sequences_hold_batch_norms_with_and_without_a_relu():
    names = {layer.name for specs, input_shape in NETWORKS
             for layer in Network(specs, input_shape, np.float64).layers}
    assert {"BatchNorm2D", "BatchNorm2D+ReLU", "BatchNorm1D", "BatchNorm1D+ReLU",
            "LocalResponseNorm"} <= names
