"""Library neurons against SpikingJelly 2.0 (CPU, float64, its torch path).

Configurations are those where docs/semantics.md says the semantics coincide:
the seed's adaptive hard reset (``spike`` not detached in the jump to
``v_reset``) differs from SpikingJelly only with ``detach_reset=True`` and
``v_reset != 0``.
"""
import os
import zlib

import pytest
import torch

import neurogen as ng

from conftest import needs_cxx

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
sj_surrogate = pytest.importorskip("spikingjelly.activation_based.surrogate")

SEED_OFFSET = int(os.environ.get("NEUROGEN_TEST_SEED", "0"))
SURROGATES = ["Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike",
              "Erf", "PiecewiseLeakyReLU", "Rect"]


def surrogate_pair(name, gen):
    if name == "PiecewiseLeakyReLU":
        kw = dict(w=0.5 + torch.rand(1, generator=gen).item(), c=0.02)
    else:
        kw = dict(alpha=0.5 + 3 * torch.rand(1, generator=gen).item())
    return getattr(ng.surrogate, name)(**kw), getattr(sj_surrogate, name)(**kw)


def neuron_cases(gen):
    r = lambda lo, hi: lo + (hi - lo) * torch.rand(1, generator=gen).item()  # noqa: E731
    return {
        "IFNode": dict(),
        "LIFNode": dict(tau=r(1.5, 4.0)),
        "LIFNode-no-decay-input": dict(tau=r(1.5, 4.0), decay_input=False),
        "ParametricLIFNode": dict(init_tau=r(1.5, 4.0)),
        "ParametricLIFNode-no-decay-input": dict(init_tau=r(1.5, 4.0), decay_input=False),
        # SpikingJelly asserts v_rest >= v_reset for QIF and EIF
        "QIFNode": dict(tau=r(1.5, 4.0), v_c=r(0.6, 0.9), a0=r(0.5, 1.5), v_rest=r(0.0, 0.1)),
        "EIFNode": dict(tau=r(1.5, 4.0), delta_T=r(0.5, 1.5), theta_rh=r(0.6, 0.9),
                        v_rest=r(0.0, 0.1)),
        "IzhikevichNode": dict(tau=r(1.5, 4.0), v_c=r(0.6, 0.9), a0=r(0.5, 1.5),
                               v_rest=r(-0.2, 0.0), w_rest=r(0.0, 0.1), tau_w=r(1.5, 4.0),
                               a=r(0.1, 0.5), b=r(0.05, 0.2)),
        "CUBALIFNode": dict(c_decay=r(0.3, 0.8), v_decay=r(0.5, 0.9), v_threshold=r(0.4, 0.8)),
    }


def build(name, kw, v_reset, surrogates, detach, store_v_seq, step_mode):
    cls = name.split("-")[0]
    ours_sg, sj_sg = surrogates
    common = dict(v_reset=v_reset, surrogate_function=None, detach_reset=detach)
    ours = getattr(ng.neuron, cls)(**{**kw, **common, "surrogate_function": ours_sg},
                                   step_mode=step_mode, backend="cpu", store_v_seq=store_v_seq)
    if cls == "CUBALIFNode":
        theirs = sj_neuron.CUBALIFNode(**kw, v_reset=v_reset, surrogate_function=sj_sg)
        theirs.detach_reset = detach
        theirs.step_mode = step_mode
        theirs.store_v_seq = store_v_seq
    else:
        theirs = getattr(sj_neuron, cls)(**{**kw, **common, "surrogate_function": sj_sg},
                                         step_mode=step_mode, store_v_seq=store_v_seq)
    return ours.double(), theirs.double()


def run(node, x, step_mode, state_names, gen_seed, learn):
    x = x.clone().requires_grad_()
    if step_mode == "m":
        spikes = node(x)
    else:
        spikes = torch.stack([node(x[t]) for t in range(x.shape[0])])
    g = torch.Generator().manual_seed(gen_seed)
    loss = (spikes * torch.randn(spikes.shape, generator=g, dtype=x.dtype)).sum()
    finals = {}
    for s in state_names:
        finals[s] = getattr(node, s)
        loss = loss + (finals[s] * torch.randn(finals[s].shape, generator=g, dtype=x.dtype)).sum()
    v_seq = node.v_seq if node.store_v_seq else None
    if v_seq is not None:
        loss = loss + (v_seq * torch.randn(v_seq.shape, generator=g, dtype=x.dtype)).sum()
    wrt = [x] + ([node.w] if learn else [])
    grads = torch.autograd.grad(loss, wrt)
    return spikes.detach(), v_seq, finals, grads


CASES = [
    # (v_reset, detach_reset) pairs where the seed and SpikingJelly agree for every neuron
    (0.0, False), (0.0, True), (None, False), (None, True), (-0.07, False),
]


@needs_cxx
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("shape", [(37,), (2, 3, 4, 5)])
def test_library_matches_spikingjelly(surrogate, case, shape):
    v_reset, detach = CASES[case]
    seed = zlib.crc32(f"{surrogate}{case}{shape}".encode()) % 10_000 + SEED_OFFSET
    gen = torch.Generator().manual_seed(seed)
    T = 1 + int(torch.randint(0, 24, (1,), generator=gen))
    for name, kw in neuron_cases(gen).items():
        surrogates = surrogate_pair(surrogate, gen)
        store = bool(torch.randint(0, 2, (1,), generator=gen))
        step_mode = "m" if torch.randint(0, 3, (1,), generator=gen) else "s"
        ours, theirs = build(name, kw, v_reset, surrogates, detach, store, step_mode)
        states = ours.model.state_names
        learn = name.startswith("ParametricLIFNode")
        x = torch.randn(T, *shape, generator=gen, dtype=torch.float64) * 0.7 + 0.6
        a = run(ours, x, step_mode, states, seed, learn)
        b = run(theirs, x, step_mode, states, seed, learn)
        label = f"{name} {surrogate} v_reset={v_reset} detach={detach} T={T} {step_mode}"
        assert torch.equal(a[0], b[0]), f"spikes differ: {label}"
        if store:
            torch.testing.assert_close(a[1], b[1], rtol=1e-10, atol=1e-10, msg=label,
                                       equal_nan=True)
        for s in states:
            torch.testing.assert_close(a[2][s], b[2][s].double(), rtol=1e-10, atol=1e-10,
                                       msg=f"final {s}: {label}", equal_nan=True)
        for ga, gb in zip(a[3], b[3]):
            # soft-reset QIF/EIF can diverge to inf/nan: both libraries must then agree on it
            torch.testing.assert_close(ga, gb, rtol=1e-8, atol=1e-8, msg=f"grads: {label}",
                                       equal_nan=True)
