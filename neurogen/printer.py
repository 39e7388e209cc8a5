"""C printer for kernel arithmetic: float kernels get float literals and float
math (``expf``, ``1.0F``), so nothing is silently promoted to double."""
import sympy as sp
from sympy.codegen.ast import float32, float64, real
from sympy.printing.c import C99CodePrinter

from .rewrite import ZeroTimes
from .spec.functions import sigmoid, sigmoid_grad


class KernelPrinter(C99CodePrinter):
    """Prints sympy expressions as C/CUDA arithmetic in one compute type."""

    def __init__(self, compute: str = "float"):
        if compute not in ("float", "double"):
            raise ValueError(f"compute type must be 'float' or 'double', not {compute!r}")
        self.compute = compute
        alias = float32 if compute == "float" else float64
        super().__init__({"type_aliases": {real: alias}, "strict": True})

    def literal(self, value) -> str:
        text = repr(float(value))
        if "e" not in text and "." not in text and "inf" not in text and "nan" not in text:
            text += ".0"
        return text + ("F" if self.compute == "float" else "")

    def _print_Integer(self, expr):
        return self.literal(int(expr))

    def _print_Zero(self, expr):
        return self.literal(0)

    def _print_One(self, expr):
        return self.literal(1)

    def _print_NegativeOne(self, expr):
        return self.literal(-1)

    def _print_Rational(self, expr):
        return f"({self.literal(expr.p)}/{self.literal(expr.q)})"

    def _print_Half(self, expr):
        return self.literal(0.5)

    def _print_Float(self, expr):
        return self.literal(float(expr))

    def _print_NumberSymbol(self, expr):
        return self.literal(float(expr.evalf(20)))

    _print_Pi = _print_NumberSymbol
    _print_Exp1 = _print_NumberSymbol

    def _print_Pow(self, expr):
        base, e = expr.args
        b = self.parenthesize(base, 1000) if not base.is_Atom else self._print(base)
        if e.is_Integer and 1 <= abs(int(e)) <= 4:
            prod = "*".join([b] * abs(int(e)))
            prod = f"({prod})" if abs(int(e)) > 1 else prod
            return prod if e > 0 else f"({self.literal(1)}/{prod})"
        if e == sp.Rational(1, 2):
            return f"{self._ns}sqrt{self._suffix()}({self._print(base)})"
        if e == -sp.Rational(1, 2):
            return f"({self.literal(1)}/{self._ns}sqrt{self._suffix()}({self._print(base)}))"
        return f"{self._ns}pow{self._suffix()}({self._print(base)}, {self._print(e)})"

    def _suffix(self):
        return "f" if self.compute == "float" else ""

    def _print_sigmoid(self, expr):
        return f"ng_sigmoid({self._print(expr.args[0])})"

    def _print_sigmoid_grad(self, expr):
        return f"ng_sigmoid_grad({self._print(expr.args[0])})"

    def _print_ZeroTimes(self, expr):
        return f"({self._print(expr.args[0])}*{self.literal(0)})"

    # branches and clamps (spec/functions.py): torch's values, as selects
    def _print_maximum(self, expr):
        return f"ng_maximum({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_minimum(self, expr):
        return f"ng_minimum({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_clamp(self, expr):
        u, lo, *hi = (self._print(a) for a in expr.args)
        low = f"ng_maximum({u}, {lo})"
        return f"ng_minimum({low}, {hi[0]})" if hi else low

    def _print_abs(self, expr):
        return f"{self._ns}fabs{self._suffix()}({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"ng_sign({self._print(expr.args[0])})"

    def _print_floor(self, expr):
        return f"{self._ns}floor{self._suffix()}({self._print(expr.args[0])})"

    def _print_heaviside(self, expr):
        x, h0 = (self._print(a) for a in expr.args)
        one, zero = self.literal(1), self.literal(0)
        return f"(({x} > {zero}) ? {one} : (({x} == {zero}) ? {h0} : {zero}))"

    def _print_sg_heaviside(self, expr):
        u = self._print(expr.args[0])
        return f"(({u} >= {self.literal(0)}) ? {self.literal(1)} : {self.literal(0)})"

    def _print_surrogate_at(self, expr):
        raise ValueError("surrogate_at left in an expression: the derivation replaces it")

    def _print_Max(self, expr):
        return self._minmax("ng_fmax", expr.args)

    def _print_Min(self, expr):
        return self._minmax("ng_fmin", expr.args)

    def _minmax(self, name, args):
        """``fmax``/``fmin`` semantics (a NaN argument gives the other one) through the
        prelude's ``ng_fmax``/``ng_fmin``: the C++ kernels define them with comparisons,
        which GCC vectorises, where a call of ``fmaxf`` kept the whole loop scalar (the
        PiecewiseQuadratic backward took 5x longer than the other surrogates')."""
        out = self._print(args[-1])
        for a in reversed(args[:-1]):
            out = f"{name}({self._print(a)}, {out})"
        return out

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond != True:  # noqa: E712 (sympy true)
            raise ValueError("Piecewise needs a final (expr, True) branch")
        out = self._print(expr.args[-1].expr)
        for branch_expr, cond in reversed(expr.args[:-1]):
            out = self._select(cond, self._print(branch_expr), out)
        return out

    def _select(self, cond, yes: str, no: str) -> str:
        """``cond ? yes : no`` with and/or/not as nested selects on comparisons: a select on
        a combination of masks (&&, ||, & or | of comparisons, one of them a spike) kept
        GCC 12 from vectorising the neuron loop; a chain of selects it handles."""
        if isinstance(cond, sp.And):
            rest = sp.And(*cond.args[1:]) if len(cond.args) > 2 else cond.args[1]
            return self._select(cond.args[0], self._select(rest, yes, no), no)
        if isinstance(cond, sp.Or):
            rest = sp.Or(*cond.args[1:]) if len(cond.args) > 2 else cond.args[1]
            return self._select(cond.args[0], yes, self._select(rest, yes, no))
        if isinstance(cond, sp.Not):
            return self._select(cond.args[0], no, yes)
        return f"(({self._print(cond)}) ? ({yes}) : ({no}))"

    # conditions printed on their own (outside a select): without short-circuit evaluation
    def _print_And(self, expr):
        return " & ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Not(self, expr):
        return f"!({self._print(expr.args[0])})"

    def _print_Relational(self, expr):
        return f"{self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)}"

    def _print_Symbol(self, expr):
        return expr.name


def print_expr(expr, compute: str = "float") -> str:
    """Print one expression in the given compute type (``float``/``double``)."""
    return KernelPrinter(compute).doprint(expr)


__all__ = ["KernelPrinter", "ZeroTimes", "print_expr", "sigmoid", "sigmoid_grad"]
