"""Surrogate gradients, declared symbolically.

The forward of every surrogate is ``Heaviside(u)`` (``u >= 0``). The backward
uses ``derivative(u)``: a sympy expression, written in a numerically stable
form, that sympy-derived kernels print for every backend. Where a smooth
primitive exists it is given too, and tests check that its derivative equals
``derivative``.

>>> Sigmoid(alpha=4.0).derivative_expr()
4.0*sigmoid(4.0*u)*(1 - sigmoid(4.0*u))
"""
import copy

import sympy as sp

from .errors import SpecError
from .spec.functions import sigmoid, sigmoid_grad
from .spec.parse import parse_expr

u = sp.Symbol("u")
"""The argument of a surrogate (the fire expression's value)."""


class Surrogate:
    """Base class. Subclasses define :meth:`derivative` (and :meth:`primitive` if any)."""

    defaults: dict = {}

    def __init__(self, spiking: bool = True, **params):
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} takes {sorted(self.defaults)}, "
                            f"not {sorted(unknown)}")
        values = {k: float(params.get(k, v)) for k, v in self.defaults.items()}
        if not spiking:
            raise ValueError(f"{type(self).__name__}(spiking=False) is not supported: neurogen "
                             "neurons always fire Heaviside spikes")
        self.spiking = True
        for k, v in values.items():
            setattr(self, k, v)

    @property
    def params(self):
        """The hyper-parameters' current values, read from the attributes: ``sg.alpha =
        2.0`` changes what the kernels and the torch reference use alike."""
        return {k: getattr(self, k) for k in self.defaults}

    def primitive(self, u):
        return None

    def derivative(self, u):
        return sp.diff(self.primitive(u), u)

    def primitive_expr(self):
        return self.primitive(u)

    def derivative_expr(self):
        """The surrogate derivative ``g'(u)`` as a sympy expression in :data:`u`."""
        return self.derivative(u)

    def kernel_form(self, u):
        """The expression the kernels evaluate for ``g'(u)``: :meth:`derivative` unless a
        subclass has a form that computes the same function better."""
        return self.derivative(u)

    def kernel_derivative(self):
        """:meth:`kernel_form` with each hyper-parameter as a symbol ``sg_<name>`` (a kernel
        argument, so changing ``alpha`` needs no new kernel)."""
        proxy = copy.copy(self)
        for k in self.params:
            setattr(proxy, k, sp.Symbol(f"sg_{k}"))
        return proxy.kernel_form(u)

    def kernel_values(self):
        """The values of the ``sg_<name>`` kernel arguments."""
        return {f"sg_{k}": float(v) for k, v in self.params.items()}

    def structure(self) -> str:
        """What the kernel code depends on: the class (and, for Custom, the expression)."""
        return type(self).__name__

    def key(self) -> str:
        """Deterministic text identifying the surrogate and its values."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __repr__(self):
        return self.key()

    def __eq__(self, other):
        return isinstance(other, Surrogate) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __call__(self, x):
        """Apply to a tensor: Heaviside forward, surrogate gradient backward."""
        from .reference import spike_fn
        return spike_fn(x, self)


class Sigmoid(Surrogate):
    """``g(u) = sigmoid(alpha u)``; ``g' = alpha s (1 - s)``."""
    defaults = {"alpha": 4.0}

    def primitive(self, u):
        return sigmoid(self.alpha * u)

    def derivative(self, u):
        s = sigmoid(self.alpha * u)
        return self.alpha * s * (1 - s)

    def kernel_form(self, u):
        """``alpha sigmoid'(alpha u)`` as one function: kernels compute it from a single
        ``exp(-|alpha u|)`` (no overflow, no ``1 - s`` cancellation), about half the
        arithmetic of ``s (1 - s)`` in the C++ kernels (PERF_NOTES.md 16)."""
        return self.alpha * sigmoid_grad(self.alpha * u)


class ATan(Surrogate):
    """``g(u) = atan(pi alpha u / 2) / pi + 1/2``."""
    defaults = {"alpha": 2.0}

    def primitive(self, u):
        return sp.atan(sp.pi / 2 * self.alpha * u) / sp.pi + sp.Rational(1, 2)

    def derivative(self, u):
        return self.alpha / 2 / (1 + (sp.pi / 2 * self.alpha * u) ** 2)


class PiecewiseQuadratic(Surrogate):
    """``g'(u) = max(0, alpha - alpha^2 |u|)``."""
    defaults = {"alpha": 1.0}

    def derivative(self, u):
        return sp.Max(0, self.alpha - self.alpha ** 2 * sp.Abs(u))


class PiecewiseExp(Surrogate):
    """``g'(u) = alpha/2 exp(-alpha |u|)``."""
    defaults = {"alpha": 1.0}

    def derivative(self, u):
        return self.alpha / 2 * sp.exp(-self.alpha * sp.Abs(u))


class SoftSign(Surrogate):
    """``g(u) = (alpha u / (1 + |alpha u|) + 1) / 2``."""
    defaults = {"alpha": 2.0}

    def derivative(self, u):
        return 1 / (2 * self.alpha * (1 / self.alpha + sp.Abs(u)) ** 2)


class SuperSpike(Surrogate):
    """``g'(u) = alpha / (|u| + 1)^2`` (as SpikingJelly 2.0 defines it)."""
    defaults = {"alpha": 1.0}

    def derivative(self, u):
        return self.alpha / (sp.Abs(u) + 1) ** 2


class Erf(Surrogate):
    """``g(u) = erfc(-alpha u) / 2``; ``g' = alpha/sqrt(pi) exp(-alpha^2 u^2)``."""
    defaults = {"alpha": 2.0}

    def derivative(self, u):
        return self.alpha / sp.sqrt(sp.pi) * sp.exp(-(self.alpha * u) ** 2)


class PiecewiseLeakyReLU(Surrogate):
    """``g'(u) = 1/(2w)`` if ``|u| < w`` else ``c``."""
    defaults = {"w": 1.0, "c": 0.01}

    def derivative(self, u):
        return sp.Piecewise((1 / (2 * self.w), sp.Abs(u) < self.w), (self.c, True))


class Rect(Surrogate):
    """``g'(u) = alpha`` if ``|u| < 0.5/alpha`` else 0."""
    defaults = {"alpha": 1.0}

    def derivative(self, u):
        return sp.Piecewise((self.alpha, sp.Abs(u) < 0.5 / self.alpha), (0, True))


class Custom(Surrogate):
    """A user's surrogate from a sympy expression (or safe string) in ``u``.

    Give ``derivative=`` (used as is) or ``primitive=`` (differentiated by sympy). Other
    names in the expression are hyper-parameters, given as keywords with their values:
    like a library surrogate's ``alpha`` they are kernel arguments, so changing a value
    compiles nothing new.

    >>> Custom(derivative="1 / (1 + u**2)", name="cauchy").derivative_expr()
    1/(u**2 + 1)
    >>> Custom(derivative="1 / (alpha * abs(u) + 1)**2", alpha=25.0).derivative_expr()
    (25.0*abs(u) + 1)**(-2)
    """

    def __init__(self, derivative=None, primitive=None, name: str = "custom", **hyper):
        if (derivative is None) == (primitive is None):
            raise SpecError("Custom surrogate: give exactly one of derivative= or primitive=")
        from .spec.parse import _CONSTANTS
        from .spec.functions import FUNCTIONS
        for k, v in hyper.items():
            if (not k.isidentifier() or k == "u" or k.startswith(("ng_", "_"))
                    or hasattr(Custom, k) or k in ("spiking", "params", "name")
                    or k in _CONSTANTS or k in FUNCTIONS):
                raise SpecError(f"Custom surrogate: {k!r} cannot name a hyper-parameter (it is "
                                "'u', a constant, a function or a member of the surrogate); "
                                "rename it, e.g. alpha")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"Custom surrogate: hyper-parameter {k!r} needs a number, got "
                                f"{v!r}")
        self.defaults = {k: float(hyper[k]) for k in sorted(hyper)}  # (order: no matter)
        super().__init__(**hyper)
        self.name = name
        self._prim = self._read(primitive, "primitive") if primitive is not None else None
        self._deriv = (self._read(derivative, "derivative") if derivative is not None
                       else sp.diff(self._prim, u))

    def _read(self, expr, what):
        if isinstance(expr, str):
            expr = parse_expr(expr, f"Custom surrogate {what}")
        expr = sp.sympify(expr)
        expr = expr.xreplace({s: sp.Symbol(s.name) for s in expr.free_symbols})
        from .spec.functions import canonical
        expr = canonical(expr)
        extra = {s.name for s in expr.free_symbols} - {"u"} - set(self.defaults)
        if extra:
            raise SpecError(f"Custom surrogate {what} {expr} uses {sorted(extra)}: besides "
                            "'u' it may use only hyper-parameters given as keywords, e.g. "
                            f"Custom({what}=..., {sorted(extra)[0]}=1.0)")
        return expr

    def _values(self, u_):
        """The substitution of ``u`` and of each hyper-parameter's current value (a symbol
        ``sg_<name>`` in :meth:`kernel_derivative`)."""
        return {u: u_, **{sp.Symbol(k): getattr(self, k) for k in self.params}}

    def primitive(self, u_):
        return None if self._prim is None else self._prim.xreplace(self._values(u_))

    def derivative(self, u_):
        return self._deriv.xreplace(self._values(u_))

    def structure(self):
        names = ",".join(self.params)
        return f"Custom({self.name}, {sp.srepr(self._deriv)}, [{names}])"

    def key(self):
        values = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return self.structure() + (f"({values})" if values else "")

    def __repr__(self):
        values = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Custom(derivative={str(self._deriv)!r}, name={self.name!r}{values})"

    def canonical(self):
        """A copy standing for the kernels' structure (values do not reach the code)."""
        out = copy.copy(self)
        for k in out.params:
            setattr(out, k, 1.0)
        return out


LIBRARY = [Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf,
           PiecewiseLeakyReLU, Rect]

__all__ = [c.__name__ for c in LIBRARY] + ["Surrogate", "Custom", "u"]
