"""The README's promise: its test command is the one CI runs."""
import re
from pathlib import Path

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


def readme_block(marker):
    """The README's ```python block containing ``marker``."""
    text = (ROOT / "README.md").read_text()
    return next(code for code in re.findall(r"```python\n(.*?)```", text, re.S)
                if marker in code)


def test_the_readmes_schedule_and_layer_parameter_examples_run():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from fastcnn.layers import Conv2D
    names = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exec(readme_block('learning_rate="cosine"'), names)
        assert names["clf"].learning_rate == "cosine" and names["clf"].n_iter_ == 10
        exec(readme_block('"layers__0__filters": [4, 8]'), names)
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
        exec(readme_block('joblib.parallel_backend("dask")'), names)
    assert len(names["search"].cv_results_["mean_test_score"]) == 4
    assert names["search"].best_score_ > 0.5
