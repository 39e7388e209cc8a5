"""Readable text and LaTeX of a model: its step equations and derived backward."""
import re

import sympy as sp

from .spec.model import spike, spike_d
from .surrogate import Sigmoid


def model_text(model) -> str:
    """Plain-text description: states, parameters and the equations of each stage."""
    from .stages import FireStage
    lines = [f"NeuronModel {model.name!r} (input {model.input_name}, fires on "
             f"{model.v_name})"]
    lines.append("  states: " + ", ".join(f"{s} (initial {model.initial[s]})"
                                          for s in model.state_names))
    lines.append("  params: " + (", ".join(f"{k}={v!r}" for k, v in model.defaults.items())
                                 or "none"))
    if model.refractory is not None:
        lines.append(f"  refractory: {model.refractory} step(s) after a spike (counter state "
                     f"'refractory'); holds {', '.join(model.refractory_hold)}")
    for stage in model.stages:
        if isinstance(stage, FireStage):
            rel = ">" if getattr(model, "fire_strict", False) else ">="
            lines.append(f"  {stage.name:<10} spike = ({stage.fire(model)} {rel} 0)")
            if stage.output(model) is not None:
                lines.append(f"  {'output':<10} {stage.output(model)}")
        for s, e in stage.equations(model).items():
            lines.append(f"  {stage.name:<10} {s} <- {e}")
    return "\n".join(lines)


def _spike_names(model):
    """LaTeX for the two spike symbols: ``s`` and ``s_d`` unless the model uses ``s``."""
    taken = set(model.state_names) | set(model.param_names) | {model.input_name}
    s = r"\mathrm{spike}" if "s" in taken else "s"
    return {spike: s, spike_d: s + "_{d}"}


def model_latex(model) -> str:
    """The step equations as a LaTeX ``aligned`` block (for Jupyter)."""
    from .stages import FireStage
    names = _spike_names(model)
    rows = []
    for stage in model.stages:
        if isinstance(stage, FireStage):
            rows.append(rf"\text{{{stage.name}}}:\ & {names[spike]} = "
                        rf"\Theta\left({sp.latex(stage.fire(model))}\right)")
            if stage.output(model) is not None:
                rows.append(r"\text{output}:\ & "
                            + sp.latex(stage.output(model), symbol_names=names))
        for s, e in stage.equations(model).items():
            rows.append(rf"\text{{{stage.name}}}:\ & {sp.latex(sp.Symbol(s))} \leftarrow "
                        rf"{sp.latex(e, symbol_names=names)}")
    return r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"


# Kernel names of the backward (derive.py) -> LaTeX; \bar{q} is dL/dq. The names of the
# stages' values and gradients come from model.stages (_stage_names).
_BACKWARD_NAMES = [
    (re.compile(r"ng_gspike"), lambda m, n: r"\bar{%s}^{\mathrm{out}}" % n["spike"]),
    (re.compile(r"ng_gsp"), lambda m, n: r"\bar{%s}" % n["spike"]),
    (re.compile(r"ng_gu"), lambda m, n: r"\bar{%s}" % n["u"]),
    (re.compile(r"ng_sg"), lambda m, n: r"g'(%s)" % n["u"]),
    (re.compile(r"ng_gx"), lambda m, n: r"\bar{%s}" % n["x"]),
    (re.compile(r"ng_g_(\w+)"), lambda m, n: r"\bar{%s}^{\mathrm{R}}" % _tex(m[1])),
    (re.compile(r"ng_gP_(\w+)"), lambda m, n: r"\bar{%s}_{t-1}" % _tex(m[1])),
    (re.compile(r"ng_gp_(\w+)"), lambda m, n: r"\bar{%s}" % _tex(m[1])),
    (re.compile(r"ng_u"), lambda m, n: n["u"]),
    (re.compile(r"sg_(\w+)"), lambda m, n: r"%s_{\mathrm{sg}}" % _tex(m[1])),
]


def _stage_names(model):
    """LaTeX of each stage's values (``ng_h_v``: ``H_v``) and of the gradients of the values
    a stage reads (``ng_gB_v``: ``\bar{v}^{H}``, after the stage before it)."""
    from .stages import StateStage
    out, before = [], None
    for stage in model.stages:
        if stage.grad_tag is not None:
            mark = before.upper() if before else "0"
            out.append((re.compile(rf"ng_g{stage.grad_tag}_(\w+)"),
                        lambda m, n, mark=mark: r"\bar{%s}^{\mathrm{%s}}" % (_tex(m[1]), mark)))
        if isinstance(stage, StateStage) and stage.tag:
            tag = stage.tag.upper()
            out.append((re.compile(rf"ng_{stage.tag}_(\w+)"),
                        lambda m, n, tag=tag: r"%s_{%s}" % (tag, _tex(m[1]))))
            before = stage.tag
    return out


def _tex(name):
    return sp.latex(sp.Symbol(name))


def _backward_symbol_names(model, symbols):
    spikes = _spike_names(model)
    taken = set(model.state_names) | set(model.param_names)
    n = {"spike": spikes[spike], "x": _tex(model.input_name),
         "u": r"u_{\mathrm{fire}}" if "u" in taken else "u"}
    out = dict(spikes)
    patterns = _stage_names(model) + _BACKWARD_NAMES
    for sym in symbols:
        for pattern, tex in patterns:
            m = pattern.fullmatch(sym.name)
            if m:
                out[sym] = tex(m, n)
                break
    return out


def backward_latex(model, surrogate=None, detach_reset=False, learnable=()) -> str:
    r"""The derived backward of one step as a LaTeX ``aligned`` block, stage by stage.

    ``\bar{q}`` is the gradient of the loss w.r.t. ``q``; superscripts R, A, H mark a
    state after reset (from the next step), after adaptation and after charge;
    ``H_v``, ``A_v`` are the charged and adapted values the forward computed.

    >>> import neurogen as ng
    >>> r"\bar{x} &= " in backward_latex(ng.neuron.LIFNode.spec)
    True
    """
    from .config import derivation
    surrogate = surrogate if surrogate is not None else Sigmoid()
    _, bw = derivation(model, surrogate, bool(detach_reset), tuple(learnable))
    symbols = set().union(*({sym} | e.free_symbols for sym, e in bw.stages))
    names = _backward_symbol_names(model, symbols)
    rows = [rf"{names[sym]} &= {sp.latex(e, symbol_names=names)}" for sym, e in bw.stages]
    return r"\begin{aligned}" + r" \\ ".join(rows) + r"\end{aligned}"


def model_markdown(model, surrogate=None) -> str:
    """A short Markdown description with the step and its derived backward in LaTeX.

    >>> import neurogen as ng
    >>> model_markdown(ng.neuron.LIFNode.spec).splitlines()[0]
    '**NeuronModel `lif_node`**: input `x`, fires on `v`'
    """
    surrogate = surrogate if surrogate is not None else Sigmoid()
    states = ", ".join(f"`{s}` (initial `{model.initial[s]}`)" for s in model.state_names)
    params = ", ".join(f"`{k}={v!r}`" for k, v in model.defaults.items()) or "none"
    spikes = _spike_names(model)
    lines = [f"**NeuronModel `{model.name}`**: input `{model.input_name}`, "
             f"fires on `{model.v_name}`" + (f". {model.doc}" if model.doc else "")]
    lines += ["", f"- states: {states}", f"- parameters: {params}", "",
              f"One step (${spikes[spike]}$: the spike; ${spikes[spike_d]}$: the same spike, "
              "detached when `detach_reset=True`):", "", "$$" + model_latex(model) + "$$", "",
              f"Derived backward of one step (surrogate `{surrogate.key()}`, reverse mode; "
              r"$\bar{q} = \partial L / \partial q$; R, A, H: after reset, adaptation, charge):",
              "", "$$" + backward_latex(model, surrogate) + "$$", ""]
    return "\n".join(lines)


def backward_text(model, surrogate, detach_reset=False, learnable=()) -> str:
    """The derived backward of one step, stage by stage (reverse mode)."""
    from .config import derivation
    step, bw = derivation(model, surrogate, detach_reset, tuple(learnable))
    lines = [f"surrogate {surrogate.key()}: g'(u) = {surrogate.derivative_expr()}"]
    lines += [f"  {sym} = {expr}" for sym, expr in bw.stages]
    return "\n".join(lines)


def _value_name(step, sym) -> str:
    stage = step.stage_of(sym)
    return "its value before the step" if stage is None else f"its value after {stage.name}"


def value_plan_text(step, bw) -> str:
    """Where the backward of a step gets each state's values (the rules are in
    :func:`neurogen.derive.plan_values`): one line per state, then the input and the
    fire value."""
    lines = ["Values the backward of step t reads (each the forward's value of the same step):"]
    recomputed = set(bw.recompute)
    for s in step.states:
        groups = [st.name for st in step.stages if s in st.equations(step.model)]
        label = (" and ".join(groups) if len(groups) < 3 else ", ".join(groups)) if groups \
            else "no equation: constant"
        parts = [f"{_value_name(step, y)} saved by the forward at every step"
                 for y in bw.saved if step.state_of(y) == s]
        if s in bw.prev:
            stage = step.stage_of(step.final[s])
            parts.append(f"its value before the step rebuilt from step t-1's {stage.name} "
                         f"({stage.equations(step.model)[s]}) on step t-1's saved values "
                         "(the initial value at t = 0)")
        parts += [f"{_value_name(step, y)} recomputed" for y in step.defs
                  if y in recomputed and step.state_of(y) == s]
        if s in bw.constant:
            parts.append("the initial value at every step")
        lines.append(f"  {s} ({label}): " + ("; ".join(parts) or "not read"))
    if bw.needs_x:
        lines.append(f"  {step.x} (input): re-read from the input sequence")
    from .stages import U
    if U in recomputed:
        lines.append("  fire value u[t] (spike, surrogate derivative): recomputed")
    return "\n".join(lines)


__all__ = ["value_plan_text", "model_text", "model_latex", "model_markdown", "backward_text",
           "backward_latex"]
