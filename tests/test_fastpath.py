"""The fast path of repeated calls (neurogen/fastpath.py): a training loop in
``step_mode="s"`` gives the torch reference's numbers (float64: spikes equal, states
1e-10, gradients 1e-8), the runner is really used, and every change of configuration
between two calls is seen (the next call takes the general path and builds anew)."""
import copy
import pickle

import pytest
import torch
from torch import nn

import neurogen as ng
from neurogen import fastpath

from conftest import needs_cxx

pytestmark = needs_cxx
DT = torch.float64
BACKENDS = ["cpu", "cuda-emulated"]


@pytest.fixture
def counted(monkeypatch):
    """How many calls the runners served."""
    calls = {"fast": 0}
    real = fastpath.try_call

    def counting(module, x):
        out = real(module, x)
        calls["fast"] += out is not None
        return out
    monkeypatch.setattr(fastpath, "try_call", counting)
    return calls


ALIF = ng.NeuronModel(
    "alif_fast", states={"v": 0.0, "th": "th0"},
    params={"tau": 2.0, "tau_th": 8.0, "th0": 1.0, "beta": 0.3},
    charge={"v": "v + (x - v) / tau"}, adaptation={"th": "th + (th0 - th) / tau_th"},
    fire="v - th", reset={"v": "(1 - spike_d) * v", "th": "th + beta * spike"})


def make(backend, learn=True, shape=(3, 4)):
    kw = {}
    if learn:
        kw = dict(tau=nn.Parameter(torch.full(shape[-1:], 2.0, dtype=DT)
                                   + torch.arange(shape[-1], dtype=DT) / 5),
                  beta=nn.Parameter(torch.tensor(0.3, dtype=DT)))
    return ALIF.module(backend=backend, step_mode="s", **kw)


def loop(node, xs, init=None, loss_finals=True, hook=None):
    """Step the node over ``xs`` (a list of leaves); gradients of a random loss."""
    node.reset()
    leaves = {}
    for s, v in (init or {}).items():
        leaves[s] = v.clone().requires_grad_()
        setattr(node, s, leaves[s])
    outs = []
    for t, x in enumerate(xs):
        if hook is not None:
            hook(node, t)
        outs.append(node(x))
    out = torch.stack(outs)
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=DT)).sum()
    if loss_finals:
        for s in node.model.state_names:
            f = getattr(node, s)
            loss = loss + (f * torch.randn(f.shape, generator=g, dtype=DT)).sum()
    params = [p for _, p in sorted(node.named_parameters()) if p.requires_grad]
    grads = torch.autograd.grad(loss, list(xs) + list(leaves.values()) + params,
                                allow_unused=True)
    finals = {s: getattr(node, s).detach() for s in node.model.state_names}
    return out.detach(), finals, [g if g is not None else torch.zeros(1) for g in grads]


def inputs(T=12, shape=(3, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(shape, generator=g, dtype=DT) * 2.5).requires_grad_() for _ in range(T)]


def assert_same(got, want):
    (o1, f1, g1), (o2, f2, g2) = got, want
    assert torch.equal(o1, o2)
    for s in f2:
        torch.testing.assert_close(f1[s], f2[s], rtol=1e-10, atol=1e-10)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_finals", [True, False])
def test_training_loop_equals_reference_and_uses_the_runner(backend, loss_finals, counted):
    xs = inputs()
    init = {"v": torch.rand(3, 4, dtype=DT) * 0.5, "th": torch.ones(3, 4, dtype=DT)}
    want = loop(make("torch"), xs, init, loss_finals)
    node = make(backend)
    for _ in range(2):  # a second sequence after reset(): the runner serves it too
        counted["fast"] = 0
        assert_same(loop(node, xs, init, loss_finals), want)
    assert counted["fast"] >= len(xs) - 1, counted
    assert want[0].sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_and_multi_step_calls(backend, counted):
    xs = torch.rand(5, 6, 2, 4, dtype=DT) * 2.5
    ref = make("torch", learn=False)
    ref.step_mode = "m"
    node = make(backend, learn=False)
    node.step_mode = "m"
    with torch.no_grad():
        want = [ref(x) for x in xs]
        got = [node(x) for x in xs]
    assert counted["fast"] == len(xs) - 1
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    torch.testing.assert_close(node.v, ref.v, rtol=1e-10, atol=1e-10)


def _changes():
    """(name, change applied to the node before step 6) -- the reference gets it too."""
    def surrogate(n):
        n.surrogate_function = ng.surrogate.ATan(alpha=4.0)  # (the same value as before)

    def alpha_value(n):  # (an attribute of the surrogate object, set in place)
        n.surrogate_function.alpha = 2.5

    def float_param(n):
        n.th0 = 0.7

    def tensor_param(n):
        n.set_param("beta", nn.Parameter(torch.tensor(0.1, dtype=DT)))

    def stop_learning(n):
        n.tau.requires_grad_(False)

    def detach_reset(n):
        n.detach_reset = True

    def set_state(n):
        n.v = torch.full((3, 4), 0.25, dtype=DT)

    def in_place_state(n):
        with torch.no_grad():
            n.th.mul_(0.9)

    def detach(n):
        n.detach()

    def forget(n):
        ng.forget_kernels()

    return {f.__name__: f for f in (surrogate, alpha_value, float_param, tensor_param,
                                    stop_learning, detach_reset, set_state, in_place_state,
                                    detach, forget)}


@pytest.mark.parametrize("change", list(_changes()))
def test_a_change_between_calls_is_seen(change):
    xs = inputs(T=10, seed=3)
    fn = _changes()[change]

    def hook(node, t):
        if t == 6:
            fn(node)
    want = loop(make("torch"), xs, hook=hook)
    got = loop(make("cpu"), xs, hook=hook)
    assert_same(got, want)


def test_shape_dtype_and_backend_changes_take_the_general_path():
    node = make("cpu", learn=False)
    x = torch.rand(3, 4, dtype=DT) * 2
    node(x)
    node(x)
    with pytest.raises(ValueError, match="reset"):
        node(torch.rand(5, 4, dtype=DT))  # a new batch needs reset(), as before
    node.reset()
    node(torch.rand(5, 4, dtype=DT))
    y = node(torch.rand(5, 4, dtype=torch.float32))  # the states follow the input's dtype
    assert y.dtype == torch.float32 and node.v.dtype == torch.float32
    node.backend = "torch"
    node(torch.rand(5, 4, dtype=torch.float32))
    assert "_runner" not in node.__dict__


def test_threads_and_target_registry_are_part_of_the_key():
    node = make("cpu", learn=False)
    x = torch.rand(3, 4, dtype=DT)
    node(x)
    node(x)
    runner = node.__dict__["_runner"]
    key = fastpath.call_key(node, x, [node.v, node.th], runner.params)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert fastpath.call_key(node, x, [node.v, node.th], runner.params) != key
    finally:
        torch.set_num_threads(threads)
    ng.targets.register(ng.targets.get("cpu"))  # (re-registered: plans are dropped)
    assert fastpath.call_key(node, x, [node.v, node.th], runner.params) != key


def test_parameter_conversions_still_carry_gradients():
    """A float32 per-neuron parameter of a float64 neuron, broadcast from [4]: converted
    on every call outside the kernel, gradients through the conversion."""
    xs = inputs(T=6)
    tau = nn.Parameter(torch.full((4,), 2.0, dtype=torch.float32))
    node = ALIF.module(backend="cpu", tau=tau)
    ref_tau = nn.Parameter(torch.full((4,), 2.0, dtype=torch.float32))
    ref = ALIF.module(backend="torch", tau=ref_tau)
    got, want = loop(node, xs), loop(ref, xs)
    assert_same(got, want)
    assert got[2][-1].dtype == torch.float32


def test_pickle_and_deepcopy_of_a_module_with_a_runner():
    node = make("cpu")
    x = torch.rand(3, 4, dtype=DT)
    node(x)
    node(x)
    assert "_runner" in node.__dict__
    for clone in (copy.deepcopy(node), pickle.loads(pickle.dumps(node))):
        assert "_runner" not in clone.__dict__
        a, b = clone(x), node(x)
        assert torch.equal(a, b)


def test_states_written_elsewhere_drop_the_runner():
    """A call with an empty batch, or a recurrent layer writing the neuron's states: the
    next call must not reuse a runner made for other states."""
    node = make("cpu", learn=False)
    x = torch.rand(3, 4, dtype=DT) * 2
    node(x)
    node(x)
    assert "_runner" in node.__dict__
    node.reset()
    node(torch.rand(0, 4, dtype=DT))
    with pytest.raises(ValueError, match="reset"):
        node(x)  # the states are [0, 4] now
    layer = ng.RecurrentLayer(node, 4)  # float32
    node.reset()
    node(x)
    node(x)
    assert "_runner" in node.__dict__
    with torch.no_grad():
        layer(torch.rand(2, 3, 4))  # the neuron's states become float32
    assert node.v.dtype == torch.float32
    ref = make("torch", learn=False)
    ref.v, ref.th = node.v.double(), node.th.double()
    assert torch.equal(node(x), ref(x))
    torch.testing.assert_close(node.v, ref.v, rtol=1e-12, atol=1e-12)


# ---- found in review: what the key must see ---------------------------------------------------
def _compare_steps(xs, prepare=None, hooks=None):
    """Outputs and final v of the cpu node against the torch node over ``xs``."""
    res = []
    for backend in ("cpu", "torch"):
        node = make(backend, learn=False)
        if prepare is not None:
            prepare(node)
        outs = []
        for t, x in enumerate(xs):
            if hooks and t in hooks:
                hooks[t](node)
            outs.append(node(x).clone())
        res.append((outs, node.v.clone()))
    (a, va), (b, vb) = res
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    torch.testing.assert_close(va, vb, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs_take_the_general_path():
    big = torch.rand(3, 8, dtype=DT) * 3
    _compare_steps([big[:, :4].contiguous(), big[:, ::2], big[:, 4:], big[:, 1::2],
                    big[:, 4:].contiguous(), big[:, :1].expand(3, 4)])


def test_a_state_set_to_a_number():
    def hook(node):
        node.v = 0.5
    _compare_steps([torch.rand(3, 4, dtype=DT) * 2 for _ in range(4)], hooks={2: hook})


def test_parameters_swapped_by_functional_call_or_data():
    x = torch.rand(3, 4, dtype=DT) * 2
    for backend in ("cpu", "torch"):
        node = make(backend)
        node(x)
        node(x)
        new = {"tau": torch.full((4,), 3.5, dtype=DT), "beta": torch.tensor(0.1, dtype=DT)}
        out = torch.func.functional_call(node, new, (x,))
        if backend == "cpu":
            got, got_v = out, node.v
        else:
            torch.testing.assert_close(got_v, node.v, rtol=1e-12, atol=1e-12)
            assert torch.equal(got, out)
    for change in ("shape", "one", "dtype"):
        outs = []
        for backend in ("cpu", "torch"):
            node = ALIF.module(backend=backend, tau=nn.Parameter(torch.tensor([2.0], dtype=DT)))
            if change == "one":
                node.set_param("tau", nn.Parameter(torch.full((3, 4), 2.0, dtype=DT)))
            node(x)
            node(x)
            with torch.no_grad():
                if change == "shape":
                    node.tau.data = torch.full((3, 4), 3.0, dtype=DT)
                elif change == "one":
                    node.tau.data = torch.tensor([3.0], dtype=DT)
                else:
                    node.tau.data = torch.tensor([3.0], dtype=torch.float32)
            outs.append((node(x), node(x), node.v))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=change)


# ---- random model structures stepped one call at a time (tests/strategies.py) ----------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from strategies import structures  # noqa: E402
from test_structure_fuzz import param_values  # noqa: E402


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(structures(), st.sampled_from((2, 5)), st.integers(0, 2**16))
def test_random_structures_stepped_through_the_fast_path(case, T, seed):
    """Every construct the structure generator draws, stepped in ``step_mode="s"`` (the
    runner serves every call after the first), on cpu and emulated CUDA, against the torch
    reference stepped the same way: outputs, final states and every gradient."""
    model, surrogate, detach, kinds = case
    n = 7
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, generator=gen, dtype=DT) * 0.6 + 0.7 for _ in range(T)]
    init = {s: torch.rand(n, generator=gen, dtype=DT) * 0.6 - 0.1 for s in model.state_names}
    if "refractory" in init:
        init["refractory"] = torch.randint(0, 3, (n,), generator=gen).to(DT)
    params, learnable = param_values(model, kinds, n)
    results = {}
    for backend in ("torch", "cpu", "cuda-emulated"):
        kw = {k: (nn.Parameter(torch.as_tensor(v, dtype=DT).clone()) if k in learnable else v)
              for k, v in params.items()}
        node = model.module(surrogate_function=surrogate, detach_reset=detach,
                            backend=backend, step_mode="s", **kw)
        x = [q.clone().requires_grad_() for q in xs]
        leaves = {s: v.clone().requires_grad_() for s, v in init.items()}
        for s, v in leaves.items():
            setattr(node, s, v)
        out = torch.stack([node(q) for q in x])
        g = torch.Generator().manual_seed(seed + 1)
        loss = (out * torch.randn(out.shape, generator=g, dtype=DT)).sum()
        if seed % 2:
            for s in model.state_names:
                f = getattr(node, s)
                loss = loss + (f * torch.randn(f.shape, generator=g, dtype=DT)).sum()
        wrt = x + list(leaves.values()) + [getattr(node, k) for k in learnable]
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        grads = [torch.zeros_like(w) if gr is None else gr for gr, w in zip(grads, wrt)]
        results[backend] = (out.detach(), [getattr(node, s).detach() for s in model.state_names],
                            grads, "_runner" in node.__dict__)
    ref = results.pop("torch")
    for backend, (out, finals, grads, fast) in results.items():
        assert fast, f"{backend}: no runner was made"
        msg = f"{backend}\nmodel:\n{model}\nsurrogate {surrogate}, detach_reset={detach}"
        if model.output is None:
            assert torch.equal(out, ref[0]), msg
        else:
            torch.testing.assert_close(out, ref[0], rtol=1e-10, atol=1e-10, equal_nan=True,
                                       msg=msg)
        for a, b in zip(finals, ref[1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, equal_nan=True, msg=msg)
        for a, b in zip(grads, ref[2]):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8, equal_nan=True, msg=msg)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing(backend, reentrant, counted):
    """``torch.utils.checkpoint`` recomputes the forward in the backward, where the other
    path (runner or general) may run than in the forward; the non-reentrant kind requires
    the same saved tensors' shapes from both (it raised CheckpointError on a module's first
    call: the runner saved x as [T, 3, 4], the general path as [T, 12])."""
    from torch.utils.checkpoint import checkpoint
    xs = torch.rand(6, 3, 4, dtype=DT) * 2.5
    g = torch.rand(6, 3, 4, dtype=DT)

    def grads(node, use_checkpoint):
        node.reset()
        x = xs.clone().requires_grad_()

        def f(inp):
            node.reset()
            return node(inp) * 1.0
        out = checkpoint(f, x, use_reentrant=reentrant) if use_checkpoint else f(x)
        params = [p for _, p in sorted(node.named_parameters())]
        for p in params:
            p.grad = None
        (out * g).sum().backward()  # (the reentrant kind takes no autograd.grad)
        return [x.grad] + [p.grad for p in params]

    ref, node = make("torch"), make(backend)
    ref.step_mode = node.step_mode = "m"  # (an assignment drops the runner: set it once)
    want = grads(ref, False)
    for call in range(3):  # the first call takes the general path, the recomputation not
        got = grads(node, True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8, msg=f"call {call}")
    if not reentrant:  # (the reentrant kind's forward runs without grad: general path)
        assert counted["fast"] >= 2  # (the recomputations at least)
