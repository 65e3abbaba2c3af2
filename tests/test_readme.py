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


def _readme_block(marker):
    text = (ROOT / "README.md").read_text()
    return next(code for code in re.findall(r"```python\n(.*?)```", text, re.S)
                if marker in code)


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
