"""Helpers shared by the tests, importable because pyproject.toml's pytest
options put tests/ on sys.path (pythonpath = ["tests"]): the NumPy and SciPy
references, the test geometries, one call of every kernel, and assertions."""
