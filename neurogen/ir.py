"""The kernel IR: what one neuron does in a kernel, as typed statements free of any
language, and the kernel's argument list (:mod:`neurogen.abi`).

Expressions are sympy; array positions are named (``NEURON``: the neuron's own element,
``STEP``: step t's, ``PREV``: step t-1's, ``LAST``: step T-1's, ``ZERO``: element 0).
A kernel runs, per neuron: ``per_neuron`` (constants), ``before`` (carried variables'
first values), the time loop over ``step`` (forward: t = 0 .. T-1; backward: ``step``
for t = T-1 .. 1, then ``first`` for t = 0), then ``after``. ``uniform`` is computed once
per call. :func:`dump` prints a kernel for tests and readers; each target renders the
same statements with its own printer and template.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

import sympy as sp

from .abi import Arg

NEURON, STEP, PREV, LAST, ZERO = "neuron", "step", "prev", "last", "zero"


@dataclass(frozen=True)
class Load:
    """``name = array[at]`` (converted to the compute type). ``mode``: ``const`` (a new
    constant), ``var`` (a new carried variable) or ``set`` (into an existing one)."""
    name: str
    array: str
    at: str
    mode: str = "const"


@dataclass(frozen=True)
class Let:
    """``name = expr``: a new constant (``var=True``: a new carried variable)."""
    name: str
    expr: sp.Expr
    var: bool = False


@dataclass(frozen=True)
class Set:
    """``name = expr`` (``accumulate``: ``name += expr``) on a carried variable."""
    name: str
    expr: sp.Expr
    accumulate: bool = False


@dataclass(frozen=True)
class Store:
    """``array[at] = expr`` (converted to the array's type)."""
    array: str
    at: str
    expr: sp.Expr


Statement = Union[Load, Let, Set, Store]


@dataclass
class KernelIR:
    """One kernel: its identity, argument list and statement sections."""
    name: str
    kind: str                  # "forward" or "backward"
    model: str
    spec_hash: str
    config_hash: str
    dtype: str                 # the tensors' dtype name
    compute: str               # "float" or "double"
    args: Tuple[Arg, ...]
    uniform: List[Statement] = field(default_factory=list)
    per_neuron: List[Statement] = field(default_factory=list)
    before: List[Statement] = field(default_factory=list)
    step: List[Statement] = field(default_factory=list)
    first: Optional[List[Statement]] = None
    after: List[Statement] = field(default_factory=list)
    carried: List[str] = field(default_factory=list)    # variables living across steps
    constants: List[str] = field(default_factory=list)  # per-neuron constants read in the loop
    # a recurrent layer's kernel: the template computes ``ng_rec`` (the recurrent term) before
    # each step from the other neurons of the sequence (RecurrentLayer)
    recurrent: bool = False

    def sections(self):
        return [("uniform", self.uniform), ("per_neuron", self.per_neuron),
                ("before", self.before), ("step", self.step), ("first", self.first or []),
                ("after", self.after)]


def statement_text(st: Statement) -> str:
    if isinstance(st, Load):
        kw = {"const": "const", "var": "var", "set": "set"}[st.mode]
        return f"{kw} {st.name} = load {st.array}[{st.at}]"
    if isinstance(st, Let):
        return f"{'var' if st.var else 'const'} {st.name} = {st.expr}"
    if isinstance(st, Set):
        return f"set {st.name} {'+=' if st.accumulate else '='} {st.expr}"
    return f"store {st.array}[{st.at}] = {st.expr}"


def dump(ir: KernelIR) -> str:
    """Plain text of a kernel's IR (no compiler, no language)."""
    lines = [f"kernel {ir.name} ({ir.kind}, {ir.dtype}, compute {ir.compute})",
             "  args: " + ", ".join(f"{a.name}:{a.role}" for a in ir.args),
             "  carried: " + ", ".join(ir.carried), "  constants: " + ", ".join(ir.constants)]
    for title, stmts in ir.sections():
        if stmts:
            lines.append(f"  {title}:")
            lines += [f"    {statement_text(s)}" for s in stmts]
    return "\n".join(lines)


def reads(st: Statement) -> set:
    """Names a statement reads."""
    if isinstance(st, Load):
        return {st.array}
    names = {s.name for s in st.expr.free_symbols}
    return names | ({st.name} if isinstance(st, Set) and st.accumulate else set())


def writes(st: Statement) -> Optional[str]:
    return None if isinstance(st, Store) else st.name


__all__ = ["Load", "Let", "Set", "Store", "Statement", "KernelIR", "dump", "reads", "writes",
           "NEURON", "STEP", "PREV", "LAST", "ZERO"]
