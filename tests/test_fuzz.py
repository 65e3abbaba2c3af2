"""Property-based tests: every public function of fastcnn.functional on random
shapes, parameters, dtypes and memory layouts, against NumPy references
written from the docstrings (never against fastcnn itself).

The contract each example checks (module docstring of fastcnn.functional,
its functions' docstrings, README "The functional API"):

* A call returns what the NumPy reference computes, within rounding (RTOL
  relative to the magnitude of the sums behind each value), with the
  documented shape and dtype; when ``out=`` was given, the result *is* out
  and holds the values. A call gives the same bits on 1, 2 or 3 threads.
* Or it raises ValueError or TypeError whose message names an offending
  parameter (IndexError only for take_samples' out-of-range index). Never
  another exception, never a crash.
* Input arrays in any layout (Fortran order, negative or zero strides,
  strided, read-only, misaligned, lists) are accepted: they are copied.
* An ``out=`` that is not a writeable, aligned, C-contiguous array of the
  result's shape and dtype is refused (read-only, wrong shape or dtype) or
  may be refused (non-contiguous, misaligned: ValueError). An ``out=``
  sharing memory with an input gives the right result or a ValueError;
  relu(x, out=x), relu_backward(g, y, out=g), the other activations and
  their gradients, dropout and dropout_backward are documented to work in
  place. Two outputs sharing memory are refused (ValueError).
* Arrays updated in place (the optimizers' states, batch_norm's running
  statistics in training) are refused when a copy would be updated instead
  (read-only, broadcast, lists; others may be: ValueError); two of them
  sharing memory are refused (ValueError). In inference batch_norm only
  reads its running statistics: any layout.
* Integer parameters of 2**31, 2**63, 2**100, bools, floats and strings are
  refused. sgd_update/adam_update check their hyperparameters as
  torch.optim.SGD/Adam do: learning_rate >= 0, momentum >= 0, l2 (weight
  decay) >= 0, 0 <= beta_1, beta_2 < 1, epsilon >= 0 (NaN fails each).
  Every float parameter (rate, negative_slope, alpha, momentum, eps, beta,
  k too) refuses NaN, values outside its documented range, non-numbers and
  ints beyond the float range (2**1024).
* prepare() refuses (ValueError) an array it would have to copy, and a
  prepared call refuses (ValueError) to run once one of its arrays was
  reshaped in place.

How an example is made: hypothesis draws a small *specification* (geometry,
dtype, a layout per array, at most one fault, the thread count, a seed) and a
``build_*`` function makes the arrays from it, so that the same example can
be made again for the runs on other thread counts, and a failing example is
printed as its specification. A ``Build`` collects the arguments and the
``Contract``: which parameters the call must, or may, be refused for.

Hypothesis keeps drawing the faults it has already drawn, so the random tests
try only part of each long list of faults: test_every_fault forces each fault
of each test in turn (one example each, C-contiguous arrays) and reports all
those that break the contract at once.

Run time: about a minute on 2 cores when everything passes; failing examples add
the time hypothesis takes to shrink them.
"""
import math
import operator
import re
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from scipy.special import erfc, expit

import fastcnn.functional as F
from _helpers.cases import ConvCase
from _helpers.references import output_spatial

# ============================================================ settings

#: derandomize: the same examples on every run, in CI as here. No explain
#: phase (it reruns failing examples many times to list the lines they ran),
#: and one failure shrunk per test (test_every_fault lists all the faults
#: that fail): shrinking is most of a failing run's time.
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            report_multiple_bugs=False)


def fuzz(max_examples):
    return settings(max_examples=max_examples, **FUZZ)


FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: allowed error relative to the magnitude of the sum behind a value
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
ANY = (ValueError, TypeError)

# ================================================== shared strategies

#: layouts every input array must be accepted in (copied when needed)
INPUT_LAYOUTS = ("C", "F", "reversed", "strided", "readonly", "broadcast",
                 "misaligned", "list")
WRONG_DTYPES = ("int64", "int32", "float16", "complex128", "object", "bool")
#: shape faults: an extra leading axis, one axis fewer, axis 1 (channels,
#: features) one longer, the first axis one longer, an empty first axis
SHAPE_FAULTS = ("extra_axis", "missing_axis", "longer_axis", "longer_first", "empty")
#: those that cannot make a bad shape on their own
NO_MISMATCH = ("extra_axis", "missing_axis", "empty")
#: out= arrays that are not a fresh C-contiguous array of the right kind
OUT_FAULTS = ("F", "reversed", "strided", "misaligned", "readonly",
              "broadcast", "list", "wrong_shape", "wrong_dtype")
#: faults of the out= tuple of a function with several outputs
TUPLE_FAULTS = ("overlap", "short", "bare", "long")
#: layouts of an array updated in place that may be refused (ValueError)
#: or updated in place, and those that must be refused
STATE_MAYBE = ("reversed", "strided", "misaligned")
STATE_BAD = ("readonly", "broadcast", "list")
HUGE = (2**31, 2**63, 2**100)
#: n_threads values to refuse; -2**63 (far below -cores) may be refused
BAD_THREADS = (0, *HUGE, 1.5, "2", True)
THREADS = st.sampled_from([1, 2, 3, 1, 2, 3, None, -1])
SEEDS = st.integers(0, 2**32 - 1)
STRIDES = (1, 2, 1, 3, 4, 1000)


def faults_or_none(faults):
    """None (a valid call) in about half the examples, else one fault.
    Hypothesis keeps drawing the few faults it has seen, which leaves most
    of a long list untried: test_every_fault goes through the list, which
    stays on the strategy for it."""
    strategy = st.one_of(st.none(), st.sampled_from(faults))
    strategy.faults = list(faults)
    return strategy


class Fault(NamedTuple):
    """The one thing wrong with an example: ``target`` (a parameter name, or
    out[i]) gets ``what`` (a bad value, a dtype, a shape or layout fault).
    For values, ``level`` says whether the call must ("bad") or may
    ("maybe") be refused; for arrays the contract follows from the array
    made (a list of object floats is a valid float64 list, an F-order out
    of one column is C-contiguous)."""
    target: str
    what: object
    level: str = "bad"


def bad_per_axis(minimum, ndim, none_ok=False):
    """Faults of an int-or-per-axis-tuple parameter (stride, padding, size)."""
    bad = [minimum - 1, -1, *HUGE, -2**63, 1.5, float(minimum + 1), True, "1",
           (1,) * (ndim + 1), (2**63,) * ndim, np.uint64(2**64 - 1)]
    if not none_ok:
        bad.append(None)
    return bad


def param_faults(name, values):
    return [Fault(name, v) for v in values]


def axis_forms(values):
    """Valid spellings of a per-axis value: an int when the axes agree, a
    tuple, NumPy integers."""
    values = tuple(values)
    forms = [values, tuple(tuple(np.int64(e) for e in v) if isinstance(v, tuple)
                           else np.int64(v) for v in values)]
    if len(set(values)) == 1 and not isinstance(values[0], tuple):
        forms = [values[0], np.int64(values[0])] + forms
    return st.sampled_from(forms)


def maybe_forms(name):
    """Spellings that may be refused (naming ``name``) or accepted."""
    return [Fault(name, "as_list", "maybe"), Fault(name, "as_array", "maybe")]


class Spec(NamedTuple):
    """What hypothesis draws for one example, besides the geometry."""
    dtype: np.dtype
    layouts: dict
    n_threads: object
    with_out: bool
    fault: Fault
    seed: int


def draw_spec(data, arrays, faults, threaded=True, prepared=False):
    """dtype, a layout per input array, n_threads, whether out= is given,
    at most one fault (None in about half the examples) and a seed.
    ``prepared``: mostly C-contiguous arrays, the ones prepare() takes."""
    layouts = st.sampled_from(["C"] * 8 + list(INPUT_LAYOUTS)) if prepared \
        else st.sampled_from(INPUT_LAYOUTS)
    if threaded:
        faults = faults + param_faults("n_threads", BAD_THREADS) + [
            Fault("n_threads", -2**63, "maybe")]
    return Spec(
        dtype=data.draw(st.sampled_from(FLOATS), label="dtype"),
        layouts=data.draw(st.fixed_dictionaries({a: layouts for a in arrays}),
                          label="layouts"),
        n_threads=data.draw(THREADS, label="n_threads") if threaded else None,
        with_out=data.draw(st.booleans(), label="with_out"),
        fault=data.draw(faults_or_none(faults), label="fault"),
        seed=data.draw(SEEDS, label="seed"))


def array_faults(names, shape_faults=SHAPE_FAULTS):
    return [Fault(n, k) for n in names for k in WRONG_DTYPES + shape_faults]


def out_faults(label, aliases=(), out_kinds=OUT_FAULTS):
    """Faults of an out= array: bad layouts, and sharing memory with one of
    the inputs ``aliases`` (exactly, or shifted by half an array)."""
    return ([Fault(label, k) for k in out_kinds]
            + [Fault(label, ("alias", a, shift), "maybe")
               for a in aliases for shift in (0, 1, -1)])


# ============================================================ values

def normal(rng, shape):
    return rng.standard_normal(shape)


def ties(rng, shape):
    """Small integers: many equal values (pooling ties)."""
    return rng.integers(-2, 3, shape).astype(np.float64)


def special(rng, shape):
    """Normal values with NaN, +-inf, -0.0 and ties sprinkled in."""
    v = rng.standard_normal(shape)
    u = rng.random(shape)
    v[u < 0.08] = np.nan
    v[(0.08 <= u) & (u < 0.12)] = np.inf
    v[(0.12 <= u) & (u < 0.16)] = -np.inf
    v[(0.16 <= u) & (u < 0.22)] = -0.0
    v[(0.22 <= u) & (u < 0.30)] = 1.0
    return v


VALUE_KINDS = {"normal": normal, "ties": ties, "special": special}


# =========================================================== layouts

def lay_out(a, layout):
    """``a``'s values in ``layout`` (for "broadcast": every row equal to the
    first, with a zero stride)."""
    if layout == "C":
        return np.array(a, order="C")
    if a.ndim == 0 and layout in ("F", "reversed", "strided", "broadcast"):
        return np.array(a)
    if layout == "F":
        return np.array(a, order="F")
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if layout == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if layout == "readonly":
        a = np.array(a)
        a.flags.writeable = False
        return a
    if layout == "broadcast":
        return np.broadcast_to(a[:1], a.shape)
    if layout == "misaligned":
        if a.dtype.hasobject or a.dtype.itemsize == 1:
            return np.array(a)
        raw = np.zeros(a.nbytes + 1, np.uint8)
        b = raw[1:].view(a.dtype).reshape(a.shape)
        b[...] = a
        return b
    if layout == "list":   # (an empty list would lose an empty array's shape)
        return a.tolist() if a.size or a.ndim < 2 else np.array(a)
    raise AssertionError(layout)


def mutate_shape(shape, kind):
    """A shape that differs from ``shape`` as ``kind`` says."""
    shape = tuple(shape)
    if kind == "extra_axis":
        return (1,) + shape
    if kind == "missing_axis":
        return shape[1:] if shape else (1,)
    if kind == "longer_axis":
        if not shape:
            return (2,)
        axis = 1 if len(shape) > 1 else 0
        return shape[:axis] + (shape[axis] + 1,) + shape[axis + 1:]
    if kind == "longer_first":
        return (shape[0] + 1,) + shape[1:] if shape else (2,)
    if kind == "empty":
        if not shape:
            return (0,)
        return (0 if shape[0] else 1,) + shape[1:]
    raise AssertionError(kind)


def carve(nbytes_a, nbytes_b, shift):
    """Two byte ranges of one buffer, the second starting ``shift`` bytes
    after the first (before it when negative): overlapping memory."""
    start_a, start_b = max(0, -shift), max(0, shift)
    raw = np.zeros(max(start_a + nbytes_a, start_b + nbytes_b) + 16, np.uint8)
    return raw[start_a:start_a + nbytes_a], raw[start_b:start_b + nbytes_b]


def same_memory(a, b):
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


# ========================================================== contract

class Contract:
    """The parameters a call must (``must``), or may (``may``), be refused
    for, each with the exception types allowed for it."""

    def __init__(self):
        self.must, self.may = {}, {}

    def refuse(self, name, types=ANY):
        self.must.setdefault(name, set()).update(
            types if isinstance(types, tuple) else (types,))

    def allow(self, name, types=ANY):
        self.may.setdefault(name, set()).update(
            types if isinstance(types, tuple) else (types,))

    def blamed(self):
        names = {n: set(t) for n, t in self.may.items()}
        for n, t in self.must.items():
            names.setdefault(n, set()).update(t)
        return names


def mentions(message, name):
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", message) is not None


REFUSED = object()


def attempt(call, contract):
    """call(), checked against ``contract``: its result, or REFUSED after
    an exception allowed by the contract; anything else fails the test."""
    try:
        result = call()
    except Exception as exc:
        blamed = contract.blamed()
        if not blamed:
            raise AssertionError(
                f"a valid call raised {type(exc).__name__}: {exc}") from exc
        named = [n for n in blamed if mentions(str(exc), n)]
        types = tuple(t for n in named for t in blamed[n])
        if not named or not isinstance(exc, types):
            raise AssertionError(
                f"{type(exc).__name__}: {exc}\n-- expected "
                + " or ".join(sorted({t.__name__ for n in blamed for t in blamed[n]}))
                + f" naming one of {sorted(blamed)}") from exc
        return REFUSED
    if contract.must:
        raise AssertionError(
            f"the call was accepted, but must be refused for one of "
            f"{sorted(contract.must)}")
    return result


# ============================================================= Build

class Build:
    """The arguments of one call, made from a Spec, and its Contract.

    ``named`` holds every argument by parameter name, ``snap`` a copy of
    every input array taken before the call, ``dtype`` the float dtype the
    result must have (None when the inputs disagree)."""

    def __init__(self, spec, geometry=None):
        self.spec, self.geometry = spec, geometry
        self.rng = np.random.default_rng(spec.seed)
        self.fault = spec.fault or Fault(None, None)
        self.contract = Contract()
        self.named, self.snap = {}, {}
        self.floats, self.indices, self.outs, self.inplace = [], [], [], set()
        self.fixed = {}     # arrays of one float dtype whatever the call's
        self.shape_fault = False
        self.args, self.kwargs = [], {}

    # ------------------------------------------------------- inputs
    def faulty(self, target):
        return self.fault.target == target

    def array(self, name, shape, values=normal, dtype=None, layout=None,
              fixed=None):
        """An input array (float unless ``dtype`` is given: then integer
        indices; ``fixed``: floats that must have that dtype), in the
        layout the spec draws for it, with the fault aimed at it if any."""
        if fixed is not None:
            self.fixed[name] = np.dtype(fixed)
        elif dtype is None:
            self.floats.append(name)
        else:
            self.indices.append(name)
        shape, dtype = tuple(shape), np.dtype(dtype or fixed or self.spec.dtype)
        if self.faulty(name) and self.fault.what in SHAPE_FAULTS:
            shape = mutate_shape(shape, self.fault.what)
            self.contract.refuse(name)
            self.shape_fault = True
        if self.faulty(name) and self.fault.what in WRONG_DTYPES:
            dtype = np.dtype(self.fault.what)
        with np.errstate(invalid="ignore"):     # NaN into a wrong dtype
            a = np.asarray(values(self.rng, shape)).astype(dtype)
        a = lay_out(a, layout or self.spec.layouts.get(name, "C"))
        self.named[name] = a
        self.snap[name] = np.array(a)
        return a

    def state(self, name, shape, values=normal):
        """An array updated in place, C-contiguous unless the fault gives it
        a layout (STATE_MAYBE: it may be refused, STATE_BAD: it must be) or
        ("alias", input, shift) the memory of an input (then refused, or
        updated with the input read right)."""
        what = self.fault.what if self.faulty(name) else None
        if isinstance(what, tuple) and what[0] == "alias":
            a = self.array(name, shape, values, layout="C")
            if isinstance(a, np.ndarray) and a.size:
                a = self.alias(what[1], a.shape, a.dtype, what[2])
                self.named[name], self.snap[name] = a, np.array(a)
            return a
        a = self.array(name, shape, values,
                       layout=what if what in STATE_MAYBE + STATE_BAD else "C")
        if not isinstance(a, np.ndarray) or not a.flags.writeable:
            self.contract.refuse(name)     # cannot be updated in place
        elif not (a.flags.c_contiguous and a.flags.aligned):
            self.contract.allow(name, ValueError)
        return a

    def inputs(self, *names):
        """The arrays named, as the call gets them: read once out= is made
        (an out= aliasing an input moves that input into shared memory)."""
        return [self.named[n] for n in names]

    def fits(self, accepted):
        """A shape fault that left shapes the function's docstring accepts
        (``accepted``): the call is a valid one after all."""
        if self.shape_fault and accepted:
            self.contract.must.pop(self.fault.target, None)
            self.shape_fault = False

    def param(self, name, value, maybe_values=None):
        """A non-array parameter; the fault's value when aimed at it."""
        if self.faulty(name):
            what = self.fault.what
            if what == "as_list":
                value = list(maybe_values)
            elif what == "as_array":
                value = np.array(maybe_values)
            else:
                value = what
            if self.fault.level == "maybe":
                self.contract.allow(name)
            else:
                self.contract.refuse(name)
        self.named[name] = value
        return value

    def float_dtype(self):
        """The one float dtype of the float inputs, as NumPy reads them."""
        found = {np.asarray(self.named[n]).dtype for n in self.floats}
        floats = found & set(FLOATS)
        return floats.pop() if len(floats) == 1 else self.spec.dtype

    # ------------------------------------------------------ outputs
    def out_array(self, target, shape, dtype, given, aliases=()):
        """An out= array for ``target`` ("out", "out[0]", ...): fresh and
        filled with garbage, or as the fault aimed at it says."""
        shape, dtype = tuple(shape), np.dtype(dtype)
        kind = self.fault.what if self.faulty(target) else ("C" if given else None)
        if kind is None:
            return None
        fill = np.full(shape, np.nan if dtype.kind == "f" else -7).astype(dtype)
        if kind == "wrong_shape":
            return np.full(mutate_shape(shape, "longer_axis"), 0, dtype)
        if kind == "wrong_dtype":
            other = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.float32,
                     np.dtype(np.int32): np.int64}[dtype]
            return fill.astype(other)
        if isinstance(kind, tuple):              # ("alias", input name, shift)
            return self.alias(kind[1], shape, dtype, kind[2]) if kind[1] in aliases \
                else fill
        return lay_out(fill, kind)

    def alias(self, source, shape, dtype, shift):
        """An array of ``shape`` in the memory of input ``source`` (which is
        moved into a fresh C-contiguous buffer first): the very array when
        the shapes and dtypes agree and shift is 0, else a view starting
        half an array after (shift 1) or before (-1) it."""
        a = self.named.get(source)
        out_bytes = math.prod(shape) * dtype.itemsize
        if not isinstance(a, np.ndarray) or a.dtype.hasobject or not a.size \
                or not out_bytes:
            return np.full(shape, 0, dtype)
        step = max(8, min(a.nbytes, out_bytes) // 2 // 8 * 8)
        mem_in, mem_out = carve(a.nbytes, out_bytes, shift * step)
        moved = mem_in.view(a.dtype).reshape(a.shape)
        moved[...] = a
        self.named[source] = moved
        if shift == 0 and a.shape == shape and a.dtype == dtype:
            return moved
        return mem_out.view(dtype).reshape(shape)

    def out(self, shape, aliases=()):
        """The single out= of a function (None when not given)."""
        dtype = self.float_dtype()
        out = self.out_array("out", shape, dtype, self.spec.with_out, aliases)
        self.outs.append(("out", out, tuple(shape), "float"))
        self.named["out"] = out
        return out

    def out_tuple(self, shapes, dtypes, aliases=()):
        """out=(a, b, ...) of a function with several outputs; faults aimed
        at out[i], or at the tuple (TUPLE_FAULTS: the first two sharing
        memory, one array fewer, the first array bare, one array more). A
        shape None: an output not computed, None in its place."""
        # "float": the inputs' float dtype (np.dtype("float64") == "float")
        kinds = [d if isinstance(d, str) else np.dtype(d) for d in dtypes]
        dtypes = [self.float_dtype() if isinstance(d, str) else np.dtype(d) for d in dtypes]
        given = self.spec.with_out or self.faulty("out") or \
            str(self.fault.target).startswith("out[")
        if not given:
            self.named["out"] = None
            return None
        arrays = [None if s is None else self.out_array(f"out[{i}]", s, d, True, aliases)
                  for i, (s, d) in enumerate(zip(shapes, dtypes))]
        what = self.fault.what if self.faulty("out") else None
        if what == "overlap":
            mem_a, mem_b = carve(arrays[0].nbytes,
                                 math.prod(shapes[1]) * dtypes[1].itemsize, 0)
            arrays[0] = mem_a.view(dtypes[0]).reshape(shapes[0])
            arrays[1] = mem_b.view(dtypes[1]).reshape(shapes[1])
        for i, a in enumerate(arrays):
            if shapes[i] is not None:
                self.outs.append(("out", a, tuple(shapes[i]), kinds[i]))
        out = tuple(arrays)
        if what in ("short", "bare", "long"):
            self.contract.refuse("out")
            spare = next(a for a in arrays if a is not None).copy()
            out = {"short": out[:-1], "bare": out[0], "long": out + (spare,)}[what]
        self.named["out"] = out
        return out

    # --------------------------------------------------------- finish
    def finish(self, args, kwargs):
        """Record the call's arguments (by name) and derive the contract:
        float inputs of one float dtype; out= arrays of the right kind,
        apart from the inputs and from each other."""
        c = self.contract
        self._check_input_dtypes()
        self.dtype = self.float_dtype() if not c.must else None
        inputs = {n: a for n, a in self.named.items()
                  if isinstance(a, np.ndarray) and n != "out"}
        outs = [(label, a, shape, kind) for label, a, shape, kind in self.outs
                if a is not None]
        for label, a, shape, kind in outs:
            self._check_out(label, a, shape, kind, inputs)
        self._check_outs_apart(outs)
        if self.shape_fault:   # a mismatch may be reported by any partner
            for n in self.named:
                c.allow(n)
        self.args, self.kwargs = list(args), dict(kwargs)
        return self

    def _check_input_dtypes(self):
        """Float inputs of a float dtype, all the same; integer indices."""
        c = self.contract
        dtypes = {n: np.asarray(self.named[n]).dtype for n in self.floats}
        for n, d in dtypes.items():
            if d not in FLOATS:
                c.refuse(n)
        for n in self.indices:        # integer arrays; [] reads as float64
            a = np.asarray(self.named[n])
            if a.dtype.kind not in "iu":
                (c.allow if a.size == 0 else c.refuse)(n)
        if len({d for d in dtypes.values() if d in FLOATS}) > 1:
            for n in self.floats:
                c.refuse(n)
        for n, d in self.fixed.items():
            if np.asarray(self.named[n]).dtype != d:
                c.refuse(n)

    def _check_out(self, label, a, shape, kind, inputs):
        """One out= array: of the right shape and dtype, writeable,
        contiguous and aligned, apart from the inputs (an in-place
        argument may be the very same memory)."""
        c = self.contract
        dtype = self.float_dtype() if isinstance(kind, str) else np.dtype(kind)
        if not isinstance(a, np.ndarray):
            c.refuse(label)
            return
        if a.shape != shape or a.dtype != dtype:
            c.refuse(label)
        if not a.flags.writeable:
            c.refuse(label)
        elif not (a.flags.c_contiguous and a.flags.aligned):
            c.allow(label, ValueError)
        for n, b in inputs.items():
            if np.shares_memory(a, b) and not (
                    n in self.inplace and same_memory(a, b)):
                c.allow(label, ValueError)
                c.allow(n, ValueError)

    def _check_outs_apart(self, outs):
        """The out= arrays of one call share no memory."""
        c = self.contract
        for i, (label, a, _, _) in enumerate(outs):
            for other, b in [(o[0], o[1]) for o in outs[i + 1:]]:
                if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) \
                        and np.shares_memory(a, b):
                    c.refuse(label, ValueError)
                    c.refuse(other, ValueError)


# ======================================================= comparisons

def f64(a):
    return np.asarray(a, dtype=np.float64)


def assert_close(actual, expected, scale, dtype, what="result"):
    """Same shape and dtype, NaN where expected is NaN, equal infinities,
    and |actual - expected| <= RTOL * scale elsewhere."""
    assert isinstance(actual, np.ndarray), f"{what}: {type(actual).__name__}, not an array"
    expected = f64(expected)
    assert actual.shape == expected.shape, \
        f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    got = f64(actual)
    scale = np.broadcast_to(f64(scale), expected.shape)
    tolerance = RTOL[np.dtype(dtype)] * np.where(np.isfinite(scale), scale, 0) \
        + np.finfo(dtype).tiny
    with np.errstate(invalid="ignore"):     # inf - inf
        good = (got == expected) | (np.isnan(got) & np.isnan(expected)) | (
            np.abs(got - expected) <= tolerance)
    if not good.all():
        bad = tuple(np.argwhere(~good)[0])
        raise AssertionError(
            f"{what}: {np.count_nonzero(~good)} of {good.size} values wrong; "
            f"first at {bad}: got {got[bad]!r}, expected {expected[bad]!r} "
            f"(tolerance {tolerance[bad]:.3g})")


def assert_equal(actual, expected, dtype, what="result"):
    assert_close(actual, expected, np.zeros(np.shape(expected)), dtype, what)


def assert_is_out(result, b, index=None):
    """When out= was given, the result is out (each array of a pair)."""
    out = b.named.get("out")
    if out is None:
        return
    got = result if index is None else result[index]
    if isinstance(out, tuple):
        assert isinstance(got, tuple) and len(got) == len(out) and all(
            g is o for g, o in zip(got, out)), "the result is not the out= arrays"
    else:
        assert got is out, "the result is not the out= array"


def bits(result):
    parts = result if isinstance(result, (tuple, list)) else (result,)
    return [(np.asarray(p).dtype, np.shape(p), np.ascontiguousarray(p).tobytes())
            for p in parts]


def exercise(function, build, verify, observe=None, threaded=True,
             on_refusal=None):
    """Call ``function`` as ``build()`` makes the call; check the outcome
    against the contract and ``verify``; when accepted, make the call again
    on 1 and on 3 threads and require the same bits (``observe`` picks
    what to compare, default the result)."""
    b = build()
    result = attempt(lambda: function(*b.args, **b.kwargs), b.contract)
    if result is REFUSED:
        if on_refusal is not None:
            on_refusal(b)
        return None
    verify(result, b)
    if threaded:
        observe = observe or (lambda r, b: r)
        first = bits(observe(result, b))
        for n_threads in (1, 3):
            b2 = build()
            again = function(*b2.args, **{**b2.kwargs, "n_threads": n_threads})
            assert bits(observe(again, b2)) == first, (
                f"n_threads={n_threads} gives other bits than "
                f"n_threads={b.kwargs.get('n_threads')!r}")
    return result


# ======================================================= references

def window(offset, stride, out, dilation=None):
    """The inputs that kernel offset ``offset`` meets over all outputs."""
    dilation = (1,) * len(offset) if dilation is None else dilation
    return (Ellipsis,) + tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                               for o, s, n, d in zip(offset, stride, out, dilation))


def pad_pairs(padding):
    """Per-axis padding (ints, or (before, after) pairs) as pairs."""
    return [tuple(p) if isinstance(p, tuple) else (p, p) for p in padding]


def ref_correlate(x, w, bias, stride, padding, dilation):
    """y[n, f, i, j] = b[f] + sum_{c,a,b} w[f,c,a,b] x[n, c, i*sh+a*dh-ph, j*sw+b*dw-pw]
    with x zero outside: for each kernel offset, the strided slice of the
    zero-padded input it meets, contracted with its weights."""
    xp = np.pad(x, [(0, 0), (0, 0)] + pad_pairs(padding))
    out = output_spatial(x.shape[2:], w.shape[2:], stride, padding, dilation)
    y = np.zeros((x.shape[0], w.shape[0]) + out)
    for offset in np.ndindex(*w.shape[2:]):
        y += np.einsum("nc...,fc->nf...", xp[window(offset, stride, out, dilation)],
                       w[(Ellipsis,) + offset])
    if bias is not None:
        y += bias.reshape((-1,) + (1,) * len(out))
    return y


def ref_correlate_backward_input(grad_y, w, x_shape, stride, padding, dilation):
    """grad_x = W^T grad_y: each offset's weights times grad_y added to the
    padded input positions it read, the padding then cropped off."""
    padded = np.zeros(tuple(x_shape[:2]) + tuple(
        s + b + a for s, (b, a) in zip(x_shape[2:], pad_pairs(padding))))
    out = grad_y.shape[2:]
    for offset in np.ndindex(*w.shape[2:]):
        padded[window(offset, stride, out, dilation)] += np.einsum(
            "nf...,fc->nc...", grad_y, w[(Ellipsis,) + offset])
    return padded[(Ellipsis,) + tuple(slice(b, b + s) for (b, _), s
                                      in zip(pad_pairs(padding), x_shape[2:]))]


def ref_correlate_backward_kernel(x, grad_y, w_shape, stride, padding, dilation):
    """grad_w[f,c,a,b] = sum_{n,i,j} grad_y[n,f,i,j] x[n,c,i*sh+a*dh-ph,j*sw+b*dw-pw];
    grad_b = grad_y summed over all but the filter axis."""
    xp = np.pad(x, [(0, 0), (0, 0)] + pad_pairs(padding))
    out = grad_y.shape[2:]
    grad_w = np.zeros(w_shape)
    for offset in np.ndindex(*w_shape[2:]):
        patch = xp[window(offset, stride, out, dilation)]
        grad_w[(Ellipsis,) + offset] = np.einsum(
            "nfp,ncp->fc", grad_y.reshape(grad_y.shape[:2] + (-1,)),
            patch.reshape(patch.shape[:2] + (-1,)))
    return grad_w, grad_y.sum(axis=(0,) + tuple(range(2, grad_y.ndim)))


def pool_windows(x, size, stride):
    """Every window of x, its values in row-major order along a last axis
    (N, C, *out, prod(size)), and the index of each in its plane (*out, K)."""
    spatial = x.shape[2:]
    out = output_spatial(spatial, size, stride, (0,) * len(size))
    origin = np.ix_(*[np.arange(n) * s for n, s in zip(out, stride)])
    values, where = [], []
    for offset in np.ndindex(*size):
        values.append(x[window(offset, stride, out)])
        position = 0
        for axis, (o, extent) in enumerate(zip(offset, spatial)):
            position = position * extent + (origin[axis] + o)
        where.append(np.broadcast_to(position, out))
    return np.stack(values, axis=-1), np.stack(where, axis=-1)


def ref_max_pool(x, size, stride):
    """(y, argmax): each window's maximum, its index in the plane; ties to
    the first in row-major order, the first NaN when there is one."""
    values, where = pool_windows(x, size, stride)
    nan = np.isnan(values)
    local = np.where(nan.any(-1), nan.argmax(-1),
                     np.where(nan, -np.inf, values).argmax(-1))
    y = np.take_along_axis(values, local[..., None], -1)[..., 0]
    argmax = np.take_along_axis(np.broadcast_to(where, values.shape),
                                local[..., None], -1)[..., 0]
    first = np.broadcast_to(where[..., 0], y.shape)   # max_pool(relu(x))'s tie
    return y, argmax, first


def ref_relu(x):
    """max(x, 0); NaN stays NaN."""
    return np.where(x <= 0, 0.0, x)


def ref_max_pool_backward(grad_y, argmax, x_shape, relu_output=None):
    """grad_y added at argmax in each plane (repeats add up); with
    relu_output only where it is positive."""
    if relu_output is not None:
        grad_y = np.where(relu_output > 0, grad_y, 0.0)
    planes = x_shape[0] * x_shape[1]
    grad_x = np.zeros((planes, math.prod(x_shape[2:])))
    np.add.at(grad_x, (np.arange(planes)[:, None], argmax.reshape(planes, -1)),
              grad_y.reshape(planes, -1))
    return grad_x.reshape(x_shape)


def ref_avg_pool(x, size, stride):
    return pool_windows(x, size, stride)[0].mean(axis=-1)


def ref_avg_pool_backward(grad_y, x_shape, size, stride):
    """grad_y / window size added to every input of its window."""
    grad_x = np.zeros(x_shape)
    for offset in np.ndindex(*size):
        grad_x[window(offset, stride, grad_y.shape[2:])] += grad_y / math.prod(size)
    return grad_x


def ref_log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def ref_sgd(p, g, v, lr, mu, nesterov, l2, n_penalized):
    """As sgd_update's docstring: g += l2 p on the first n_penalized,
    v = mu v - lr g; p += v, or with Nesterov p += mu v - lr g."""
    g = g + l2 * np.where(np.arange(p.size) < n_penalized, p, 0)
    v = mu * v - lr * g
    return p + (mu * v - lr * g if nesterov else v), v


def ref_adam(p, g, m, v, step, lr, b1, b2, eps, l2, n_penalized):
    """As adam_update's docstring."""
    g = g + l2 * np.where(np.arange(p.size) < n_penalized, p, 0)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    lr_t = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
    with np.errstate(invalid="ignore", divide="ignore"):
        return p - lr_t * m / (np.sqrt(v) + eps), m, v


# ======================================================== geometries


@st.composite
def conv_geometries(draw, ndim):
    """Kernels 1-4, padding 0-3 (also past kernel - 1; sometimes a
    (before, after) pair on every axis), strides 1-4 or 1000, dilations 1-3,
    up to 9 channels (8 switches backward_input to the mirrored form)."""
    axes = range(ndim)
    kernel = tuple(draw(st.integers(1, 4)) for _ in axes)
    if draw(st.integers(0, 3)) == 0:
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in axes)
    else:
        padding = tuple(draw(st.integers(0, 3)) for _ in axes)
    stride = tuple(draw(st.sampled_from(STRIDES)) for _ in axes)
    dilation = tuple(draw(st.integers(1, 3)) for _ in axes)
    longest = 8 if ndim == 2 else 24
    spatial = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - sum(p)), k + longest))
                    for k, p, d in zip(kernel, pad_pairs(padding), dilation))
    return ConvCase(draw(st.integers(1, 3)), draw(st.integers(1, 9)),
                draw(st.integers(1, 5)), spatial, kernel, stride, padding, dilation)


class Pool(NamedTuple):
    n: int
    c: int
    spatial: tuple
    size: tuple
    stride: tuple   # None: the size

    @property
    def steps(self):
        return self.size if self.stride is None else self.stride

    @property
    def x_shape(self):
        return (self.n, self.c) + self.spatial

    @property
    def y_shape(self):
        return (self.n, self.c) + output_spatial(self.spatial, self.size, self.steps,
                                           (0,) * len(self.size))


@st.composite
def pool_geometries(draw, ndim):
    axes = range(ndim)
    size = tuple(draw(st.integers(1, 4)) for _ in axes)
    spatial = tuple(draw(st.integers(k, k + (8 if ndim == 2 else 20))) for k in size)
    stride = draw(st.one_of(st.none(), st.tuples(
        *[st.sampled_from(STRIDES) for _ in axes])))
    return Pool(draw(st.integers(1, 3)), draw(st.integers(1, 4)), spatial, size, stride)


def shape_forms(shape):
    """Valid spellings of x_shape / w_shape."""
    return st.sampled_from([tuple(shape), tuple(np.int64(s) for s in shape)])


def bad_shapes(shape):
    ndim = len(shape)
    return [shape[:-1], shape + (1,), (0,) + shape[1:], shape[:-1] + (-1,),
            tuple(float(s) for s in shape), shape[:-1] + (2**63,),
            shape[:-1] + (2**100,), (2**31,) + shape[1:], None, "shape",
            (True,) * (ndim + 1)]


# ======================================================= correlation

CORR = {
    1: dict(forward=F.correlate1d, backward=F.correlate1d_backward,
            backward_input=F.correlate1d_backward_input,
            backward_kernel=F.correlate1d_backward_kernel),
    2: dict(forward=F.correlate2d, backward=F.correlate2d_backward,
            backward_input=F.correlate2d_backward_input,
            backward_kernel=F.correlate2d_backward_kernel,
            mirrored=F.correlate2d_backward_input_mirrored),
}
#: the array parameters of each correlation function
CORR_ARRAYS = {"forward": ("x", "w", "bias"), "backward": ("x", "w", "grad_y"),
               "backward_input": ("grad_y", "w"), "mirrored": ("grad_y", "w"),
               "backward_kernel": ("x", "grad_y")}


def draw_correlation(data, ndim, which, prepared=False):
    g = data.draw(conv_geometries(ndim), label="geometry")
    arrays = CORR_ARRAYS[which]
    # the forward takes any number of samples; the others must agree on it
    faults = (array_faults(arrays, SHAPE_FAULTS if which != "forward" else
                           NO_MISMATCH + ("longer_axis",))
              + param_faults("stride", bad_per_axis(1, ndim))
              + param_faults("padding", bad_per_axis(0, ndim)
                             + [((0, -1),) * ndim, ((1, 2, 3),) * ndim, ((1.5, 1),) * ndim])
              + param_faults("dilation", bad_per_axis(1, ndim))
              + maybe_forms("stride") + maybe_forms("padding")
              + maybe_forms("dilation"))
    if "w" in arrays:
        faults.append(Fault("w", "kernel_too_big"))
    shape_param = {"backward_input": "x_shape", "mirrored": "x_shape",
                   "backward_kernel": "w_shape"}.get(which)
    if shape_param:
        faults += param_faults(shape_param, bad_shapes(
            g.x_shape if shape_param == "x_shape" else g.w_shape))
        faults += [Fault(shape_param, "as_list", "maybe"),
                   Fault(shape_param, "as_array", "maybe")]
    if which in ("forward", "backward_input", "mirrored"):
        faults += out_faults("out", aliases=arrays)
    elif which == "backward_kernel":
        faults += out_faults("out[0]", aliases=arrays) + out_faults("out[1]", aliases=arrays)
        faults += [Fault("out", k) for k in TUPLE_FAULTS]
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    forms = dict(stride=data.draw(axis_forms(g.stride), label="stride"),
                 padding=data.draw(axis_forms(g.padding), label="padding"),
                 dilation=data.draw(axis_forms(g.dilation), label="dilation"),
                 shape=data.draw(shape_forms(g.x_shape if which in (
                     "backward_input", "mirrored") else g.w_shape), label="shape"),
                 bias=data.draw(st.booleans(), label="bias"))
    return g, spec, forms


def build_correlation(g, spec, forms, which):
    b = Build(spec, g)
    w_shape = g.w_shape
    if b.faulty("w") and spec.fault.what == "kernel_too_big":
        w_shape = w_shape[:2] + (g.spatial[0] + sum(pad_pairs(g.padding)[0]) + 1,) \
            + w_shape[3:]
        b.contract.refuse("w")
        b.shape_fault = True
    geometry = dict(stride=b.param("stride", forms["stride"], g.stride),
                    padding=b.param("padding", forms["padding"], g.padding),
                    dilation=b.param("dilation", forms["dilation"], g.dilation))
    if which == "forward":
        b.array("x", g.x_shape), b.array("w", w_shape)
        if forms["bias"] or b.faulty("bias"):
            b.array("bias", (g.f,))
        b.named.setdefault("bias", None)
        b.out(g.y_shape, aliases=("x", "w", "bias"))
        args = [b.named["x"], b.named["w"], b.named["bias"]]
    elif which == "backward":
        b.array("x", g.x_shape), b.array("w", w_shape), b.array("grad_y", g.y_shape)
        args = [b.named["x"], b.named["w"], b.named["grad_y"]]
    elif which in ("backward_input", "mirrored"):
        b.array("grad_y", g.y_shape), b.array("w", w_shape)
        x_shape = b.param("x_shape", forms["shape"], g.x_shape)
        b.shape_fault |= b.faulty("x_shape")   # grad_y may be named instead
        b.out(g.x_shape, aliases=("grad_y", "w"))
        args = [b.named["grad_y"], b.named["w"], x_shape]
    else:
        b.array("x", g.x_shape), b.array("grad_y", g.y_shape)
        w_shape = b.param("w_shape", forms["shape"], g.w_shape)
        b.shape_fault |= b.faulty("w_shape")
        b.out_tuple([g.w_shape, (g.f,)], ["float", "float"], aliases=("x", "grad_y"))
        args = [b.named["x"], b.named["grad_y"], w_shape]
    kwargs = dict(geometry)
    if which != "backward":
        kwargs["out"] = b.named["out"]
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish(args, kwargs)


def verify_correlation(which):
    def verify(result, b):
        g, s = b.geometry, b.snap
        dtype = b.dtype
        if which == "forward":
            x, w = f64(s["x"]), f64(s["w"])
            bias = None if b.named["bias"] is None else f64(s["bias"])
            absb = None if bias is None else np.abs(bias)
            assert_close(result, ref_correlate(x, w, bias, *g.ref_geometry),
                         ref_correlate(abs(x), abs(w), absb, *g.ref_geometry),
                         dtype, "y")
            assert_is_out(result, b)
            return
        if which in ("backward_input", "mirrored", "backward"):
            gy, w = f64(s["grad_y"]), f64(s["w"])
            grad_x = result[0] if which == "backward" else result
            assert_close(grad_x, ref_correlate_backward_input(
                gy, w, g.x_shape, *g.ref_geometry), ref_correlate_backward_input(
                abs(gy), abs(w), g.x_shape, *g.ref_geometry), dtype, "grad_x")
            if which != "backward":
                assert_is_out(result, b)
                return
        x, gy = f64(s["x"]), f64(s["grad_y"])
        grads = result[1:] if which == "backward" else result
        assert isinstance(grads, tuple) and len(grads) == 2
        expected = ref_correlate_backward_kernel(x, gy, g.w_shape, *g.ref_geometry)
        scale = ref_correlate_backward_kernel(abs(x), abs(gy), g.w_shape, *g.ref_geometry)
        assert_close(grads[0], expected[0], scale[0], dtype, "grad_w")
        assert_close(grads[1], expected[1], scale[1], dtype, "grad_b")
        if which == "backward":
            assert len(result) == 3
        else:
            assert_is_out(result, b)
    return verify


CORR_CASES = [(ndim, which) for ndim in (1, 2) for which in CORR[ndim]]


@pytest.mark.parametrize("ndim, which", CORR_CASES)
@fuzz(80)
@given(data=st.data())
def test_correlation(ndim, which, data):
    """correlate1d/2d, their _backward, _backward_input, _backward_kernel and
    correlate2d_backward_input_mirrored."""
    g, spec, forms = draw_correlation(data, ndim, which)
    exercise(CORR[ndim][which], lambda: build_correlation(g, spec, forms, which),
             verify_correlation(which))


# =========================================================== pooling

POOL = {
    1: dict(max=F.max_pool1d, max_backward=F.max_pool1d_backward,
            avg=F.avg_pool1d, avg_backward=F.avg_pool1d_backward),
    2: dict(max=F.max_pool2d, max_backward=F.max_pool2d_backward,
            avg=F.avg_pool2d, avg_backward=F.avg_pool2d_backward),
}
POOL_ARRAYS = {"max": ("x",), "avg": ("x",), "avg_backward": ("grad_y",),
               "max_backward": ("grad_y", "argmax", "relu_output")}
#: integer dtypes argmax may come in (values fit)
INDEX_DTYPES = ("int32", "int64", "intp", "uint16", "uint32", "int16")


def window_faults(g, ndim):
    """Faults of the size and stride of a pooling window."""
    return (param_faults("size", bad_per_axis(1, ndim)) + maybe_forms("size")
            + param_faults("stride", bad_per_axis(1, ndim, none_ok=True))
            + maybe_forms("stride")
            + [Fault("size", tuple(s + 1 for s in g.spatial))])  # larger than x


def window_params(b, g, forms):
    """size and stride as drawn, or as the fault makes them."""
    if b.faulty("size") and isinstance(b.fault.what, tuple) \
            and b.fault.what == tuple(s + 1 for s in g.spatial):
        b.shape_fault = True            # larger than x: x may be named
    return (b.param("size", forms["size"], g.size),
            b.param("stride", forms["stride"], g.steps))


ARGMAX_FAULTS = ("negative", "too_large", "wraps", "float")


def argmax_array(b, shape, plane, index_dtype):
    """argmax of ``shape``: indices into planes of ``plane`` values, of
    ``index_dtype`` (int32 when it cannot hold them), or broken as the
    fault says (ARGMAX_FAULTS: refused)."""
    if np.iinfo(index_dtype).max < plane:
        index_dtype = "int32"
    broken = b.fault.what if b.faulty("argmax") and isinstance(
        b.fault.what, str) and b.fault.what in ARGMAX_FAULTS else None
    if broken:
        b.contract.refuse("argmax")
        index_dtype = {"wraps": "int64", "float": "float64"}.get(broken, "int64")

    def indices(rng, s):
        a = rng.integers(0, plane, s)
        if broken and a.size:   # first: kept by every layout
            a.flat[0] = {"negative": -1, "too_large": plane, "wraps": 2**32,
                         "float": 0}[broken]
        return a
    return b.array("argmax", shape, indices, dtype=index_dtype)


def draw_pooling(data, ndim, which, prepared=False):
    g = data.draw(pool_geometries(ndim), label="geometry")
    arrays = POOL_ARRAYS[which]
    # any number of samples and channels pools; backward: they must agree
    faults = array_faults(arrays, NO_MISMATCH if which in ("max", "avg")
                          else SHAPE_FAULTS)
    if which != "max_backward":   # the only one without size and stride
        faults += window_faults(g, ndim)
    if which in ("max_backward", "avg_backward"):
        faults += param_faults("x_shape", bad_shapes(g.x_shape))
        faults += [Fault("x_shape", "as_list", "maybe"),
                   Fault("x_shape", "as_array", "maybe")]
    if which == "max_backward":
        faults += [Fault("argmax", v) for v in ARGMAX_FAULTS]
    if which == "max":
        faults += out_faults("out[0]", aliases=("x",)) + out_faults("out[1]")
        faults += [Fault("out[1]", ("alias", "x", 0), "maybe"),
                   Fault("out", "overlap"), Fault("out", "short"), Fault("out", "bare")]
    else:
        faults += out_faults("out", aliases=arrays)
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    forms = dict(
        size=data.draw(axis_forms(g.size), label="size"),
        stride=None if g.stride is None else data.draw(axis_forms(g.stride),
                                                       label="stride"),
        shape=data.draw(shape_forms(g.x_shape), label="x_shape"),
        values=data.draw(st.sampled_from(list(VALUE_KINDS)), label="values"),
        relu=data.draw(st.booleans(), label="relu"),
        index_dtype=data.draw(st.sampled_from(INDEX_DTYPES), label="argmax_dtype"))
    return g, spec, forms


def build_pooling(g, spec, forms, which):
    b = Build(spec, g)
    size, stride = window_params(b, g, forms)
    values = VALUE_KINDS[forms["values"]]
    if which in ("max", "avg"):
        b.array("x", g.x_shape, values if which == "max" else normal)
        if which == "max":
            out = b.out_tuple([g.y_shape, g.y_shape], ["float", np.int32], aliases=("x",))
            kwargs = dict(out=out, relu=b.param("relu", forms["relu"]))
        else:
            kwargs = dict(out=b.out(g.y_shape, aliases=("x",)))
        args = [b.named["x"], size, stride]
    else:
        b.array("grad_y", g.y_shape)
        x_shape = b.param("x_shape", forms["shape"], g.x_shape)
        b.shape_fault |= b.faulty("x_shape")
        if which == "max_backward":
            argmax_array(b, g.y_shape, math.prod(g.spatial), forms["index_dtype"])
            if forms["relu"] or b.faulty("relu_output"):
                b.array("relu_output", g.y_shape, special)
            b.named.setdefault("relu_output", None)
            out = b.out(g.x_shape, aliases=("grad_y", "relu_output"))
            args = [b.named["grad_y"], b.named["argmax"], x_shape]
            kwargs = dict(out=out, relu_output=b.named["relu_output"])
        else:
            out = b.out(g.x_shape, aliases=("grad_y",))
            args = [b.named["grad_y"], x_shape, size, stride]
            kwargs = dict(out=out)
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish(args, kwargs)


def verify_pooling(which):
    def verify(result, b):
        g, s, dtype = b.geometry, b.snap, b.dtype
        if which == "max":
            assert isinstance(result, tuple) and len(result) == 2
            y, argmax, first = ref_max_pool(f64(s["x"]), g.size, g.steps)
            relu = b.named["relu"]
            if relu:
                assert_equal(result[0], ref_relu(y), dtype, "y (relu=True)")
                # where the maximum is <= 0, max_pool(relu(x))'s first zero
                # is as good an index
                ok = (result[1] == argmax) | ((y <= 0) & (result[1] == first))
            else:
                assert_equal(result[0], y, dtype, "y")
                ok = result[1] == argmax
            assert result[1].dtype == np.int32 and result[1].shape == argmax.shape, \
                f"argmax: {result[1].dtype} {result[1].shape}"
            assert ok.all(), (f"argmax wrong at {np.argwhere(~ok)[0]}: got "
                              f"{result[1][~ok][0]}, expected {argmax[~ok][0]}")
        elif which == "avg":
            x = f64(s["x"])
            assert_close(result, ref_avg_pool(x, g.size, g.steps),
                         ref_avg_pool(abs(x), g.size, g.steps), dtype, "y")
        elif which == "avg_backward":
            gy = f64(s["grad_y"])
            assert_close(result, ref_avg_pool_backward(gy, g.x_shape, g.size, g.steps),
                         ref_avg_pool_backward(abs(gy), g.x_shape, g.size, g.steps),
                         dtype, "grad_x")
        else:
            gy, argmax = f64(s["grad_y"]), np.asarray(s["argmax"]).astype(np.intp)
            relu_output = None if b.named["relu_output"] is None else f64(s["relu_output"])
            assert_close(result, ref_max_pool_backward(gy, argmax, g.x_shape, relu_output),
                         ref_max_pool_backward(abs(gy), argmax, g.x_shape, relu_output),
                         dtype, "grad_x")
        assert_is_out(result, b)
    return verify


POOL_CASES = [(ndim, which) for ndim in (1, 2) for which in POOL[ndim]]


@pytest.mark.parametrize("ndim, which", POOL_CASES)
@fuzz(80)
@given(data=st.data())
def test_pooling(ndim, which, data):
    """max_pool1d/2d (relu=False/True), avg_pool1d/2d and their _backward
    (max with and without relu_output)."""
    g, spec, forms = draw_pooling(data, ndim, which)
    exercise(POOL[ndim][which], lambda: build_pooling(g, spec, forms, which),
             verify_pooling(which))


# ============================================================ linear

LINEAR = dict(forward=F.linear, backward_input=F.linear_backward_input,
              backward_weight=F.linear_backward_weight, backward=F.linear_backward)
LINEAR_ARRAYS = dict(forward=("x", "w", "bias"), backward_input=("grad_y", "w"),
                     backward_weight=("x", "grad_y"), backward=("x", "w", "grad_y"))
DIMS = st.sampled_from([1, 2, 3, 5, 8, 13, 17, 33, 64])


def draw_linear(data, which, prepared=False):
    dims = data.draw(st.tuples(DIMS, DIMS, DIMS), label="N, D, U")
    arrays = LINEAR_ARRAYS[which]
    # the shape faults that make a mismatch (D and U are free where only
    # one array has them; N where only one array has it)
    mismatch = dict(forward=dict(x=["longer_axis"], w=["longer_axis"],
                                 bias=["longer_axis"]),
                    backward_input=dict(grad_y=["longer_axis"], w=["longer_first"]),
                    backward_weight=dict(x=["longer_first"], grad_y=["longer_first"]),
                    backward=dict(x=["longer_axis", "longer_first"],
                                  w=["longer_axis", "longer_first"],
                                  grad_y=["longer_axis", "longer_first"]))[which]
    faults = [Fault(a, k) for a in arrays
              for k in WRONG_DTYPES + NO_MISMATCH + tuple(mismatch[a])]
    if which in ("forward", "backward_input"):
        faults += out_faults("out", aliases=arrays)
    elif which == "backward_weight":
        faults += out_faults("out[0]", aliases=arrays) + out_faults("out[1]", aliases=arrays)
        faults += [Fault("out", k) for k in TUPLE_FAULTS]
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    return dims, spec, dict(bias=data.draw(st.booleans(), label="bias"))


def build_linear(dims, spec, forms, which):
    n, d, u = dims
    b = Build(spec, dims)
    shapes = dict(x=(n, d), w=(u, d), bias=(u,), grad_y=(n, u))
    for name in LINEAR_ARRAYS[which]:
        if name != "bias" or forms["bias"] or b.faulty("bias"):
            b.array(name, shapes[name])
    b.named.setdefault("bias", None)
    kwargs = {}
    if which == "forward":
        kwargs["out"] = b.out((n, u), aliases=("x", "w", "bias"))
        args = [b.named["x"], b.named["w"], b.named["bias"]]
    elif which == "backward_input":
        kwargs["out"] = b.out((n, d), aliases=("grad_y", "w"))
        args = [b.named["grad_y"], b.named["w"]]
    elif which == "backward_weight":
        kwargs["out"] = b.out_tuple([(u, d), (u,)], ["float", "float"],
                                   aliases=("x", "grad_y"))
        args = [b.named["x"], b.named["grad_y"]]
    else:
        args = [b.named["x"], b.named["w"], b.named["grad_y"]]
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish(args, kwargs)


def verify_linear(which):
    def verify(result, b):
        s, dtype = b.snap, b.dtype
        if which == "forward":
            x, w = f64(s["x"]), f64(s["w"])
            bias = np.zeros(w.shape[0]) if b.named["bias"] is None else f64(s["bias"])
            assert_close(result, x @ w.T + bias, abs(x) @ abs(w).T + abs(bias), dtype, "y")
        if which in ("backward_input", "backward"):
            gy, w = f64(s["grad_y"]), f64(s["w"])
            got = result[0] if which == "backward" else result
            assert_close(got, gy @ w, abs(gy) @ abs(w), dtype, "grad_x")
        if which in ("backward_weight", "backward"):
            x, gy = f64(s["x"]), f64(s["grad_y"])
            got = result[1:] if which == "backward" else result
            assert isinstance(got, tuple) and len(got) == 2
            assert_close(got[0], gy.T @ x, abs(gy).T @ abs(x), dtype, "grad_w")
            assert_close(got[1], gy.sum(0), abs(gy).sum(0), dtype, "grad_b")
        if which != "backward":
            assert_is_out(result, b)
    return verify


@pytest.mark.parametrize("which", list(LINEAR))
@fuzz(120)
@given(data=st.data())
def test_linear(which, data):
    """linear, linear_backward_input, linear_backward_weight, linear_backward."""
    dims, spec, forms = draw_linear(data, which)
    exercise(LINEAR[which], lambda: build_linear(dims, spec, forms, which),
             verify_linear(which))


# ============================================================== ReLU

ACTIVATION_SHAPES = st.sampled_from([(), (1,), (7,), (3, 4), (0, 3), (2, 3, 4, 5),
                                     (1, 1, 1), (4, 0)])


def draw_relu(data, which, prepared=False):
    shape = data.draw(ACTIVATION_SHAPES, label="shape")
    arrays = ("x",) if which == "relu" else ("grad_y", "y")
    faults = (array_faults(arrays, shape_faults=()) if which == "relu"
              else array_faults(arrays))
    faults += out_faults("out", aliases=arrays)
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    return shape, spec, {}


def build_relu(shape, spec, forms, which):
    b = Build(spec, shape)
    if which == "relu":
        b.inplace = {"x"}
        b.array("x", shape, special)
        kwargs = dict(out=b.out(shape, aliases=("x",)))
        args = [b.named["x"]]
    else:
        b.inplace = {"grad_y"}
        b.array("grad_y", shape, special)
        b.array("y", shape, special)
        kwargs = dict(out=b.out(shape, aliases=("grad_y", "y")))
        args = [b.named["grad_y"], b.named["y"]]
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish(args, kwargs)


def verify_relu(which):
    def verify(result, b):
        s = b.snap
        if which == "relu":
            expected = ref_relu(f64(s["x"]))
        else:
            expected = np.where(f64(s["y"]) > 0, f64(s["grad_y"]), 0.0)
        assert_equal(result, expected, b.dtype, which)
        assert_is_out(result, b)
    return verify


RELU = dict(relu=F.relu, relu_backward=F.relu_backward)


@pytest.mark.parametrize("which", list(RELU))
@fuzz(200)
@given(data=st.data())
def test_relu(which, data):
    """relu and relu_backward: any shape (0-d, empty), NaN and infinities,
    in place (out=x, out=grad_y) as documented."""
    shape, spec, forms = draw_relu(data, which)
    exercise(RELU[which], lambda: build_relu(shape, spec, forms, which),
             verify_relu(which))


# ==================================================== softmax, loss

SOFTMAX_SHAPES = st.sampled_from([(5,), (1, 1), (3, 4), (2, 3, 10), (7, 2)])


@pytest.mark.parametrize("function", [F.softmax, F.log_softmax])
@fuzz(150)
@given(data=st.data())
def test_softmax(function, data):
    """softmax and log_softmax along the last axis, stable for large scores;
    an empty last axis is refused, a scalar or zero rows may be."""
    shape = data.draw(SOFTMAX_SHAPES, label="shape")
    scale = data.draw(st.sampled_from([1.0, 30.0, 1e3]), label="scale")
    faults = [Fault("logits", d) for d in WRONG_DTYPES] + [
        Fault("logits", "scalar", "maybe"), Fault("logits", "no_classes"),
        Fault("logits", "no_rows", "maybe")]
    spec = draw_spec(data, ["logits"], faults, threaded=False)

    def build():
        b = Build(spec, shape)
        what = spec.fault.what if b.faulty("logits") else None
        logits_shape = {"scalar": (), "no_classes": shape[:-1] + (0,),
                        "no_rows": (0,) + shape[1:]}.get(what, shape)
        if logits_shape[-1:] == (0,):     # no classes
            b.contract.refuse("logits")
        elif what in ("no_rows", "scalar"):
            b.contract.allow("logits")
        b.array("logits", logits_shape, lambda rng, s: rng.standard_normal(s) * scale)
        return b.finish([b.named["logits"]], {})

    def verify(result, b):
        z = f64(b.snap["logits"])
        log_p = ref_log_softmax(z)
        # the error of z - max - log(sum): relative to their magnitudes
        classes = z.shape[-1] if z.ndim else 1
        spread = abs(z) + abs(z).max(axis=-1, keepdims=True) + math.log(classes) + 1
        if np.ndim(z) == 0 and isinstance(result, np.generic):
            result = np.asarray(result)     # a 0-d input may give a scalar
        if function is F.log_softmax:
            assert_close(result, log_p, spread, b.dtype, "log_softmax")
        else:
            assert_close(result, np.exp(log_p), np.exp(log_p) * spread, b.dtype, "softmax")

    exercise(function, build, verify, threaded=False)


@fuzz(200)
@given(data=st.data())
def test_softmax_cross_entropy(data):
    """Loss (a float) and its gradient (softmax - onehot) / N, into out=."""
    n, k = data.draw(st.tuples(st.integers(1, 9), st.integers(1, 12)), label="N, K")
    scale = data.draw(st.sampled_from([1.0, 30.0, 1e3]), label="scale")
    target_dtype = data.draw(st.sampled_from(["int64", "int32", "uint8", "int16",
                                              "uint64"]), label="target_dtype")
    faults = (array_faults(["logits"], ("extra_axis", "missing_axis", "empty"))
              + [Fault("target", d) for d in ("float64", "bool", "complex128", "object")]
              + [Fault("target", v) for v in ("too_large", "negative", "huge",
                                              "longer", "2d")]
              + out_faults("out", aliases=("logits",)))
    spec = draw_spec(data, ["logits", "target"], faults, threaded=False)

    def build():
        b = Build(spec, (n, k))
        b.array("logits", (n, k), lambda rng, s: rng.standard_normal(s) * scale)
        what = spec.fault.what if b.faulty("target") else None
        dtype = target_dtype
        if what in ("float64", "bool", "complex128", "object"):
            dtype = what        # (refused as any index array of such a dtype)
        if what in ("negative", "huge"):
            dtype = "int64"
        shape = {"longer": (n + 1,), "2d": (n, 1)}.get(what, (n,))
        if what in ("too_large", "negative", "huge", "longer", "2d"):
            b.contract.refuse("target")
            b.shape_fault = what in ("longer", "2d")

        def classes(rng, s):
            t = rng.integers(0, k, s)
            if what in ("too_large", "negative", "huge"):
                t.flat[0] = {"too_large": k, "negative": -1,
                                                "huge": 2**40}[what]
            return t
        b.array("target", shape, classes, dtype=dtype)
        out = b.out((n, k), aliases=("logits",))
        return b.finish([b.named["logits"], b.named["target"]], dict(out=out))

    def verify(result, b):
        assert isinstance(result, tuple) and len(result) == 2
        loss, grad = result
        z, t = f64(b.snap["logits"]), np.asarray(b.snap["target"]).astype(np.intp)
        log_p = ref_log_softmax(z)
        rows = np.arange(n)
        expected_loss = -log_p[rows, t].mean()
        spread = abs(z) + abs(z).max(axis=-1, keepdims=True) + math.log(k) + 1
        assert isinstance(loss, float), f"loss is a {type(loss).__name__}, not a float"
        assert abs(loss - expected_loss) <= RTOL[b.dtype] * spread.mean() + 1e-300, \
            f"loss {loss!r}, expected {expected_loss!r}"
        onehot = np.zeros((n, k))
        onehot[rows, t] = 1
        p = np.exp(log_p)
        assert_close(grad, (p - onehot) / n, (p * spread + onehot) / n, b.dtype, "grad")
        assert_is_out(result, b, index=1)

    exercise(F.softmax_cross_entropy, build, verify, threaded=False)


@fuzz(200)
@given(data=st.data())
def test_squared_error(data):
    """Loss (a float) and its gradient (prediction - target) / N into out=;
    with sample_weight, the weighted mean over the rows."""
    n, k = data.draw(st.tuples(st.integers(1, 9), st.integers(1, 12)), label="N, K")
    weighted = data.draw(st.booleans(), label="weighted")
    faults = (array_faults(["prediction", "target"], ("extra_axis", "missing_axis", "empty"))
              + out_faults("out", aliases=("prediction", "target")))
    spec = draw_spec(data, ["prediction", "target"], faults, threaded=False)

    def build():
        b = Build(spec, (n, k))
        b.array("prediction", (n, k))
        b.array("target", (n, k))
        kwargs = {}
        if weighted:
            b.array("sample_weight", (n,), lambda rng, s: rng.uniform(0, 2, s),
                    fixed="float64")
            kwargs["sample_weight"] = b.named["sample_weight"]
        out = b.out((n, k), aliases=("prediction", "target"))
        return b.finish([b.named["prediction"], b.named["target"]],
                        dict(out=out, **kwargs))

    def verify(result, b):
        assert isinstance(result, tuple) and len(result) == 2
        loss, grad = result
        p, t = f64(b.snap["prediction"]), f64(b.snap["target"])
        w = f64(b.snap["sample_weight"]) if weighted else np.ones(n)
        total = w.sum()
        row = ((p - t) ** 2).sum(axis=1) / 2
        expected_loss = (w * row).sum() / total if total else 0.0
        spread = (abs(p) + abs(t)) ** 2
        assert isinstance(loss, float), f"loss is a {type(loss).__name__}, not a float"
        assert abs(loss - expected_loss) <= RTOL[b.dtype] * (w * spread.sum(axis=1)).sum() \
            / max(total, 1e-300) + 1e-300, f"loss {loss!r}, expected {expected_loss!r}"
        factor = (w / total if total else np.zeros(n))[:, None]
        assert_close(grad, (p - t) * factor, (abs(p) + abs(t)) * factor, b.dtype, "grad")
        assert_is_out(result, b, index=1)

    exercise(F.squared_error, build, verify, threaded=False)


# ======================================================= optimizers

LEARNING_RATES = [0.0, 1e-3, 0.1, 1, np.float32(0.05)]
BAD_RATES = [-0.1, -1, np.nan, None, "0.1", 1j, 2**1024]
BAD_BETAS = [1.0, 1.5, -0.1, np.nan, None, "0.9", 2**1024]


def state_faults(names):
    return ([Fault(n, k) for n in names for k in STATE_MAYBE + STATE_BAD + WRONG_DTYPES]
            + [Fault(n, k) for n in names for k in ("longer_axis", "2d")])


def build_update(spec, size, states, params):
    """The arrays of sgd_update/adam_update: ``states`` updated in place
    (params first), grads read; plus the aliasing faults."""
    b = Build(spec, size)
    b.states = states
    for name in ("params", "grads") + states[1:]:
        what = spec.fault.what if b.faulty(name) else None
        shape = {"longer_axis": (size + 1,), "2d": (size, 1)}.get(what, (size,))
        if shape != (size,):
            b.contract.refuse(name)
            b.shape_fault = True
        if name == "grads":
            b.array(name, shape)
            continue
        b.state(name, shape, (lambda rng, s: abs(rng.standard_normal(s)))
                if name == "second_moment" else normal)
    if b.faulty("alias"):
        first, second = spec.fault.what
        b.named[second] = b.named[first]
        b.snap[second] = b.snap[first]
        if second in states and size:
            b.contract.refuse(first, ValueError)
            b.contract.refuse(second, ValueError)
        else:
            b.contract.allow(first, ValueError)
            b.contract.allow(second, ValueError)
    kwargs = {name: b.param(name, value) for name, value in params.items()}
    n_penalized = kwargs.get("n_penalized")
    if n_penalized is not None and not b.faulty("n_penalized"):
        kwargs["n_penalized"] = min(n_penalized, size)
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish([b.named[n] for n in ("params", "grads") + states[1:]], kwargs)


def update_faults(size, states, names_rates, names_betas=()):
    faults = state_faults(states) + array_faults(["grads"], shape_faults=())
    faults += [Fault("grads", k) for k in ("longer_axis", "2d")]
    faults += [Fault("alias", (a, s)) for a in states for s in states if a < s]
    faults += [Fault("alias", ("grads", s), "maybe") for s in states]
    for name in names_rates:
        faults += param_faults(name, BAD_RATES)
    for name in names_betas:
        faults += param_faults(name, BAD_BETAS)
    faults += param_faults("n_penalized", [-1, size + 1, 2**63, 1.5, True, "1"])
    return faults


def observe_states(result, b):
    assert result is None, f"returned {result!r}, not None"
    return [b.named[n] for n in b.states]


def check_states(b, expected, scales):
    for name, value, scale in zip(b.states, expected, scales):
        assert_close(b.named[name], value, scale, b.dtype, name)


@fuzz(200)
@given(data=st.data())
def test_sgd_update(data):
    """sgd_update in place, as its docstring's formulas; hyperparameters
    checked as torch.optim.SGD does (lr, momentum, l2 >= 0)."""
    size = data.draw(st.sampled_from([0, 1, 5, 31, 100]), label="size")
    hyper = data.draw(st.fixed_dictionaries(dict(
        learning_rate=st.sampled_from(LEARNING_RATES),
        momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
        nesterov=st.booleans(), l2=st.sampled_from([0.0, 1e-4, 0.1]),
        n_penalized=st.one_of(st.none(), st.integers(0, 100)))), label="hyper")
    states = ("params", "velocity")
    faults = update_faults(size, states, ["learning_rate", "momentum", "l2"])
    spec = draw_spec(data, ["grads"], faults)

    def build():
        b = build_update(spec, size, states, hyper)
        if size == 0:
            b.contract.allow("params")
        return b

    def verify(result, b):
        observe_states(result, b)
        k = b.kwargs
        p, g, v = (f64(b.snap[n]) for n in ("params", "grads", "velocity"))
        n_pen = size if k["n_penalized"] is None else k["n_penalized"]
        lr, mu, l2 = float(k["learning_rate"]), k["momentum"], k["l2"]
        expected = ref_sgd(p, g, v, lr, mu, k["nesterov"], l2, n_pen)
        scale = ref_sgd(abs(p), abs(g), abs(v), -lr, mu, k["nesterov"], l2, n_pen)
        check_states(b, expected, [abs(scale[0]) + abs(p), abs(scale[1])])

    exercise(F.sgd_update, build, verify, observe_states)


@fuzz(200)
@given(data=st.data())
def test_adam_update(data):
    """adam_update in place, as its docstring's formulas; hyperparameters
    checked as torch.optim.Adam does (lr, epsilon, l2 >= 0,
    0 <= beta_1, beta_2 < 1)."""
    size = data.draw(st.sampled_from([0, 1, 5, 31, 100]), label="size")
    hyper = data.draw(st.fixed_dictionaries(dict(
        step=st.sampled_from([1, 2, 10, 10**6, np.int64(3)]),
        learning_rate=st.sampled_from(LEARNING_RATES),
        beta_1=st.sampled_from([0.0, 0.5, 0.9]),
        beta_2=st.sampled_from([0.0, 0.9, 0.999]),
        epsilon=st.sampled_from([1e-8, 1e-3, 0.0]),
        l2=st.sampled_from([0.0, 1e-4, 0.1]),
        n_penalized=st.one_of(st.none(), st.integers(0, 100)))), label="hyper")
    states = ("params", "first_moment", "second_moment")
    faults = update_faults(size, states, ["learning_rate", "epsilon", "l2"],
                           ["beta_1", "beta_2"])
    faults += param_faults("step", [0, -1, 1.0, True, None, "1"])
    faults += [Fault("step", v, "maybe") for v in HUGE]
    spec = draw_spec(data, ["grads"], faults)

    def build():
        b = build_update(spec, size, states, hyper)
        if size == 0:
            b.contract.allow("params")
        b.args.append(b.kwargs.pop("step"))
        b.args.append(b.kwargs.pop("learning_rate"))
        return b

    def verify(result, b):
        observe_states(result, b)
        k = b.kwargs
        step, lr = b.args[4], float(b.args[5])
        p, g, m, v = (f64(b.snap[n]) for n in ("params", "grads", "first_moment",
                                                "second_moment"))
        n_pen = size if k["n_penalized"] is None else k["n_penalized"]
        b1, b2, eps, l2 = k["beta_1"], k["beta_2"], k["epsilon"], k["l2"]
        expected = ref_adam(p, g, m, v, int(step), lr, b1, b2, eps, l2, n_pen)
        # the update's size, its terms taken by magnitude
        gm = abs(g) + l2 * abs(p)
        m_scale = b1 * abs(m) + (1 - b1) * gm
        v_scale = b2 * v + (1 - b2) * gm * gm
        lr_t = lr * math.sqrt(1 - b2 ** int(step)) / (1 - b1 ** int(step))
        with np.errstate(invalid="ignore", divide="ignore"):
            p_scale = abs(p) + lr_t * m_scale / (np.sqrt(expected[2]) + eps)
        check_states(b, expected, [p_scale, m_scale, v_scale])

    exercise(F.adam_update, build, verify, observe_states)


# ===================================================== take_samples

@fuzz(200)
@given(data=st.data())
def test_take_samples(data):
    """take_samples = x[index] bit for bit; an index outside [0, N) raises
    IndexError naming index and writes nothing."""
    rows = data.draw(st.sampled_from([0, 1, 3, 6]), label="N")
    row_shape = data.draw(st.sampled_from([(), (1,), (4,), (2, 3)]), label="row shape")
    n_index = data.draw(st.sampled_from([0, 1, 4, 9]) if rows else st.just(0),
                        label="B")
    index_dtype = data.draw(st.sampled_from(["int64", "int32", "uint8", "int16",
                                             "uint64", "intp"]), label="index_dtype")
    index_layout = data.draw(st.sampled_from(INPUT_LAYOUTS), label="index_layout")
    faults = ([Fault("x", d) for d in WRONG_DTYPES] + [Fault("x", "scalar")]
              + [Fault("index", v) for v in ("float64", "bool", "2d")]
              + [Fault("index", v) for v in ("too_large", "negative", "huge", "max_uint")]
              + out_faults("out", aliases=("x",)))
    spec = draw_spec(data, ["x"], faults)

    def build():
        b = Build(spec, rows)
        x_shape = () if b.faulty("x") and spec.fault.what == "scalar" else \
            (rows,) + row_shape
        if x_shape == ():
            b.contract.refuse("x")
        b.array("x", x_shape, special)
        what = spec.fault.what if b.faulty("index") else None
        dtype = {"float64": "float64", "bool": "bool", "huge": "int64",
                 "negative": "int64", "max_uint": "uint64"}.get(what, index_dtype)
        if what == "2d":   # (a float or bool index is refused unless empty)
            b.contract.refuse("index")
        if what in ("too_large", "negative", "huge", "max_uint"):
            b.contract.refuse("index", IndexError)

        def indices(rng, s):
            i = rng.integers(0, max(rows, 1), s)
            if what in ("too_large", "negative", "huge", "max_uint"):
                i = np.append(0, i).astype(object)
                i[0] = {"too_large": rows, "negative": -1,
                                           "huge": 2**40, "max_uint": 2**64 - 1}[what]
            return i
        shape = (n_index, 1) if what == "2d" else (n_index,)
        b.array("index", shape, indices, dtype=dtype, layout=index_layout)
        if what in ("too_large", "negative", "huge", "max_uint") and \
                index_layout == "list":
            b.contract.refuse("index")     # a list of such ints may not be an int array
        n = np.shape(b.named["index"])[0]
        out = b.out((n,) + x_shape[1:], aliases=("x",))
        b.out_before = None if out is None else np.array(out)
        kwargs = dict(out=out)
        if spec.n_threads is not None or b.faulty("n_threads"):
            kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
        return b.finish([b.named["x"], b.named["index"]], kwargs)

    def verify(result, b):
        expected = np.asarray(b.snap["x"])[np.asarray(b.snap["index"]).astype(np.intp)]
        assert isinstance(result, np.ndarray) and result.dtype == b.dtype
        assert result.shape == expected.shape, \
            f"shape {result.shape}, expected {expected.shape}"
        assert result.tobytes() == np.ascontiguousarray(expected).tobytes(), \
            "take_samples is not x[index] bit for bit"
        assert_is_out(result, b)

    def nothing_written(b):
        """Documented: nothing is written when index is out of range."""
        if IndexError in b.contract.must.get("index", ()) and b.out_before is not None \
                and isinstance(b.named["out"], np.ndarray):
            assert np.array(b.named["out"]).tobytes() == b.out_before.tobytes(), \
                "take_samples wrote into out before refusing the index"

    exercise(F.take_samples, build, verify, on_refusal=nothing_written)


# ====================================================== output_size

@fuzz(300)
@given(data=st.data())
def test_output_size(data):
    """output_size = (input + 2 padding - dilation (kernel - 1) - 1) // stride
    + 1 for valid ints; anything else refused naming the parameter."""
    padding = data.draw(st.integers(0, 3), label="padding")
    input_size = data.draw(st.integers(1, 40), label="input_size")
    dilation = data.draw(st.integers(1, 3), label="dilation")
    kernel = data.draw(st.integers(1, (input_size + 2 * padding - 1) // dilation + 1),
                       label="kernel_size")
    stride = data.draw(st.integers(1, 6), label="stride")
    names = ("input_size", "kernel_size", "stride", "padding", "dilation")
    faults = ([Fault(n, v) for n in names
               for v in (-1, 1.5, 2.0, True, None, "3", np.float64(2))]
              + [Fault(n, 0) for n in ("input_size", "kernel_size", "stride", "dilation")]
              + [Fault(n, v) for n in ("stride", "padding", "dilation") for v in HUGE]
              + [Fault(n, v, "maybe") for n in ("input_size", "kernel_size") for v in HUGE]
              + [Fault("kernel_size", "too_big")])
    fault = data.draw(faults_or_none(faults), label="fault")
    spec = Spec(np.dtype(np.float64), {}, None, False, fault, 0)

    def build():
        b = Build(spec)
        values = dict(input_size=input_size, kernel_size=kernel, stride=stride,
                      padding=padding, dilation=dilation)
        if b.faulty("kernel_size") and spec.fault.what == "too_big":
            values["kernel_size"] = input_size + 2 * padding + 1
            b.contract.refuse("kernel_size")
            b.contract.allow("input_size")
            b.contract.allow("padding")
        else:
            values = {n: b.param(n, v) for n, v in values.items()}
            if b.faulty("input_size") or b.faulty("kernel_size"):
                # a HUGE kernel may span more than the input once dilated
                b.contract.allow("dilation")
        b.named = values
        return b.finish(list(values.values()), {})

    def verify(result, b):
        i, k, s, p, d = (int(v) for v in b.args)
        assert operator.index(result) == (i + 2 * p - d * (k - 1) - 1) // s + 1, result

    exercise(F.output_size, build, verify, threaded=False)


# ========================================================== dropout

#: bad values of every float parameter: NaN, not a real number, ints
#: beyond every float
BAD_REALS = (np.nan, None, "0.5", 1j, 2**1024, -2**1024)
DROPOUT = dict(dropout=(F.dropout, "x"), dropout_backward=(F.dropout_backward, "grad_y"))
DROPOUT_SHAPES = st.sampled_from([(), (1,), (7,), (3, 4), (2, 3, 5), (2, 2, 2),
                                  (2, 3, 4, 5), (0, 3), (3, 0, 2)])
RATES = st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.999, np.float32(0.3), np.float64(0.25)])


def uniforms_with_ties(rate):
    """Uniforms on [0, 1), some exactly ``rate`` (kept) or NaN (dropped)."""
    def values(rng, shape):
        pick = rng.random(shape)
        return np.where(pick < 0.1, float(rate), np.where(pick < 0.15, np.nan,
                                                          rng.random(shape)))
    return values


def ref_dropout(values, uniforms, rate, dtype):
    """values * mask * scale in ``dtype``, as the docstring: the mask
    ``uniforms >= rate`` (one per value, or per sample and channel) and
    scale 1 / (1 - rate), rate and scale rounded to the dtype. One product:
    the same bits as any correct kernel."""
    keep = np.asarray(uniforms, dtype) >= dtype.type(float(rate))
    keep = keep.reshape(keep.shape + (1,) * (np.ndim(values) - keep.ndim))
    scale = dtype.type(1 / (1 - float(rate)))
    with np.errstate(invalid="ignore"):     # a dropped infinity
        return np.asarray(values, dtype) * np.where(keep, scale, dtype.type(0))


def draw_dropout(data, which, prepared=False):
    """The example of test_dropout: (build, verify, spec)."""
    function, name = DROPOUT[which]
    shape = data.draw(DROPOUT_SHAPES, label="shape")
    rate = data.draw(RATES, label="rate")
    per_channel = len(shape) >= 2 and data.draw(st.booleans(), label="per_channel")
    faults = (array_faults([name, "uniforms"])
              + param_faults("rate", (-0.1, 1.0, 1.5, np.inf, -np.inf) + BAD_REALS)
              + out_faults("out", aliases=(name, "uniforms")))
    spec = draw_spec(data, [name, "uniforms"], faults, prepared=prepared)

    def build():
        b = Build(spec, shape)
        b.inplace = {name}
        x_shape = np.shape(b.array(name, shape, special))
        u_shape = np.shape(b.array("uniforms", shape[:2] if per_channel else shape,
                                   uniforms_with_ties(rate)))
        b.fits(u_shape == x_shape or (len(x_shape) >= 2 and u_shape == x_shape[:2]))
        kwargs = dict(out=b.out(x_shape, aliases=(name, "uniforms")))
        if spec.n_threads is not None or b.faulty("n_threads"):
            kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
        return b.finish(b.inputs(name, "uniforms") + [b.param("rate", rate)], kwargs)

    def verify(result, b):
        s = b.snap
        assert_equal(result, ref_dropout(s[name], s["uniforms"], rate, b.dtype),
                     b.dtype, which)
        assert_is_out(result, b)

    return build, verify, spec


@pytest.mark.parametrize("which", list(DROPOUT))
@fuzz(150)
@given(data=st.data())
def test_dropout(which, data):
    """dropout and dropout_backward: a mask from uniforms of the values'
    shape or of their first two axes (channel-wise), values times 0 or
    scale bit for bit, in place on the values as documented."""
    build, verify, _ = draw_dropout(data, which)
    exercise(DROPOUT[which][0], build, verify)


# ====================================================== activations

def ref_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, written as erfc(-x / sqrt 2) / 2:
    the same function, without 1 + erf's cancellation in the left tail."""
    return 0.5 * erfc(-x / math.sqrt(2))


def ref_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def ref_gelu_tanh_exponent(x):
    """2u: GELU's tanh approximation 0.5 x (1 + tanh(u)) is x expit(2u)."""
    return 2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)


def ref_activation(name, x, p):
    """(f(x), the magnitude its error is relative to), float64, from the
    forward docstrings; ``p``: negative_slope, alpha or GELU's approximate.
    GELU's exponent x**2 / 2 (erfc's argument x / sqrt 2) is rounded, an
    error the left tail magnifies by about x**2 (tests/test_activations.py),
    its tanh form's exponent 2u, magnified by about |2u|."""
    with np.errstate(all="ignore"):
        if name == "tanh":
            y = np.tanh(x)
        elif name == "sigmoid":
            y = expit(x)
        elif name == "leaky_relu":
            y = np.where(x > 0, x, p * x)
        elif name == "elu":
            y = np.where(x > 0, x, p * np.expm1(x))
        elif p == "tanh":
            cdf = expit(ref_gelu_tanh_exponent(x))
            y = np.where(cdf == 0, 0.0, x * cdf)
            return y, abs(y) * (2 + abs(ref_gelu_tanh_exponent(x)))
        else:
            cdf = ref_cdf(x)
            y = np.where(cdf == 0, 0.0, x * cdf)      # -inf * 0 is 0 here
            return y, abs(y) * (2 + x * x)
    return y, abs(y)


def ref_activation_backward(name, g, a, p):
    """(grad_x, its error's magnitude) from the backward docstrings: from
    the output y (``a``), GELU's from its input x."""
    with np.errstate(all="ignore"):
        if name == "tanh":
            return g * (1 - a * a), abs(g) * (1 + a * a)
        if name == "sigmoid":
            return g * a * (1 - a), abs(g * a) * (1 + abs(a))
        if name == "leaky_relu":
            grad = np.where(a > 0, g, p * g)
            return grad, abs(grad)
        if name == "elu":
            return (np.where(a > 0, g, g * (a + p)),
                    np.where(a > 0, abs(g), abs(g) * (abs(a) + p)))
        if p == "tanh":
            exponent = ref_gelu_tanh_exponent(a)
            s_ = expit(exponent)
            slope = 2 * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * a * a)
            tail = np.where(s_ * (1 - s_) == 0, 0.0, a * slope * s_ * (1 - s_))
            return g * (s_ + tail), abs(g) * (s_ + abs(tail)) * (2 + abs(exponent))
        cdf, pdf = ref_cdf(a), ref_pdf(a)
        x_pdf = np.where(pdf == 0, 0.0, a * pdf)      # +-inf * 0 is 0 here
        return g * (cdf + x_pdf), abs(g) * (cdf + abs(x_pdf)) * (2 + a * a)


ACTIVATIONS = dict(tanh=(F.tanh, F.tanh_backward, None),
                   sigmoid=(F.sigmoid, F.sigmoid_backward, None),
                   leaky_relu=(F.leaky_relu, F.leaky_relu_backward, "negative_slope"),
                   elu=(F.elu, F.elu_backward, "alpha"),
                   gelu=(F.gelu, F.gelu_backward, "approximate"))
ACTIVATION_PARAMETERS = dict(
    negative_slope=[0.0, 0.01, 0.2, 1, 3.5, np.float32(0.1)],
    alpha=[1.0, 0.5, 2, 1e-3, np.float64(1.5)],
    approximate=["none", "tanh"])
BAD_ACTIVATION_PARAMETERS = dict(
    negative_slope=(-0.01, -1, np.inf, -np.inf) + BAD_REALS,
    alpha=(0, 0.0, -1.0, np.inf, -np.inf) + BAD_REALS,
    approximate=("Tanh", "erf", "", None, 1))
ACTIVATION_CASES = [(n, w) for n in ACTIVATIONS for w in ("forward", "backward")]


def spread_special(rng, shape):
    """Special values, the finite ones spread to +-12 (tails, saturation)."""
    return 4 * special(rng, shape)


def draw_activation(data, name, which, prepared=False):
    """The example of test_activation: (build, verify, spec)."""
    forward = which == "forward"
    function = ACTIVATIONS[name][0 if forward else 1]
    parameter = ACTIVATIONS[name][2]
    shape = data.draw(ACTIVATION_SHAPES, label="shape")
    value = None if parameter is None else data.draw(
        st.sampled_from(ACTIVATION_PARAMETERS[parameter]), label=parameter)
    source = "x" if name == "gelu" else "y"
    arrays = ("x",) if forward else ("grad_y", source)
    faults = (array_faults(arrays, shape_faults=() if forward else SHAPE_FAULTS)
              + out_faults("out", aliases=arrays))
    if parameter is not None:
        faults += param_faults(parameter, BAD_ACTIVATION_PARAMETERS[parameter])
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)

    def build():
        b = Build(spec, shape)
        b.inplace = set(arrays)
        if forward:
            b.array("x", shape, spread_special)
        else:
            b.array("grad_y", shape, special)
            b.array(source, shape, spread_special if source == "x" else (
                lambda rng, s: ref_activation(name, spread_special(rng, s), value)[0]))
        kwargs = dict(out=b.out(shape, aliases=arrays))
        if parameter is not None:
            kwargs[parameter] = b.param(parameter, value)
        if spec.n_threads is not None or b.faulty("n_threads"):
            kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
        return b.finish(b.inputs(*arrays), kwargs)

    def verify(result, b):
        s = b.snap
        if forward:
            expected, scale = ref_activation(name, f64(s["x"]), value)
        else:
            expected, scale = ref_activation_backward(
                name, f64(s["grad_y"]), f64(s[source]), value)
        assert_close(result, expected, scale, b.dtype, function.__name__)
        assert_is_out(result, b)

    return build, verify, spec


@pytest.mark.parametrize("name, which", ACTIVATION_CASES)
@fuzz(60)
@given(data=st.data())
def test_activation(name, which, data):
    """tanh, sigmoid, leaky_relu, elu, gelu and their _backward: any shape,
    NaN and infinities, in place as documented; the backward passes on the
    output y (GELU's on the input x) of the forward pass."""
    build, verify, _ = draw_activation(data, name, which)
    exercise(ACTIVATIONS[name][0 if which == "forward" else 1], build, verify)


# =================================================== global pooling

GLOBAL_POOL = {
    1: dict(avg=F.global_avg_pool1d, avg_backward=F.global_avg_pool1d_backward,
            max=F.global_max_pool1d, max_backward=F.global_max_pool1d_backward),
    2: dict(avg=F.global_avg_pool2d, avg_backward=F.global_avg_pool2d_backward,
            max=F.global_max_pool2d, max_backward=F.global_max_pool2d_backward),
}
GLOBAL_POOL_ARRAYS = {"avg": ("x",), "max": ("x",), "avg_backward": ("grad_y",),
                      "max_backward": ("grad_y", "argmax")}
GLOBAL_POOL_CASES = [(ndim, which) for ndim in (1, 2) for which in GLOBAL_POOL[ndim]]


@st.composite
def global_pool_geometries(draw, ndim):
    """One window the size of the plane (a Pool, to reuse its references)."""
    spatial = tuple(draw(st.integers(1, 9 if ndim == 2 else 40)) for _ in range(ndim))
    return Pool(draw(st.integers(1, 3)), draw(st.integers(1, 5)), spatial, spatial, None)


def draw_global_pooling(data, ndim, which, prepared=False):
    """The example of test_global_pooling: (build, verify, spec)."""
    g = data.draw(global_pool_geometries(ndim), label="geometry")
    pooled = g.x_shape[:2]
    arrays = GLOBAL_POOL_ARRAYS[which]
    forward = which in ("avg", "max")
    faults = array_faults(arrays, NO_MISMATCH if forward else SHAPE_FAULTS)
    if not forward:
        faults += param_faults("x_shape", bad_shapes(g.x_shape)) + maybe_forms("x_shape")
    if which == "max_backward":
        faults += [Fault("argmax", v) for v in ARGMAX_FAULTS]
    if which == "max":
        faults += (out_faults("out[0]", aliases=("x",)) + out_faults("out[1]")
                   + [Fault("out", k) for k in TUPLE_FAULTS])
    else:
        faults += out_faults("out", aliases=arrays)
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    x_shape = data.draw(shape_forms(g.x_shape), label="x_shape")
    values = VALUE_KINDS[data.draw(st.sampled_from(list(VALUE_KINDS)), label="values")]
    index_dtype = data.draw(st.sampled_from(INDEX_DTYPES), label="argmax_dtype")

    def build():
        b = Build(spec, g)
        if forward:
            b.array("x", g.x_shape, values if which == "max" else normal)
            out = b.out_tuple([pooled, pooled], ["float", np.int32], aliases=("x",)) \
                if which == "max" else b.out(pooled, aliases=("x",))
            args = b.inputs("x")
        else:
            b.array("grad_y", pooled)
            if which == "max_backward":
                argmax_array(b, pooled, math.prod(g.spatial), index_dtype)
            shape = b.param("x_shape", x_shape, g.x_shape)
            b.shape_fault |= b.faulty("x_shape")   # grad_y may be named instead
            out = b.out(g.x_shape, aliases=arrays)
            args = b.inputs(*arrays) + [shape]
        kwargs = dict(out=out)
        if spec.n_threads is not None or b.faulty("n_threads"):
            kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
        return b.finish(args, kwargs)

    def verify(result, b):
        s, dtype, axes = b.snap, b.dtype, tuple(range(2, 2 + ndim))
        plane = math.prod(g.spatial)
        if which == "avg":
            x = f64(s["x"])
            assert_close(result, x.mean(axes), abs(x).mean(axes), dtype, "y")
        elif which == "avg_backward":
            gy = np.broadcast_to(f64(s["grad_y"]).reshape(pooled + (1,) * ndim), g.x_shape)
            assert_close(result, gy / plane, abs(gy) / plane, dtype, "grad_x")
        elif which == "max":
            assert isinstance(result, tuple) and len(result) == 2
            y, argmax, _ = ref_max_pool(f64(s["x"]), g.size, g.steps)
            assert_equal(result[0], y.reshape(pooled), dtype, "y")
            assert result[1].dtype == np.int32 and result[1].shape == pooled, \
                f"argmax: {result[1].dtype} {result[1].shape}"
            np.testing.assert_array_equal(result[1], argmax.reshape(pooled), "argmax")
        else:
            gy, argmax = f64(s["grad_y"]), np.asarray(s["argmax"]).astype(np.intp)
            assert_close(result, ref_max_pool_backward(gy, argmax, g.x_shape),
                         ref_max_pool_backward(abs(gy), argmax, g.x_shape),
                         dtype, "grad_x")
        assert_is_out(result, b)

    return build, verify, spec


@pytest.mark.parametrize("ndim, which", GLOBAL_POOL_CASES)
@fuzz(80)
@given(data=st.data())
def test_global_pooling(ndim, which, data):
    """global_avg_pool1d/2d, global_max_pool1d/2d and their _backward: each
    (sample, channel) plane to one value, (N, C); max ties to the first,
    a NaN the maximum."""
    build, verify, _ = draw_global_pooling(data, ndim, which)
    exercise(GLOBAL_POOL[ndim][which], build, verify)


# ========================================================== L2 pooling

L2_POOL = {1: dict(forward=F.l2_pool1d, backward=F.l2_pool1d_backward),
           2: dict(forward=F.l2_pool2d, backward=F.l2_pool2d_backward)}
L2_POOL_CASES = [(ndim, which) for ndim in (1, 2) for which in ("forward", "backward")]


def ref_l2_pool(x, size, stride):
    """sqrt of the sum of squares of each window, and each window's values."""
    windows = pool_windows(x, size, stride)[0]
    return np.sqrt((windows * windows).sum(axis=-1))


def ref_l2_pool_backward(grad_y, x, y, size, stride):
    """Each window adds grad_y * x / y to its inputs, nothing where y is 0;
    and the same with every term by its magnitude."""
    with np.errstate(all="ignore"):
        ratio = np.where(y == 0, 0.0, grad_y / y)
    grad_x, scale = np.zeros(x.shape), np.zeros(x.shape)
    for offset in np.ndindex(*size):
        where = window(offset, stride, y.shape[2:])
        with np.errstate(invalid="ignore"):
            grad_x[where] += ratio * x[where]
            scale[where] += abs(ratio * x[where])
    return grad_x, scale


def derived(b, source, source_shape, compute):
    """Values of an array a forward pass would have made from input
    ``source`` (its snap, in float64): ``compute`` of it when it has
    ``source_shape`` and a float dtype, else (a fault changed it) random."""
    def values(rng, shape):
        a = np.asarray(b.snap[source])
        if a.dtype in FLOATS and a.shape == tuple(source_shape):
            result = compute(f64(a))
            if np.shape(result) == tuple(shape):
                return result
        return abs(rng.standard_normal(shape))
    return values


def draw_l2_pool(data, ndim, which, prepared=False):
    """The example of test_l2_pool: (build, verify, spec)."""
    forward = which == "forward"
    g = data.draw(pool_geometries(ndim), label="geometry")
    arrays = ("x",) if forward else ("grad_y", "x", "y")
    faults = (array_faults(arrays, NO_MISMATCH if forward else SHAPE_FAULTS)
              + window_faults(g, ndim) + out_faults("out", aliases=arrays))
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    forms = dict(size=data.draw(axis_forms(g.size), label="size"),
                 stride=None if g.stride is None else data.draw(axis_forms(g.stride),
                                                                label="stride"))
    values = VALUE_KINDS[data.draw(st.sampled_from(list(VALUE_KINDS)), label="values")]

    def build():
        b = Build(spec, g)
        size, stride = window_params(b, g, forms)
        if forward:
            b.array("x", g.x_shape, values)
            out = b.out(g.y_shape, aliases=("x",))
        else:
            b.array("grad_y", g.y_shape)
            b.array("x", g.x_shape, values)
            b.array("y", g.y_shape, derived(
                b, "x", g.x_shape, lambda a: ref_l2_pool(a, g.size, g.steps)))
            out = b.out(g.x_shape, aliases=arrays)
        kwargs = dict(out=out)
        if spec.n_threads is not None or b.faulty("n_threads"):
            kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
        return b.finish(b.inputs(*arrays) + [size, stride], kwargs)

    def verify(result, b):
        s = b.snap
        if forward:
            expected = ref_l2_pool(f64(s["x"]), g.size, g.steps)
            assert_close(result, expected, expected, b.dtype, "y")
        else:
            assert_close(result, *ref_l2_pool_backward(
                f64(s["grad_y"]), f64(s["x"]), f64(s["y"]), g.size, g.steps),
                b.dtype, "grad_x")
        assert_is_out(result, b)

    return build, verify, spec


@pytest.mark.parametrize("ndim, which", L2_POOL_CASES)
@fuzz(80)
@given(data=st.data())
def test_l2_pool(ndim, which, data):
    """l2_pool1d/2d and their _backward (given x and the forward's y; no
    gradient through a window whose y is 0)."""
    build, verify, _ = draw_l2_pool(data, ndim, which)
    exercise(L2_POOL[ndim][which], build, verify)


# ====================================================== batch norm

class Batch(NamedTuple):
    """A batch of flat features (N, C), signals or images, for batch
    normalization (and, with spatial axes, local response normalization)."""
    shape: tuple

    @property
    def c(self):
        return self.shape[1]

    @property
    def axes(self):
        """The axes a channel's statistics run over."""
        return (0,) + tuple(range(2, len(self.shape)))

    def per_channel(self, v):
        """A (C,) array broadcast along the batch's channel axis."""
        return np.reshape(v, (1, -1) + (1,) * (len(self.shape) - 2))


@st.composite
def batches(draw, ndims=(2, 3, 4)):
    """First (test_every_fault's examples) 2 samples of 3 channels: enough
    for a running statistic written into x to change y."""
    ndim = draw(st.sampled_from(ndims))
    spatial = tuple(draw(st.integers(1, 5)) for _ in range(ndim - 2))
    return Batch((draw(st.sampled_from([2, 1, 3, 4])),
                  draw(st.sampled_from([3, 1, 2, 4, 5, 6]))) + spatial)


def offset(rng, shape):
    """Normal values about 30: statistics of data far from zero."""
    return 30 + rng.standard_normal(shape)


NORM_VALUES = {"normal": normal, "ties": ties, "special": special, "offset": offset}
#: first a momentum that moves the running statistics: test_every_fault's
#: examples take the first
MOMENTA = st.sampled_from([0.1, 0.0, 0.5, 1.0, 1, np.float32(0.3)])
EPSILONS = st.sampled_from([1e-5, 1e-3, 1.0, 1, np.float32(1e-4)])
BAD_MOMENTA = (-0.1, 1.5, np.inf, -np.inf) + BAD_REALS
BAD_EPSILONS = (0, 0.0, -1e-5, np.inf, -np.inf) + BAD_REALS
#: vectors of one value per channel
CHANNEL_VECTORS = ("weight", "bias", "running_mean", "running_var")


def ref_batch_statistics(x, axes):
    """Batch mean and biased variance of each channel, and the magnitude
    of the squares summed into the variance (float64)."""
    channel = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes)
    with np.errstate(invalid="ignore"):
        centred = x - mean.reshape(channel)
        return (mean, (centred * centred).mean(axis=axes),
                ((abs(x) + abs(mean).reshape(channel)) ** 2).mean(axis=axes))


def channel_vector_or(b, name, value):
    """The snap of a (C,) argument in float64, ``value`` where None."""
    return value if b.named.get(name) is None else f64(b.snap[name])


def draw_batch_norm(data, mode, prepared=False):
    """The example of test_batch_norm: (build, verify, spec)."""
    training = mode == "training"
    batch = data.draw(batches(), label="geometry")
    arrays = ("x",) + CHANNEL_VECTORS
    faults = (array_faults(arrays)
              + param_faults("momentum", BAD_MOMENTA) + param_faults("eps", BAD_EPSILONS)
              + [Fault("running_var", "missing")])
    if training:
        faults += (state_faults(["running_mean", "running_var"])
                   + [Fault("running_mean", ("alias", a, shift), "maybe")
                      for a in ("x", "weight", "bias") for shift in (0, 1, -1)]
                   + [Fault("running_mean", ("alias", "running_var", shift))
                      for shift in (0, 1, -1)])
        labels = ("out[0]", "out[1]", "out[2]")
        faults += [f for label in labels for f in out_faults(label, aliases=arrays)]
        faults += [Fault("out", k) for k in TUPLE_FAULTS]
    else:
        faults += [Fault("running_mean", "missing")] + out_faults("out", aliases=arrays)
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    forms = data.draw(st.fixed_dictionaries(dict(
        weight=st.booleans(), bias=st.booleans(), running=st.booleans(),
        momentum=MOMENTA, eps=EPSILONS, relu=st.booleans(),
        values=st.sampled_from(list(NORM_VALUES)))), label="forms")
    return (lambda: build_batch_norm(batch, spec, forms, training),
            verify_batch_norm(training), spec)


def build_batch_norm(batch, spec, forms, training):
    b = Build(spec, batch)
    x = b.array("x", batch.shape, NORM_VALUES[forms["values"]])
    what = b.fault.what if b.fault.target in CHANNEL_VECTORS else None
    aliased = what[1] if isinstance(what, tuple) else None
    # inference needs the running statistics: given unless a fault drops them
    running = forms["running"] or b.fault.target in CHANNEL_VECTORS if training \
        else not (b.faulty("running_mean") and what == "missing")
    given = dict(weight=forms["weight"] or aliased == "weight",
                 bias=forms["bias"] or aliased == "bias", running_mean=running,
                 running_var=running and not (b.faulty("running_var") and what == "missing"))
    for name in ("weight", "bias", "running_var", "running_mean"):   # alias targets first
        if not (given[name] or b.faulty(name)):
            b.named[name] = None
        elif name == "running_var" and training:
            b.state(name, (batch.c,), lambda rng, s: abs(rng.standard_normal(s)))
        elif name == "running_mean" and training:
            b.state(name, (batch.c,))
        else:
            b.array(name, (batch.c,), (lambda rng, s: abs(rng.standard_normal(s)))
                    if name == "running_var" else normal)
    if (b.named["running_mean"] is None) != (b.named["running_var"] is None):
        b.contract.refuse("running_mean")
        b.contract.refuse("running_var")
    elif b.named["running_mean"] is None and not training:
        b.contract.refuse("running_mean")
    source = b.named.get(aliased)
    if isinstance(source, np.ndarray) and np.shares_memory(b.named["running_mean"], source):
        # two updated arrays must be apart; an input may be read right
        (b.contract.refuse if aliased == "running_var" else b.contract.allow)(
            "running_mean", ValueError)
        (b.contract.refuse if aliased == "running_var" else b.contract.allow)(
            aliased, ValueError)
    shape = np.shape(x)
    b.fits(len(shape) in (2, 3, 4) and 0 not in shape and all(
        b.named[n] is None or np.shape(b.named[n]) == (shape[1],) for n in CHANNEL_VECTORS))
    channels = (shape[1],) if len(shape) > 1 else (batch.c,)
    if training:
        out = b.out_tuple([shape, channels, channels], ["float", np.float64, np.float64],
                          aliases=("x",) + CHANNEL_VECTORS)
    else:
        out = b.out(shape, aliases=("x",) + CHANNEL_VECTORS)
    kwargs = dict(training=training, momentum=b.param("momentum", forms["momentum"]),
                  eps=b.param("eps", forms["eps"]), relu=forms["relu"], out=out)
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish(b.inputs("x", *CHANNEL_VECTORS), kwargs)


def verify_batch_norm(training):
    @np.errstate(invalid="ignore")      # NaN and infinities in x
    def verify(result, b):
        """y from the batch's statistics (training) or the running ones,
        the running statistics moved towards the batch's by momentum."""
        s, f = b.snap, b.kwargs
        x = f64(s["x"])
        batch = Batch(x.shape)      # (a shape fault may leave a valid one)
        c = batch.per_channel
        weight = channel_vector_or(b, "weight", np.ones(batch.c))
        bias = channel_vector_or(b, "bias", np.zeros(batch.c))
        eps, momentum = float(f["eps"]), float(f["momentum"])
        if training:
            assert isinstance(result, tuple) and len(result) == 3
            mean, var, squares = ref_batch_statistics(x, batch.axes)
        else:
            mean, var = f64(s["running_mean"]), f64(s["running_var"])
        invstd = 1 / np.sqrt(var + eps)
        y = (x - c(mean)) * c(invstd * weight) + c(bias)
        scale = (abs(x) + c(abs(mean))) * c(invstd * abs(weight)) + c(abs(bias))
        if f["relu"]:
            y = ref_relu(y)
        assert_close(result[0] if training else result, y, scale, b.dtype, "y")
        assert_is_out(result, b)
        if not training:
            return
        assert_close(result[1], mean, abs(x).mean(axis=batch.axes), np.float64, "mean")
        assert_close(result[2], invstd, invstd * (1 + squares / (var + eps)),
                     np.float64, "invstd")
        if b.named["running_mean"] is None:
            return
        count = x.size // batch.c
        old_mean, old_var = f64(s["running_mean"]), f64(s["running_var"])
        unbiased = var * count / max(count - 1, 1)
        assert_close(b.named["running_mean"], (1 - momentum) * old_mean + momentum * mean,
                     (1 - momentum) * abs(old_mean) + momentum * abs(x).mean(axis=batch.axes),
                     b.dtype, "running_mean")
        assert_close(b.named["running_var"],
                     (1 - momentum) * old_var + momentum * unbiased if count > 1 else old_var,
                     (1 - momentum) * abs(old_var) + momentum * squares * count / max(count - 1, 1),
                     b.dtype, "running_var")
    return verify


def observe_running(result, b):
    """The result and the running statistics updated in place."""
    return list(result if isinstance(result, tuple) else (result,)) + [
        b.named[n] for n in ("running_mean", "running_var") if b.named[n] is not None]


@pytest.mark.parametrize("mode", ["training", "inference"])
@fuzz(100)
@given(data=st.data())
def test_batch_norm(mode, data):
    """batch_norm in training (batch statistics; mean and invstd returned;
    running statistics updated in place) and inference (running ones),
    with and without weight, bias and the fused ReLU."""
    build, verify, _ = draw_batch_norm(data, mode)
    exercise(F.batch_norm, build, verify, observe_running)


BN_BACKWARD_ARRAYS = ("grad_y", "x", "relu_output", "weight", "mean", "invstd")


def draw_batch_norm_backward(data, prepared=False):
    """The example of test_batch_norm_backward: (build, verify, spec)."""
    batch = data.draw(batches(), label="geometry")
    arrays = BN_BACKWARD_ARRAYS
    faults = (array_faults(arrays)
              + [Fault(n, "float32") for n in ("mean", "invstd")]
              + [f for label in ("out[0]", "out[1]", "out[2]")
                 for f in out_faults(label, aliases=arrays)]
              + [Fault("out", k) for k in TUPLE_FAULTS])
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    forms = data.draw(st.fixed_dictionaries(dict(
        weight=st.booleans(), relu=st.booleans(), grad_input=st.booleans(),
        eps=EPSILONS, values=st.sampled_from(["normal", "ties", "offset"]))),
        label="forms")
    return (lambda: build_batch_norm_backward(batch, spec, forms),
            verify_batch_norm_backward, spec)


def build_batch_norm_backward(batch, spec, forms):
    b = Build(spec, batch)
    b.array("grad_y", batch.shape, special)
    b.array("x", batch.shape, NORM_VALUES[forms["values"]])
    b.named["relu_output"] = b.array("relu_output", batch.shape, special) \
        if forms["relu"] or b.faulty("relu_output") else None
    b.named["weight"] = b.array("weight", (batch.c,)) \
        if forms["weight"] or b.faulty("weight") else None
    eps = float(forms["eps"])
    for name, pick in (("mean", lambda m, v: m), ("invstd", lambda m, v: 1 / np.sqrt(v + eps))):
        dtype = np.float32 if b.faulty(name) and b.fault.what == "float32" else None
        b.array(name, (batch.c,), derived(
            b, "x", batch.shape,
            lambda a, pick=pick: pick(*ref_batch_statistics(a, batch.axes)[:2])),
            dtype=dtype, fixed=np.float64)
    # grad_x is computed unless grad_input=False; faults on it or the tuple need it
    grad_input = forms["grad_input"] or b.fault.target in ("out", "out[0]")
    shape, channels = batch.shape, (batch.c,)
    out = b.out_tuple([shape if grad_input else None, channels, channels],
                      ["float", "float", "float"], aliases=BN_BACKWARD_ARRAYS)
    kwargs = dict(out=out, grad_input=grad_input, relu_output=b.named["relu_output"])
    if spec.n_threads is not None or b.faulty("n_threads"):
        kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
    return b.finish(b.inputs("grad_y", "x", "weight", "mean", "invstd"), kwargs)


def verify_batch_norm_backward(result, b):
    """The gradients of batch_norm's docstring, from the given mean and
    invstd; grad_y only where relu_output is positive when given."""
    batch, s = b.geometry, b.snap
    c, axes = batch.per_channel, batch.axes
    assert isinstance(result, tuple) and len(result) == 3
    x, mean, invstd = f64(s["x"]), f64(s["mean"]), f64(s["invstd"])
    g, size_invstd = f64(s["grad_y"]), abs(invstd)
    if b.named["relu_output"] is not None:
        g = np.where(f64(s["relu_output"]) > 0, g, 0.0)
    weight = channel_vector_or(b, "weight", np.ones(batch.c))
    count = x.size // batch.c
    with np.errstate(invalid="ignore"):
        x_hat = (x - c(mean)) * c(invstd)
        x_hat_size = (abs(x) + c(abs(mean))) * c(size_invstd)
        assert_close(result[2], g.sum(axis=axes), abs(g).sum(axis=axes), b.dtype,
                     "grad_bias")
        assert_close(result[1], (g * x_hat).sum(axis=axes),
                     (abs(g) * x_hat_size).sum(axis=axes), b.dtype, "grad_weight")
        if not b.kwargs["grad_input"]:
            assert result[0] is None, "grad_x computed with grad_input=False"
        else:
            grad_x = c(weight * invstd) * (g - c(g.sum(axis=axes) / count) - x_hat * c(
                (g * x_hat).sum(axis=axes) / count))
            scale = c(abs(weight) * size_invstd) * (abs(g) + c(abs(g).sum(axis=axes) / count)
                                               + x_hat_size * c((abs(g) * x_hat_size).sum(
                                                   axis=axes) / count))
            assert_close(result[0], grad_x, scale, b.dtype, "grad_x")
    out = b.named["out"]
    if out is not None:
        assert all(r is o for r, o in zip(result, out) if o is not None), \
            "the result is not the out= arrays"


@fuzz(100)
@given(data=st.data())
def test_batch_norm_backward(data):
    """batch_norm_backward: the gradients from the saved batch statistics,
    with and without weight, grad_x (grad_input) and the fused ReLU."""
    build, verify, _ = draw_batch_norm_backward(data)
    exercise(F.batch_norm_backward, build, verify)


# ==================================== local response normalization

LRN = dict(forward=F.local_response_norm, backward=F.local_response_norm_backward)
LRN_SIZES = st.sampled_from([1, 2, 3, 5, 7, 1000, np.int64(4), 2**31 - 1])
LRN_ALPHAS = st.sampled_from([0.0, 1e-4, 0.1, 1.0, 2, np.float32(0.5)])
LRN_BETAS = st.sampled_from([0.75, 0.0, -0.5, 1, 2.0])
LRN_KS = st.sampled_from([1.0, 2.0, 0.5, 1e-3, 1])
BAD_LRN = dict(size=(0, -1, *HUGE, -2**63, 1.5, 2.0, np.float64(3), True, "1", None, (3,),
                     np.uint64(2**64 - 1)),
               alpha=(-1e-4, np.inf, -np.inf) + BAD_REALS,
               beta=(np.inf, -np.inf) + BAD_REALS,
               k=(0, 0.0, -1.0, np.inf, -np.inf) + BAD_REALS)


def channel_window_sums(a, before, after):
    """Sum over channels c - before .. c + after of ``a`` (N, C, ...), the
    channels outside the input left out (zeros)."""
    channels = a.shape[1]
    total = np.zeros(a.shape)
    for shift in range(-min(before, channels - 1), min(after, channels - 1) + 1):
        lo, hi = max(0, -shift), min(channels, channels - shift)
        total[:, lo:hi] += a[:, lo + shift:hi + shift]
    return total


def ref_lrn(x, size, alpha, beta, k):
    """(y, scale, the magnitude of y's error) as PyTorch's
    local_response_norm: scale = k + alpha / size * the sum of x**2 over
    channels c - size // 2 .. c + (size - 1) // 2, y = x * scale**-beta."""
    with np.errstate(all="ignore"):
        scale = k + alpha / size * channel_window_sums(x * x, size // 2, (size - 1) // 2)
        y = x * scale ** -beta
    return y, scale, abs(y) * (1 + abs(beta))


def ref_lrn_backward(grad_y, x, y, scale, size, alpha, beta):
    """(grad_x, its error's magnitude) from the docstring: grad_y *
    scale**-beta - 2 alpha beta / size * x * S, S at channel j the sum of
    grad_y * y / scale over the channels c whose windows hold j, i.e.
    c = j - (size - 1) // 2 .. j + size // 2."""
    with np.errstate(all="ignore"):
        t = grad_y * y / scale
        factor = 2 * alpha * beta / size
        first = grad_y * scale ** -beta
        second = factor * x * channel_window_sums(t, (size - 1) // 2, size // 2)
        size_second = abs(factor * x) * channel_window_sums(abs(t), (size - 1) // 2,
                                                            size // 2)
        return first - second, abs(first) + size_second


def draw_local_response_norm(data, which, prepared=False):
    """The example of test_local_response_norm: (build, verify, spec)."""
    forward = which == "forward"
    batch = data.draw(batches((3, 4)), label="geometry")
    params = data.draw(st.fixed_dictionaries(dict(
        size=LRN_SIZES, alpha=LRN_ALPHAS, beta=LRN_BETAS, k=LRN_KS)), label="params")
    arrays = ("x",) if forward else ("grad_y", "x", "y", "scale")
    names = ("size", "alpha", "beta", "k") if forward else ("size", "alpha", "beta")
    faults = [f for n in names for f in param_faults(n, BAD_LRN[n])]
    if forward:
        faults += (array_faults(arrays, NO_MISMATCH)
                   + out_faults("out[0]", aliases=arrays) + out_faults("out[1]", aliases=arrays)
                   + [Fault("out", k) for k in TUPLE_FAULTS])
    else:
        faults += array_faults(arrays) + out_faults("out", aliases=arrays)
    spec = draw_spec(data, list(arrays), faults, prepared=prepared)
    fault = spec.fault or Fault(None, None)
    keep_scale = data.draw(st.booleans(), label="keep_scale") or \
        fault.target == "out[1]" or fault.what == "overlap"
    values = NORM_VALUES[data.draw(st.sampled_from(["normal", "special", "offset"]),
                                   label="values")]
    # as Python ints and floats (np.float32 scalars would round the references)
    size, alpha, beta, k = (int(params["size"]), *(float(params[n]) for n in (
        "alpha", "beta", "k")))

    def build():
        b = Build(spec, batch)
        x = b.array("x", batch.shape, values)
        if forward:
            shape = np.shape(x)
            b.fits(len(shape) in (3, 4) and 0 not in shape)
            out = b.out_tuple([shape, shape if keep_scale else None], ["float", "float"],
                              aliases=arrays)
            kwargs = dict(out=out, keep_scale=keep_scale, k=b.param("k", params["k"]))
        else:
            forward_pass = [derived(b, "x", batch.shape,
                                    lambda a, i=i: ref_lrn(a, size, alpha, beta, k)[i])
                            for i in (0, 1)]
            b.array("grad_y", batch.shape, special)
            b.array("y", batch.shape, forward_pass[0])
            b.array("scale", batch.shape, forward_pass[1])
            kwargs = dict(out=b.out(batch.shape, aliases=arrays))
        args = b.inputs(*arrays) + [b.param(n, params[n]) for n in ("size", "alpha", "beta")]
        if spec.n_threads is not None or b.faulty("n_threads"):
            kwargs["n_threads"] = b.param("n_threads", spec.n_threads)
        return b.finish(args, kwargs)

    def verify(result, b):
        s = b.snap
        if forward:
            assert isinstance(result, tuple) and len(result) == 2
            y, scale, y_size = ref_lrn(f64(s["x"]), size, alpha, beta, k)
            assert_close(result[0], y, y_size, b.dtype, "y")
            if keep_scale:
                assert_close(result[1], scale, scale, b.dtype, "scale")
            else:
                assert result[1] is None, "scale returned with keep_scale=False"
            out = b.named["out"]
            if out is not None:
                assert all(r is o for r, o in zip(result, out) if o is not None), \
                    "the result is not the out= arrays"
            return
        assert_close(result, *ref_lrn_backward(
            *(f64(s[n]) for n in arrays), size, alpha, beta), b.dtype, "grad_x")
        assert_is_out(result, b)

    return build, verify, spec


@pytest.mark.parametrize("which", ["forward", "backward"])
@fuzz(100)
@given(data=st.data())
def test_local_response_norm(which, data):
    """local_response_norm (y and scale, or y alone without keep_scale) and
    its backward pass from x, y and scale: signals and images, windows
    wider than the channels, negative beta."""
    build, verify, _ = draw_local_response_norm(data, which)
    exercise(LRN[which], build, verify)


# ========================================================= prepare

#: the functions prepare accepts, with how to draw and build and check a call
PREPARED = (
    [(CORR[d][w], "corr", (d, w)) for d in (1, 2)
     for w in ("forward", "backward_input", "backward_kernel")]
    + [(POOL[d][w], "pool", (d, w)) for d in (1, 2) for w in POOL[d]]
    + [(LINEAR[w], "linear", (w,)) for w in ("forward", "backward_input",
                                             "backward_weight")]
    + [(RELU[w], "relu", (w,)) for w in RELU]
    + [(DROPOUT[w][0], "dropout", (w,)) for w in DROPOUT]
    + [(ACTIVATIONS[n][i], "activation", (n, w)) for n, w in ACTIVATION_CASES
       for i in [0 if w == "forward" else 1]]
    + [(GLOBAL_POOL[d][w], "global_pooling", (d, w)) for d, w in GLOBAL_POOL_CASES]
    + [(L2_POOL[d][w], "l2_pool", (d, w)) for d, w in L2_POOL_CASES]
    + [(F.batch_norm, "batch_norm", (m,)) for m in ("training", "inference")]
    + [(F.batch_norm_backward, "batch_norm_backward", ())]
    + [(LRN[w], "local_response_norm", (w,)) for w in LRN])
#: the families whose draw function returns (build, verify, spec)
DRAWN = dict(dropout=draw_dropout, activation=draw_activation,
             global_pooling=draw_global_pooling, l2_pool=draw_l2_pool,
             batch_norm=draw_batch_norm, batch_norm_backward=draw_batch_norm_backward,
             local_response_norm=draw_local_response_norm)


def prepared_id(function, family, key):
    """The function's name, and batch_norm's mode (one function, two keys)."""
    return function.__name__ + ("-" + key[0] if family == "batch_norm" else "")


def draw_family(data, family, key):
    if family in DRAWN:
        return DRAWN[family](data, *key, prepared=True)
    if family == "corr":
        g, spec, forms = draw_correlation(data, *key, prepared=True)
        return (lambda: build_correlation(g, spec, forms, key[1])), \
            verify_correlation(key[1]), spec
    if family == "pool":
        g, spec, forms = draw_pooling(data, *key, prepared=True)
        return (lambda: build_pooling(g, spec, forms, key[1])), \
            verify_pooling(key[1]), spec
    if family == "linear":
        dims, spec, forms = draw_linear(data, *key, prepared=True)
        return (lambda: build_linear(dims, spec, forms, key[0])), \
            verify_linear(key[0]), spec
    shape, spec, forms = draw_relu(data, *key, prepared=True)
    return (lambda: build_relu(shape, spec, forms, key[0])), verify_relu(key[0]), spec


def arrays_of(value, name):
    """(name, array) of every array in an argument (tuples: each element)."""
    if isinstance(value, tuple):
        return [(name, v) for v in value if v is not None and not isinstance(
            v, (int, np.integer))]
    if isinstance(value, (np.ndarray, list)):
        return [(name, value)]
    return []


def prepare_contract(b):
    """prepare refuses (ValueError) every array it would have to copy:
    not a C-contiguous, aligned ndarray of float32/float64 (int32 for
    argmax). Shapes (x_shape, w_shape) and geometry are not arrays; a
    0-d array laid out as a list is a Python float."""
    for name, value in b.named.items():
        if name in ("x_shape", "w_shape", "stride", "padding", "dilation", "size"):
            continue
        scalar = [(name, value)] if name in b.floats and np.ndim(value) == 0 \
            and not isinstance(value, np.ndarray) else []
        for label, a in arrays_of(value, name) + scalar:
            kinds = (np.dtype(np.int32),) if name == "argmax" or (
                name == "out" and isinstance(a, np.ndarray)
                and a.dtype.kind in "iu") else FLOATS
            if not (isinstance(a, np.ndarray) and a.flags.c_contiguous
                    and a.flags.aligned and a.dtype in kinds):
                b.contract.refuse(label, ValueError if isinstance(a, np.ndarray)
                                  and a.dtype in FLOATS + (np.dtype(np.int32),)
                                  else ANY)


def reshaped(shape, choice):
    """A different shape of the same size, ``choice`` picking which."""
    size = math.prod(shape)
    candidates = [s for s in (shape[::-1], (1,) + shape, (size,),
                              (size, 1) if shape else (1, 1), shape[1:] + shape[:1])
                  if tuple(s) != tuple(shape) and math.prod(s) == size]
    return candidates[choice % len(candidates)] if candidates else None


@pytest.mark.parametrize("function, family, key", PREPARED,
                         ids=[prepared_id(*case) for case in PREPARED])
@fuzz(20)
@given(data=st.data())
def test_prepare(function, family, key, data):
    """prepare(f, ...).run(n): f's result on the arrays as they are at each
    run, the same bits on 1 and 3 threads; arrays prepare would have to copy
    refused; a run after an array was reshaped in place refused."""
    build, verify, spec = draw_family(data, family, key)
    choice = data.draw(st.integers(0, 20), label="reshape")
    run_threads = data.draw(st.sampled_from([1, 2, 3]), label="run(n_threads)")
    b = build()
    kwargs = dict(b.kwargs)
    n_threads = kwargs.pop("n_threads", None)
    if b.faulty("n_threads"):          # prepare takes no n_threads
        kwargs["n_threads"] = n_threads
    elif n_threads is not None:
        b.contract.must.pop("n_threads", None)
        b.contract.may.pop("n_threads", None)
    if not b.faulty("n_threads"):
        prepare_contract(b)
    else:
        b.contract.refuse("n_threads", TypeError)
    call = attempt(lambda: F.prepare(function, *b.args, **kwargs), b.contract)
    if call is REFUSED:
        return
    result = call.run(run_threads)
    verify(result, b)
    given = [a for _, a in arrays_of(b.named.get("out"), "out")]
    aliased = any(isinstance(o, np.ndarray) and isinstance(a, np.ndarray)
                  and np.shares_memory(o, a)
                  for o in given for n, a in b.named.items() if n != "out")
    if not aliased:    # else a run changes the next one's input
        first = bits(result)
        assert bits(call.run(1)) == first and bits(call.run(3)) == first, \
            "a prepared call gives other bits on 1 or 3 threads"
    # new values in the input arrays: the next run computes on them
    rng = np.random.default_rng(spec.seed + 1)
    outs = {id(a) for _, a in arrays_of(b.named.get("out"), "out")}
    for name, a in b.named.items():
        if isinstance(a, np.ndarray) and a.flags.writeable and id(a) not in outs \
                and a.dtype in FLOATS and name != "out":
            a[...] = rng.standard_normal(a.shape)
    b.snap.update({n: np.array(a) for n, a in b.named.items() if isinstance(a, np.ndarray)})
    verify(call.run(run_threads), b)
    # an array reshaped in place (legal NumPy): the next run is refused
    candidates = [(n, a) for name, v in b.named.items() for n, a in arrays_of(v, name)
                  if isinstance(a, np.ndarray) and a.size
                  and n not in ("x_shape", "w_shape", "stride", "padding", "dilation",
                               "size")]
    names = {"out", "y", "argmax", "grad_x", "grad_w", "grad_b"}
    candidates += [(names, a) for a in (result if isinstance(result, tuple) else (result,))
                   if a is not None and not any(a is c for _, c in candidates)]
    name, a = candidates[choice % len(candidates)]
    shape = reshaped(a.shape, choice)
    if shape is None:
        return
    try:
        a.shape = shape
    except AttributeError:          # not contiguous: cannot be reshaped in place
        return
    with pytest.raises(ValueError):
        call.run(run_threads)


@pytest.mark.parametrize("function", [
    F.softmax, F.log_softmax, F.softmax_cross_entropy, F.squared_error, F.sgd_update,
    F.adam_update,
    F.take_samples, F.output_size, F.correlate2d_backward, F.correlate1d_backward,
    F.linear_backward])
def test_prepare_refuses_other_functions(function):
    x = np.ones((2, 3), np.float32)
    contract = Contract()
    contract.refuse("function", ValueError)
    attempt(lambda: F.prepare(function, x, x), contract)


# ====================================================== every fault

class ForcedFault:
    """Hypothesis' ``data``, but the "fault" drawn is the index-th of the
    test's list of faults (None: no fault), and every array C-contiguous
    (layouts are the random tests' business)."""

    def __init__(self, data, index):
        self.data, self.index, self.count = data, index, None

    def draw(self, strategy, label=None):
        if label == "layouts":
            return {name: "C" for name in self.data.draw(strategy, label=label)}
        if label == "index_layout":
            return "C"
        if label != "fault":
            return self.data.draw(strategy, label=label)
        self.count = len(strategy.faults)
        fault = None if self.index is None else strategy.faults[self.index]
        note(f"fault: {fault!r}")
        return fault


SWEPT = ([(test_correlation, dict(ndim=n, which=w)) for n, w in CORR_CASES]
         + [(test_pooling, dict(ndim=n, which=w)) for n, w in POOL_CASES]
         + [(test_linear, dict(which=w)) for w in LINEAR]
         + [(test_relu, dict(which=w)) for w in RELU]
         + [(test_softmax, dict(function=f)) for f in (F.softmax, F.log_softmax)]
         + [(test_softmax_cross_entropy, {}), (test_squared_error, {}), (test_sgd_update, {}),
            (test_adam_update, {}), (test_take_samples, {}), (test_output_size, {})]
         + [(test_dropout, dict(which=w)) for w in DROPOUT]
         + [(test_activation, dict(name=n, which=w)) for n, w in ACTIVATION_CASES]
         + [(test_global_pooling, dict(ndim=n, which=w)) for n, w in GLOBAL_POOL_CASES]
         + [(test_l2_pool, dict(ndim=n, which=w)) for n, w in L2_POOL_CASES]
         + [(test_batch_norm, dict(mode=m)) for m in ("training", "inference")]
         + [(test_batch_norm_backward, {})]
         + [(test_local_response_norm, dict(which=w)) for w in ("forward", "backward")]
         # prepare's 1-D calls go through the same code as the 2-D ones
         + [(test_prepare, dict(function=f, family=fam, key=key))
            for f, fam, key in PREPARED if "1d" not in f.__name__])


def swept_id(case):
    test, params = case
    if "key" in params:
        return f"prepare-{prepared_id(params['function'], params['family'], params['key'])}"
    names = [getattr(v, "__name__", str(v)) for v in params.values()]
    return test.__name__[5:] + ("-" + "-".join(names) if names else "")


@pytest.mark.parametrize("case", SWEPT, ids=[swept_id(c) for c in SWEPT])
def test_every_fault(case):
    """Each fault of each test above, forced in turn (hypothesis, drawing
    freely, tries only some of a long list): a few examples each. Reports
    every fault that breaks the contract, not only the first."""
    test, params = case
    inner = test.hypothesis.inner_test

    def run(index, examples):
        forced = []

        @settings(max_examples=examples, **{**FUZZ, "phases": [Phase.generate]})
        @given(data=st.data())
        def with_fault(data):
            forced.append(ForcedFault(data, index))
            inner(data=forced[-1], **params)
        with_fault()
        return forced[-1].count

    count = run(None, 1)
    failures = []
    for index in range(count):
        try:
            run(index, 1)
        except Exception as exc:
            lines = [f"{type(exc).__name__}: {exc}"] + getattr(exc, "__notes__", [])
            failures.append("\n    ".join(line for text in lines
                                           for line in str(text).splitlines()))
    assert not failures, (f"{len(failures)} of {count} faults break the contract:\n"
                          + "\n".join(failures))
