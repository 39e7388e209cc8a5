"""The two extension points (issue 18), through the public interfaces only:

- a target defined and registered here, which renders the kernel IR as plain Python
  over NumPy arrays, passes the same equivalence checks as the real targets;
- a stage defined here, inserted into a model's stage list, runs on every target with
  no change to the derivation, the lowering or the reference.
"""
import functools

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from sympy.printing.numpy import NumPyPrinter

import neurogen as ng
from neurogen import ir as nir
from neurogen import stages
from neurogen.targets import Kernel, KernelTarget

from conftest import assert_match, needs_cxx, run_and_grad
from strategies import structures


# ---- a target: the IR as Python ---------------------------------------------------------------
class _Printer(NumPyPrinter):
    """NumPy expressions, with neurogen's functions."""

    def _print_sigmoid(self, e):
        return f"(1.0 / (1.0 + numpy.exp(-({self._print(e.args[0])}))))"

    def _print_sigmoid_grad(self, e):
        z = self._print(e.args[0])
        return f"(numpy.exp(-abs({z})) / (1.0 + numpy.exp(-abs({z}))) ** 2)"

    def _print_ZeroTimes(self, e):
        return f"(0.0 * ({self._print(e.args[0])}))"

    # branches and clamps (issue 19), with torch's values
    def _print_maximum(self, e):
        return f"numpy.maximum({self._print(e.args[0])}, {self._print(e.args[1])})"

    def _print_minimum(self, e):
        return f"numpy.minimum({self._print(e.args[0])}, {self._print(e.args[1])})"

    def _print_clamp(self, e):
        u, lo, *hi = (self._print(a) for a in e.args)
        low = f"numpy.maximum({u}, {lo})"
        return f"numpy.minimum({low}, {hi[0]})" if hi else low

    def _print_abs(self, e):
        return f"numpy.abs({self._print(e.args[0])})"

    def _print_sign(self, e):
        return f"numpy.sign({self._print(e.args[0])})"

    def _print_floor(self, e):
        return f"numpy.floor({self._print(e.args[0])})"

    def _print_heaviside(self, e):
        x, h0 = (self._print(a) for a in e.args)
        return f"numpy.where({x} > 0, 1.0, numpy.where({x} == 0, {h0}, 0.0))"

    def _print_sg_heaviside(self, e):
        return f"numpy.where({self._print(e.args[0])} >= 0, 1.0, 0.0)"

    def _print_Max(self, e):
        out = self._print(e.args[-1])
        for a in reversed(e.args[:-1]):
            out = f"numpy.fmax({self._print(a)}, {out})"
        return out

    def _print_Min(self, e):
        out = self._print(e.args[-1])
        for a in reversed(e.args[:-1]):
            out = f"numpy.fmin({self._print(a)}, {out})"
        return out


AT = {nir.NEURON: "[...]", nir.STEP: "[t]", nir.PREV: "[t - 1]", nir.LAST: "[T - 1]",
      nir.ZERO: "[0]"}


class NumpyTarget(KernelTarget):
    """Runs every neuron at once: each IR statement is one NumPy expression over arrays."""

    name = "test-numpy"
    dtypes = ("float64",)

    def check(self, x):
        if x.device.type != "cpu" or x.dtype != torch.float64:
            raise TypeError("the test target runs float64 CPU tensors")

    def render(self, kernel_ir):
        printer = _Printer()

        def lines(statements, pad):
            out = []
            for st in statements:
                if isinstance(st, nir.Load):
                    out.append(f"{st.name} = A['{st.array}']{AT[st.at]}")
                elif isinstance(st, nir.Let):
                    out.append(f"{st.name} = {printer.doprint(st.expr)}")
                elif isinstance(st, nir.Set):
                    op = f"{st.name} + " if st.accumulate else ""
                    out.append(f"{st.name} = {op}({printer.doprint(st.expr)})")
                else:
                    out.append(f"A['{st.array}']{AT[st.at]} = {printer.doprint(st.expr)}")
            return [pad + line for line in out]

        scalars = [a.name for a in kernel_ir.args if a.role in ("scalar", "int32", "int64")]
        src = ["def kernel(A):"] + [f"    {n} = A['{n}']" for n in scalars]
        src += ["    T = ng_T"] + lines(kernel_ir.uniform + kernel_ir.per_neuron
                                     + kernel_ir.before, "    ")
        if kernel_ir.first is None:
            src += ["    for t in range(T):"] + lines(kernel_ir.step, "        ")
        else:
            src += ["    for t in range(T - 1, 0, -1):"] + lines(kernel_ir.step, "        ")
            src += ["    t = 0"] + lines(kernel_ir.first, "    ")
        src += lines(kernel_ir.after, "    ")
        return "\n".join(src) + "\n"

    def compile(self, kernel_ir, source, device):
        namespace = {"numpy": np, "functools": functools}
        exec(compile(source, f"<{kernel_ir.name}>", "exec"), namespace)
        return Kernel(namespace["kernel"], kernel_ir, source)

    def packer(self, args, fixed, compute):
        def pack(values):
            out = dict(fixed)
            for a in args:
                if a.name in fixed:
                    continue
                v = values[a.name]
                out[a.name] = v.numpy() if isinstance(v, torch.Tensor) else v
            return out
        return pack

    def launch(self, kernel, packed, n, T, device):
        arrays = {k: (v.reshape(T, n) if isinstance(v, np.ndarray) and v.size == T * n and
                      v.size != n else v) for k, v in packed.items()}
        kernel.fn(arrays)


@pytest.fixture(scope="module")
def numpy_target():
    target = ng.targets.register(NumpyTarget())
    yield target
    ng.targets.unregister(target.name)


def compare(model, x, backends, **kw):
    ref = run_and_grad(model, "torch", x, **kw)
    for backend in backends:
        assert_match(run_and_grad(model, backend, x, **kw), ref)
    return ref


def test_the_target_is_registered_and_available(numpy_target):
    assert "test-numpy" in ng.targets.names() and "test-numpy" in ng.targets.available()
    node = ng.neuron.LIFNode(step_mode="m", backend="test-numpy")
    with pytest.raises(TypeError, match="float64 CPU tensors"):
        node(torch.rand(3, 4))
    source = ng.targets.render(ng.neuron.LIFNode.spec, "test-numpy", "forward", "float64")
    assert source.startswith("def kernel(A):") and "for t in range(T):" in source


@pytest.mark.parametrize("name", list(ng.neuron.LIBRARY))
def test_python_target_equals_the_reference_on_library_neurons(numpy_target, name):
    model = ng.neuron.LIBRARY[name].spec
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(7, 11, generator=gen, dtype=torch.float64) * 2
    init = {s: torch.rand(11, generator=gen, dtype=torch.float64) * 0.3
            for s in model.state_names}
    compare(model, x, ["test-numpy"], params=dict(model.defaults), init=init,
            learnable=model.param_names[:3])


@pytest.mark.parametrize("detach", [False, True])
def test_python_target_equals_the_reference_with_a_reset_only_state(numpy_target, detach):
    model = ng.NeuronModel("leaky_r", states={"v": 0.0, "r": 0.0}, params={"beta": 0.85},
                           charge={"v": "beta * (1 - r) * v + x"}, fire="v - 1.25",
                           reset={"r": "spike_d"})
    x = torch.rand(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.5
    compare(model, x, ["test-numpy"], params={"beta": 0.85}, learnable=("beta",),
            detach_reset=detach)


@needs_cxx
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(structures())
def test_python_target_on_generated_structures(numpy_target, case):
    model, surrogate, detach, kinds = case
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 9, generator=gen, dtype=torch.float64) * 0.6 + 0.7
    init = {s: torch.rand(9, generator=gen, dtype=torch.float64) * 0.5
            for s in model.state_names}
    learn = tuple(k for k, v in kinds.items() if v.startswith("learnable"))
    compare(model, x, ["test-numpy", "cpu"], params=dict(model.defaults), init=init,
            learnable=learn, surrogate_function=surrogate, detach_reset=detach)


# ---- a stage: one more step of the neuron's own ----------------------------------------------
LEAK = stages.StateStage("leak", "l", "L", equations={"v": "v - 0.1 * tanh(v) * (1 + w)"})
DECAY = stages.StateStage("decay", "d", None, equations={"w": "w * (1 - 0.5 * spike) + 0.1"},
                          reads_spike=True)


def with_extra_stages():
    base = ng.neuron.IzhikevichNode.spec.replace(params={
        **ng.neuron.IzhikevichNode.spec.defaults, "a": 0.3, "b": 0.2})
    default = base.stages
    return base.with_stages(default[:2] + (LEAK,) + default[2:] + (DECAY,))


def test_a_new_stage_is_part_of_the_model():
    model = with_extra_stages()
    assert [st.name for st in model.stages] == ["charge", "adaptation", "leak", "fire",
                                                "reset", "decay"]
    text = str(model)
    assert "leak       v <- v - 0.1*(w + 1)*tanh(v)" in text and "decay      w <- " in text
    assert model.spec_hash != ng.neuron.IzhikevichNode.spec.spec_hash
    step = stages.Step(model)
    assert step.final["v"] == sp.Symbol("ng_r_v") and step.final["w"] == sp.Symbol("ng_d_w")


@needs_cxx
@pytest.mark.parametrize("detach", [False, True])
def test_a_new_stage_runs_on_every_target(numpy_target, detach):
    model = with_extra_stages()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(9, 13, generator=gen, dtype=torch.float64) * 2
    init = {s: torch.rand(13, generator=gen, dtype=torch.float64) * 0.3
            for s in model.state_names}
    ref = compare(model, x, ["cpu", "cuda-emulated", "test-numpy"],
                  params=dict(model.defaults), init=init, learnable=("tau", "a", "b"),
                  detach_reset=detach)
    assert ref["spikes"].sum() > 5
    # the stage really takes part: without it the states differ
    plain = run_and_grad(ng.neuron.IzhikevichNode.spec.replace(params=model.defaults), "torch",
                         x, params=dict(model.defaults), init=init)
    assert not torch.allclose(plain["final_w"], ref["final_w"])


def test_a_stage_before_fire_may_not_read_the_spike():
    early = stages.StateStage("early", "e", None, equations={"v": "v * spike"},
                              reads_spike=True)
    base = ng.neuron.LIFNode.spec
    with pytest.raises(ng.SpecError, match="early equation of 'v' uses the spike"):
        base.with_stages((early,) + base.stages)


PRE = stages.StateStage("pre", "q", "Q", equations={"v": "0.9 * v + 0.05 * tanh(w)"})


@needs_cxx
def test_a_stage_before_charge_runs_on_every_target(numpy_target):
    base = ng.neuron.IzhikevichNode.spec.replace(params={
        **ng.neuron.IzhikevichNode.spec.defaults, "a": 0.3, "b": 0.2})
    model = base.with_stages((PRE,) + base.stages)
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(8, 10, generator=gen, dtype=torch.float64) * 2
    init = {s: torch.rand(10, generator=gen, dtype=torch.float64) * 0.3
            for s in model.state_names}
    compare(model, x, ["cpu", "cuda-emulated", "test-numpy"], params=dict(model.defaults),
            init=init, learnable=("tau", "a"))


def test_stage_lists_are_told_apart_by_what_they_do():
    class HalfFire(stages.FireStage):
        def fire(self, model):
            return model.fire - sp.Rational(1, 2)
    base = ng.neuron.LIFNode.spec
    a = base.with_stages(base.stages[:2] + (HalfFire(),) + base.stages[3:])
    assert a != base and a.spec_hash != base.spec_hash
    # an equal list of new objects is the default list: the model stays the library's
    same = base.with_stages([stages.StateStage("charge", "h", None, group="charge")]
                            + list(base.stages[1:]))
    assert same == base and same.to_dict() == base.to_dict()
    with pytest.raises(ng.SpecError, match="tag 'g'"):
        base.with_stages(base.stages + (stages.StateStage("x", "g", None, equations={}),))


def test_re_registering_a_target_drops_its_plans(numpy_target):
    node = ng.neuron.LIFNode(step_mode="m", backend="test-numpy")
    x = torch.rand(3, 4, dtype=torch.float64) * 3
    first = node(x)
    ng.targets.register(NumpyTarget())  # a new object under the same name
    try:
        from neurogen.plan import PLANS
        assert all(p.target.name != "test-numpy" for p in PLANS._plans.values())
        node.reset()
        assert torch.equal(node(x), first)
        assert all(p.target is ng.targets.get("test-numpy") for p in PLANS._plans.values()
                   if p.target.name == "test-numpy")
    finally:
        ng.targets.register(numpy_target)
