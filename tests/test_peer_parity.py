"""Neurons of other libraries declared as neurogen models, run against the libraries themselves.

snnTorch 1.0.0 (``Leaky``, ``Synaptic``, ``Alpha``, ``Lapicque``), Norse 1.1.0 (``LIFCell``,
``LIFAdExCell``, ``LSNNCell``, ``LIFRefracCell``) and a SpikingJelly 2.0.0 ``FlexSN`` core, on CPU
in float64 with
each peer's own surrogate. neurogen runs on the ``torch``, ``cpu`` and ``cuda-emulated``
backends. Spikes must be identical, states within 1e-10 and the gradients of a random loss
(on the spikes and on every state the peer returns, per step) within 1e-8, for the input,
the initial states and every learnable parameter.

The model declarations below are those of the "Neurons from other libraries" section of
docs/models.md (test_docs_declare_the_same_models checks it). Conventions that needed care
(see that section):

* snnTorch and Norse spike when ``u > 0`` (strict), neurogen by default when
  ``fire >= 0``: their models are declared with ``fire_strict=True`` (spike where
  ``fire > 0``, the surrogate at the fire value), exact at ties too, gradients included
  (test_strict_threshold_at_exact_ties, test_surrogate_gradient_at_ties).
* snnTorch's default ``reset_delay=True``: the (detached) reset of step t-1's spike is part of
  step t's charge, written with ``heaviside(mem - threshold, 0)`` (strict, no gradient); the
  reset group is empty and the state returned is not yet reset. ``reset_delay=False``
  (Leaky) adds a state ``r`` holding that detached previous spike.
* snnTorch's ``ATan`` casts spikes to float32 (which also makes ``reset * threshold`` a float32
  product): the peer runs with ``ATan64``, snnTorch's own ``ATan`` backward with a forward
  that keeps the input's dtype; parameters are passed as float64 tensors.
* Norse's ``SuperSpike`` ignores its ``alpha``: ``ng.surrogate.SuperSpike(alpha=1)``. Norse's
  feed-forward cells do not detach the reset (``spike``); its fallback initial states are
  detached from ``v_leak``/``v_th``, neurogen's initial-value expressions are not, so the
  default-initial-state runs keep those two parameters fixed.
"""
import pathlib
import re

import pytest
import torch

import neurogen as ng

import snntorch as snn
from norse.torch import (LIFAdExCell, LIFAdExParameters, LIFCell, LIFParameters, LSNNCell,
                         LSNNParameters)
from norse.torch.functional.lif import LIFFeedForwardState
from norse.torch import LIFRefracCell, LIFRefracParameters
from norse.torch.functional.lif_adex import LIFAdExFeedForwardState
from norse.torch.functional.lif_refrac import LIFRefracFeedForwardState
from norse.torch.functional.lsnn import LSNNFeedForwardState
from spikingjelly.activation_based import surrogate as sj_surrogate
from spikingjelly.activation_based.neuron import FlexSN

from conftest import needs_cxx

D = torch.float64
BACKENDS = ["torch", pytest.param("cpu", marks=needs_cxx),
            pytest.param("cuda-emulated", marks=needs_cxx)]
FWD_TOL, GRAD_TOL = 1e-10, 1e-8


# ------------------------------------------------------------------ neurogen declarations
# (docs/models.md, "Neurons from other libraries", declares the same models)

def snntorch_leaky(reset_mechanism="subtract", reset_delay=True):
    """snn.Leaky(beta, threshold, reset_mechanism=..., reset_delay=...)."""
    r = "heaviside(mem - threshold, 0)"      # the previous step's spike: strict >, no gradient
    charge = {"subtract": f"clamp(beta, 0, 1) * mem + x - {r} * threshold",
              "zero": f"clamp(beta, 0, 1) * ((1 - {r}) * mem) + x"}[reset_mechanism]
    if reset_delay:                          # the reset is in the next step's charge
        states, charge, reset = {"mem": 0.0}, {"mem": charge}, {}
    else:                                    # and also right after the spike, not detached
        states, charge = {"mem": 0.0, "r": 0.0}, {"mem": charge, "r": r}
        reset = {"mem": {"subtract": "mem - (spike - r) * threshold",
                         "zero": "mem - (spike - r) * mem"}[reset_mechanism]}
    return ng.NeuronModel(f"snntorch_leaky_{reset_mechanism}" + "_now" * (not reset_delay),
                          states=states, params={"beta": 0.9, "threshold": 1.0},
                          charge=charge,
                          fire="mem - threshold", fire_strict=True,  # mem > threshold
                          reset=reset)


def snntorch_synaptic(reset_mechanism="subtract"):
    """snn.Synaptic(alpha, beta, threshold, reset_mechanism=..., reset_delay=True)."""
    r = "heaviside(mem - threshold, 0)"
    mem = {"subtract": f"clamp(beta, 0, 1) * mem + syn - {r} * threshold",
           "zero": f"(1 - {r}) * (clamp(beta, 0, 1) * mem + syn)"}[reset_mechanism]
    return ng.NeuronModel(f"snntorch_synaptic_{reset_mechanism}",
                          states={"mem": 0.0, "syn": 0.0},
                          params={"alpha": 0.8, "beta": 0.9, "threshold": 1.0},
                          charge={"syn": "clamp(alpha, 0, 1) * syn + x"},
                          adaptation={"mem": mem},   # reads the new syn and the previous mem
                          fire="mem - threshold", fire_strict=True,
                          reset={})


def snntorch_alpha(reset_mechanism="zero"):
    """snn.Alpha(alpha, beta, threshold, reset_mechanism=...) (always a delayed reset)."""
    r = "heaviside(mem - threshold, 0)"
    tau_alpha = ("(log(clamp(alpha, 0, 1)) / (log(clamp(beta, 0, 1)) - log(clamp(alpha, 0, 1)))"
                 " + 1)")
    exc = "(clamp(alpha, 0, 1) * syn_exc + x)"
    inh = "(clamp(beta, 0, 1) * syn_inh - x)"
    if reset_mechanism == "zero":
        charge = {"syn_exc": f"(1 - {r}) * {exc}", "syn_inh": f"(1 - {r}) * {inh}",
                  "mem": f"(1 - {r}) * {tau_alpha} * ({exc} + {inh})"}
    else:  # subtract: mem adds r times the PREVIOUS syn_inh
        charge = {"syn_exc": f"{exc} - {r} * threshold", "syn_inh": f"(1 - {r}) * {inh}",
                  "mem": f"{tau_alpha} * ({exc} + {inh}) + {r} * syn_inh"}
    return ng.NeuronModel(f"snntorch_alpha_{reset_mechanism}",
                          states={"mem": 0.0, "syn_exc": 0.0, "syn_inh": 0.0},
                          params={"alpha": 0.9, "beta": 0.8, "threshold": 1.0},
                          charge=charge,
                          fire="mem - threshold", fire_strict=True,
                          reset={})


def snntorch_lapicque(reset_mechanism="subtract"):
    """snn.Lapicque(R=..., C=..., time_step=..., threshold, reset_mechanism=...)."""
    r = "heaviside(mem - threshold, 0)"
    c = "(x * R * (1 / (R * C)) * time_step + (1 - time_step / (R * C)) * mem)"
    mem = {"subtract": f"{c} - {r} * threshold", "zero": f"(1 - {r}) * {c}"}[reset_mechanism]
    return ng.NeuronModel(f"snntorch_lapicque_{reset_mechanism}", states={"mem": 0.0},
                          params={"R": 1.0, "C": 1.0, "time_step": 1.0, "threshold": 1.0},
                          charge={"mem": mem},
                          fire="mem - threshold", fire_strict=True,
                          reset={})


def norse_lif():
    """norse.torch.LIFCell(LIFParameters(...), dt=0.001) (method="super")."""
    return ng.NeuronModel(
        "norse_lif", states={"v": "v_leak", "i": 0.0},
        params={"dt": 0.001, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "v_leak": 0.0,
                "v_th": 1.0, "v_reset": 0.0},
        charge={"v": "v + dt * tau_mem_inv * ((v_leak - v) + (i + x))",
                "i": "(i + x) - dt * tau_syn_inv * (i + x)"},
        fire="v - v_th", fire_strict=True,                     # v > v_th
        reset={"v": "(1 - spike) * v + spike * v_reset"})          # Norse does not detach


def norse_adex():
    """norse.torch.LIFAdExCell(LIFAdExParameters(...), dt=0.001)."""
    return ng.NeuronModel(
        "norse_adex", states={"v": "v_leak", "i": 0.0, "a": 0.0},
        params={"dt": 0.001, "adaptation_current": 4.0, "adaptation_spike": 0.02,
                "delta_T": 0.5, "tau_ada_inv": 2.0, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0,
                "v_leak": 0.0, "v_th": 1.0, "v_reset": 0.0},
        charge={"v": "v + dt * tau_mem_inv * ((v_leak - v) + delta_T * exp((v - v_th) / delta_T)"
                     " + (i + x) - a)",
                "i": "(i + x) - dt * tau_syn_inv * (i + x)",
                "a": "a + dt * tau_ada_inv * (adaptation_current * (v - v_leak) - a)"},
        fire="v - v_th", fire_strict=True,
        reset={"v": "(1 - spike) * v + spike * v_reset", "a": "a + spike * adaptation_spike"})


def norse_lsnn():
    """norse.torch.LSNNCell(LSNNParameters(...), dt=0.001): b is the whole threshold."""
    return ng.NeuronModel(
        "norse_lsnn", states={"v": "v_leak", "i": 0.0, "b": "v_th"},
        params={"dt": 0.001, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0,
                "tau_adapt_inv": 1 / 800, "v_leak": 0.0, "v_th": 1.0, "v_reset": 0.0,
                "beta": 1.8},
        charge={"v": "v + dt * tau_mem_inv * ((v_leak - v) + i)",  # the previous current
                "i": "i - dt * tau_syn_inv * i + x",                 # x enters after the v update
                "b": "b + dt * tau_adapt_inv * (v_th - b)"},
        fire="v - b", fire_strict=True,                             # v > b
        reset={"v": "(1 - spike) * v + spike * v_reset", "b": "b + spike * beta"})


def norse_lif_refrac():
    """norse.torch.LIFRefracCell(LIFRefracParameters(LIFParameters(...), rho_reset), dt=0.001):
    Norse's refractory mask m = threshold(rho) (rho > 0, with the SuperSpike gradient), the
    output z = (1 - m) z0 (graded output), v frozen at its previous value while refractory
    (v_prev: the previous v, kept by the charge), rho counting down through a relu."""
    m = "(sg_heaviside(rho) - where(rho == 0, 1, 0))"          # rho > 0, surrogate gradient
    z = f"(1 - {m}) * spike"
    return ng.NeuronModel(
        "norse_lif_refrac", states={"v": "v_leak", "i": 0.0, "rho": 0.0, "v_prev": "v_leak"},
        params={"dt": 0.001, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "v_leak": 0.0,
                "v_th": 1.0, "v_reset": 0.0, "rho_reset": 5.0},
        charge={"v": "v + dt * tau_mem_inv * ((v_leak - v) + (i + x))",
                "i": "(i + x) - dt * tau_syn_inv * (i + x)", "v_prev": "v"},
        fire="v - v_th", fire_strict=True,                     # z0: v > v_th
        output=z,
        reset={"v": f"(1 - {m}) * ((1 - spike) * v + spike * v_reset) + {m} * v_prev",
               "rho": f"(1 - {z}) * where(rho - {m} > 0, rho - {m}, 0) + {z} * rho_reset"})


def flexsn_clamped_lif():
    """SpikingJelly 2.0 FlexSN with the core ``flexsn_core``: hard reset, floor at v_min."""
    return ng.NeuronModel(
        "flexsn_clamped_lif", states={"v": 0.0}, params={"decay": 0.9, "v_th": 1.0, "v_min": -0.5},
        charge={"v": "decay * v + x"},
        fire="v - v_th",                                   # SpikingJelly: u >= 0, as neurogen
        reset={"v": "clamp(where(spike > 0, 0, v), v_min)"})


# ------------------------------------------------------------------ the peers

class ATan64(snn.surrogate.ATan):
    """snnTorch's ATan (its own backward) with a forward that keeps the dtype: snnTorch's
    ``(u > 0).float()`` makes float32 spikes and float32 reset products."""

    @staticmethod
    def forward(ctx, input_, alpha):
        ctx.save_for_backward(input_)
        ctx.alpha = alpha
        return (input_ > 0).to(input_.dtype)


def atan64(u):
    return ATan64.apply(u, 2.0)


def flexsn_core(x, v, decay, v_th, v_min):
    """SpikingJelly 2.0 FlexSN core: (*step inputs, *states, *static inputs)."""
    h = decay * v + x
    spike = sj_surrogate.atan.apply(h - v_th, 2.0)           # (h - v_th >= 0), ATan(alpha=2)
    v_new = torch.clamp(torch.where(spike > 0, torch.zeros_like(h), h), min=v_min)
    return spike, v_new


def _loop(step, x, values, names):
    """Run ``step(x_t, values) -> (spike, values)`` over time; the per-step states by name."""
    spikes, seqs = [], {s: [] for s in names}
    for t in range(x.shape[0]):
        spike, values = step(x[t], values)
        spikes.append(spike)
        for s, value in zip(names, values):
            seqs[s].append(value.expand_as(x[t]))
    return torch.stack(spikes), {s: torch.stack(v) for s, v in seqs.items()}


# the order in which each snnTorch neuron takes and returns its states
SNNTORCH_STATES = {snn.Leaky: ("mem",), snn.Lapicque: ("mem",), snn.Synaptic: ("syn", "mem"),
                   snn.Alpha: ("syn_exc", "syn_inh", "mem")}


def snntorch_step(node):
    def step(x_t, values):
        out = node(x_t) if values is None else node(x_t, *values)  # None: snnTorch's zeros
        return out[0], out[1:]
    return step


def peer_snntorch(cls, reset_mechanism, **kw):
    def run(p, x, init, fixed):
        learn = {f"learn_{k}": True for k in ("alpha", "beta", "threshold")
                 if k in p and k not in fixed}
        node = cls(**p, spike_grad=atan64, reset_mechanism=reset_mechanism, **learn, **kw)
        leaves = {k: getattr(node, k) for k in p if k not in fixed}
        names = SNNTORCH_STATES[cls]
        values = None if init is None else tuple(init[s] for s in names)
        spikes, seqs = _loop(snntorch_step(node), x, values, names)
        return spikes, seqs, leaves
    return run


def peer_norse(cell_cls, params_cls, state_cls):
    names = state_cls._fields

    def run(p, x, init, fixed):
        leaves = {k: v.clone().requires_grad_() for k, v in p.items() if k not in fixed}
        values = {k: leaves.get(k, v) for k, v in p.items() if k != "dt"}
        cell = cell_cls(params_cls(**values, method="super", alpha=torch.tensor(100.0, dtype=D)),
                        dt=p["dt"].item())
        state = None if init is None else state_cls(*(init[s] for s in names))  # None: fallback
        spikes, seqs = _loop(lambda x_t, s: cell(x_t, s), x, state, names)
        return spikes, seqs, leaves
    return run


def peer_norse_refrac(p, x, init, fixed):
    leaves = {k: v.clone().requires_grad_() for k, v in p.items() if k not in fixed}
    values = {k: leaves.get(k, v) for k, v in p.items() if k not in ("dt", "rho_reset")}
    lif = LIFParameters(**values, method="super", alpha=torch.tensor(100.0, dtype=D))
    cell = LIFRefracCell(LIFRefracParameters(lif, leaves.get("rho_reset", p["rho_reset"])),
                         dt=p["dt"].item())

    def step(x_t, vals):
        state = None if vals is None else LIFRefracFeedForwardState(
            LIFFeedForwardState(vals[0], vals[1]), vals[2])             # None: Norse's fallback
        z, s = cell(x_t, state)
        return z, (s.lif.v, s.lif.i, s.rho)
    values0 = None if init is None else (init["v"], init["i"], init["rho"])
    spikes, seqs = _loop(step, x, values0, ("v", "i", "rho"))
    return spikes, seqs, leaves


def peer_flexsn(p, x, init, fixed):
    leaves = {k: torch.nn.Parameter(v.clone()) for k, v in p.items()}   # learnable static inputs
    node = FlexSN(flexsn_core, num_states=1,
                  static_inputs=(leaves["decay"], leaves["v_th"], leaves["v_min"]),
                  step_mode="m", store_state_seqs=True)
    if init is not None:
        node.states = (init["v"],)                                        # else zeros
    spikes = node(x)                                                      # CPU: its torch scan
    return spikes, {"v": node.state_seqs[0]}, leaves


# ------------------------------------------------------------------ cases

ATAN = ng.surrogate.ATan(alpha=2.0)              # snnTorch's atan() and SpikingJelly's ATan()
SUPERSPIKE = ng.surrogate.SuperSpike(alpha=1.0)  # Norse's SuperSpike: 1 / (|u| + 1)^2
T, N = 12, 32


def _u(lo, hi):
    return lambda gen: lo + (hi - lo) * torch.rand(N, generator=gen, dtype=D)


CASES = {}


def case(name, model, surrogate, peer, params, x, init, fixed=(), fixed_by_default=(),
         observed=None, ties=None, zero_grads=()):
    """``x``: (scale, shift) of a normal input, or a function of a generator; ``init``:
    state -> sampler of a random initial state; ``fixed``: parameters the peer cannot learn;
    ``fixed_by_default``: those kept fixed when the peer starts from its own initial states;
    ``observed``: the states the peer returns (default: all); ``ties``: for a case built to
    put the membrane exactly on the threshold (not in test_matches_peer), the model with
    the other convention (u >= 0 for a strict peer, u > 0 for SpikingJelly);
    ``zero_grads``: gradients that are zero in the peer (all others must not be)."""
    CASES[name] = dict(model=model, surrogate=surrogate, peer=peer, params=params, x=x,
                       init=init, fixed=tuple(fixed), fixed_by_default=tuple(fixed_by_default),
                       observed=observed, ties=ties, zero_grads=zero_grads)


for rm in ("subtract", "zero"):
    case(f"snntorch-Leaky-{rm}", lambda rm=rm: snntorch_leaky(rm), ATAN,
         peer_snntorch(snn.Leaky, rm), {"beta": 0.85, "threshold": 0.9}, (0.9, 0.35),
         {"mem": _u(-0.5, 1.6)})
    case(f"snntorch-Synaptic-{rm}", lambda rm=rm: snntorch_synaptic(rm), ATAN,
         peer_snntorch(snn.Synaptic, rm), {"alpha": 0.7, "beta": 0.85, "threshold": 0.9},
         (0.6, 0.1), {"mem": _u(-0.5, 1.6), "syn": _u(-0.5, 0.5)})
    # snnTorch's Alpha cannot learn alpha (learn_alpha=True raises a TypeError)
    case(f"snntorch-Alpha-{rm}", lambda rm=rm: snntorch_alpha(rm), ATAN,
         peer_snntorch(snn.Alpha, rm), {"alpha": 0.9, "beta": 0.75, "threshold": 0.9},
         {"subtract": (1.5, 0.5), "zero": (1.5, 2.0)}[rm],
         {"mem": _u(-0.5, 1.6), "syn_exc": _u(0.0, 1.0), "syn_inh": _u(-1.0, 0.0)},
         fixed=("alpha",), zero_grads=("grad_init_mem",))  # mem_prev: only the detached reset
    case(f"snntorch-Lapicque-{rm}", lambda rm=rm: snntorch_lapicque(rm), ATAN,
         peer_snntorch(snn.Lapicque, rm), {"R": 2.0, "C": 3.0, "time_step": 0.5, "threshold": 0.9},
         (4.0, 3.0), {"mem": _u(-0.5, 1.6)}, fixed=("R", "C", "time_step"))
    # reset_delay=False: the reset also right after the spike (an extra state r, not returned)
    case(f"snntorch-Leaky-{rm}-reset_delay=False", lambda rm=rm: snntorch_leaky(rm, False), ATAN,
         peer_snntorch(snn.Leaky, rm, reset_delay=False), {"beta": 0.85, "threshold": 0.9},
         (0.9, 0.35), {"mem": _u(-0.5, 1.6)}, observed=("mem",))
case("snntorch-Leaky-subtract-per-neuron", lambda: snntorch_leaky("subtract"), ATAN,
     peer_snntorch(snn.Leaky, "subtract"),
     {"beta": torch.linspace(0.5, 0.95, N).tolist(),
      "threshold": torch.linspace(0.7, 1.2, N).tolist()},
     (0.9, 0.35), {"mem": _u(-0.5, 1.6)})
case("norse-LIFCell", norse_lif, SUPERSPIKE,
     peer_norse(LIFCell, LIFParameters, LIFFeedForwardState),
     {"dt": 0.001, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "v_leak": 0.1, "v_th": 1.0,
      "v_reset": -0.1},
     (1.5, 1.0), {"v": _u(-0.5, 1.5), "i": _u(-0.5, 1.0)},
     fixed=("dt",), fixed_by_default=("v_leak",))
case("norse-LIFAdExCell", norse_adex, SUPERSPIKE,
     peer_norse(LIFAdExCell, LIFAdExParameters, LIFAdExFeedForwardState),
     {"dt": 0.001, "adaptation_current": 4.0, "adaptation_spike": 0.3, "delta_T": 0.5,
      "tau_ada_inv": 20.0, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "v_leak": 0.1,
      "v_th": 1.0, "v_reset": -0.1},
     (1.5, 2.0), {"v": _u(-0.5, 1.2), "i": _u(-0.5, 1.0), "a": _u(0.0, 0.5)},
     fixed=("dt",), fixed_by_default=("v_leak",))
case("norse-LSNNCell", norse_lsnn, SUPERSPIKE,
     peer_norse(LSNNCell, LSNNParameters, LSNNFeedForwardState),
     {"dt": 0.001, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "tau_adapt_inv": 50.0,
      "v_leak": 0.1, "v_th": 1.0, "v_reset": -0.1, "beta": 0.3},
     (1.5, 2.0), {"v": _u(-0.5, 1.5), "i": _u(-0.5, 1.5), "b": _u(0.8, 1.5)},
     fixed=("dt",), fixed_by_default=("v_leak", "v_th"))
case("norse-LIFRefracCell", norse_lif_refrac, SUPERSPIKE, peer_norse_refrac,
     {"dt": 0.001, "tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "v_leak": 0.1, "v_th": 1.0,
      "v_reset": -0.1, "rho_reset": 3.0},
     (1.5, 2.5), {"v": _u(-0.5, 1.5), "i": _u(-0.5, 1.0),
                  "rho": lambda gen: torch.randint(0, 4, (N,), generator=gen).to(D)},
     fixed=("dt",), fixed_by_default=("v_leak",), observed=("v", "i", "rho"))
case("spikingjelly-FlexSN", flexsn_clamped_lif, ATAN, peer_flexsn,
     {"decay": 0.8, "v_th": torch.linspace(0.8, 1.2, N).tolist(), "v_min": -0.4},
     (1.2, 0.2), {"v": _u(-0.8, 1.5)})


# exact ties: multiples of 1/4 with coefficients 1/2 keep every sum exact, so the membrane
# lands exactly on the threshold now and then
def _quarters(*shape):
    return lambda gen: torch.randint(-2, 7, shape, generator=gen).to(D) / 4


for rm in ("subtract", "zero"):
    case(f"ties-snntorch-Leaky-{rm}", lambda rm=rm: snntorch_leaky(rm), ATAN,
         peer_snntorch(snn.Leaky, rm), {"beta": 0.5, "threshold": 1.0}, _quarters(T, N),
         {"mem": _quarters(N)},
         ties=lambda rm=rm: snntorch_leaky(rm).replace(fire_strict=False))
case("ties-norse-LIFCell", norse_lif, SUPERSPIKE,
     peer_norse(LIFCell, LIFParameters, LIFFeedForwardState),
     {"dt": 0.25, "tau_syn_inv": 2.0, "tau_mem_inv": 2.0, "v_leak": 0.0, "v_th": 1.0,
      "v_reset": 0.0}, _quarters(T, N), {"v": _quarters(N), "i": _quarters(N)}, fixed=("dt",),
     ties=lambda: norse_lif().replace(fire_strict=False))
case("ties-spikingjelly-FlexSN", flexsn_clamped_lif, ATAN, peer_flexsn,
     {"decay": 0.5, "v_th": 1.0, "v_min": -0.5}, _quarters(T, N), {"v": _quarters(N)},
     ties=lambda: flexsn_clamped_lif().replace(fire_strict=True))
STRICT_TIES = ["ties-snntorch-Leaky-subtract", "ties-snntorch-Leaky-zero", "ties-norse-LIFCell"]


# ------------------------------------------------------------------ running

def setup(name, init_kind):
    """Input, initial states (None: each library's own) and float64 parameters of a case."""
    c = CASES[name]
    gen = torch.Generator().manual_seed(sum(map(ord, name)) + (init_kind == "random"))
    if callable(c["x"]):
        x = c["x"](gen)
    else:
        scale, shift = c["x"]
        x = torch.randn(T, N, generator=gen, dtype=D) * scale + shift
    init = {s: f(gen) for s, f in c["init"].items()} if init_kind == "random" else None
    params = {k: torch.tensor(v, dtype=D) for k, v in c["params"].items()}
    fixed = c["fixed"] + (c["fixed_by_default"] if init is None else ())
    return x, init, params, fixed


def loss_of(name, states, spikes, seqs, finals):
    """A random linear loss: on the spikes and on each state sequence in ``seqs`` (every
    state, or the first one alone), plus the final states in ``finals``."""
    gen = torch.Generator().manual_seed(sum(map(ord, name)) + 7)
    loss = (spikes * torch.randn(T, N, generator=gen, dtype=D)).sum()
    for s in states:
        w_seq = torch.randn(T, N, generator=gen, dtype=D)
        w_final = torch.randn(N, generator=gen, dtype=D)
        if s in seqs:
            loss = loss + (seqs[s] * w_seq).sum()
        if s in finals:
            loss = loss + (finals[s] * w_final).sum()
    return loss


def results(loss, spikes, seqs, finals, x, inits, leaves):
    wrt = [x] + list(inits.values()) + list(leaves.values())
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    out = {"spikes": spikes.detach(), "grad_x": grads[0]}
    out.update({f"seq_{s}": v.detach() for s, v in seqs.items()})
    out.update({f"final_{s}": v.detach() for s, v in finals.items()})
    out.update({f"grad_init_{s}": g for s, g in zip(inits, grads[1:])})
    out.update({f"grad_{k}": g for k, g in zip(leaves, grads[1 + len(inits):])})
    return out


def observed(name):
    """The states compared: those the peer returns."""
    c = CASES[name]
    return c["observed"] or c["model"]().state_names


def run_peer(name, init_kind, per_step):
    c = CASES[name]
    states = observed(name)
    x, init, params, fixed = setup(name, init_kind)
    x = x.requires_grad_()
    inits = {} if init is None else {s: v.requires_grad_() for s, v in init.items()}
    spikes, seqs, leaves = c["peer"](params, x, None if init is None else inits, fixed)
    finals = {s: seqs[s][-1] for s in states}
    seqs = {s: seqs[s] for s in (states if per_step else states[:1])}
    if per_step:
        finals = {}
    return results(loss_of(name, states, spikes, seqs, finals), spikes, seqs, finals, x, inits,
                   leaves)


def run_neurogen(name, init_kind, per_step, backend, model=None):
    """``per_step``: one call per step, every state recorded after each; else one call,
    the first state's ``v_seq`` and the final states. ``model`` replaces the case's."""
    c = CASES[name]
    m = model or c["model"]()
    states = observed(name)
    x, init, params, fixed = setup(name, init_kind)
    x = x.requires_grad_()
    kw = {k: (v.item() if v.dim() == 0 else v) if k in fixed else torch.nn.Parameter(v)
          for k, v in params.items()}
    node = m.module(step_mode="m", backend=backend, surrogate_function=c["surrogate"],
                    store_v_seq=not per_step, **kw)
    inits = {} if init is None else {s: v.requires_grad_() for s, v in init.items()}
    for s, v in inits.items():
        setattr(node, s, v)
    if per_step:
        spikes, seqs = [], {s: [] for s in states}
        for t in range(T):
            spikes.append(node(x[t:t + 1])[0])
            for s in states:
                seqs[s].append(getattr(node, s))
        spikes, seqs, finals = torch.stack(spikes), {s: torch.stack(v) for s, v in seqs.items()}, {}
    else:
        spikes = node(x)
        seqs = {states[0]: node.v_seq}
        finals = {s: getattr(node, s) for s in states}
    leaves = {k: getattr(node, k) for k in params if k not in fixed}
    return results(loss_of(name, states, spikes, seqs, finals), spikes, seqs, finals, x,
                   inits, leaves)


def assert_same(got, ref, label):
    assert got.keys() == ref.keys(), label
    assert torch.equal(got["spikes"], ref["spikes"]), f"{label}: spike trains differ"
    for k in ref:
        tol = GRAD_TOL if k.startswith("grad") else FWD_TOL
        torch.testing.assert_close(got[k], ref[k], rtol=tol, atol=tol,
                                   msg=lambda m, k=k: f"{label}, {k}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("init_kind", ["default", "random"])
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["ties"] is None])
def test_matches_peer(name, init_kind, backend):
    for per_step in (False, True):
        ref = run_peer(name, init_kind, per_step)
        label = f"{name}, init={init_kind}, {backend}, per_step={per_step}"
        rate = ref["spikes"].mean().item()
        assert 0.1 <= rate <= 0.6, f"{label}: spike rate {rate:.2f}"
        zero = [k for k in ref if k.startswith("grad") and not ref[k].abs().sum() > 0]
        assert zero == [k for k in CASES[name]["zero_grads"] if k in ref], f"{label}: {zero}"
        assert_same(run_neurogen(name, init_kind, per_step, backend), ref, label)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["ties"] is not None])
def test_strict_threshold_at_exact_ties(name, backend):
    """At u == 0 exactly snnTorch and Norse do not spike, SpikingJelly does: the declared
    models (``fire_strict=True`` for the first two) agree with each peer there, gradients
    included (the surrogate at u = 0), and the other convention would not."""
    for per_step in (False, True):
        ref = run_peer(name, "random", per_step)
        got = run_neurogen(name, "random", per_step, backend)
        assert_same(got, ref, f"{name}, {backend}, per_step={per_step}")
    # the other convention differs from the peer: ties were hit, and the construction matters
    other = run_neurogen(name, "random", False, "torch", model=CASES[name]["ties"]())
    assert not torch.equal(other["spikes"], ref["spikes"]), f"{name}: no tie was hit"


@pytest.mark.parametrize("name", STRICT_TIES)
def test_surrogate_gradient_at_ties(name):
    """The strict threshold's gradient at a tie is the surrogate's at 0, as the peers':
    the earlier construction where(u == 0, -1, u) (exact spikes, no gradient at the tie)
    fails this, which the first assertion checks."""
    ref = run_peer(name, "random", False)
    model = CASES[name]["model"]()
    by_where = model.replace(fire=f"where({model.fire} == 0, -1, {model.fire})",
                             fire_strict=False)
    with pytest.raises(AssertionError):
        assert_same(run_neurogen(name, "random", False, "torch", model=by_where), ref, name)
    assert_same(run_neurogen(name, "random", False, "torch"), ref, name)


def test_atan64_is_snntorchs_atan():
    """ATan64 changes only the dtype of snnTorch's ATan: the same spikes, and gradients
    equal up to the float32 rounding that snnTorch's own spikes introduce."""
    x = torch.randn(T, N, generator=torch.Generator().manual_seed(3), dtype=D) + 0.4
    w = torch.randn(T, N, generator=torch.Generator().manual_seed(4), dtype=D)
    out = []
    for spike_grad in (None, atan64):
        node = snn.Leaky(beta=torch.tensor(0.85, dtype=D), threshold=torch.tensor(1.0, dtype=D),
                         learn_beta=True, spike_grad=spike_grad)
        xs = x.clone().requires_grad_()
        spikes, mems = _loop(snntorch_step(node), xs, None, ("mem",))
        loss = (spikes * w).sum() + (mems["mem"] * w).sum()
        out.append((spikes.double(), mems["mem"], *torch.autograd.grad(loss, [xs, node.beta])))
    (s32, m32, gx32, gb32), (s64, m64, gx64, gb64) = out
    assert torch.equal(s32, s64) and torch.equal(m32, m64) and 0.1 < s64.mean() < 0.6
    torch.testing.assert_close(gx32, gx64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gb32, gb64, rtol=1e-6, atol=1e-6)


DOC_VARIANTS = {snntorch_leaky: [("subtract",), ("zero",), ("subtract", False), ("zero", False)],
                snntorch_synaptic: [("subtract",), ("zero",)],
                snntorch_alpha: [("subtract",), ("zero",)],
                snntorch_lapicque: [("subtract",), ("zero",)],
                norse_lif: [()], norse_adex: [()], norse_lsnn: [()], norse_lif_refrac: [()],
                flexsn_clamped_lif: [()]}


def test_docs_declare_the_same_models():
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    head = "## Neurons from other libraries"
    assert head in text, "docs/models.md lost its 'Neurons from other libraries' section"
    section = text.split(head, 1)[1].split("\n## ", 1)[0]
    namespace = {"__name__": "docs_peer_section"}
    for block in re.findall(r"^```python\n(.*?)^```", section, re.S | re.M):
        exec(compile(block, "docs/models.md", "exec"), namespace)
    for fn, variants in DOC_VARIANTS.items():
        for args in variants:
            assert namespace[fn.__name__](*args).spec_hash == fn(*args).spec_hash, (fn, args)
