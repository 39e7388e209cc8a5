"""RecurrentLayer: the fused recurrent kernels against a plain torch loop written here
(``torch.nn.functional.linear`` for the recurrent product, the neuron's torch backend one
step per call), in float64: spikes identical, states 1e-10, gradients of the input, the
weight, the bias, learnable parameters, initial states and the carried output 1e-8."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import neurogen as ng
import neurogen.autograd  # noqa: F401  (ng.autograd.AVAILABLE)
from neurogen.config import make_config
from neurogen.lower import lower
from neurogen.targets.cuda import compile_ptx, recurrent_launch, render_cuda

from conftest import needs_cxx
from strategies import structures
from test_structure_fuzz import param_values

pytestmark = needs_cxx
BACKENDS = ["cpu", "cuda-emulated"]
DT = torch.float64

ALIF = ng.NeuronModel(
    "alif_rec", states={"v": 0.0, "th": "th0"},
    params={"tau": 2.0, "tau_th": 8.0, "th0": 1.0, "beta": 0.3},
    charge={"v": "v + (x - v) / tau"}, adaptation={"th": "th + (th0 - th) / tau_th"},
    fire="v - th", reset={"v": "(1 - spike_d) * v", "th": "th + beta * spike"})

# (a neuron module maker, input scale): each library neuron, a declared adaptive one
NEURONS = {
    "IFNode": (lambda **kw: ng.neuron.IFNode(**kw), 1.0),
    "LIFNode": (lambda **kw: ng.neuron.LIFNode(**kw), 2.5),
    "LIFNode-soft": (lambda **kw: ng.neuron.LIFNode(v_reset=None, **kw), 2.5),
    "ParametricLIFNode": (lambda **kw: ng.neuron.ParametricLIFNode(**kw), 2.5),
    "QIFNode": (lambda **kw: ng.neuron.QIFNode(**kw), 2.0),
    "EIFNode": (lambda **kw: ng.neuron.EIFNode(**kw), 2.0),
    "CUBALIFNode": (lambda **kw: ng.neuron.CUBALIFNode(**kw), 0.3),
    "IzhikevichNode": (lambda **kw: ng.neuron.IzhikevichNode(**kw), 2.0),
    "AdExNode": (lambda **kw: ng.neuron.AdExNode(**kw), 2.0),
    "alif": (lambda **kw: ALIF.module(tau=nn.Parameter(torch.full((5,), 2.0, dtype=DT)
                                                         + torch.arange(5, dtype=DT) / 4),
                                      **kw), 3.0),
}


def hand_loop(node, x, W, bias, out0):
    """The plain torch loop: the model's input is x[t] + out[t-1] @ W^T + bias."""
    prev, outs = out0, []
    for t in range(x.shape[0]):
        prev = node(x[t] + F.linear(prev, W, bias))
        outs.append(prev)
    return torch.stack(outs)


def make_case(name, T=7, B=3, H=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    make, scale = NEURONS[name]
    x = torch.rand(T, B, H, generator=g, dtype=DT) * scale
    W = (torch.rand(H, H, generator=g, dtype=DT) - 0.4) * 2 * scale / H ** 0.5
    return make, x, W, g


def run_layer(make, backend, x, W, mask=None, bias=None, init=None, out0=None, chunks=1,
              record=()):
    """The layer's outputs and gradients of a loss on outputs and final states."""
    node = make(backend=backend, step_mode="m", record=record)
    node.to(DT)
    layer = ng.RecurrentLayer(node, x.shape[-1], mask=mask, bias=bias is not None,
                              weight=W).to(DT)
    if bias is not None:
        with torch.no_grad():
            layer.bias.copy_(bias)
    x = x.clone().requires_grad_()
    leaves = {}
    for s, v in (init or {}).items():
        leaves[s] = v.clone().requires_grad_()
        setattr(node, s, leaves[s])
    if out0 is not None:
        leaves["out0"] = out0.clone().requires_grad_()
        layer.out = leaves["out0"]
    outs = [layer(c) for c in x.chunk(chunks)]
    out = torch.cat(outs)
    return _loss_and_grads(out, node, x, layer.weight, layer.bias, leaves, record)


def run_reference(make, x, W, mask=None, bias=None, init=None, out0=None, record=()):
    node = make(backend="torch", step_mode="s", record=record)
    node.to(DT)
    x = x.clone().requires_grad_()
    Wp = W.clone().requires_grad_()
    bp = bias.clone().requires_grad_() if bias is not None else None
    leaves = {}
    for s, v in (init or {}).items():
        leaves[s] = v.clone().requires_grad_()
        setattr(node, s, leaves[s])
    prev = torch.zeros(x.shape[1:], dtype=DT)
    if out0 is not None:
        prev = leaves["out0"] = out0.clone().requires_grad_()
    out = hand_loop(node, x, Wp if mask is None else Wp * mask, bp, prev)
    return _loss_and_grads(out, node, x, Wp, bp, leaves, record)


def _loss_and_grads(out, node, x, W, bias, leaves, record):
    g = torch.Generator().manual_seed(99)
    finals = {s: getattr(node, s) for s in node.model.state_names}
    loss = (out * torch.randn(out.shape, generator=g, dtype=DT)).sum()
    for s, f in finals.items():
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=DT)).sum()
    for s in record:
        seq = getattr(node, f"{s}_seq")
        loss = loss + (seq * torch.randn(seq.shape, generator=g, dtype=DT)).sum()
    params = [(k, v) for k, v in node.named_parameters()]
    wrt = [x, W] + ([bias] if bias is not None else []) + list(leaves.values()) + \
        [v for _, v in params]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    names = ["x", "W"] + (["bias"] if bias is not None else []) + list(leaves) + \
        [f"param {k}" for k, _ in params]
    res = {"out": out.detach(), **{f"final {s}": f.detach() for s, f in finals.items()}}
    res.update({f"grad {n}": (gr if gr is not None else torch.zeros_like(w))
                for n, gr, w in zip(names, grads, wrt)})
    for s in record:
        res[f"{s}_seq"] = getattr(node, f"{s}_seq").detach()
    return res


def assert_same(got, want):
    assert got.keys() == want.keys()
    assert torch.equal(got["out"], want["out"]), "outputs differ"
    for k in want:
        if k != "out":
            tol = 1e-10 if not k.startswith("grad") else 1e-8
            torch.testing.assert_close(got[k], want[k], rtol=tol, atol=tol, msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NEURONS))
def test_matches_torch_loop(name, backend):
    make, x, W, g = make_case(name)
    init = {s: torch.rand(x.shape[1:], generator=g, dtype=DT) * 0.5
            for s in make().model.state_names}
    out0 = (torch.rand(x.shape[1:], generator=g, dtype=DT) > 0.5).to(DT)
    want = run_reference(make, x, W, init=init, out0=out0)
    rate = want["out"].mean().item()
    assert 0.05 < rate < 0.95, f"the test case should spike sometimes (rate {rate:.2f})"
    assert_same(run_layer(make, backend, x, W, init=init, out0=out0), want)


@pytest.mark.parametrize("backend", BACKENDS + ["torch"])
def test_mask_bias_records_and_chunks(backend):
    make, x, W, g = make_case("alif", T=9, B=2, H=5, seed=3)
    mask = 1.0 - torch.eye(5, dtype=DT)
    mask[0, 3] = 0.0
    bias = torch.rand(5, generator=g, dtype=DT) * 0.3
    for chunks, record in ((1, ("v", "th")), (3, ()), (9, ())):
        # (a record holds the last call's steps: recorded with one call only)
        want = run_reference(make, x, W, mask=mask, bias=bias, record=record)
        got = run_layer(make, backend, x, W, mask=mask, bias=bias, chunks=chunks,
                        record=record)
        assert_same(got, want)
        assert torch.all(got["grad W"][mask == 0] == 0) and got["grad W"].abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T,B,H", [(1, 1, 1), (1, 4, 3), (5, 1, 33), (4, 2, 40), (3, 9, 70)])
def test_odd_sizes(backend, T, B, H):
    make, x, W, g = make_case("LIFNode", T=T, B=B, H=H, seed=T * 100 + H)
    assert_same(run_layer(make, backend, x, W), run_reference(make, x, W))


@pytest.mark.parametrize("backend", BACKENDS)
def test_graded_output_flows_through_the_recurrence(backend):
    graded = ALIF.replace(name="alif_graded", output="spike * v")
    make = lambda **kw: graded.module(**kw)  # noqa: E731
    _, x, W, g = make_case("alif", seed=5)
    got, want = run_layer(make, backend, x, W), run_reference(make, x, W)
    assert want["out"].abs().sum() > 0
    torch.testing.assert_close(got.pop("out"), want.pop("out"), rtol=1e-10, atol=1e-10)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-8, atol=1e-8, msg=k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_shapes_and_no_grad(backend):
    node = ng.neuron.LIFNode(backend=backend)
    layer = ng.RecurrentLayer(node, 4).double()
    x = torch.rand(3, 2, 3, 4, dtype=DT) * 3
    with torch.no_grad():
        a = layer(x)
    layer.reset()
    ref = ng.RecurrentLayer(ng.neuron.LIFNode(backend="torch"), 4, weight=layer.weight).double()
    assert torch.equal(a, ref(x))
    assert a.shape == x.shape and ref.out.shape == x.shape[1:]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("B,H", [(2, 8), (9, 130)])
def test_float32_matches_reference_loosely(backend, B, H):
    """(with H = 130 and 9 sequences the CPU passes run their full register tiles too)"""
    make, x, W, _ = make_case("LIFNode", T=6, B=B, H=H, seed=4)
    node = make(backend=backend)
    layer = ng.RecurrentLayer(node, H, weight=W.float())
    ref = ng.RecurrentLayer(make(backend="torch"), H, weight=W.float())
    xf = x.float().requires_grad_()
    xr = x.float().requires_grad_()
    g = torch.rand(x.shape)
    y, yr = layer(xf), ref(xr)
    (y * g).sum().backward()
    (yr * g).sum().backward()
    assert (y != yr).float().mean() < 0.02
    if torch.equal(y, yr):
        torch.testing.assert_close(node.v, ref.neuron.v, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=1e-3, atol=1e-3)


def test_bad_input_gets_clear_errors():
    layer = ng.RecurrentLayer(ng.neuron.LIFNode(backend="cpu"), 4)
    with pytest.raises(ValueError, match=r"\[T, \*batch, 4\]"):
        layer(torch.rand(3, 2, 5))
    with pytest.raises(ValueError, match=r"\[T, \*batch, 4\].*got shape \(4,\)"):
        layer(torch.rand(4))
    with pytest.raises(TypeError, match="floating"):
        layer(torch.ones(3, 2, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="layer.to"):
        layer(torch.rand(3, 2, 4, dtype=DT))
    with pytest.raises(ValueError, match="T = 0"):
        layer(torch.rand(0, 2, 4))
    layer(torch.rand(3, 2, 4))
    with pytest.raises(ValueError, match="reset"):
        layer(torch.rand(3, 5, 4))
    with pytest.raises(ValueError, match=r"\[4, 4\]"):
        ng.RecurrentLayer(ng.neuron.LIFNode(), 4, mask=torch.ones(4, 3))
    with pytest.raises(ValueError, match="positive"):
        ng.RecurrentLayer(ng.neuron.LIFNode(), 0)
    with pytest.raises(TypeError, match="neuron module"):
        ng.RecurrentLayer(nn.ReLU(), 4)
    with pytest.raises(ValueError, match="too large"):
        recurrent_launch(1500, "float")


def test_declared_model_and_parameters_train():
    """A NeuronModel runs with default options; its learnable parameters get gradients."""
    layer = ng.RecurrentLayer(ALIF, 6, bias=True).double()
    layer.neuron.backend = "cpu"
    layer.neuron.set_param("tau", nn.Parameter(torch.full((6,), 2.0, dtype=DT)))
    x = torch.rand(5, 3, 6, dtype=DT) * 3
    layer(x).sum().backward()
    for p in (layer.weight, layer.bias, layer.neuron.tau):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["forward", "backward"])
def test_recurrent_kernels_compile_with_nvrtc(kind, dtype):
    pytest.importorskip("cupy")
    for model in (ng.neuron.LIFNode().model, ALIF):
        cfg = make_config(model, recurrent=True, save=True, learnable=("tau",),
                          record=model.state_names)
        if kind == "backward":
            cfg = make_config(model, recurrent=True, save=True, learnable=("tau",),
                              record=model.state_names, grad_record=model.state_names)
        src = render_cuda(lower(model, kind, dtype, cfg))
        assert "__syncthreads()" in src
        for arch in ("compute_70", "compute_80", "compute_90"):
            ptx = compile_ptx(src, arch)
            if dtype != "float64":
                assert ".f64" not in ptx, f"{model.name} {kind} {dtype} {arch} uses doubles"


@pytest.mark.skipif(__import__("shutil").which("ptxas") is None, reason="ptxas not installed")
def test_recurrent_kernels_do_not_spill():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "neurogen", "check", "LIFNode", "AdExNode",
                           "--recurrent", "--arch", "sm_80", "sm_90"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("ok ")]
    assert len(rows) == 2 * 4 * 2 * 2 and all("+rec" in r for r in rows)
    for row in rows:
        assert "spill 0 B" in row and "registers" in row, row


class RecurrentNet(nn.Module):
    def __init__(self, H=6):
        super().__init__()
        torch.manual_seed(0)
        self.fc_in = nn.Linear(4, H)
        self.rec = ng.RecurrentLayer(ng.neuron.LIFNode(backend="cpu"), H, bias=True,
                                     mask=1 - torch.eye(H))
        self.fc_out = nn.Linear(H, 3)

    def forward(self, x):  # [T, B, 4]
        return self.fc_out(self.rec(self.fc_in(x) * 3))


def _compile_run(net, x, chunks=1):
    net.rec.reset()
    y = torch.cat([net(c) for c in x.chunk(chunks)])
    (y ** 2).sum().backward()
    grads = {n.replace("_orig_mod.", ""): p.grad.clone() for n, p in net.named_parameters()}
    return y.detach(), grads


@pytest.mark.skipif(not ng.autograd.AVAILABLE,
                    reason="needs torch >= 2.4")
@pytest.mark.parametrize("chunks", [1, 2])
def test_torch_compile_fullgraph_equals_eager(chunks):
    x = torch.rand(6, 3, 4, dtype=DT)
    eager = RecurrentNet().double()
    y0, g0 = _compile_run(eager, x, chunks)
    net = RecurrentNet().double()
    explanation = torch._dynamo.explain(net)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    y1, g1 = _compile_run(compiled, x, chunks)
    assert y0.abs().sum() > 0
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-12, atol=1e-12, msg=name)


# ---- random model structures in a recurrent layer (tests/strategies.py) ---------------------
def _structure_case(case, T, seed, backends=BACKENDS):
    model, surrogate, detach, kinds = case
    B, H = 2, 5
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, H, generator=gen, dtype=DT) * 0.6 + 0.7
    W = torch.randn(H, H, generator=gen, dtype=DT) * 0.4
    init = {s: torch.rand(B, H, generator=gen, dtype=DT) * 0.6 - 0.1 for s in model.state_names}
    if "refractory" in init:
        init["refractory"] = torch.randint(0, 3, (B, H), generator=gen).to(DT)
    out0 = torch.rand(B, H, generator=gen, dtype=DT)
    params, learnable = param_values(model, kinds, H)
    record = model.state_names if seed % 3 else ()

    def make(**kw):
        values = {k: (nn.Parameter(torch.as_tensor(v, dtype=DT).clone()) if k in learnable
                      else v) for k, v in params.items()}
        return model.module(surrogate_function=surrogate, detach_reset=detach, **values, **kw)

    want = run_reference(make, x, W, init=init, out0=out0, record=record)
    for backend in backends:
        got = run_layer(make, backend, x, W, init=init, out0=out0, record=record)
        try:
            if model.output is not None:  # graded: compared within tolerance
                torch.testing.assert_close(got["out"], want["out"], rtol=1e-10, atol=1e-10,
                                           equal_nan=True)
                got, w = dict(got, out=want["out"]), want
            else:
                w = want
            assert got.keys() == w.keys()
            assert torch.equal(got["out"], w["out"]), "outputs differ"
            for k in w:
                tol = 1e-8 if k.startswith("grad") else 1e-10
                torch.testing.assert_close(got[k], w[k], rtol=tol, atol=tol, equal_nan=True,
                                           msg=k)
        except AssertionError as exc:
            raise AssertionError(f"{backend}: {exc}\nmodel:\n{model}\nsurrogate {surrogate}, "
                                 f"detach_reset={detach}, kinds {kinds}") from None


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(structures(), st.sampled_from((1, 2, 6)), st.integers(0, 2**16))
def test_random_structures_in_a_recurrent_layer_equal_the_torch_loop(case, T, seed):
    """Every construct the structure generator draws (group memberships, branches and
    clamps, graded outputs, refractory periods, records, learnable and per-neuron
    parameters, every surrogate, detach_reset) through the recurrence."""
    from test_structure_fuzz import _facts
    FUZZ_FACTS.update(_facts(case))
    _structure_case(case, T, seed)


FUZZ_FACTS = set()  # what the fuzz's cases contained (checked by the test below)


def test_carried_output_follows_the_input_dtype_and_is_checked():
    W = torch.rand(4, 4) - 0.3
    x = torch.rand(6, 2, 4) * 2
    for backend in ("cpu", "torch"):
        a = ng.RecurrentLayer(ng.neuron.LIFNode(backend=backend), 4, weight=W)
        whole = a(x)
        a.reset()
        first = a(x[:3].to(torch.bfloat16) if backend == "cpu" else x[:3].double().float())
        rest = a(x[3:])  # the carried output converted to float32, as the states are
        assert rest.dtype == torch.float32 and a.out.dtype == torch.float32
        if backend == "torch":
            assert torch.equal(torch.cat([first, rest]), whole)
    layer = ng.RecurrentLayer(ng.neuron.LIFNode(backend="cpu"), 4)
    with pytest.raises(TypeError, match="floating"):
        layer.out = torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(TypeError, match="floating"):
        layer.out = [0.0] * 4


def test_concurrent_emulated_launches_do_not_deadlock():
    from concurrent.futures import ThreadPoolExecutor
    layers = [ng.RecurrentLayer(ng.neuron.LIFNode(backend="cuda-emulated"), 6,
                                weight=torch.eye(6)) for _ in range(2)]
    x = torch.rand(5, 3, 6) * 2
    want = [layer(x) for layer in layers]
    for layer in layers:
        layer.reset()
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda layer: layer(x), layers))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_recurrent_fuzz_covers_every_construct():
    """The cases the fuzz above ran (derandomized: the same ones every run) included graded
    outputs, both refractory kinds, branches in every group and every parameter kind."""
    if not FUZZ_FACTS:
        pytest.skip("the recurrent structure fuzz did not run in this session")
    want = {"output", "refractory literal", "refractory param", "reset with spike"}
    want |= {f"param {k}" for k in ("float", "neuron", "learnable", "learnable_neuron")}
    want |= {f"Piecewise in {g}" for g in ("charge", "fire", "reset", "output")}
    assert want <= FUZZ_FACTS, sorted(want - FUZZ_FACTS)
