"""Parse equation strings into sympy without evaluating any Python.

The text is read by :func:`ast.parse` and only a small whitelist of nodes is
turned into sympy objects by hand: numbers, names, ``+ - * / **``, unary
minus and calls of the functions in :data:`FUNCTIONS`. Anything else
(attribute access, subscripts, lambdas, comprehensions, dunder names, ...)
is a :class:`SpecError`; nothing is ever executed.
"""
import ast

import sympy as sp

from ..errors import SpecError
from .functions import ARITY, FUNCTIONS

_BINOPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a ** b,
}
_CONSTANTS = {"pi": sp.pi, "E": sp.E}
_SIGNATURES = {"clamp": "(u, lo, hi) or clamp(u, lo)", "max": "(a, b)", "min": "(a, b)", "maximum": "(a, b)",
               "minimum": "(a, b)", "heaviside": "(x) or heaviside(x, value_at_0)"}
_COMPARE = {ast.Eq: sp.Eq, ast.NotEq: sp.Ne, ast.Lt: sp.Lt, ast.LtE: sp.Le, ast.Gt: sp.Gt,
            ast.GtE: sp.Ge}
MAX_LENGTH = 10_000
MAX_DEPTH = 200
MAX_POWER_BITS = 10_000


def parse_expr(text: str, where: str = "equation") -> sp.Expr:
    """Parse ``text`` (e.g. ``"v + (x - v) / tau"``) into a sympy expression.

    >>> parse_expr("v + (x - v) / tau")
    v + (-v + x)/tau
    """
    if not isinstance(text, str):
        raise SpecError(f"{where}: expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise SpecError(f"{where}: equation text longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (RecursionError, MemoryError):
        raise SpecError(f"{where}: equation {text[:80]!r}... is nested too deeply") from None
    except SyntaxError as exc:
        raise SpecError(f"{where}: cannot parse {text!r}: {exc.msg}. "
                        "Write arithmetic such as 'v + (x - v) / tau'.") from None
    try:
        return _Builder(text, where).build(tree.body)
    except RecursionError:
        raise SpecError(f"{where}: equation {text[:80]!r}... is nested too deeply") from None


class _Builder:
    def __init__(self, text, where):
        self.text = text
        self.where = where
        self.depth = 0

    def fail(self, what):
        raise SpecError(
            f"{self.where}: {what} is not allowed in equation {self.text!r}. "
            "Equations may use numbers, names of states and parameters, "
            "+ - * / **, where(condition, a, b) and the functions "
            + ", ".join(sorted(FUNCTIONS)) + ".")

    def build(self, node):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH} levels")
        try:
            return self._build(node)
        finally:
            self.depth -= 1

    def _build(self, node):
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self.fail(f"the constant {node.value!r}")
            return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.build(node.left), self.build(node.right)
            if (isinstance(node.op, ast.Pow) and left.is_Rational and right.is_Rational
                    and max(abs(left.p), left.q).bit_length() * abs(right.p) > MAX_POWER_BITS * right.q):
                self.fail("a power of numbers this large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = self.build(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, (ast.Compare, ast.BoolOp)) or (
                isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
            self.fail(f"the condition {ast.unparse(node)!r} used as a value (a condition chooses "
                      f"a branch: where({ast.unparse(node)}, value_if_true, value_if_false))")
        self.fail(f"the syntax {type(node).__name__}")

    def name(self, ident):
        if ident.startswith("_"):
            self.fail(f"the name {ident!r} (names may not start with '_')")
        if ident in _CONSTANTS:
            return _CONSTANTS[ident]
        if ident in FUNCTIONS:
            self.fail(f"the function {ident!r} used without a call")
        return sp.Symbol(ident)

    def call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id == "where":
            return self.branch(node)
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            func = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            self.fail(f"calling {func!r}")
        name = node.func.id
        arity = ARITY.get(name, (1,))
        if node.keywords or len(node.args) not in arity or any(
                isinstance(a, ast.Starred) for a in node.args):
            wanted = " or ".join(str(n) for n in arity)
            self.fail(f"calling {name!r} with other than {wanted} positional argument(s) "
                      f"({name}{_SIGNATURES.get(name, '(x)')})")
        args = [self.build(a) for a in node.args]
        return FUNCTIONS[name](*args)

    def branch(self, node):
        """``where(condition, a, b)``: ``a`` where the condition holds, else ``b``."""
        if node.keywords or len(node.args) != 3 or any(isinstance(a, ast.Starred) for a in node.args):
            self.fail("calling 'where' with other than (condition, value, value)")
        cond, a, b = node.args
        return sp.Piecewise((self.build(a), self.condition(cond)), (self.build(b), True))

    def condition(self, node):
        if isinstance(node, ast.BoolOp) and isinstance(node.op, (ast.And, ast.Or)):
            parts = [self.condition(v) for v in node.values]
            return sp.And(*parts) if isinstance(node.op, ast.And) else sp.Or(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return sp.Not(self.condition(node.operand))
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            return _COMPARE[type(node.ops[0])](self.build(node.left), self.build(node.comparators[0]))
        if isinstance(node, ast.Compare):
            self.fail("a chained comparison (write 'a < b and b < c')")
        self.fail(f"the condition {ast.unparse(node)!r} (a condition is one comparison "
                  "< <= > >= == !=, or such comparisons joined by and/or/not)")
