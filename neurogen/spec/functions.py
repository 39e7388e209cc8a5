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
