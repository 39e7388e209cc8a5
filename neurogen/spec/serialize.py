"""Portable model files: a `NeuronModel` as a plain dict, JSON or TOML.

Every expression is written as text that :func:`parse_expr` reads back into
the identical sympy tree, so a loaded model has the same ``spec_hash`` and
generates byte-identical kernels. Loading only parses (never evaluates)
equation text.
"""
import json
import os

import sympy as sp
from sympy.printing.str import StrPrinter

from ..errors import SpecError
from .functions import FUNCTIONS
from .parse import parse_expr

FORMAT = "neurogen.model"
VERSION = 1
_GROUPS = ("charge", "adaptation", "reset")
_KEYS = {"format", "version", "name", "doc", "input", "states", "params", "fire", "output",
         "refractory", "refractory_hold", "fire_strict"} | set(_GROUPS)


# ---- expressions as text ------------------------------------------------------------
class _ReadablePrinter(StrPrinter):
    """sympy's ``str()``, with floats printed exactly (``repr`` of the double)."""

    def _print_Float(self, expr):
        return repr(float(expr))


def _atom(expr):
    text = _exact_text(expr)
    bare = (expr.is_Symbol or isinstance(expr, sp.Function)
            or ((expr.is_Integer or expr.is_Float) and expr >= 0))
    return text if bare else f"({text})"


def _exact_text(expr):
    """Text mirroring the tree, for expressions ``str()`` would re-associate."""
    if expr.is_Symbol:
        return expr.name
    if expr is sp.E or expr is sp.pi:
        return str(expr)
    if expr.is_Integer:
        return str(int(expr))
    if expr.is_Rational:
        return f"{expr.p}/{expr.q}"
    if expr.is_Float:
        return repr(float(expr))
    if expr.is_Add:
        return " + ".join(_atom(a) for a in expr.args)
    if expr.is_Mul:
        # The number last: ``-1 * (a + b)`` would distribute when re-read, ``(a + b) * -1`` not.
        args = sorted(expr.args, key=lambda a: a.is_Number)
        return " * ".join(_atom(a) for a in args)
    if expr.is_Pow:
        return f"{_atom(expr.base)}**{_atom(expr.exp)}"
    if isinstance(expr, sp.Piecewise):
        (value, cond), rest = expr.args[0], expr.args[1:]
        other = rest[0].expr if len(rest) == 1 and rest[0].cond == True else sp.Piecewise(*rest)  # noqa: E712
        return f"where({_exact_text(cond)}, {_exact_text(value)}, {_exact_text(other)})"
    if isinstance(expr, (sp.And, sp.Or)):
        word = " and " if isinstance(expr, sp.And) else " or "
        return word.join(f"({_exact_text(a)})" for a in expr.args)
    if expr.is_Relational:
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"{_atom(expr.lhs)} {op} {_atom(expr.rhs)}"
    if isinstance(expr, sp.Not):
        return f"not ({_exact_text(expr.args[0])})"
    name = type(expr).__name__
    if isinstance(expr, sp.Function) and FUNCTIONS.get(name) is type(expr):
        return f"{name}({', '.join(_exact_text(a) for a in expr.args)})"
    raise SpecError(f"cannot write {expr} ({type(expr).__name__}) as equation text")


def expr_text(expr, where="expression") -> str:
    """Text of ``expr`` that :func:`parse_expr` reads back into the identical tree.

    >>> expr_text(parse_expr("v + (x - v) / tau"))
    'v + (-v + x)/tau'
    """
    want = sp.srepr(expr)
    for text in (_ReadablePrinter().doprint(expr), None):
        text = _exact_text(expr) if text is None else text
        try:
            if sp.srepr(parse_expr(text, where)) == want:
                return text
        except SpecError:
            pass
    raise SpecError(f"{where}: {expr} cannot be written as text that reads back identically "
                    "(e.g. a sympy Float with other than double precision); use plain floats")


# ---- dict ----------------------------------------------------------------------------
def to_dict(model) -> dict:
    """A plain dict of strings and floats describing ``model`` (see :func:`from_dict`)."""
    if model.__dict__.get("_stages") is not None:
        raise SpecError(f"model {model.name!r} has a stage list of its own (with_stages); "
                        "model files hold the standard stages only")
    declared = model.declared  # (a refractory period is written as the option)
    d = {"format": FORMAT, "version": VERSION, "name": model.name, "doc": model.doc,
         "input": model.input_name,
         "states": {n: expr_text(e, f"initial value of state {n!r}")
                    for n, e in declared["states"].items()},
         "params": {n: model.defaults[n] for n in model.param_names}}
    for group in _GROUPS:
        d[group] = {n: expr_text(e, f"{group} equation of {n!r}")
                    for n, e in declared[group].items()}
    d["fire"] = expr_text(declared["fire"], "fire expression")
    if model.output is not None:
        d["output"] = expr_text(model.output, "output")
    if model.fire_strict:
        d["fire_strict"] = True
    if model.refractory is not None:
        d["refractory"] = model.refractory
        d["refractory_hold"] = list(model.refractory_hold)
    return d


def _text_map(d, key):
    value = d.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"model file: {key!r} must be a table {{name: value}}, "
                        f"got {type(value).__name__}")
    for n, v in value.items():
        if key == "params":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool))
        if not isinstance(n, str) or not ok:
            what = "a number" if key == "params" else "equation text"
            raise SpecError(f"model file: {key}.{n} must be {what}, got {type(v).__name__}")
    return dict(value)


def from_dict(d):
    """The `NeuronModel` described by ``d`` (as written by :func:`to_dict`)."""
    from .model import NeuronModel
    if not isinstance(d, dict):
        raise SpecError(f"model file: expected a table/object at the top, got {type(d).__name__}")
    if d.get("format", FORMAT) != FORMAT:
        raise SpecError(f"model file: format is {d.get('format')!r}, expected {FORMAT!r}")
    version = d.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version > VERSION:
        raise SpecError(f"model file: version {version!r} is not supported (this neurogen "
                        f"reads version {VERSION}); upgrade neurogen")
    unknown = sorted(set(d) - _KEYS)
    if unknown:
        raise SpecError(f"model file: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    for key in ("name", "fire"):
        if not isinstance(d.get(key), str):
            raise SpecError(f"model file: {key!r} must be a string, got {d.get(key)!r}")
    for key in ("doc", "input", "output"):
        if key in d and not isinstance(d[key], str):
            raise SpecError(f"model file: {key!r} must be a string, got {d[key]!r}")
    hold = d.get("refractory_hold")
    if hold is not None and not (isinstance(hold, list) and all(isinstance(h, str) for h in hold)):
        raise SpecError(f"model file: 'refractory_hold' must be a list of state names, got "
                        f"{hold!r}")
    return NeuronModel(name=d["name"], states=_text_map(d, "states"),
                       params=_text_map(d, "params"), charge=_text_map(d, "charge"),
                       adaptation=_text_map(d, "adaptation"), reset=_text_map(d, "reset"),
                       fire=d["fire"], input=d.get("input", "x"), doc=d.get("doc", ""),
                       output=d.get("output"), refractory=d.get("refractory"),
                       refractory_hold=hold, fire_strict=d.get("fire_strict", False))


# ---- JSON and TOML -------------------------------------------------------------------
def _read(source, is_text):
    if isinstance(source, os.PathLike) or (isinstance(source, str) and not is_text(source)):
        with open(source, encoding="utf-8") as f:
            return f.read()
    if isinstance(source, str):
        return source
    raise TypeError(f"expected a path or model text, got {type(source).__name__}")


def _write(text, path):
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return text


def to_json(model, path=None) -> str:
    """The model as JSON text; also written to ``path`` if given."""
    return _write(json.dumps(to_dict(model), indent=2) + "\n", path)


def from_json(source):
    """Load a model from a JSON file path or JSON text (text starts with ``{`` or ``[``)."""
    text = _read(source, lambda s: s.lstrip()[:1] in ("{", "[") or "\n" in s)
    return _parsed(text, json.loads, json.JSONDecodeError, "JSON")


def _parsed(text, loads, decode_error, fmt):
    """The model in ``text`` parsed with ``loads``; a syntax error becomes a SpecError."""
    try:
        d = loads(text)
    except decode_error as exc:
        raise SpecError(f"model file: invalid {fmt}: {exc}") from None
    return from_dict(d)


def _toml_str(s):
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v):
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(e) for e in v) + "]"
    return repr(float(v))  # repr is exact and valid TOML (e.g. 2.0, 1e-05)


def to_toml(model, path=None) -> str:
    """The model as TOML text; also written to ``path`` if given."""
    d = to_dict(model)
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, table in d.items():
        if isinstance(table, dict):
            lines += ["", f"[{k}]"] + [f"{n} = {_toml_value(v)}" for n, v in table.items()]
    return _write("\n".join(lines) + "\n", path)


def _tomllib():
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            raise SpecError("reading TOML model files needs Python 3.11+ (tomllib) or the "
                            "'tomli' package: pip install tomli; or use a .json file") from None
    return tomllib


def from_toml(source):
    """Load a model from a TOML file path or TOML text (text has a newline or ``=``)."""
    text = _read(source, lambda s: "\n" in s or "=" in s)
    toml = _tomllib()
    return _parsed(text, toml.loads, toml.TOMLDecodeError, "TOML")


def load(path):
    """Load a model file by extension: ``.json`` or ``.toml``."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext == ".json":
        return from_json(os.fspath(path))
    if ext == ".toml":
        return from_toml(os.fspath(path))
    raise SpecError(f"model file {path!r}: expected a .json or .toml file")
