"""Hyperparameter constraints, declared in a table and checked by one function.

An estimator lists ``{name: constraint}``; :func:`check_parameters` checks
each attribute against its constraint, in the table's order, and raises a
ValueError naming the first that fails: ``"<name> must be <what it
accepts>, got <value>"``. A constraint names what it accepts as
alternatives, so that constraints combine (:class:`Either`) into one
message, as in ``"batch_size must be 'auto' or a positive int"``.
"""
import numbers

import numpy as np

from . import layers as L
from ._threads import effective_n_threads


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def int_tuple(value, name):
    """``value`` (an int or a tuple or list of them) as a tuple of positive
    ints, or a ValueError naming ``name``."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not all(is_int(v) and v >= 1 for v in values):
        raise ValueError(
            f"{name} must be a positive int or a tuple of positive ints, "
            f"got {value!r}")
    return values


def _alternatives_text(alternatives):
    """'a', 'a or b', 'a, b or c'."""
    if len(alternatives) == 1:
        return alternatives[0]
    return ", ".join(alternatives[:-1]) + " or " + alternatives[-1]


class Constraint:
    """What a parameter accepts. Subclasses give ``alternatives`` (how the
    message names what is accepted) and ``accepts``, or override ``check``
    where the message depends on how the value fails."""

    alternatives = ()

    def accepts(self, value):
        raise NotImplementedError

    def check(self, name, value):
        if not self.accepts(value):
            raise ValueError(f"{name} must be "
                             f"{_alternatives_text(self.alternatives)}, got {value!r}")


class Either(Constraint):
    """Any of several constraints."""

    def __init__(self, *constraints):
        self.constraints = constraints
        self.alternatives = tuple(a for c in constraints for a in c.alternatives)

    def accepts(self, value):
        return any(c.accepts(value) for c in self.constraints)


class NoneOr(Constraint):
    """None, or what ``constraint`` accepts (its message unchanged)."""

    def __init__(self, constraint):
        self.constraint = constraint

    def check(self, name, value):
        if value is not None:
            self.constraint.check(name, value)


class StrOptions(Constraint):
    def __init__(self, *options):
        self.options = options
        self.alternatives = tuple(repr(option) for option in options)

    def accepts(self, value):
        return isinstance(value, str) and value in self.options


class Boolean(Constraint):
    alternatives = ("True", "False")

    def accepts(self, value):
        return isinstance(value, (bool, np.bool_))


class Integer(Constraint):
    """An int (not a bool) >= low."""

    def __init__(self, low, description=None):
        self.low = low
        self.alternatives = (description or f"an int >= {low}",)

    def accepts(self, value):
        return is_int(value) and value >= self.low


class Real(Constraint):
    """A finite real number (not a bool) between low and high (None: no
    upper bound), each end closed unless said open."""

    def __init__(self, low, high=None, low_open=False, high_open=False):
        self.low, self.high = low, high
        self.low_open, self.high_open = low_open, high_open
        bounds = (("(" if low_open else "[") + f"{low}, "
                  + (f"{high}" if high is not None else "inf")
                  + (")" if high_open or high is None else "]"))
        self.alternatives = (f"a finite number in {bounds}",)

    def accepts(self, value):
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and np.isfinite(value)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)


def float_dtype_name(value):
    """'float32' or 'float64' for those names and NumPy's float32 and
    float64 (types or dtypes); ``value`` itself otherwise."""
    if not isinstance(value, str) and value in (np.float32, np.float64):
        return np.dtype(value).name
    return value


class FloatDtype(Constraint):
    alternatives = ("'float32'", "'float64'")

    def accepts(self, value):
        return float_dtype_name(value) in ("float32", "float64")


class ThreadCount(Constraint):
    """What :func:`effective_n_threads` accepts, with its message."""

    def check(self, name, value):
        try:
            effective_n_threads(value)
        except ValueError as error:
            raise ValueError(str(error)) from None


class ClassWeight(Constraint):
    """'balanced', or a dict of finite non-negative weights by class label."""
    alternatives = ("'balanced'", "a dict {class_label: weight} of non-negative weights")

    def accepts(self, value):
        if isinstance(value, str):
            return value == "balanced"
        return isinstance(value, dict) and all(
            isinstance(w, numbers.Real) and not isinstance(w, bool)
            and np.isfinite(w) and w >= 0 for w in value.values())


class IntTuple(Constraint):
    """A positive int or a tuple (or list) of them, of one of ``lengths``
    (None: any length) with ``shapes`` naming them in the message."""

    def __init__(self, lengths=None, shapes=None):
        self.lengths, self.shapes = lengths, shapes

    def check(self, name, value):
        values = int_tuple(value, name)
        if self.lengths is not None and len(values) not in self.lengths:
            raise ValueError(f"{name} must be {self.shapes}, got {value!r}")


class LayerSpecs(Constraint):
    """A list or tuple of :mod:`fastcnn.layers` specifications."""

    def check(self, name, value):
        if not isinstance(value, (list, tuple)):
            raise ValueError(
                f"{name} must be a list of fastcnn.layers specifications, "
                f"got {value!r}")
        for i, spec in enumerate(value):
            if not isinstance(spec, L.LayerSpec):
                raise ValueError(
                    f"{name}[{i}] must be a layer specification from "
                    f"fastcnn.layers (Conv2D, Dense, ...), got {spec!r}")


def check_parameters(estimator, constraints):
    """Check each attribute of ``estimator`` named in ``constraints``
    against its constraint, in order; ValueError for the first that fails."""
    for name, constraint in constraints.items():
        constraint.check(name, getattr(estimator, name))
