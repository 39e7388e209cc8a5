"""IR statements as C lines (shared by the C++ CPU, CUDA and emulated CUDA targets), the
Jinja2 environment of the templates, and the C form of an argument list.

The templates receive plain strings and lists; all arithmetic is printed here by
:class:`neurogen.printer.KernelPrinter` in the kernel's compute type.
"""
from dataclasses import dataclass
from typing import Dict, List

import jinja2

from ..abi import MAY_ALIAS, Arg
from ..ir import LAST, NEURON, PREV, STEP, ZERO, Let, Load, Set, Store
from ..printer import KernelPrinter

# C math functions the C++ kernels declare (sympy's C99 printer can emit each of them;
# float kernels call the ``f`` variants)
MATH_UNARY = ("fabs", "exp", "exp2", "expm1", "log", "log10", "log2", "log1p", "sqrt",
              "cbrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
              "asinh", "acosh", "atanh", "erf", "erfc", "tgamma", "lgamma", "floor", "ceil",
              "trunc", "round")
MATH_BINARY = ("pow", "atan2", "fmod", "hypot", "fmax", "fmin", "copysign", "fdim")

env = jinja2.Environment(
    loader=jinja2.PackageLoader("neurogen", "templates"),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True)
env.globals.update(math_unary=MATH_UNARY, math_binary=MATH_BINARY)

@dataclass(frozen=True)
class LaunchArg:
    """A target's own argument after (or before) the kernel's ABI: its name, its C
    declaration type and how a launcher packs its value (i64, i32, u32, ptr)."""
    name: str
    ctype: str
    kind: str


INDEX = {NEURON: "ng_i", STEP: "ng_ti", PREV: "ng_ti - ng_N",
         LAST: "(ng_int64)(ng_T - 1) * ng_N + ng_i", ZERO: "0"}


def signature(args: List[Arg]) -> List[str]:
    """C parameter declarations of ``args`` (ABI arguments and a target's own). Pointers
    are ``__restrict__`` except those a caller may point at the same array
    (:data:`neurogen.abi.MAY_ALIAS`: ``grad_x`` over a saved array)."""
    out = []
    for a in args:
        if isinstance(a, LaunchArg):
            out.append(f"{a.ctype} {a.name}")
        elif a.role in ("in", "out"):
            ctype = "io_t" if a.dtype == "io" else "compute_t"
            const = "const " if a.role == "in" else ""
            restrict = "" if a.group in MAY_ALIAS else " __restrict__"
            out.append(f"{const}{ctype}*{restrict} {a.name}")
        elif a.role == "scalar":
            out.append(f"const compute_t {a.name}")
        elif a.role == "int32":
            out.append(f"const int {a.name}")
        else:
            out.append(f"const ng_int64 {a.name}")
    return out


class CLines:
    """Prints IR statements as C lines for one kernel."""

    def __init__(self, ir, guard: str = None):
        self.printer = KernelPrinter(ir.compute)
        self.io: Dict[str, bool] = {a.name: a.dtype == "io" for a in ir.args}
        self.guard = guard  # a condition every store is made under (idle CUDA threads)

    def expr(self, e) -> str:
        return self.printer.doprint(e)

    def __call__(self, statements) -> List[str]:
        return [self.line(st) for st in statements]

    def line(self, st) -> str:
        if isinstance(st, Load):
            value = f"{st.array}[{INDEX[st.at]}]"
            if self.io[st.array]:
                value = f"ng_ld({value})"
            decl = {"const": "const compute_t ", "var": "compute_t ", "set": ""}[st.mode]
            return f"{decl}{st.name} = {value};"
        if isinstance(st, Let):
            return f"{'compute_t' if st.var else 'const compute_t'} {st.name} = {self.expr(st.expr)};"
        if isinstance(st, Set):
            return f"{st.name} {'+=' if st.accumulate else '='} {self.expr(st.expr)};"
        if isinstance(st, Store):
            value = self.expr(st.expr)
            if self.io[st.array]:
                value = f"ng_io({value})"
            line = f"{st.array}[{INDEX[st.at]}] = {value};"
            return line if self.guard is None else f"if ({self.guard}) {line}"
        raise TypeError(f"not an IR statement: {st!r}")


def header_context(ir, language: str, types) -> dict:
    """What the prelude and every template read: names, types and the header line."""
    io_t, compute_t, load, store = types[ir.dtype]
    return dict(model=ir.model, spec_hash=ir.spec_hash, config_hash=ir.config_hash,
                target=language, io_t=io_t, compute_t=compute_t, load_io=load,
                store_io=store, name=ir.name)


__all__ = ["env", "signature", "CLines", "LaunchArg", "header_context", "INDEX",
           "MATH_UNARY", "MATH_BINARY"]
