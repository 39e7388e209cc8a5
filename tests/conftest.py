import shutil

import pytest
import torch

import neurogen as ng


def has_gpu():
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


needs_cxx = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")


def run_and_grad(model, backend, x_seq, params, init=None, learnable=(), seed=0,
                 record_all=False, final_loss=True, **module_kw):
    """Run ``model`` as a module and return outputs and gradients of a random loss.

    ``params``: name -> float or tensor; names in ``learnable`` become nn.Parameters.
    ``init``: optional name -> tensor of initial states (given requires_grad).
    ``record_all``: record every state (``seq_<s>``) and put a loss term on each.
    ``final_loss=False``: no loss term on the final states (their gradients are None, as
    in a loss on the outputs alone).
    Returns a dict of tensors (all detached); a model with a graded ``output`` gives it
    as ``output`` (compared within tolerance) instead of ``spikes`` (compared exactly).
    """
    if record_all:
        module_kw["record"] = model.state_names
    kw = {}
    for k, v in params.items():
        if k in learnable:
            kw[k] = torch.nn.Parameter(torch.as_tensor(v, dtype=x_seq.dtype).clone())
        else:
            kw[k] = v
    node = model.module(step_mode="m", backend=backend, store_v_seq=True, **kw, **module_kw)
    node.to(x_seq.device)
    x = x_seq.clone().requires_grad_()
    inits = {}
    if init is not None:
        for s, t in init.items():
            inits[s] = t.clone().requires_grad_()
            setattr(node, s, inits[s])
    spikes = node(x)
    finals = {s: getattr(node, s) for s in model.state_names}
    g = torch.Generator().manual_seed(seed)
    # weights drawn in float64 then cast: the same loss for every dtype
    w_s = torch.randn(spikes.shape, generator=g, dtype=torch.float64).to(x)
    w_v = torch.randn(spikes.shape, generator=g, dtype=torch.float64).to(x)
    loss = (spikes * w_s).sum() + (node.v_seq * w_v).sum()
    seqs = {s: getattr(node, f"{s}_seq") for s in (model.state_names if record_all else ())}
    for s, q in seqs.items():
        loss = loss + (q * torch.randn(q.shape, generator=g, dtype=torch.float64).to(x)).sum()
    for s in model.state_names:
        w_f = torch.randn(finals[s].shape, generator=g, dtype=torch.float64).to(x)
        if final_loss:
            loss = loss + (finals[s] * w_f).sum()
    wrt = [x] + list(inits.values()) + [getattr(node, k) for k in learnable]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    out = {"spikes" if model.output is None else "output": spikes.detach(),
           "v_seq": node.v_seq.detach(), "grad_x": grads[0]}
    out.update({f"seq_{s}": q.detach() for s, q in seqs.items()})
    out.update({f"final_{s}": f.detach() for s, f in finals.items()})
    out.update({f"grad_init_{s}": gr for s, gr in zip(inits, grads[1:1 + len(inits)])})
    out.update({f"grad_{k}": gr for k, gr in zip(learnable, grads[1 + len(inits):])})
    return out


def assert_match(got, ref, fwd_tol=1e-10, grad_tol=1e-8):
    assert got.keys() == ref.keys()
    if "spikes" in ref:
        assert torch.equal(got["spikes"], ref["spikes"]), "spike trains differ"
    for k in ref:
        tol = grad_tol if k.startswith("grad") else fwd_tol
        # equal_nan: a model whose dynamics overflow must overflow identically in both
        torch.testing.assert_close(got[k], ref[k], rtol=tol, atol=tol, equal_nan=True,
                                   msg=lambda m: f"{k}: {m}")


@pytest.fixture
def adex():
    import sympy as sp
    v, w, x = sp.symbols("v w x")
    tau, a, b, tau_w, v_th, v_reset, d_t, th = sp.symbols(
        "tau a b tau_w v_threshold v_reset delta_T theta_rh")
    return ng.NeuronModel(
        name="adex",
        states={v: v_reset, w: 0.0},
        params={tau: 2.0, a: 0.1, b: 0.05, tau_w: 5.0, v_th: 1.0, v_reset: 0.0,
                d_t: 0.5, th: 0.8},
        charge={v: v + (-v + d_t * sp.exp((v - th) / d_t) - w + x) / tau},
        adaptation={w: w + (a * v - w) / tau_w},
        fire=v - v_th,
        reset={v: (1 - ng.spike_d) * v + ng.spike * v_reset, w: w + b * ng.spike},
    )
