"""The README's promise: its test command is the one CI runs."""
import re
from pathlib import Path

import pytest

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
