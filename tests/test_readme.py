"""The README's promises: its test command is the one CI runs, and its
examples run."""
import re
import textwrap
import warnings
from pathlib import Path

import pytest
from sklearn.exceptions import ConvergenceWarning

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```\n(python3 -m venv .*?)\n```", text)


def test_readme_gives_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert "python -m fastcnn" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines


def test_the_readmes_layer_lists_build():
    import numpy as np

    from fastcnn import layers as L
    from fastcnn._network import Network
    text = (ROOT / "README.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "fcn = [" in code)
    names = {}
    exec(block, names)
    for specs, shape in [(names["fcn"], (1, 40)), (names["resnet"], (3, 60)),
                         (names["vgg_bn"], (1, 28, 28))]:
        network = Network(list(specs) + [L.Dense(10)], shape, np.float32)
        assert network.output_shape == (10,)


def _readme_block(distinctive):
    """The README's ```python block that contains ``distinctive``."""
    text = (ROOT / "README.md").read_text()
    blocks = [code for code in re.findall(r"```python\n(.*?)```", text, re.S)
              if distinctive in code]
    assert len(blocks) == 1, distinctive
    # the blocks of a list item are indented with it
    return textwrap.dedent(blocks[0])


def _run_readme_block(distinctive):
    names = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exec(_readme_block(distinctive), names)
    return names


def test_the_readmes_regression_example_runs():
    names = _run_readme_block("reg = CNNRegressor(")
    assert names["r2"] > 0.9        # the README says 0.95
    assert names["reg"].predict(names["X"][:2]).shape == (2, 2)


def test_the_readmes_features_example_runs():
    names = _run_readme_block("first_conv = cnn.transform(")
    assert names["accuracy"] > 0.9
    assert names["features"].shape == (5, 128)
    assert names["first_conv"].shape == (5, 1024)


def test_the_readmes_attributes_example_runs():
    names = _run_readme_block("clf.n_outputs_, clf.out_activation_")
    clf = names["clf"]
    assert clf.n_layers_ == 10
    assert (clf.n_outputs_, clf.out_activation_) == (10, "softmax")
    assert names["shapes"] == [(16, 1, 3, 3), (32, 16, 3, 3), (128, 128), (10, 128)]


def test_the_readmes_feature_subset_example_runs():
    names = _run_readme_block("max_features=0.5")
    assert "input_shape=(1, 8, 8) holds 64 values per sample, but X has 32" in names["message"]
    assert "max_features=1.0, bootstrap_features=False" in names["message"]
    assert names["bag"].predict(names["X"][:3] / 16).shape == (3,)


def test_the_readmes_summary_prints_what_it_shows(capsys):
    names = {}
    exec(_readme_block("print(clf.summary())"), names)
    printed = capsys.readouterr().out
    text = (ROOT / "README.md").read_text()
    shown = re.search(r"print\(clf\.summary\(\)\)\n```\n\n```\n(.*?)```", text, re.S).group(1)
    assert printed == shown


def test_the_readmes_displays_plot(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(_readme_block("print(clf.summary())"), names)
    exec(_readme_block("TrainingCurveDisplay.from_estimator(clf)"), names)
    try:
        for name in ("training.png", "filters.png"):
            assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
        assert len(names["filters"].images_) == 8
        assert names["curve"].validation_line_ is not None
    finally:
        plt.close("all")

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_readmes_onnx_example_runs():
    import numpy as np
    for package in ("onnx", "onnxruntime", "skl2onnx"):
        pytest.importorskip(package)
    text = (ROOT / "README.md").read_text()
    block = next(code for code in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "register_skl2onnx()" in code)
    names = {}
    exec(block, names)
    X, clf, pipe = names["X"], names["clf"], names["pipe"]
    np.testing.assert_array_equal(names["label"], clf.predict(X))
    np.testing.assert_allclose(names["proba"], clf.predict_proba(X), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(names["pipe_label"], pipe.predict(X))
    np.testing.assert_allclose(names["pipe_proba"], pipe.predict_proba(X), rtol=0, atol=1e-5)
def test_the_readmes_schedule_and_layer_parameter_examples_run():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from fastcnn.layers import Conv2D
    names = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exec(_readme_block('learning_rate="cosine"'), names)
        assert names["clf"].learning_rate == "cosine" and names["clf"].n_iter_ == 10
        exec(_readme_block('"layers__0__filters": [4, 8]'), names)
    assert names["cnn"].get_params()["layers__3__layers__0__filters"] == 8
    best = names["search"].best_estimator_
    assert best.layers[0] == Conv2D(names["search"].best_params_["layers__0__filters"],
                                    3, padding=1)
    assert len(names["search"].cv_results_["params"]) == 4


def test_the_readmes_dask_example_runs():
    import pytest
    pytest.importorskip("dask")
    pytest.importorskip("distributed")
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    names = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exec(_readme_block('joblib.parallel_backend("dask")'), names)
    assert len(names["search"].cv_results_["mean_test_score"]) == 4
    assert names["search"].best_score_ > 0.5


def test_the_readmes_weights_example_runs():
    import sklearn
    try:
        names = _run_readme_block("class_weight=\"balanced\").fit(X, y)")
    finally:
        sklearn.set_config(enable_metadata_routing=False)
    assert names["identical"]
    assert names["clf"].score(names["X"], names["y"]) > 0.8
    assert len(names["scores"]) == 3 and min(names["scores"]) > 0.5
    assert not sklearn.get_config()["enable_metadata_routing"]
