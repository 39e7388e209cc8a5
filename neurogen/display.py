"""Readable text and LaTeX of a model: its step equations and derived backward."""
import sympy as sp

from .derive import Step


def model_text(model) -> str:
    """Plain-text description: states, parameters and the four equation groups."""
    lines = [f"NeuronModel {model.name!r} (input {model.input_name}, fires on "
             f"{model.v_name})"]
    lines.append("  states: " + ", ".join(f"{s} (initial {model.initial[s]})"
                                          for s in model.state_names))
    lines.append("  params: " + (", ".join(f"{k}={v!r}" for k, v in model.defaults.items())
                                 or "none"))
    for group in ("charge", "adaptation"):
        for s, e in getattr(model, group).items():
            lines.append(f"  {group:<10} {s} <- {e}")
    lines.append(f"  {'fire':<10} spike = Heaviside({model.fire})")
    for s, e in model.reset.items():
        lines.append(f"  {'reset':<10} {s} <- {e}")
    return "\n".join(lines)


def model_latex(model) -> str:
    """The step equations as a LaTeX ``aligned`` block (for Jupyter)."""
    rows = []
    for group in ("charge", "adaptation"):
        for s, e in getattr(model, group).items():
            rows.append(rf"\text{{{group}}}:\ & {sp.latex(sp.Symbol(s))} \leftarrow {sp.latex(e)}")
    rows.append(rf"\text{{fire}}:\ & s = \Theta\left({sp.latex(model.fire)}\right)")
    for s, e in model.reset.items():
        rows.append(rf"\text{{reset}}:\ & {sp.latex(sp.Symbol(s))} \leftarrow {sp.latex(e)}")
    return r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"


def backward_text(model, surrogate, detach_reset=False, learnable=()) -> str:
    """The derived backward of one step, stage by stage (reverse mode)."""
    from .codegen import derivation
    step, bw = derivation(model, surrogate, detach_reset, tuple(learnable))
    lines = [f"surrogate {surrogate.key()}: g'(u) = {surrogate.derivative_expr()}"]
    lines += [f"  {sym} = {expr}" for sym, expr in bw.stages]
    return "\n".join(lines)


__all__ = ["model_text", "model_latex", "backward_text", "Step"]
