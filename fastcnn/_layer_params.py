"""The parameters of the layers inside ``layers``, reachable by
``get_params(deep=True)`` and ``set_params``, and so by GridSearchCV.

A key is ``layers`` followed by a path of layer indices and field names:
``layers__0__filters`` is the ``filters`` of the first layer,
``layers__3__layers__0__filters`` that of the first layer inside the
Residual block at index 3 (``layers__3__shortcut__0__...`` its shortcut's),
and a path ending at an index, ``layers__1``, is the specification itself,
so that a search can swap whole layers. ``layers`` stays a plain list of
the frozen specifications: setting a field builds a new specification with
``dataclasses.replace`` (which validates it), and new lists and blocks on
the path to it, so no list or block the user holds is changed.
"""
import dataclasses

from .layers import LayerSpec

_PREFIX = "layers"
_SEPARATOR = "__"


def _is_spec_list(value):
    """A non-empty list or tuple of layer specifications."""
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(spec, LayerSpec) for spec in value))


def _spec_fields(spec):
    return ([field.name for field in dataclasses.fields(spec)]
            if dataclasses.is_dataclass(spec) else [])


def layer_params(specs, prefix=_PREFIX):
    """{key: value} of every specification of ``specs`` and of each of its
    fields, and recursively of the specifications in its fields (a
    Residual block's ``layers`` and ``shortcut``)."""
    params = {}
    for index, spec in enumerate(specs):
        key = f"{prefix}{_SEPARATOR}{index}"
        params[key] = spec
        for name in _spec_fields(spec):
            value = getattr(spec, name)
            params[f"{key}{_SEPARATOR}{name}"] = value
            if _is_spec_list(value):
                params.update(layer_params(value, f"{key}{_SEPARATOR}{name}"))
    return params


class _InvalidKey(ValueError):
    """A key that names no layer or field; its message says why."""


def _index(specs, token, where):
    if not (token.isdigit() and int(token) < len(specs)):
        raise _InvalidKey(
            f"{where} has {len(specs)} layers (indices 0 to {len(specs) - 1}), "
            f"so {token!r} is no layer index there")
    return int(token)


def _replaced(specs, path, value, where):
    """A new list of ``specs`` with the specification or field at ``path``
    (index, field, index, field, ...) set to ``value``; ``where`` names
    ``specs`` in messages."""
    index = _index(specs, path[0], where)
    spec, where = specs[index], f"{where}{_SEPARATOR}{index}"
    if len(path) == 1:
        if not isinstance(value, LayerSpec):
            raise ValueError(f"{where} must be a layer specification from "
                             f"fastcnn.layers (Conv2D, Dense, ...), got {value!r}")
        new = value
    else:
        name = path[1]
        if name not in _spec_fields(spec):
            fields = ", ".join(_spec_fields(spec)) or "none"
            raise _InvalidKey(f"{where} is {spec!r}, which has no field {name!r} "
                              f"(its fields: {fields})")
        if len(path) > 2:
            inner = getattr(spec, name)
            if not _is_spec_list(inner):
                raise _InvalidKey(f"{where}{_SEPARATOR}{name} is {inner!r}, not a "
                                  "list of layers to index into")
            value = _replaced(inner, path[2:], value, f"{where}{_SEPARATOR}{name}")
        try:
            new = dataclasses.replace(spec, **{name: value})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}{_SEPARATOR}{name}: {error}") from None
    specs = list(specs)
    specs[index] = new
    return specs


class LayerParamsMixin:
    """get_params(deep=True) and set_params over the fields of the
    specifications in ``layers`` (keys as the module docstring says)."""

    def get_params(self, deep=True):
        """Get parameters for this estimator.

        Parameters
        ----------
        deep : bool, default=True
            Also return the specifications in ``layers`` and their fields,
            as ``layers__<index>`` and ``layers__<index>__<field>``
            (recursively into Residual blocks:
            ``layers__<index>__layers__<index>__<field>``).

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        params = super().get_params(deep=deep)
        layers = getattr(self, _PREFIX, None)
        if deep and _is_spec_list(layers):
            params.update(layer_params(layers))
        return params

    def set_params(self, **params):
        """Set the parameters of this estimator.

        ``layers__<index>__<field>`` keys (and the nested ones
        :meth:`get_params` lists) replace a specification in ``layers``
        by a copy with that field changed, in a new list: the list given
        as ``layers`` is not changed. ``layers`` itself, when also given,
        is set first.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self : estimator instance
        """
        prefix = _PREFIX + _SEPARATOR
        nested = {key: value for key, value in params.items()
                  if key.startswith(prefix)}
        super().set_params(**{key: value for key, value in params.items()
                              if key not in nested})
        if nested:
            layers = getattr(self, _PREFIX)
            for key, value in nested.items():
                layers = self._set_layer_param(layers, key, value)
            setattr(self, _PREFIX, layers)
        return self

    def _get_params_html(self, deep=True, doc_link=""):
        """The parameter table of scikit-learn's HTML representation: the
        estimator's own parameters (``layers`` a row of its own), not a
        row per layer field, which scikit-learn would all mark as changed
        from their defaults (no constructor argument has their names)."""
        return super()._get_params_html(deep=False, doc_link=doc_link)

    def _set_layer_param(self, layers, key, value):
        """``layers`` (a list of specifications) with ``key`` set to value."""
        invalid = f"Invalid parameter {key!r} for estimator {type(self).__name__}: "
        if not _is_spec_list(layers):
            raise ValueError(
                f"{invalid}layers is {layers!r}; give layers a list of "
                "fastcnn.layers specifications (in the same set_params call or "
                "before) to set the fields of its layers")
        try:
            return _replaced(layers, key.split(_SEPARATOR)[1:], value, _PREFIX)
        except _InvalidKey as error:
            raise ValueError(invalid + str(error)) from None
