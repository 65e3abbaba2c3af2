"""PyTorch twins of fastcnn networks, for the tests that train both from the
same weights on the same batches and compare their losses step by step.

PyTorch is a benchmark-only dependency: callers skip when it is absent
(``pytest.importorskip("torch")`` before calling anything here).

A twin is built layer by layer from a :class:`fastcnn._network.Network`
(its runtime layers, in execution order), by the function ``TWINS`` holds
for the layer's specification class. Each returns the PyTorch modules of
the layer and the pairs (fastcnn array, PyTorch tensor) to copy from one
to the other: the layer's parameters and its non-trainable state. A new
layer adds one function here and one entry in ``TWINS``.
"""
import numpy as np

from fastcnn import functional as F
from fastcnn import layers as L
from fastcnn._network import Network


def _conv(layer, nn):
    """A (before, after) pair in the layer's padding (padding='same' for an
    even kernel) becomes an explicit zero padding module before the conv."""
    spec = layer.spec
    padding = layer.padding
    modules = []
    if any(isinstance(p, tuple) for p in padding):
        pairs = [p if isinstance(p, tuple) else (p, p) for p in padding]
        # torch lists the last axis first: (left, right, top, bottom)
        flat = tuple(v for pair in reversed(pairs) for v in pair)
        modules.append(nn.ZeroPad2d(flat) if isinstance(spec, L.Conv2D)
                       else nn.ConstantPad1d(flat, 0.0))
        padding = 0
    module = (nn.Conv2d if isinstance(spec, L.Conv2D) else nn.Conv1d)(
        layer.input_shape[0], spec.filters, layer.weight_shape[2:],
        stride=layer.stride, padding=padding,
        dilation=getattr(layer, "dilation", 1))
    modules.append(module)
    return modules, [(layer.weight, module.weight), (layer.bias, module.bias)]


def _max_pool(layer, nn):
    pool = nn.MaxPool2d if isinstance(layer.spec, L.MaxPool2D) else nn.MaxPool1d
    modules = [pool(layer.size, layer.stride)]
    if layer.relu:      # a ReLU the pooling took on (MaxPool.fuse_relu)
        modules.append(nn.ReLU())
    return modules, []


def _avg_pool(layer, nn):
    pool = nn.AvgPool2d if isinstance(layer.spec, L.AvgPool2D) else nn.AvgPool1d
    return [pool(layer.size, layer.stride)], []


def _relu(layer, nn):
    return [nn.ReLU()], []


def _flatten(layer, nn):
    return [nn.Flatten()], []


def _dense(layer, nn):
    module = nn.Linear(layer.fan_in, layer.spec.units)
    modules = [nn.Flatten(), module] if len(layer.input_shape) > 1 else [module]
    if layer.relu:      # a ReLU the dense layer took on (Dense.fuse_relu)
        modules.append(nn.ReLU())
    return modules, [(layer.weight, module.weight), (layer.bias, module.bias)]


def _global_pool(layer, nn):
    """fastcnn's (N, C) output: PyTorch's pooling to one position, flattened."""
    two_d = layer.spec.spatial_ndim == 2
    if layer.is_max:
        pool = nn.AdaptiveMaxPool2d if two_d else nn.AdaptiveMaxPool1d
    else:
        pool = nn.AdaptiveAvgPool2d if two_d else nn.AdaptiveAvgPool1d
    return [pool(1), nn.Flatten()], []


def _l2_pool(layer, nn):
    if isinstance(layer.spec, L.L2Pool2D):
        return [nn.LPPool2d(2, layer.size, layer.stride)], []
    # LPPool1d multiplies by its kernel size, which must then be an int
    return [nn.LPPool1d(2, layer.size[0], layer.stride[0])], []
def _batch_norm(layer, nn):
    spec = layer.spec
    module = (nn.BatchNorm2d if isinstance(spec, L.BatchNorm2D) else nn.BatchNorm1d)(
        layer.input_shape[0], eps=spec.eps, momentum=spec.momentum)
    modules = [module, nn.ReLU()] if layer.relu else [module]    # BatchNorm.fuse_relu
    return modules, [(layer.weight, module.weight), (layer.bias, module.bias),
                      (layer.running_mean, module.running_mean),
                      (layer.running_var, module.running_var)]


def _local_response_norm(layer, nn):
    spec = layer.spec
    return [nn.LocalResponseNorm(spec.size, spec.alpha, spec.beta, spec.k)], []


#: specification class -> function(runtime layer, torch.nn) -> (modules, pairs)
TWINS = {
    L.Conv2D: _conv, L.Conv1D: _conv,
    L.MaxPool2D: _max_pool, L.MaxPool1D: _max_pool,
    L.AvgPool2D: _avg_pool, L.AvgPool1D: _avg_pool,
    L.ReLU: _relu, L.Flatten: _flatten, L.Dense: _dense,
    L.GlobalAvgPool2D: _global_pool, L.GlobalAvgPool1D: _global_pool,
    L.GlobalMaxPool2D: _global_pool, L.GlobalMaxPool1D: _global_pool,
    L.L2Pool2D: _l2_pool, L.L2Pool1D: _l2_pool,
}
TWINS.update({L.BatchNorm2D: _batch_norm, L.BatchNorm1D: _batch_norm,
              L.LocalResponseNorm: _local_response_norm})


def _residual(layer, nn):
    """A module computing main(x) + shortcut(x), each path a Sequential
    of its layers' twins (an empty one: the identity)."""
    main, main_pairs = _sequence_twin(layer.main, nn)
    shortcut, shortcut_pairs = _sequence_twin(layer.shortcut, nn)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.main, self.shortcut = main, shortcut

        def forward(self, x):
            return self.main(x) + self.shortcut(x)
    return [Block()], main_pairs + shortcut_pairs


TWINS[L.Residual] = _residual


def _sequence_twin(layers, nn):
    """(Sequential, pairs) of runtime layers in execution order."""
    modules, pairs = [], []
    for layer in layers:
        layer_modules, layer_pairs = TWINS[type(layer.spec)](layer, nn)
        modules += layer_modules
        pairs += layer_pairs
    return nn.Sequential(*modules), pairs
def _dropout(layer, nn):
    # PyTorch draws masks of its own: the twins agree in inference, and in
    # training only at rate 0
    module = {L.Dropout: nn.Dropout, L.SpatialDropout1D: nn.Dropout1d,
              L.SpatialDropout2D: nn.Dropout2d}[type(layer.spec)]
    return [module(layer.rate)], []


TWINS.update({L.Dropout: _dropout, L.SpatialDropout1D: _dropout,
              L.SpatialDropout2D: _dropout})
def _tanh(layer, nn):
    return [nn.Tanh()], []


def _sigmoid(layer, nn):
    return [nn.Sigmoid()], []


def _leaky_relu(layer, nn):
    return [nn.LeakyReLU(layer.spec.negative_slope)], []


def _elu(layer, nn):
    return [nn.ELU(layer.spec.alpha)], []


def _gelu(layer, nn):
    return [nn.GELU(approximate=layer.spec.approximate)], []


TWINS.update({L.Tanh: _tanh, L.Sigmoid: _sigmoid, L.LeakyReLU: _leaky_relu,
              L.ELU: _elu, L.GELU: _gelu})


def torch_twin(network):
    """(model, pairs): a float64 torch.nn.Sequential computing what
    ``network`` computes, and the (fastcnn array, torch tensor) pairs of
    its parameters and state, the twin's set to fastcnn's values."""
    import torch
    # built in float64: .double() would replace buffers (running statistics)
    # with new tensors, leaving the pairs holding the old ones
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model, pairs = _sequence_twin(network.layers, torch.nn)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        for ours, theirs in pairs:
            theirs.copy_(torch.from_numpy(np.array(ours, dtype=np.float64)))
    return model, pairs


def _torch_cross_entropy(scores, y):
    import torch
    return torch.nn.functional.cross_entropy(scores, torch.from_numpy(y.astype(np.int64)))


def _torch_half_squared_error(predictions, y):
    """PyTorch's form of CNNRegressor's loss, 0.5 * MSE summed / N."""
    import torch
    return 0.5 * torch.nn.functional.mse_loss(
        predictions, torch.from_numpy(y), reduction="sum") / len(y)


#: loss -> (fastcnn's function, PyTorch's) of (scores, targets): class
#: indices for CNNClassifier's, float targets (N, K) for CNNRegressor's
LOSSES = {"cross_entropy": (F.softmax_cross_entropy, _torch_cross_entropy),
          "squared_error": (F.squared_error, _torch_half_squared_error)}


class Trainer:
    """fastcnn's network trained by hand, as the estimator's training loop
    does it (forward, the loss, backward, one optimizer step over the flat
    parameters), and its PyTorch twin trained alike."""

    def __init__(self, specs, input_shape, n_outputs, solver, learning_rate,
                 seed=0, n_threads=2, loss="cross_entropy"):
        self.network = Network(list(specs) + [L.Dense(n_outputs)], input_shape,
                               np.float64)
        self.fastcnn_loss, self.torch_loss = LOSSES[loss]
        self.network.initialize(np.random.RandomState(seed))
        self.model, self.pairs = torch_twin(self.network)
        self.solver, self.learning_rate = solver, learning_rate
        self.n_threads = n_threads
        # epsilon tiny: fastcnn adds it to sqrt(v) (as scikit-learn does),
        # PyTorch to sqrt(v / (1 - beta_2^t)); with it negligible both are
        # the same formula
        self.epsilon = 1e-30
        params = self.network.params
        self.buffers = [np.zeros_like(params) for _ in range(2 if solver == "adam" else 1)]
        self.step_count = 0
        import torch
        if solver == "adam":
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate,
                                              eps=self.epsilon)
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate,
                                             momentum=0.9, nesterov=True)

    def fastcnn_step(self, xb, yb):
        network, n_threads = self.network, self.n_threads
        network.allocate(len(xb), training=True)
        logits = network.forward(np.ascontiguousarray(xb), n_threads)
        loss, grad = self.fastcnn_loss(logits, yb)
        network.backward(grad, n_threads)
        self.step_count += 1
        if self.solver == "adam":
            F.adam_update(network.params, network.grads, *self.buffers,
                          self.step_count, self.learning_rate, 0.9, 0.999,
                          self.epsilon, 0.0, network.n_weights, n_threads)
        else:
            F.sgd_update(network.params, network.grads, self.buffers[0],
                         self.learning_rate, 0.9, True, 0.0, network.n_weights,
                         n_threads)
        return loss

    def torch_step(self, xb, yb):
        import torch
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.torch_loss(self.model(torch.from_numpy(xb)), yb)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def predict_scores(self, X):
        """Both networks' scores for X in inference mode."""
        import torch
        self.network.allocate(len(X), training=False)
        ours = self.network.forward(np.ascontiguousarray(X), self.n_threads).copy()
        self.model.eval()
        with torch.no_grad():
            theirs = self.model(torch.from_numpy(X)).numpy()
        return ours, theirs


def train_both(specs, X, y, solver, batch_size, steps, learning_rate, seed=0,
               loss="cross_entropy"):
    """Losses of ``steps`` steps of each library on the batches of X in
    order (cycling), and the trainer (for its final weights and scores).
    y: class indices, or float targets (N, K) for the squared error."""
    n_outputs = y.shape[1] if loss == "squared_error" else int(y.max()) + 1
    trainer = Trainer(specs, X.shape[1:], n_outputs, solver, learning_rate, seed,
                      loss=loss)
    ours, theirs = [], []
    starts = list(range(0, len(X) - batch_size + 1, batch_size))
    for step in range(steps):
        start = starts[step % len(starts)]
        xb, yb = X[start:start + batch_size], y[start:start + batch_size]
        ours.append(trainer.fastcnn_step(xb, yb))
        theirs.append(trainer.torch_step(xb, yb))
    return np.array(ours), np.array(theirs), trainer
