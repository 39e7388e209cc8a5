"""Notebook display of a model: Markdown with the step and its derived backward in LaTeX."""
import re

import pytest

import neurogen as ng
from neurogen.config import derivation
from neurogen.display import backward_latex, model_latex, model_markdown

IZH = ng.neuron.IzhikevichNode.spec
LIF = ng.neuron.LIFNode.spec


def rows(tex):
    """The rows of an ``aligned`` block."""
    assert tex.startswith(r"\begin{aligned}") and tex.endswith(r"\end{aligned}")
    return tex[len(r"\begin{aligned}"):-len(r"\end{aligned}")].split(r" \\ ")


def assert_balanced(tex):
    assert tex.count("{") == tex.count("}")
    left, right = (len(re.findall(rf"\\{w}(?![a-z])", tex)) for w in ("left", "right"))
    assert left == right  # not counting \leftarrow


def test_markdown_of_a_library_model():
    md = IZH._repr_markdown_()
    assert md == model_markdown(IZH)
    assert md.startswith("**NeuronModel `izhikevich_node`**: input `x`, fires on `v`")
    assert "- states: `v` (initial `v_reset`), `w` (initial `w_rest`)" in md
    assert "- parameters: `tau=2.0`, `v_c=0.8`, `a0=1.0`," in md
    assert "surrogate `Sigmoid(alpha=4.0)`" in md
    blocks = re.findall(r"^\$\$(.*)\$\$$", md, re.M)
    assert blocks == [model_latex(IZH), backward_latex(IZH)]
    for block in blocks:
        assert_balanced(block)


def test_step_equations_in_latex():
    step = rows(model_latex(IZH))
    assert step[0] == (r"\text{charge}:\ & v \leftarrow v + \frac{a_{0} \left(v - v_{c}\right) "
                       r"\left(v - v_{rest}\right) - w + x}{\tau}")
    assert step[1] == (r"\text{adaptation}:\ & w \leftarrow w + "
                       r"\frac{a \left(v - v_{rest}\right) - w}{\tau_{w}}")
    assert step[2] == r"\text{fire}:\ & s = \Theta\left(v - v_{threshold}\right)"
    assert step[3] == r"\text{reset}:\ & v \leftarrow s v_{reset} + v \left(1 - s_{d}\right)"
    assert step[4] == r"\text{reset}:\ & w \leftarrow b s + w"


def test_backward_in_latex():
    tex = backward_latex(IZH)
    _, bw = derivation(IZH, ng.surrogate.Sigmoid(), False, ())
    assert len(rows(tex)) == len(bw.stages)
    assert rows(tex)[0] == (r"\bar{s} &= b \bar{w}^{\mathrm{R}} + \bar{v}^{\mathrm{R}} "
                            r"\left(- H_{v} + v_{reset}\right) + \bar{s}^{\mathrm{out}}")
    assert r"g'(u) &= \alpha_{\mathrm{sg}} \operatorname{sigmoid}'\left(u \alpha_{\mathrm{sg}}\right)" in tex
    assert r"\bar{u} &= \bar{s} g'(u)" in tex
    assert r"\bar{v}_{t-1} &= " in tex and r"\bar{w}_{t-1} &= " in tex
    assert rows(tex)[-1] == r"\bar{x} &= \frac{\bar{v}^{\mathrm{H}}}{\tau}"


def test_backward_options():
    learn = backward_latex(IZH, ng.surrogate.ATan(alpha=3.0), learnable=("tau",))
    assert rows(learn)[-1].startswith(r"\bar{\tau} &= ")
    assert r"\pi^{2}" in learn  # ATan's g'(u)
    # detach_reset drops the reset's path into the spike gradient
    assert rows(backward_latex(LIF))[0] != r"\bar{s} &= \bar{s}^{\mathrm{out}}"
    assert rows(backward_latex(LIF, detach_reset=True))[0] == r"\bar{s} &= \bar{s}^{\mathrm{out}}"
    custom = ng.surrogate.Custom(derivative="1 / (1 + u**2)", name="cauchy")
    assert r"g'(u) &= \frac{1}{u^{2} + 1} \\ \bar{u} &= \bar{s} g'(u)" in backward_latex(LIF, custom)


SURROGATES = [cls() for cls in ng.surrogate.LIBRARY]


@pytest.mark.parametrize("name", list(ng.neuron.LIBRARY))
def test_no_kernel_names_leak_into_latex(name):
    model = ng.neuron.LIBRARY[name].spec
    for surrogate in SURROGATES:
        tex = backward_latex(model, surrogate, learnable=model.param_names[:2])
        assert_balanced(tex)
        assert not re.search(r"ng_|sg_|spike", tex), tex
    md = model_markdown(model)
    assert "ng_" not in md and "spike_d" not in md


def test_names_that_collide_with_the_notation():
    m = ng.NeuronModel("clash", states={"s": 0.0}, params={"u": 1.0},
                       charge={"s": "s + u * x"}, fire="s - 1",
                       reset={"s": "(1 - spike_d) * s"}, doc="A state named s.")
    md = m._repr_markdown_()
    assert md.startswith("**NeuronModel `clash`**: input `x`, fires on `s`. A state named s.")
    assert r"\text{fire}:\ & \mathrm{spike} = \Theta\left(s - 1\right)" in md
    tex = backward_latex(m)
    assert r"\bar{u_{\mathrm{fire}}} &= " in tex
    assert r"u_{\mathrm{fire}} \alpha_{\mathrm{sg}}" in tex
    assert rows(tex)[-1] == r"\bar{x} &= \bar{s}^{\mathrm{A}} u"  # s has no adaptation


def test_jupyter_shows_markdown():
    formatters = pytest.importorskip("IPython.core.formatters")
    data, _ = formatters.DisplayFormatter().format(IZH)
    assert data["text/markdown"] == IZH._repr_markdown_()
    assert data["text/latex"] == "$$" + model_latex(IZH) + "$$"
    assert data["text/plain"].startswith("NeuronModel('izhikevich_node'")

