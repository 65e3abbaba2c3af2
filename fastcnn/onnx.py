"""Export of fitted fastcnn estimators to ONNX, and their skl2onnx converter.

:func:`to_onnx` writes a fitted :class:`~fastcnn.CNNClassifier` as an
``onnx.ModelProto`` that onnxruntime (or any ONNX runtime) runs without
fastcnn; :func:`register_skl2onnx` lets ``skl2onnx.to_onnx`` convert one
inside a scikit-learn Pipeline. Both write the same graph, through one
walk of the fitted runtime network (``network_``), the single source of
what runs: its layers in the order they run, with the default shortcut of
each residual block as built, and each ReLU that a max pooling or a batch
norm runs inside its own passes written after that layer.

The graph:

- Input ``X``, float32, of shape ``(N, n_features)`` as scikit-learn users
  pass samples (or ``(N,) + input_shape_`` with ``flat_input=False``),
  reshaped inside the graph to ``(N,) + input_shape_``.
- Outputs as skl2onnx names and shapes them (with ``zipmap=False``): a
  classifier's ``label``, ``(N,)``, int64 for integer, bool (as 0 and 1)
  and integral float class labels, strings for string labels, and
  ``probabilities``, ``(N, n_classes)`` float32, the softmax of the
  network's scores; ``label`` is the class of the highest score, as
  ``predict`` gives it. A regressor's ``variable``, ``(N, n_outputs)``
  float32 (``(N, 1)`` for a single target, as skl2onnx's regressors).
- It computes in float32 whatever the estimator's ``dtype``: onnxruntime
  has no float64 kernels for convolution, average, L2 and global pooling,
  LRN or erf, so a float64 estimator's weights and statistics are rounded
  to float32 (its probabilities then differ from ``predict_proba``'s by
  float32 rounding, as a float32 estimator's do: under 1e-6 on the test
  networks).
- Opset :data:`DEFAULT_OPSET` (18) of the default domain, which onnxruntime
  has run since 1.14; ``target_opset`` may be anything from
  :data:`MIN_OPSET` (13) up to the installed onnx's newest, as no operator
  the graph uses changes its meaning in between.

Layers become standard operators: Conv (padding ``(before, after)`` per
axis: ``'same'`` with an even kernel pads one more after), MaxPool,
AveragePool and LpPool (p = 2) without padding and rounding sizes down, as
fastcnn's pooling, GlobalAveragePool and GlobalMaxPool then Flatten,
BatchNormalization with the running statistics, Gemm (after Flatten) for
Dense, Relu, Tanh, Sigmoid, LeakyRelu and Elu. Dropout layers write nothing
(the identity in inference). GELU is ``x (1 + erf(x / sqrt 2)) / 2``, or with
``approximate='tanh'`` ``x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2``
(ONNX's Gelu operator needs opset 20). Local response normalization is written out
(squares, their sum over the channel window as a convolution along the
channel axis, ``x * (k + alpha / size * sum)^-beta``): ONNX's LRN centres
an even window one channel later than fastcnn's (PyTorch's), and
onnxruntime refuses even sizes.

onnx (and skl2onnx for the converter) are imported when these functions
run, never with fastcnn: ``pip install 'fastcnn[onnx]'``.
"""
import importlib
import math

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin, is_classifier, is_regressor
from sklearn.utils.validation import check_is_fitted

from . import _network as N

__all__ = ["to_onnx", "register_skl2onnx", "DEFAULT_OPSET", "MIN_OPSET"]

#: the opset of the default domain that :func:`to_onnx` writes
DEFAULT_OPSET = 18
#: the oldest opset with the operators' meanings the graph relies on
#: (Softmax over one axis and ArgMax as they are since opset 13)
MIN_OPSET = 13

# the graph's element types, by their numbers in ONNX's TensorProto
_FLOAT, _INT64, _STRING, _DOUBLE = 1, 7, 8, 11


def _require(name):
    """The module ``name``, or an ImportError naming the extra that brings it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"exporting to ONNX needs the package {name!r}, which is not "
            "installed: pip install 'fastcnn[onnx]' (the extra brings onnx, "
            "onnxruntime and skl2onnx)") from error


# ------------------------------------------------------ graph writers

def _tensor_content(values):
    """(element type, flat values) of a constant: float32 and int64 arrays,
    or an object array of strings (as UTF-8 bytes)."""
    if values.dtype == np.float32:
        return _FLOAT, values.ravel()
    if values.dtype == np.int64:
        return _INT64, values.ravel()
    return _STRING, [str(value).encode("utf-8") for value in values.ravel()]


class _ModelGraph:
    """Nodes and constants of a graph that :func:`to_onnx` assembles."""

    def __init__(self, onnx):
        self.helper = onnx.helper
        self.nodes, self.initializers = [], []
        self._counts = {}

    def name(self, seed):
        count = self._counts[seed] = self._counts.get(seed, -1) + 1
        return f"{seed}_{count}"

    def constant(self, seed, values):
        name = self.name(seed)
        kind, content = _tensor_content(values)
        self.initializers.append(
            self.helper.make_tensor(name, kind, values.shape, content))
        return name

    def node(self, op_type, inputs, output=None, **attributes):
        """Appends an ``op_type`` node; returns the name of its output."""
        output = output or self.name(op_type.lower())
        self.nodes.append(self.helper.make_node(
            op_type, list(inputs), [output], name=self.name(op_type), **attributes))
        return output


class _Skl2onnxGraph:
    """The same calls, writing into skl2onnx's scope and container."""

    def __init__(self, scope, container):
        self.scope, self.container = scope, container

    def constant(self, seed, values):
        name = self.scope.get_unique_variable_name(seed)
        kind, content = _tensor_content(values)
        self.container.add_initializer(name, kind, list(values.shape), content)
        return name

    def node(self, op_type, inputs, output=None, **attributes):
        output = output or self.scope.get_unique_variable_name(op_type.lower())
        self.container.add_node(op_type, list(inputs), [output],
                                name=self.scope.get_unique_operator_name(op_type),
                                **attributes)
        return output


# ------------------------------------------------------------ layers

def _float32(values):
    return np.asarray(values, dtype=np.float32)


def _ints(values):
    return [int(v) for v in values]


def _conv(graph, layer, x):
    pairs = [p if isinstance(p, tuple) else (p, p) for p in layer.padding]
    return graph.node(
        "Conv", [x, graph.constant("weight", _float32(layer.weight)),
                 graph.constant("bias", _float32(layer.bias))],
        kernel_shape=_ints(layer.weight_shape[2:]), strides=_ints(layer.stride),
        dilations=_ints(layer.dilation),
        pads=_ints(before for before, _ in pairs) + _ints(after for _, after in pairs))


def _window_pool(op_type, **attributes):
    """Pooling over windows without padding, sizes rounded down (ONNX's
    defaults, and fastcnn's only convention)."""
    def export(graph, layer, x):
        return graph.node(op_type, [x], kernel_shape=_ints(layer.size),
                          strides=_ints(layer.stride), **attributes)
    return export


def _global_pool(graph, layer, x):
    pooled = graph.node("GlobalMaxPool" if layer.is_max else "GlobalAveragePool", [x])
    return graph.node("Flatten", [pooled], axis=1)   # (N, C, 1, ...) -> (N, C)


def _flatten(graph, layer, x):
    return graph.node("Flatten", [x], axis=1)


def _dense(graph, layer, x):
    rows = _flatten(graph, layer, x) if len(layer.input_shape) > 1 else x
    return graph.node("Gemm", [rows, graph.constant("weight", _float32(layer.weight)),
                               graph.constant("bias", _float32(layer.bias))], transB=1)


def _elementwise(op_type, **spec_fields):
    """An activation operator; its attributes from the spec's fields
    (attribute name: field name)."""
    def export(graph, layer, x):
        return graph.node(op_type, [x], **{
            attribute: float(getattr(layer.spec, field))
            for attribute, field in spec_fields.items()})
    return export


def _scalar(graph, seed, value):
    return graph.constant(seed, np.array(value, dtype=np.float32))


def _gelu(graph, layer, x):
    if layer.spec.approximate == "tanh":
        cube = graph.node("Mul", [graph.node("Mul", [x, x]), x])
        inner = graph.node("Add", [x, graph.node("Mul", [
            cube, _scalar(graph, "gelu_cubic", 0.044715)])])
        rise = graph.node("Tanh", [graph.node("Mul", [
            inner, _scalar(graph, "sqrt_2_over_pi", (2 / math.pi) ** 0.5)])])
    else:
        rise = graph.node("Erf", [graph.node("Mul", [
            x, _scalar(graph, "inv_sqrt2", 0.5 ** 0.5)])])
    phi = graph.node("Mul", [graph.node("Add", [rise, _scalar(graph, "one", 1.0)]),
                             _scalar(graph, "half", 0.5)])
    return graph.node("Mul", [x, phi])


def _batch_norm(graph, layer, x):
    arrays = [graph.constant(name, _float32(getattr(layer, name)))
              for name in ("weight", "bias", "running_mean", "running_var")]
    return graph.node("BatchNormalization", [x] + arrays, epsilon=float(layer.spec.eps))


def _reshape(graph, x, shape):
    return graph.node("Reshape", [x, graph.constant("shape", np.array(shape, dtype=np.int64))])


def _local_response_norm(graph, layer, x):
    """``x * (k + alpha / size * sum of x^2 from channel c - size // 2 to
    c + (size - 1) // 2)^-beta``: the squares as one-channel planes
    ``(channels, positions)``, summed over the window by a convolution
    whose kernel holds alpha / size, padded with zero channels."""
    spec, shape = layer.spec, layer.input_shape
    planes = _reshape(graph, graph.node("Mul", [x, x]), [-1, 1, shape[0], math.prod(shape[1:])])
    kernel = np.full((1, 1, spec.size, 1), spec.alpha / spec.size, dtype=np.float32)
    sums = graph.node("Conv", [planes, graph.constant("window", kernel)],
                      kernel_shape=[spec.size, 1],
                      pads=[spec.size // 2, 0, (spec.size - 1) // 2, 0])
    scale = graph.node("Add", [_reshape(graph, sums, [-1, *_ints(shape)]),
                               _scalar(graph, "k", spec.k)])
    return graph.node("Mul", [x, graph.node("Pow", [scale, _scalar(graph, "minus_beta", -spec.beta)])])


def _residual(graph, layer, x):
    return graph.node("Add", [_sequence(graph, layer.main, x),
                              _sequence(graph, layer.shortcut, x)])


def _identity(graph, layer, x):
    return x


#: how each runtime layer class of fastcnn._network is written
_LAYER_EXPORTS = {
    N.Conv: _conv,
    N.MaxPool: _window_pool("MaxPool"),
    N.AvgPool: _window_pool("AveragePool"),
    N.L2Pool: _window_pool("LpPool", p=2),
    N.GlobalPool: _global_pool,
    N.Flatten: _flatten,
    N.Dense: _dense,
    N.ReLU: _elementwise("Relu"),
    N.Tanh: _elementwise("Tanh"),
    N.Sigmoid: _elementwise("Sigmoid"),
    N.LeakyReLU: _elementwise("LeakyRelu", alpha="negative_slope"),
    N.ELU: _elementwise("Elu", alpha="alpha"),
    N.GELU: _gelu,
    N.BatchNorm: _batch_norm,
    N.LocalResponseNorm: _local_response_norm,
    N.Dropout: _identity,
    N.Residual: _residual,
}


def _sequence(graph, layers, x):
    for layer in layers:
        export = _LAYER_EXPORTS.get(type(layer))
        if export is None:
            raise TypeError(f"{layer.where()} ({type(layer).__name__}) has no ONNX export")
        x = export(graph, layer, x)
        if getattr(layer, "relu", False):
            # the ReLU after it, which a max pooling, batch norm or dense layer runs
            # inside its own passes (fuse_relu)
            x = graph.node("Relu", [x])
    return x


# ------------------------------------------------------- estimators

def _check_estimator(estimator):
    """A fitted fastcnn classifier or regressor, or a clear error."""
    what = ("estimator must be a fastcnn CNNClassifier or regressor (for a "
            "Pipeline: register_skl2onnx(), then skl2onnx.to_onnx), got "
            f"{type(estimator).__name__}")
    if not (is_classifier(estimator) or is_regressor(estimator)):
        raise TypeError(what)
    check_is_fitted(estimator)
    if not isinstance(getattr(estimator, "network_", None), N.Network):
        raise TypeError(what)


def _check_opset(target_opset, newest):
    if target_opset is None:
        return DEFAULT_OPSET
    if (not isinstance(target_opset, (int, np.integer)) or isinstance(target_opset, bool)
            or not MIN_OPSET <= target_opset <= newest):
        raise ValueError(
            f"target_opset must be an int from {MIN_OPSET} to {newest} (the "
            f"installed onnx's newest), got {target_opset!r}")
    return int(target_opset)


def _label_values(classes):
    """``classes_`` as the values of the label tensor: int64 for integer,
    bool (0 and 1) and integral float labels, strings for string labels,
    as skl2onnx writes labels."""
    classes = np.asarray(classes)
    if classes.dtype.kind in "biuf":
        with np.errstate(invalid="ignore"):
            labels = classes.astype(np.int64)
        if np.array_equal(labels, classes):
            return labels
    elif all(isinstance(label, str) for label in classes):
        return classes.astype(object)
    raise ValueError(
        "ONNX class labels are int64 or strings: classes_ must hold integers, "
        f"bools, integral floats or strings, got {classes!r}")


def _network_scores(graph, estimator, x):
    """The network's output, ``(N, n_outputs)``, for float32 input ``x``
    of n_features values per sample."""
    shaped = _reshape(graph, x, [-1, *_ints(estimator.input_shape_)])
    return _sequence(graph, estimator.network_.layers, shaped)


def _output(graph, op_type, inputs, output, float_type, **attributes):
    """``op_type``'s result as the output named ``output``, of element type
    ``float_type`` (the graph computes in float32)."""
    if float_type == _FLOAT:
        return graph.node(op_type, inputs, output=output, **attributes)
    return graph.node("Cast", [graph.node(op_type, inputs, **attributes)],
                      output=output, to=float_type)


def _write_outputs(graph, estimator, scores, names, float_type, classes=None):
    """A classifier's (label, probabilities), a regressor's (variable),
    under ``names``; ``classes`` are the labels (default ``classes_``)."""
    if not is_classifier(estimator):
        (variable,) = names
        _output(graph, "Identity", [scores], variable, float_type)
        return
    label, probabilities = names
    _output(graph, "Softmax", [scores], probabilities, float_type, axis=1)
    index = graph.node("ArgMax", [scores], axis=1, keepdims=0)
    labels = _label_values(estimator.classes_ if classes is None else classes)
    graph.node("Gather", [graph.constant("classes", labels), index], output=label, axis=0)


def _output_infos(helper, estimator):
    """The graph's output declarations, skl2onnx's names and shapes."""
    n_outputs = estimator.network_.output_shape[0]
    if not is_classifier(estimator):
        return [helper.make_tensor_value_info("variable", _FLOAT, [None, n_outputs])]
    label_type = _STRING if _label_values(estimator.classes_).dtype == object else _INT64
    return [helper.make_tensor_value_info("label", label_type, [None]),
            helper.make_tensor_value_info("probabilities", _FLOAT, [None, n_outputs])]


def to_onnx(estimator, *, flat_input=True, target_opset=None):
    """A fitted fastcnn estimator as an ONNX model.

    Parameters
    ----------
    estimator : fitted CNNClassifier
        (or another fastcnn estimator: the output part follows
        scikit-learn's ``is_classifier``/``is_regressor``).
    flat_input : bool, default=True
        True: the input ``X`` is declared ``(N, n_features)``, flat samples
        as scikit-learn passes them; False: ``(N,) + input_shape_``. Either
        way the graph reshapes it to ``(N,) + input_shape_``.
    target_opset : int or None, default=None
        The opset of the default domain; None is :data:`DEFAULT_OPSET`.

    Returns
    -------
    model : onnx.ModelProto
        Input ``X`` (float32); outputs ``label`` ``(N,)`` and
        ``probabilities`` ``(N, n_classes)`` (float32) for a classifier,
        ``variable`` ``(N, n_outputs)`` for a regressor. The graph computes
        in float32 (see the module's documentation).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        When the estimator is not fitted.
    ImportError
        Without onnx (``pip install 'fastcnn[onnx]'``).

    Examples
    --------
    >>> import onnxruntime
    >>> from sklearn.datasets import load_digits
    >>> from fastcnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.astype("float32") / 16
    >>> clf = CNNClassifier(input_shape=(1, 8, 8), max_iter=3).fit(X, y)
    >>> session = onnxruntime.InferenceSession(to_onnx(clf).SerializeToString())
    >>> label, proba = session.run(None, {"X": X})
    """
    onnx = _require("onnx")
    helper = onnx.helper
    _check_estimator(estimator)
    if not isinstance(flat_input, (bool, np.bool_)):
        raise ValueError(f"flat_input must be True or False, got {flat_input!r}")
    opset = _check_opset(target_opset, onnx.defs.onnx_opset_version())
    graph = _ModelGraph(onnx)
    input_shape = ([estimator.n_features_in_] if flat_input
                   else list(estimator.input_shape_))
    inputs = [helper.make_tensor_value_info("X", _FLOAT, [None, *_ints(input_shape)])]
    outputs = _output_infos(helper, estimator)
    scores = _network_scores(graph, estimator, "X")
    _write_outputs(graph, estimator, scores, [o.name for o in outputs], _FLOAT)
    opsets = [helper.make_opsetid("", opset)]
    from . import __version__
    model = helper.make_model(
        helper.make_graph(graph.nodes, f"fastcnn_{type(estimator).__name__}",
                          inputs, outputs, graph.initializers),
        opset_imports=opsets, producer_name="fastcnn", producer_version=__version__,
        # the oldest IR version that holds the opset: older runtimes load it
        ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------- skl2onnx

def _convert(scope, operator, container):
    """skl2onnx's converter of a fastcnn estimator: the input cast to
    float32 when it is not, the outputs cast to the float type skl2onnx
    declared for them (the input's)."""
    from skl2onnx.common.data_types import FloatTensorType, guess_proto_type
    model = operator.raw_operator
    opset = container.target_opset_any_domain("")
    if opset < MIN_OPSET:
        raise ValueError(
            f"{type(model).__name__} converts to opset {MIN_OPSET} or later, "
            f"got target_opset={opset}")
    graph = _Skl2onnxGraph(scope, container)
    x = operator.inputs[0]
    x_name = (x.full_name if isinstance(x.type, FloatTensorType)
              else graph.node("Cast", [x.full_name], to=_FLOAT))
    scores = _network_scores(graph, model, x_name)
    float_output = operator.outputs[-1]     # probabilities, or a regressor's variable
    float_type = guess_proto_type(float_output.type)
    classes = None
    if is_classifier(model):
        from skl2onnx.common.utils_classifier import get_label_classes
        classes = get_label_classes(scope, model)   # class indices with option nocl
    _write_outputs(graph, model, scores, [v.full_name for v in operator.outputs],
                   float_type if float_type == _DOUBLE else _FLOAT, classes)


def _regressor_shapes(operator):
    """A regressor's ``variable``: ``(N, n_outputs)``, of the input's float
    type (float32 for other inputs), as skl2onnx's regressors."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.common.utils import check_input_and_output_numbers
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=1)
    x = operator.inputs[0]
    float_type = DoubleTensorType if isinstance(x.type, DoubleTensorType) else FloatTensorType
    n_outputs = operator.raw_operator.network_.output_shape[0]
    operator.outputs[0].type = float_type([x.get_first_dimension(), n_outputs])


def _register(estimator_class):
    """Registers the converter of ``estimator_class`` with skl2onnx."""
    skl2onnx = _require("skl2onnx")
    if issubclass(estimator_class, ClassifierMixin):
        from skl2onnx.common.shape_calculator import (
            calculate_linear_classifier_output_shapes as shapes)
        # 'zipmap' makes skl2onnx parse it as a classifier, with its ZipMap
        options = {"zipmap": [True, False, "columns"], "nocl": [False, True]}
    else:
        shapes, options = _regressor_shapes, None
    skl2onnx.update_registered_converter(
        estimator_class, f"Fastcnn{estimator_class.__name__}", shapes, _convert,
        options=options)


def register_skl2onnx():
    """Registers fastcnn's estimators with skl2onnx, so that
    ``skl2onnx.to_onnx`` converts them, alone or in a Pipeline.

    The converter writes the graph :func:`to_onnx` writes, after the
    Pipeline's earlier steps. Classifiers take skl2onnx's options
    ``zipmap`` (True, the default: ``output_label`` and
    ``output_probability``, a list of {class: probability} dicts; False:
    ``label`` and ``probabilities``, ``(N, n_classes)``; 'columns': one
    output per class) and ``nocl`` (True: labels are class indices).
    Probabilities take the type of the converter's input, float32 or
    float64 (the network still computes in float32). It registers every
    classifier and regressor class that ``fastcnn`` exports; calling it
    again does nothing more.

    Examples
    --------
    >>> import skl2onnx
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from fastcnn import CNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.astype("float32")
    >>> pipe = make_pipeline(StandardScaler(),
    ...                      CNNClassifier(input_shape=(1, 8, 8), max_iter=3)).fit(X, y)
    >>> register_skl2onnx()
    >>> model = skl2onnx.to_onnx(pipe, X[:1], options={CNNClassifier: {"zipmap": False}})
    """
    import fastcnn
    for name in fastcnn.__all__:
        exported = getattr(fastcnn, name)
        if isinstance(exported, type) and issubclass(exported, (ClassifierMixin, RegressorMixin)):
            _register(exported)
