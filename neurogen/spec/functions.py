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
}

# Functions with a kink or a jump: their derivative is wrong or zero almost
# everywhere, so they are rejected in charge, adaptation and fire.
NON_DIFFERENTIABLE = (
    sp.Heaviside, sp.sign, sp.floor, sp.ceiling, sp.Abs, sp.Piecewise,
    sp.Min, sp.Max, sp.frac, sp.Mod, sp.DiracDelta,
)
