"""Differentiable functions that equations may use beyond sympy's built-ins."""
import sympy as sp


class sigmoid(sp.Function):
    """Logistic function ``1 / (1 + exp(-z))``, printed as ``ng_sigmoid``."""

    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))

    def _eval_is_real(self):
        return self.args[0].is_real


class sigmoid_grad(sp.Function):
    """``sigmoid'(z) = sigmoid(z) (1 - sigmoid(z))``, printed as ``ng_sigmoid_grad``.

    Kernels compute it as ``e / (1 + e)^2`` with ``e = exp(-|z|)``: one exponential that
    cannot overflow, and no ``1 - sigmoid(z)`` cancellation for large ``z``. The Sigmoid
    surrogate's kernels use it (:meth:`neurogen.surrogate.Sigmoid.kernel_derivative`)."""

    nargs = 1

    def fdiff(self, argindex=1):
        z = self.args[0]
        return sigmoid_grad(z) * (1 - 2 * sigmoid(z))

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return sp.exp(-z) / (1 + sp.exp(-z)) ** 2

    def _latex(self, printer):
        return r"\operatorname{sigmoid}'\left(%s\right)" % printer._print(self.args[0])

    def _eval_is_real(self):
        return self.args[0].is_real


# ---- branches and clamps: values as torch computes them, derivatives as torch's autograd
# (the almost-everywhere derivative; conditions carry no gradient; docs/semantics.md 5)
def _select(cond, value=1):
    return sp.Piecewise((value, cond), (0, True))


class _Extremum(sp.Function):
    """``maximum``/``minimum``: the gradient to the side that ``wins`` (``a > b`` for the
    maximum), half to each at a tie; numbers evaluate with ``numeric``."""

    nargs = 2
    wins = numeric = None

    def fdiff(self, argindex=1):
        a, b = self.args if argindex == 1 else self.args[::-1]
        return sp.Piecewise((1, self.wins(a, b)), (sp.Rational(1, 2), sp.Eq(a, b)), (0, True))

    @classmethod
    def eval(cls, a, b):
        if a.is_Number and b.is_Number:
            return cls.numeric(a, b)
        if sp.default_sort_key(b) < sp.default_sort_key(a):  # symmetric: one order
            return cls(b, a)


class maximum(_Extremum):
    """``torch.maximum(a, b)``: NaN if either is NaN; at a tie each side gets half the
    gradient."""

    wins, numeric = sp.Gt, sp.Max


class minimum(_Extremum):
    """``torch.minimum(a, b)``: NaN if either is NaN; at a tie each side gets half."""

    wins, numeric = sp.Lt, sp.Min


class clamp(sp.Function):
    """``torch.clamp(u, lo, hi)`` = ``min(max(u, lo), hi)``: the gradient passes to ``u``
    between the bounds, bounds included, to ``lo`` below it and to ``hi`` above it (and to
    ``hi`` alone when ``lo > hi``). ``clamp(u, lo)``: a lower bound alone
    (``torch.clamp(u, min=lo)``)."""

    nargs = (2, 3)

    def fdiff(self, argindex=1):
        if len(self.args) == 2:
            u, lo = self.args
            return _select(sp.Ge(u, lo)) if argindex == 1 else _select(sp.Lt(u, lo))
        u, lo, hi = self.args
        if argindex == 1:
            return _select(sp.And(sp.Ge(u, lo), sp.Le(u, hi)))
        if argindex == 2:
            return _select(sp.And(sp.Lt(u, lo), sp.Le(lo, hi)))
        return _select(sp.Or(sp.Gt(u, hi), sp.Gt(lo, hi)))


class abs_(sp.Function):
    """``torch.abs``: derivative ``sign(x)``, 0 at 0."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.Abs(x)

    def fdiff(self, argindex=1):
        return sign(self.args[0])


class sign(sp.Function):
    """``torch.sign``: -1, 0 or 1 (0 for NaN); derivative 0."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.sign(x)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class floor(sp.Function):
    """``torch.floor``; derivative 0."""

    nargs = 1

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.floor(x)

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class heaviside(sp.Function):
    """``heaviside(x, h0)``: 1 for ``x > 0``, ``h0`` at 0 (default 1/2, as sympy's
    Heaviside), 0 below (and for NaN, as ``torch.heaviside``); derivative 0."""

    nargs = (1, 2)

    @classmethod
    def eval(cls, x, h0=None):
        if h0 is None:
            return cls(x, sp.Rational(1, 2))
        if x.is_Number:
            return sp.Integer(1) if x > 0 else (h0 if x == 0 else sp.Integer(0))

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class sg_heaviside(sp.Function):
    """``u >= 0`` forward, the module's surrogate derivative ``sg'(u)`` backward: a second
    threshold, or a refractory mask with a surrogate gradient."""

    nargs = 1

    def fdiff(self, argindex=1):
        return surrogate_at(self.args[0])


class surrogate_at(sp.Function):
    """The module's surrogate derivative at its argument: what :class:`sg_heaviside`
    differentiates to; the derivation replaces it by the surrogate's expression."""

    nargs = 1


abs_.__name__ = "abs"  # printed (and parsed) as the string form writes it

# Functions an equation may call, by the name a string equation uses.
FUNCTIONS = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "tanh": sp.tanh,
    "sin": sp.sin,
    "cos": sp.cos,
    "atan": sp.atan,
    "sigmoid": sigmoid,
    "abs": abs_,
    "sign": sign,
    "floor": floor,
    "heaviside": heaviside,
    "sg_heaviside": sg_heaviside,
    "clamp": clamp,
    "max": maximum,
    "min": minimum,
    "maximum": maximum,
    "minimum": minimum,
}
# the arguments each takes (the rest take one)
ARITY = {"clamp": (2, 3), "max": (2,), "min": (2,), "maximum": (2,), "minimum": (2,),
         "heaviside": (1, 2)}

# sympy's own functions with a kink or a jump, as the torch-convention ones above
# (canonical(): a model holds only the latter)
def _nested(cls):
    def build(*args):
        out = args[0]
        for a in args[1:]:
            out = cls(out, a)
        return out
    return build


SYMPY_EQUIVALENTS = {sp.Max: _nested(maximum), sp.Min: _nested(minimum), sp.Abs: abs_,
                     sp.sign: sign, sp.floor: floor,
                     sp.Heaviside: lambda x, h0=sp.Rational(1, 2): heaviside(x, h0)}
# ... and those without a torch-convention form here: rejected, with a hint
UNSUPPORTED = (sp.ceiling, sp.frac, sp.Mod, sp.DiracDelta)
BRANCH_FUNCTIONS = (maximum, minimum, clamp, abs_, sign, floor, heaviside, sg_heaviside)


def canonical(expr):
    """``expr`` with sympy's Max, Min, Abs, sign, floor and Heaviside replaced by the
    functions above (whose derivatives follow torch), and sympy's if-then-else condition
    (``ITE``, which sympy makes of a comparison with a branch inside, e.g.
    ``where(v - where(c > 0, 1, 0) > 0, ...)``) written with and/or/not."""
    def convert(e):
        if not e.args:
            return e
        args = [convert(a) for a in e.args]
        if isinstance(e, sp.ITE):
            c, a, b = args
            return sp.Or(sp.And(c, a), sp.And(sp.Not(c), b), evaluate=False)
        func = SYMPY_EQUIVALENTS.get(type(e))
        if func is not None:
            return func(*args)
        return e.func(*args) if any(a is not b for a, b in zip(args, e.args)) else e
    return convert(expr)
