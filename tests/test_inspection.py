"""fastcnn.inspection: FLOP counts by hand and against PyTorch's flop
counter, the summary table against the network's own arrays and the shapes
its layers compute, the HTML representation against scikit-learn's, and the
Displays' plotted data against the estimator's records and weights."""
import re
import subprocess
import sys
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import estimator_html_repr

import fastcnn.layers as L
from fastcnn import CNNClassifier
from fastcnn._network import Network
from fastcnn.inspection import FilterDisplay, TrainingCurveDisplay, flop_counts


def _fit(X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return CNNClassifier(random_state=0, **params).fit(X, y)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:400] / 16).reshape(-1, 1, 8, 8), y[:400]


RESIDUAL_NET = [L.Conv2D(4, 3, padding=1), L.BatchNorm2D(), L.ReLU(),
                L.Residual([L.Conv2D(6, 3, stride=2, padding=1), L.ReLU(),
                            L.Conv2D(6, 3, padding=1)]),
                L.ReLU(), L.Residual([L.Conv2D(6, 3, padding="same")]),
                L.MaxPool2D(2), L.Flatten(), L.Dense(12), L.BatchNorm1D(), L.ReLU()]


@pytest.fixture(scope="module")
def residual_clf(digits):
    return _fit(*digits, layers=RESIDUAL_NET, max_iter=2)


@pytest.fixture(scope="module")
def early_stopping_clf(digits):
    return _fit(*digits, filters=(5, 7), hidden_layer_sizes=(16,), max_iter=4,
                early_stopping=True, n_iter_no_change=10)


# ------------------------------------------------------------ FLOP counts

def _counts(specs, input_shape):
    network = Network(specs, input_shape, np.float32)
    return [(type(layer.spec).__name__, forward, training)
            for layer, forward, training in flop_counts(network)]


def test_flops_of_conv_pool_and_dense_layers_by_hand():
    specs = [L.Conv2D(4, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Conv2D(6, 3),
             L.AvgPool2D(2), L.Flatten(), L.Dense(5), L.Dense(3)]
    # input (2, 8, 8). Conv2D(4, 3, padding=1): 4*8*8 = 256 outputs of
    # 2*3*3 = 18 multiply-adds, 9216 FLOPs; the first layer computes no
    # input gradient: forward + kernel gradient. The ReLU runs after the
    # max pooling: 64 outputs of 3 comparisons, and 64 ReLUs. Conv2D(6, 3)
    # on (4, 4, 4): 6*2*2 = 24 outputs of 36 multiply-adds, 1728 FLOPs,
    # three times in training. AvgPool2D(2): 6 outputs of 4. Dense(5) on 6
    # values: 60; Dense(3) on 5: 30.
    assert _counts(specs, (2, 8, 8)) == [
        ("Conv2D", 9216, 18432), ("MaxPool2D", 256, 512),
        ("Conv2D", 1728, 5184), ("AvgPool2D", 24, 48), ("Flatten", 0, 0),
        ("Dense", 60, 180), ("Dense", 30, 90)]


def test_a_relu_taken_on_counts_as_a_relu_of_its_own():
    """A ReLU that a dense layer or a batch norm runs inside itself adds
    its forward FLOPs and, in training, one pass for its gradient, as the
    ReLU on its own: the totals do not depend on the fusion."""
    def totals(specs):
        counts = _counts(specs, (2, 6, 6))
        return sum(c[1] for c in counts), sum(c[2] for c in counts)
    specs = [L.Conv2D(4, 3), L.BatchNorm2D(), L.ReLU(), L.Conv2D(3, 1), L.ReLU(),
             L.MaxPool2D(2), L.Flatten(), L.Dense(7), L.ReLU(), L.Dense(3)]
    # BatchNorm2D on (4, 4, 4): 64 values, 2 each, and 64 ReLUs; forward
    # 192, training 128 * 3 (a scale and a shift: parameters and input
    # gradients) + 64 * 2 = 512. Dense(7) on 12: 168 + 7 ReLUs; training
    # 168 * 3 + 7 * 2 = 518.
    counts = _counts(specs, (2, 6, 6))
    assert ("BatchNorm2D", 192, 512) in counts and ("Dense", 175, 518) in counts
    # the same layers with the batch norm's and the dense layer's ReLUs on
    # their own, after a dropout (the identity, 0 FLOPs) that cannot take
    # them on
    unfused = [L.Conv2D(4, 3), L.BatchNorm2D(), L.Dropout(0.0), L.ReLU(), L.Conv2D(3, 1),
               L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(7), L.Dropout(0.0),
               L.ReLU(), L.Dense(3)]
    assert totals(specs) == totals(unfused)


def test_flops_of_1d_and_global_pooling_by_hand():
    specs = [L.Conv1D(3, 5, stride=2), L.L2Pool1D(2), L.GlobalMaxPool1D(), L.Dense(2)]
    # input (2, 21). Conv1D(3, 5, stride=2): (21 - 5) // 2 + 1 = 9
    # positions, 27 outputs of 10 multiply-adds: 540. L2Pool1D(2): 3*4 = 12
    # outputs of 2 squares and 1 addition and a square root: 48. Global
    # max over 4 positions: 3 comparisons for each of 3 channels: 9.
    # Dense(2) on 3 values: 12.
    assert _counts(specs, (2, 21)) == [
        ("Conv1D", 540, 1080), ("L2Pool1D", 48, 96), ("GlobalMaxPool1D", 9, 18),
        ("Dense", 12, 36)]


def _torch_flops(network, training):
    """PyTorch's count (torch.utils.flop_counter: its convolutions and
    matrix products) of the network's twin per sample, the forward pass or
    a whole training step; the input needs no gradient."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from _helpers.torch_twin import torch_twin
    model, _ = torch_twin(network)
    model.train(training)
    x = torch.zeros((3,) + network.input_shape, dtype=torch.float64)
    with FlopCounterMode(display=False) as counter:
        if training:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops() / 3


@pytest.mark.parametrize("specs, input_shape", [
    (RESIDUAL_NET + [L.Dense(10)], (1, 8, 8)),
    # a block first: its paths' first layers compute no input gradient
    ([L.Residual([L.Conv1D(4, 3, padding=1), L.ReLU(), L.Conv1D(8, 3, stride=2, padding=1)]),
      L.ReLU(), L.Conv1D(5, 2, dilation=2), L.GlobalAvgPool1D(), L.Dense(3)], (2, 19)),
], ids=["2d-residual", "1d-block-first"])
def test_convolution_and_dense_flops_are_pytorchs(specs, input_shape):
    network = Network(specs, input_shape, np.float32)
    matrix_layers = [(forward, training) for layer, forward, training
                     in flop_counts(network)
                     if type(layer.spec) in (L.Conv2D, L.Conv1D, L.Dense)]
    assert sum(forward for forward, _ in matrix_layers) == _torch_flops(network, False)
    assert sum(training for _, training in matrix_layers) == _torch_flops(network, True)


def _walk(specs):
    for spec in specs:
        yield spec
        if isinstance(spec, L.Residual):
            yield from _walk(spec.layers)


def test_every_layer_kind_has_a_flop_count():
    images = [L.Conv2D(4, 3), L.BatchNorm2D(), L.ReLU(), L.MaxPool2D(2),
              L.LocalResponseNorm(3), L.SpatialDropout2D(0.1),
              L.Residual([L.AvgPool2D(1), L.L2Pool2D(1)]), L.Tanh(),
              L.GlobalMaxPool2D(), L.Dropout(0.1), L.Sigmoid(), L.Dense(3),
              L.ReLU(), L.LeakyReLU(), L.ELU(), L.GELU()]
    signals = [L.Conv1D(4, 3), L.BatchNorm1D(), L.MaxPool1D(2), L.AvgPool1D(1),
               L.L2Pool1D(1), L.SpatialDropout1D(0.1), L.GlobalAvgPool1D()]
    images_2 = [L.GlobalAvgPool2D()]
    signals_2 = [L.GlobalMaxPool1D(), L.Flatten()]
    used = {type(spec) for specs in (images, signals, images_2, signals_2)
            for spec in _walk(specs)}
    assert used | {L.LayerSpec} == {getattr(L, name) for name in L.__all__}
    for specs, shape in [(images, (2, 9, 9)), (signals, (2, 12)),
                         (images_2, (2, 3, 3)), (signals_2, (2, 5))]:
        counts = flop_counts(Network(specs, shape, np.float32))
        assert all(forward >= 0 and training >= forward for _, forward, training in counts)


# ------------------------------------------------------------ the summary

def _summary_rows(text):
    """The table's rows as tuples of cells, cut at the columns the rule
    line of dashes marks."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    spans = [m.span() for m in re.finditer(r"-+", lines[rule])]
    spans[-1] = (spans[-1][0], None)
    rows = []
    for line in lines[rule + 1:]:
        if not line:
            break
        rows.append(tuple(line[a:b].rstrip() if i == 0 else line[a:b].strip()
                          for i, (a, b) in enumerate(spans)))
    return lines[rule - 1], rows, lines[lines.index("", rule) + 1:]


def _number(cell):
    return int(cell.replace(",", ""))


def test_summary_counts_are_the_networks_arrays(residual_clf):
    network = residual_clf.network_
    _, rows, totals = _summary_rows(residual_clf.summary())
    params = [_number(row[2]) for row in rows]
    states = [_number(row[3]) for row in rows]
    arrays = [w.size + b.size for w, b in zip(residual_clf.coefs_, residual_clf.intercepts_)]
    assert [p for p in params if p] == arrays
    assert sum(params) == network.params.size
    # batch norm's running mean and variance: 2 per channel, 4 and 12 channels
    assert [s for s in states if s] == [8, 24]
    assert sum(states) == network.state.size
    assert totals[0] == (f"Total: {network.params.size:,} trainable parameters, "
                         f"{network.state.size:,} non-trainable state values "
                         "(running statistics).")


def test_summary_shapes_are_those_the_layers_compute(residual_clf, digits):
    network = residual_clf.network_.inference_copy()
    network.allocate(2, training=False)
    x = np.ascontiguousarray(digits[0][:2], dtype=np.float32)
    shapes = []
    for layer in network.layers:
        x = layer.forward(x, 1)
        shapes.append(str(x.shape[1:]))
    _, rows, _ = _summary_rows(residual_clf.summary())
    assert [row[1] for row in rows if not row[0].startswith(" ")] == shapes


def test_summary_rows_flops_and_blocks(residual_clf):
    header, rows, totals = _summary_rows(residual_clf.summary())
    assert header.split() == ["layer", "output", "shape", "params", "state", "FLOPs"]
    assert [row[0] for row in rows] == [
        "Conv2D(4, 3, padding=1)", "BatchNorm2D()+ReLU", "Residual",
        "  Conv2D(6, 3, stride=2, padding=1)", "  ReLU()", "  Conv2D(6, 3, padding=1)",
        "  shortcut: Conv2D(6, 1, stride=2)", "ReLU()",
        "Residual (identity shortcut)", "  Conv2D(6, 3, padding='same')",
        "MaxPool2D(2)", "Flatten()", "Dense(12)", "BatchNorm1D()+ReLU", "Dense(10)"]
    # by hand: the first convolution, 4*8*8 outputs of 9 multiply-adds;
    # the block's stride-2 convolution, 6*4*4 outputs of 4*9; its sum, 96;
    # max pooling to (6, 2, 2): 24 outputs of 3 comparisons
    flops = [_number(row[4]) for row in rows]
    assert flops[0] == 2 * 4 * 8 * 8 * 9 == 4608
    assert flops[3] == 2 * 6 * 4 * 4 * 4 * 9 == 6912
    assert flops[2] == 96
    assert flops[10] == 24 * 3
    network = residual_clf.network_
    forward = sum(f for _, f, _ in flop_counts(network))
    training = sum(t for _, _, t in flop_counts(network))
    assert sum(flops) == forward
    assert totals[1] == (f"FLOPs per sample: {forward:,} in the forward pass, "
                         f"{training:,} in a training step (forward and backward).")


def test_summary_of_an_unfitted_estimator_raises():
    with pytest.raises(NotFittedError):
        CNNClassifier().summary()


def test_importing_fastcnn_does_not_import_matplotlib():
    code = "import sys, fastcnn, fastcnn.inspection; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True, cwd=str(_root()))
    assert result.stdout.strip() == "False"


def _root():
    from pathlib import Path
    return Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ HTML

def _without_ids(html):
    """scikit-learn numbers the elements of each representation anew
    (sk-container-id-3, sk-estimator-id-4)."""
    return re.sub(r"-id-\d+", "-id-", html)


class _Cells(HTMLParser):
    """The text of every cell of every table row in an HTML page."""

    def __init__(self):
        super().__init__()
        self.rows, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self.cell)
            self.cell = None


def test_html_of_an_unfitted_estimator_is_scikit_learns():
    clf = CNNClassifier(layers=[L.Conv2D(3, 2, padding="same")])
    assert _without_ids(clf._repr_html_()) == _without_ids(estimator_html_repr(clf))
    assert "fastcnn-summary" not in clf._repr_mimebundle_()["text/html"]


def test_html_of_a_fitted_estimator_shows_the_summary_below_the_diagram(residual_clf):
    ours = _without_ids(residual_clf._repr_html_())
    diagram = _without_ids(estimator_html_repr(residual_clf))
    start = ours.index('<div class="fastcnn-summary">')
    # scikit-learn's page, its closing </body> after the table
    assert ours[:start] + ours[ours.index("</body>", start):] == diagram
    assert start > diagram.index("sk-container")
    parser = _Cells()
    parser.feed(ours[start:])
    _, rows, totals = _summary_rows(residual_clf.summary())
    assert parser.rows[0] == ["layer", "output shape", "params", "state", "FLOPs"]
    assert [tuple(row) for row in parser.rows[1:]] == [
        (row[0].strip(),) + row[1:] for row in rows]
    assert all(line in ours[start:] for line in totals)
    # quotes and angle brackets are escaped, the layers' texts included
    assert "padding=&#x27;same&#x27;" in ours[start:]
    assert "padding='same'" not in ours[start:]
    assert "fastcnn-summary" in residual_clf._repr_mimebundle_()["text/html"]


# -------------------------------------------------------------- Displays

@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def _assert_png(figure, path):
    figure.savefig(path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5000
    import matplotlib.image
    pixels = matplotlib.image.imread(path)
    # something drawn: many colours, not a blank canvas
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20


def test_training_curve_plots_the_loss_and_validation_scores(early_stopping_clf, pyplot,
                                                             tmp_path):
    clf = early_stopping_clf
    display = TrainingCurveDisplay.from_estimator(clf, color="k", validation_kw={"ls": ":"})
    epochs = np.arange(1, len(clf.loss_curve_) + 1)
    np.testing.assert_array_equal(display.loss_line_.get_xdata(), epochs)
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), clf.loss_curve_)
    np.testing.assert_array_equal(display.validation_line_.get_xdata(), epochs)
    np.testing.assert_array_equal(display.validation_line_.get_ydata(),
                                  clf.validation_scores_)
    assert display.validation_line_.axes is display.validation_ax_
    assert display.validation_ax_ is not display.ax_
    assert display.loss_line_.get_color() == "k"
    assert display.validation_line_.get_linestyle() == ":"
    assert display.figure_ is display.ax_.figure
    _assert_png(display.figure_, tmp_path / "curve.png")


def test_training_curve_without_validation_on_given_axes(residual_clf, pyplot, tmp_path):
    figure, ax = pyplot.subplots()
    display = TrainingCurveDisplay.from_estimator(residual_clf, ax=ax)
    assert display.ax_ is ax and display.figure_ is figure
    assert display.validation_ax_ is None and display.validation_line_ is None
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), residual_clf.loss_curve_)
    _assert_png(figure, tmp_path / "curve.png")


def test_training_curve_needs_a_fitted_estimator_with_a_loss_curve(pyplot, digits):
    with pytest.raises(NotFittedError):
        TrainingCurveDisplay.from_estimator(CNNClassifier())
    from sklearn.tree import DecisionTreeClassifier
    tree = DecisionTreeClassifier().fit(digits[0].reshape(len(digits[0]), -1), digits[1])
    with pytest.raises(ValueError, match="loss_curve_"):
        TrainingCurveDisplay.from_estimator(tree)
    with pytest.raises(ValueError, match="loss_curve"):
        TrainingCurveDisplay([[1.0, 2.0]])


def test_filters_of_a_2d_convolution_are_its_kernels_averaged_over_inputs(
        residual_clf, pyplot, tmp_path):
    display = FilterDisplay.from_estimator(residual_clf)
    weight = residual_clf.coefs_[0]     # (4, 1, 3, 3)
    assert len(display.images_) == 4
    for image, kernel in zip(display.images_, weight):
        np.testing.assert_allclose(image.get_array(), kernel.astype(float).mean(axis=0))
    assert display.lines_ is None and display.colorbar_ is not None
    assert [ax.get_visible() for ax in display.axes_.flat] == [True] * 4
    _assert_png(display.figure_, tmp_path / "filters.png")
    # the block's stride-2 convolution: 6 filters over 4 input channels
    second = FilterDisplay.from_estimator(residual_clf, layer=1, cmap="gray")
    for image, kernel in zip(second.images_, residual_clf.coefs_[2]):
        np.testing.assert_allclose(image.get_array(), kernel.astype(float).mean(axis=0),
                                   rtol=1e-6)
    assert second.images_[0].get_cmap().name == "gray"
    assert [ax.get_visible() for ax in second.axes_.flat] == [True] * 6   # 2 rows of 3


def test_filters_of_a_1d_convolution_are_curves_per_input_channel(pyplot, tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 3, 20)), np.arange(60) % 3
    clf = _fit(X, y, layers=[L.Conv1D(5, 4), L.ReLU(), L.GlobalAvgPool1D()], max_iter=2)
    figure, axes = pyplot.subplots(2, 3)
    display = FilterDisplay.from_estimator(clf, ax=axes)
    assert display.lines_.shape == (5, 3) and display.images_ is None
    weight = clf.coefs_[0]
    for f in range(5):
        for c in range(3):
            line = display.lines_[f, c]
            assert line.axes is axes.flat[f]
            np.testing.assert_array_equal(line.get_xdata(), np.arange(4))
            np.testing.assert_array_equal(line.get_ydata(), weight[f, c].astype(float))
    assert display.figure_ is figure and not axes.flat[5].get_visible()
    _assert_png(figure, tmp_path / "filters.png")


def test_filter_display_errors(residual_clf, pyplot, digits):
    n_convolutions = 5      # the first, the block's two and projection, the last
    with pytest.raises(ValueError, match=r"layer must index one of the network's 5"):
        FilterDisplay.from_estimator(residual_clf, layer=n_convolutions)
    FilterDisplay.from_estimator(residual_clf, layer=n_convolutions - 1)
    with pytest.raises(TypeError, match="layer must be an int"):
        FilterDisplay.from_estimator(residual_clf, layer="first")
    with pytest.raises(NotFittedError):
        FilterDisplay.from_estimator(CNNClassifier())
    dense_only = _fit(*digits, layers=[L.Dense(8), L.ReLU()], max_iter=1)
    with pytest.raises(ValueError, match="no convolution"):
        FilterDisplay.from_estimator(dense_only)
    _, axes = pyplot.subplots(1, 2)
    with pytest.raises(ValueError, match="ax must hold at least one Axes per filter"):
        FilterDisplay.from_estimator(residual_clf, ax=axes)
    with pytest.raises(ValueError, match="weights must be"):
        FilterDisplay(np.zeros((3, 3)))


def test_displays_without_matplotlib_name_the_plot_extra(residual_clf, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    for display in (TrainingCurveDisplay, FilterDisplay):
        with pytest.raises(ImportError, match=r"'plot' extra.*fastcnn\[plot\]"):
            display.from_estimator(residual_clf)
