"""Random model *structures* (tests/strategies.py ``structures``): every group membership
per state and every place a state is read, with spikes in resets, learnable and
per-neuron parameters, both ``detach_reset`` values and every library surrogate. The
generated C++ kernels and the emulated CUDA kernels are compared with the torch-autograd
reference in float64: spikes, every final state, ``v_seq`` and the gradients of the input,
of every initial state and of every learnable parameter (issue 17)."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sympy as sp
from conftest import assert_match, needs_cxx, run_and_grad
from strategies import MEMBERSHIPS, SURROGATES, structures, subject_cases

import neurogen as ng
from neurogen.config import derivation
from neurogen.spec import functions as fn

BRANCHES = (sp.Piecewise, fn.maximum, fn.minimum, fn.clamp, fn.abs_, fn.sign, fn.floor,
            fn.heaviside, fn.sg_heaviside)

pytestmark = needs_cxx
N = 13  # not a multiple of any vector width: every kernel runs a tail


def param_values(model, kinds, n):
    values = {}
    for k, kind in kinds.items():
        default = model.defaults[k]
        if kind == "steps_neuron":  # whole steps, different per neuron
            values[k] = torch.arange(n, dtype=torch.float64) % (default + 1)
        elif kind.endswith("neuron"):
            values[k] = default * (1 + 0.2 * torch.linspace(-1, 1, n, dtype=torch.float64))
        else:
            values[k] = default
    return values, tuple(k for k, kind in kinds.items() if kind.startswith("learnable"))


def check_structure(case, T, seed, backends=("cpu", "cuda-emulated")):
    model, surrogate, detach, kinds = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, generator=gen, dtype=torch.float64) * 0.6 + 0.7
    init = {s: torch.rand(N, generator=gen, dtype=torch.float64) * 0.6 - 0.1
            for s in model.state_names}
    params, learnable = param_values(model, kinds, N)
    if "refractory" in init:  # the counter holds whole steps
        init["refractory"] = torch.randint(0, 3, (N,), generator=gen).to(torch.float64)
    kw = dict(params=params, init=init, learnable=learnable, surrogate_function=surrogate,
              detach_reset=detach, seed=seed, record_all=seed % 3 != 0,
              final_loss=seed % 2 == 0)
    # the backends in threads: most of a case's time is the compiler, which runs beside
    with ThreadPoolExecutor(len(backends)) as pool:
        runs = {b: pool.submit(run_and_grad, model, b, x, **kw) for b in backends}
        ref = run_and_grad(model, "torch", x, **kw)
    for backend in backends:
        got = runs[backend].result()
        try:
            assert_match(got, ref, fwd_tol=1e-10, grad_tol=1e-8)
        except AssertionError as exc:
            raise AssertionError(f"{backend}: {exc}\nmodel:\n{model}\nsurrogate {surrogate}, "
                                 f"detach_reset={detach}, kinds {kinds}") from None


CASES = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SUBJECTS = subject_cases()
TS = (1, 2, 6)


def _case_id(case):
    groups, place = case
    return f"{'+'.join(groups) or 'none'}-read-in-{place}"


@pytest.mark.parametrize("i", range(len(SUBJECTS)), ids=[_case_id(c) for c in SUBJECTS])
@settings(max_examples=2, **CASES)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_every_membership_read_everywhere_equals_reference(i, data, seed):
    """The state ``w`` in each group membership, read in each place; the rest of the model,
    the detach setting and the parameter kinds random; surrogates and T rotate with the
    case so that each surrogate meets several memberships and step counts."""
    sg = SURROGATES[i % len(SURROGATES)]
    case = data.draw(structures(subject=SUBJECTS[i], surrogate=sg))
    check_structure(case, TS[(i // len(SURROGATES)) % len(TS)], seed)


@settings(max_examples=40, **CASES)
@given(structures(), st.sampled_from(TS), st.integers(0, 2**16))
def test_random_structures_equal_reference(case, T, seed):
    check_structure(case, T, seed)


@pytest.mark.slow
@settings(max_examples=1500, **CASES)
@given(structures(), st.sampled_from(TS + (11,)), st.integers(0, 2**16))
def test_random_structures_equal_reference_many(case, T, seed):
    check_structure(case, T, seed)


# ---- the reported case (issue 17) and its neighbours -----------------------------------------
# snnTorch's Leaky computes its reset from the previous step's spike; here the state r holds
# it (reset only). The kernels' gradients read r after its reset instead of the value the
# step used. Each variant reads r in another place.
LEAKY_READS = {
    "charge": dict(charge={"v": "beta * (1 - r) * v + x"}, fire="v - 1.25"),
    "fire": dict(charge={"v": "beta * v + x"}, fire="v - 1.25 + 0.3 * r * v"),
    "adaptation": dict(charge={"v": "beta * v + x"}, adaptation={"v": "v * (1 - 0.5 * r)"},
                       fire="v - 1.25"),
    "other reset": dict(charge={"v": "beta * v + x"}, fire="v - 1.25",
                        reset={"r": "spike_d", "v": "v - r * v * spike_d"}),
    "own reset": dict(charge={"v": "beta * v + x"}, fire="v - 1.25",
                      reset={"r": "0.5 * r * r + spike_d", "v": "v * (1 - spike_d)"}),
}


@pytest.mark.parametrize("read_in", LEAKY_READS)
@pytest.mark.parametrize("detach", [True, False])
def test_reset_only_state_gradients_on_every_backend(read_in, detach):
    spec = {"reset": {"r": "spike_d"}, **LEAKY_READS[read_in]}
    model = ng.NeuronModel("leaky_r", states={"v": 0.0, "r": 0.0}, params={"beta": 0.85},
                           **spec)
    x = torch.rand(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 1.5
    kw = dict(params={"beta": 0.85}, learnable=("beta",), detach_reset=detach,
              init={"v": torch.zeros(8, dtype=torch.float64),
                    "r": torch.zeros(8, dtype=torch.float64)})
    ref = run_and_grad(model, "torch", x, **kw)
    assert ref["spikes"].sum() > 10
    for backend in ("cpu", "cuda-emulated"):
        assert_match(run_and_grad(model, backend, x, **kw), ref)


# ---- the generator itself: what the runs above are guaranteed to cover ---------------------
def _facts(case):
    """The structural facts of one generated case."""
    model, surrogate, detach, kinds = case
    step, bw = derivation(model, type(surrogate)(), detach,
                          tuple(k for k, v in kinds.items() if v.startswith("learnable")))
    facts = {f"surrogate {type(surrogate).__name__}", f"detach {detach}"}
    facts |= {f"param {kind}" for kind in kinds.values()}
    for s in model.state_names:
        facts.add("member " + "+".join(g for g in ("charge", "adaptation", "reset")
                                       if s in getattr(model, g)))
        kind = ("computed" if s in model.charge or s in model.adaptation
                else "reset-only" if s in model.reset else "constant")
        outcomes = {"saved": any(step.state_of(y) == s for y in bw.saved),
                    "rebuilt": s in bw.prev, "from init": s in bw.constant,
                    "recomputed": any(step.state_of(y) == s for y in bw.recompute)}
        facts |= {f"{kind} {o}" for o, yes in outcomes.items() if yes}
    if model.output is not None:
        facts.add("output")
    if model.refractory is not None:
        facts.add(f"refractory {'param' if isinstance(model.refractory, str) else 'literal'}")
        facts.add(f"refractory holds {len(model.refractory_hold)}")
    groups = {"charge": model.declared["charge"].values(),
              "adaptation": model.declared["adaptation"].values(),
              "fire": [model.declared["fire"]], "reset": model.declared["reset"].values(),
              "output": [model.output] if model.output is not None else []}
    for group, exprs in groups.items():
        for e in exprs:
            facts |= {f"{type(f).__name__} in {group}" for f in sp.preorder_traversal(e)
                      if isinstance(f, BRANCHES)}
    for e in model.reset.values():
        facts |= {f"reset with {k}" for k in ("spike", "spike_d") if e.has(sp.Symbol(k))}
        spk = sp.Symbol("spike")
        linear = sp.diff(e.xreplace({sp.Symbol("spike_d"): spk}), spk, 2) == 0
        facts.add("reset linear in spike" if linear else "reset nonlinear in spike")
    return facts


def test_generator_covers_every_structure():
    """Each membership is read in each place by construction (``subject_cases``); the
    value plan's every outcome, spikes in resets, every parameter kind, both detach values
    and every surrogate appear in the generated cases."""
    assert len(SUBJECTS) == 8 * 4 + 4
    seen = set()

    @settings(max_examples=400, database=None, **CASES)
    @given(st.data())
    def collect(data):
        i = data.draw(st.integers(0, len(SUBJECTS) - 1))
        case = data.draw(structures(subject=SUBJECTS[i], surrogate=SURROGATES[i % 9]))
        model = case[0]
        groups, place = SUBJECTS[i]
        w = sp.Symbol("w")
        assert tuple(g for g in ("charge", "adaptation", "reset") if "w" in getattr(model, g)) \
            == groups
        where = {"charge": model.charge.values(), "adaptation": model.adaptation.values(),
                 "fire": [model.fire], "own_reset": [model.reset.get("w", sp.S.Zero)],
                 "other_reset": [e for s, e in model.reset.items() if s != "w"]}[place]
        assert any(w in e.free_symbols for e in where), (place, model)
        seen.update(_facts(case))
        seen.update(_facts(data.draw(structures())))

    collect()
    want = {f"surrogate {c.__name__}" for c in SURROGATES} | {"detach True", "detach False"}
    want |= {f"param {k}" for k in ("float", "neuron", "learnable", "learnable_neuron")}
    want |= {"member " + "+".join(g) for g in MEMBERSHIPS}
    want |= {"computed saved", "computed rebuilt", "computed recomputed", "reset-only saved",
             "reset-only rebuilt", "constant from init", "reset with spike",
             "reset with spike_d", "reset linear in spike", "reset nonlinear in spike"}
    # issue 19: graded outputs, refractory periods, every branch function in every group
    want |= {"output", "refractory param", "refractory literal", "refractory holds 1",
             "refractory holds 2"}
    want |= {f"{f.__name__} in {g}" for f in BRANCHES
             for g in ("charge", "adaptation", "fire", "reset", "output")}
    assert want <= seen, sorted(want - seen)


# ---- non-finite inputs --------------------------------------------------------------------
@settings(max_examples=30, **CASES)
@given(structures(), st.integers(0, 2**16))
def test_random_structures_with_nan_and_inf_inputs(case, seed):
    """NaN and inf inputs: the forward propagates them as the reference does (spikes, states
    and ``v_seq`` equal, NaN for NaN), and they do not leak into other neurons: every
    gradient of a neuron with finite inputs equals the reference. (In a neuron with a
    non-finite input the gradients may differ: the kernels' dense arithmetic multiplies a
    zero gradient by an infinite value, 0 * inf = NaN, on paths autograd never visits
    because nothing downstream reads them.)"""
    model, surrogate, detach, kinds = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, N, generator=gen, dtype=torch.float64) * 0.6 + 0.7
    bad = [0, 2, 3, 4]
    x[0, 0], x[1, 2], x[0, 3], x[4, 4] = (float("nan"), float("inf"), -float("inf"),
                                          float("inf"))
    # a scalar gradient sums over neurons, NaN ones included: learnable ones are per-neuron here
    kinds = {k: ("learnable_neuron" if v == "learnable" else v) for k, v in kinds.items()}
    params, learnable = param_values(model, kinds, N)
    kw = dict(params=params, learnable=learnable, surrogate_function=surrogate,
              detach_reset=detach, seed=seed, record_all=True)
    ref = run_and_grad(model, "torch", x, **kw)
    good = torch.tensor([j not in bad for j in range(N)])
    for backend in ("cpu", "cuda-emulated"):
        got = run_and_grad(model, backend, x, **kw)
        for k in ref:
            want, have = ref[k], got[k]
            if k.startswith("grad"):
                want, have = want[..., good], have[..., good]
            torch.testing.assert_close(have, want, rtol=1e-8, atol=1e-8, equal_nan=True,
                                       msg=lambda m: f"{backend} {k}: {m}\n{model}")
