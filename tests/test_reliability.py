"""NeuronModule on awkward tensors, over many calls, and from several threads (issue 6).

Each edge case either gives the torch reference's numbers or raises a clear
TypeError/ValueError, on every CPU-side backend."""
import gc
import threading
import uuid

import pytest
import torch

import neurogen as ng
from neurogen.targets import host_compiler
from neurogen.neuron import LIBRARY

from conftest import assert_match, needs_cxx, run_and_grad

pytestmark = needs_cxx
BACKENDS = ["cpu", "torch", "cuda-emulated"]
LIF = LIBRARY["LIFNode"].spec


def node(backend, model=None, **kw):
    return (model or LIF).module(step_mode=kw.pop("step_mode", "m"), backend=backend, **kw)


# ---- dtypes --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool,
                                   torch.complex64, torch.complex128])
@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_non_floating_input_is_a_type_error(backend, dtype, step_mode):
    x = torch.ones(3, 4).to(dtype)
    with pytest.raises(TypeError, match=rf"floating tensor.*{dtype}.*\.float\(\)"):
        node(backend, step_mode=step_mode)(x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_floating_parameter_is_a_type_error(backend):
    for value in (torch.tensor([2, 3]), torch.tensor(2.0 + 0j), torch.tensor(True)):
        with pytest.raises(TypeError, match="floating tensor"):
            node(backend, tau=value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_tensor_input_is_a_type_error(backend):
    with pytest.raises(TypeError, match="torch.Tensor"):
        node(backend)([[1.0, 2.0]])


# ---- devices (the meta device stands in for a second device) --------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("learnable", [False, True])
def test_parameter_on_another_device_is_a_value_error(backend, learnable):
    tau = torch.tensor(2.0, device="meta")
    m = node(backend, tau=torch.nn.Parameter(tau) if learnable else tau)
    with pytest.raises(ValueError, match=r"parameter 'tau' is on meta but the input is on cpu"):
        m(torch.ones(3, 4))


@pytest.mark.parametrize("backend", ["cpu", "cuda-emulated"])
def test_input_on_another_device_is_a_value_error(backend):
    with pytest.raises(ValueError, match="needs CPU tensors, got a tensor on meta"):
        node(backend)(torch.ones(3, 4, device="meta"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_on_another_device_is_a_value_error(backend):
    m = node(backend)
    m.v = torch.zeros(4, device="meta")
    with pytest.raises(ValueError, match=r"state 'v' is on meta .*reset\(\)"):
        m(torch.ones(3, 4))


# ---- shapes --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_shape_change_without_reset(backend):
    m = node(backend)
    m(torch.ones(3, 2, 4))
    with pytest.raises(ValueError, match=r"shape \(2, 4\) .* \(5, 4\); call reset\(\)"):
        m(torch.ones(3, 5, 4))
    m.reset()
    assert m(torch.ones(3, 5, 4)).shape == (3, 5, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_time_steps_is_a_value_error(backend):
    m = node(backend)
    with pytest.raises(ValueError, match="T = 0 time steps"):
        m(torch.ones(0, 4))
    assert m.v is None  # the failed call left no state behind


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step_mode,shape", [("m", (3, 0)), ("m", (3, 2, 0)), ("s", (0,)),
                                             ("s", (4, 0))])
def test_zero_neurons_give_empty_outputs(backend, step_mode, shape):
    m = node(backend, step_mode=step_mode, store_v_seq=True,
             tau=torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64)))
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    spikes = m(x)
    assert spikes.shape == shape and spikes.dtype == x.dtype
    neuron_shape = shape[1:] if step_mode == "m" else shape
    assert m.v.shape == neuron_shape
    (spikes.sum() + m.v.sum() + m.v_seq.sum()).backward()
    assert x.grad.shape == shape
    assert m.tau.grad is None or m.tau.grad.item() == 0
    spikes = m(x.detach())  # a second call on the (empty) states
    assert spikes.shape == shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_dim_input(backend):
    with pytest.raises(ValueError, match=r"multi-step input must be \[T, \*shape\], got shape \(\)"):
        node(backend)(torch.tensor(1.5))
    single = node(backend, step_mode="s")
    out = [single(torch.tensor(1.5, dtype=torch.float64)) for _ in range(3)]
    assert all(o.shape == () for o in out)
    assert [o.item() for o in out] == [0.0, 1.0, 0.0]  # the class docstring's LIF trace


# ---- strides: the same numbers as a contiguous copy -----------------------------------------
def layouts():
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(6, 4, 9, generator=gen, dtype=torch.float64) * 0.8 + 0.9
    return {
        "transpose": base.transpose(1, 2),                            # [6, 9, 4], strided
        "time_transpose": base[:, 0, :].t().contiguous().t(),          # [6, 9], column-major
        "expand": base[:, :1, :].expand(6, 5, 9),                      # stride 0 (batch)
        "expand_time": base[:1].expand(6, 4, 9),                       # stride 0 (time)
        "step_slice": base[::2, :, ::3],                               # gaps between elements
        "offset": base[1:, 1:, 2:],                                    # storage offset
    }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", sorted(layouts()))
def test_strided_input_equals_contiguous_copy(adex, backend, layout):
    x = layouts()[layout]
    assert not x.is_contiguous()
    kw = dict(params=dict(adex.defaults), learnable=("tau", "a"))
    got = run_and_grad(adex, backend, x, **kw)
    want = run_and_grad(adex, backend, x.contiguous(), **kw)
    assert want["spikes"].sum() > 0
    assert_match(got, want, fwd_tol=0, grad_tol=0)
    if backend != "torch":
        assert_match(got, run_and_grad(adex, "torch", x.contiguous(), **kw))


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_states_and_parameters(adex, backend):
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(5, 3, 8, generator=gen, dtype=torch.float64) + 1.0
    a = (0.05 + 0.1 * torch.rand(8, 3, generator=gen, dtype=torch.float64)).t()  # strided
    init = {"v": torch.rand(8, 3, generator=gen, dtype=torch.float64).t() * 0.5,
            "w": torch.zeros(1, 8, dtype=torch.float64).expand(3, 8)}
    params = dict(adex.defaults, a=a)
    got = run_and_grad(adex, backend, x, params=params, init=init, learnable=("a",))
    want = run_and_grad(adex, "torch", x, params=dict(params, a=a.contiguous()),
                        init={k: v.contiguous() for k, v in init.items()}, learnable=("a",))
    assert_match(got, want)


# ---- NaN and inf propagate as IEEE values -----------------------------------------------------
@pytest.mark.parametrize("backend", ["cpu", "cuda-emulated"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_and_inf_inputs_match_reference(adex, backend, dtype):
    nan, inf = float("nan"), float("inf")
    x = torch.full((4, 6), 1.2, dtype=dtype)
    x[0, 0], x[1, 1], x[0, 2], x[2, 3], x[3, 4] = nan, nan, inf, -inf, inf
    for model in (LIF, adex):
        kw = dict(params=dict(model.defaults))
        got = run_and_grad(model, backend, x, **kw)
        want = run_and_grad(model, "torch", x, **kw)
        assert got["v_seq"].isnan().any() and not got["v_seq"][:, 5].isnan().any()
        assert_match(got, want, fwd_tol=1e-6, grad_tol=1e-5)


# ---- torch.inference_mode -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_mode_first_call_and_states_carried_out_of_it(backend):
    """A process's first call may run under ``torch.inference_mode()`` (its constant initial
    states are made as normal tensors: an inference tensor has no version counter, which
    the constant cache checks), and states carried out of such a call into a training call
    work as the torch backend's do (the kernel path saves them for the backward, which
    autograd refuses for inference tensors, so they are copied)."""
    shape = (3, 7, 1 + len(backend))  # (a neuron shape no other test makes constants of)
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) * 2.5
    g = torch.rand(*shape, generator=gen, dtype=torch.float64)

    def run(b):
        m = node(b)
        with torch.inference_mode():
            first = m(x)
        xg = x.clone().requires_grad_()
        out = m(xg)                                         # states from the first call
        out.backward(g)
        return first, out.detach(), m.v.detach(), xg.grad
    ng.buffers._constants.clear()
    got = run(backend)
    ng.buffers._constants.clear()
    want = run("torch")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ---- resources ------------------------------------------------------------------------------
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_many_calls_do_not_grow_memory():
    x = torch.randn(8, 64, dtype=torch.float64) + 1.0
    tau = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
    m = node("cpu", tau=tau, store_v_seq=True)

    def step():
        m.reset()
        xg = x.clone().requires_grad_()
        (m(xg).sum() + m.v_seq.sum() + m.v.sum()).backward()

    for _ in range(200):  # warm-up: kernels compiled, allocator pools filled
        step()
    gc.collect()
    kernels = (len(host_compiler._loaded), len(host_compiler._functions))
    before = _rss_bytes()
    for _ in range(1000):
        step()
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 4 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB over 1000 calls"
    assert (len(host_compiler._loaded), len(host_compiler._functions)) == kernels
    assert tau.grad is not None and torch.isfinite(tau.grad)


# ---- threads --------------------------------------------------------------------------------
def _run(model, x, backend="cpu"):
    tau = torch.nn.Parameter(torch.tensor(2.5, dtype=torch.float64))
    m = model.module(step_mode="m", backend=backend, tau=tau)
    xg = x.clone().requires_grad_()
    s = m(xg)
    (s * torch.arange(x.shape[-1], dtype=x.dtype)).sum().add(m.v.sum()).backward()
    return s.detach(), m.v.detach(), xg.grad, tau.grad


def _in_threads(work, n_threads=2, repeats=20):
    results, errors = {}, []
    start = threading.Barrier(n_threads)

    def target(i):
        try:
            start.wait()
            results[i] = [work(i) for _ in range(repeats)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return results


def _same(a, b):
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@pytest.mark.parametrize("n", [37, 20000])  # 20000 x T=4 neurons also use the block pool
def test_two_threads_share_one_spec_and_kernel(n):
    gen = torch.Generator().manual_seed(13)
    xs = [torch.randn(4, n, generator=gen, dtype=torch.float64) + 1.0 for _ in range(2)]
    serial = [_run(LIF, x) for x in xs]
    results = _in_threads(lambda i: _run(LIF, xs[i]))
    for i, runs in results.items():
        for r in runs:
            _same(r, serial[i])


def test_two_threads_compile_the_same_new_model_at_once():
    model = ng.NeuronModel(f"thread_{uuid.uuid4().hex[:8]}", states={"v": 0.0},
                           params={"tau": 2.0}, charge={"v": "v + (x - v) / tau"},
                           fire="v - 1", reset={"v": "(1 - spike_d) * v"})
    x = torch.randn(6, 50, generator=torch.Generator().manual_seed(14), dtype=torch.float64) + 1
    results = _in_threads(lambda i: _run(model, x), repeats=3)
    want = _run(model, x, backend="torch")
    for runs in results.values():
        for r in runs:
            assert torch.equal(r[0], want[0])
            for u, v in zip(r[1:], want[1:]):
                torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)


def test_two_threads_share_one_module_instance_sequentially_consistent():
    # one module shared by two threads: each call is whole (no torn states), though the
    # order of calls is up to the threads, as with any stateful torch module
    m = node("cpu")
    x = torch.full((3, 10), 0.6, dtype=torch.float64)

    def work(i):
        with torch.no_grad():
            return m(x)

    results = _in_threads(work, repeats=30)
    for runs in results.values():
        for s in runs:
            assert s.shape == (3, 10) and bool(((s == 0) | (s == 1)).all())
            assert bool((s == s[:, :1]).all())  # every neuron saw the same history
