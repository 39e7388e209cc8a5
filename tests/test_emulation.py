"""The exact emitted CUDA kernels, run on the CPU through the emulation shim,
against the C++ CPU kernels and the torch reference (issue: serial grid emulation)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import neurogen as ng
from neurogen.targets.emulated import shim
from neurogen.neuron import LIBRARY
from neurogen.targets.cuda import include_dirs as cuda_include_dirs

from conftest import assert_match, needs_cxx, run_and_grad
from strategies import models

pytestmark = needs_cxx
HALF_HEADERS = bool(cuda_include_dirs(host=True))


def compare(model, x, params, learnable=(), surrogate=None, detach=False, init=None,
            with_reference=True):
    kw = dict(params=params, learnable=learnable, init=init, detach_reset=detach,
              surrogate_function=surrogate or ng.surrogate.Sigmoid())
    emu = run_and_grad(model, "cuda-emulated", x, **kw)
    cpu = run_and_grad(model, "cpu", x, **kw)
    assert torch.equal(emu["spikes"], cpu["spikes"])
    for k in emu:
        if not k.startswith("grad"):
            assert torch.equal(emu[k], cpu[k]), f"{k}: emulated CUDA forward != CPU forward"
    assert_match(emu, cpu, fwd_tol=0, grad_tol=1e-10)
    if with_reference:
        assert_match(emu, run_and_grad(model, "torch", x, **kw))
    return emu


@pytest.mark.parametrize("name", sorted(LIBRARY))
@pytest.mark.parametrize("T,n", [(1, 1), (9, 255), (4, 257), (3, 5 * 256)])
def test_library_neurons_emulated_equal_cpu_and_reference(name, T, n):
    model = LIBRARY[name].spec
    gen = torch.Generator().manual_seed(T * 1000 + n)
    x = torch.randn(T, n, generator=gen, dtype=torch.float64) * 0.7 + 0.8
    learn = tuple(k for k in model.param_names if k in ("v_threshold", "tau", "w", "a", "c_decay"))
    params = dict(model.defaults)
    if "w" in params and name == "ParametricLIFNode":
        params["w"] = 0.3
    compare(model, x, params, learnable=learn)


def test_adex_example_emulated(adex):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(17, 3, 67, generator=gen, dtype=torch.float64) + 1.0
    params = dict(adex.defaults)
    params["a"] = 0.05 + 0.1 * torch.rand(67, generator=gen, dtype=torch.float64)
    compare(adex, x, params, learnable=("tau", "a", "b"), surrogate=ng.surrogate.ATan(),
            detach=True)


def test_scalar_parameter_gradient_across_many_blocks(adex):
    # 130 blocks of 256 threads plus a ragged tail: the reduction must see every block
    n = 130 * 256 + 77
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 1.0
    out = compare(adex, x, dict(adex.defaults), learnable=("tau", "v_threshold"),
                  with_reference=False)
    ref = run_and_grad(adex, "torch", x, params=dict(adex.defaults),
                       learnable=("tau", "v_threshold"))
    torch.testing.assert_close(out["grad_tau"], ref["grad_tau"], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(out["grad_v_threshold"], ref["grad_v_threshold"], rtol=1e-10,
                               atol=1e-8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_generated_models_emulated(case):
    model, surrogate, detach, learnable = case
    x = torch.randn(6, 37, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.7
    compare(model, x, dict(model.defaults), learnable=learnable, surrogate=surrogate,
            detach=detach)


@pytest.mark.skipif(not HALF_HEADERS, reason="no CUDA toolkit headers (cuda_fp16.h with "
                    "crt/host_defines.h) for host compilation of half kernels")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_kernels_emulated_close_to_float32(dtype, adex):
    x = torch.randn(12, 300, generator=torch.Generator().manual_seed(4)) + 1.0
    x = x.to(dtype).float()  # inputs exactly representable in the half type
    half = run_and_grad(adex, "cuda-emulated", x.to(dtype), params=dict(adex.defaults))
    full = run_and_grad(adex, "cuda-emulated", x, params=dict(adex.defaults))
    # float arithmetic inside; states are rounded to the half type only on output, so
    # spikes agree except where v lands within half precision of the threshold
    flips = (half["spikes"].float() != full["spikes"]).float().mean().item()
    assert flips < 0.01
    # half I/O (and half saved values) with float math: relative error of the whole tensor
    # at a few units of the type's rounding (fp16 2^-11, bf16 2^-8)
    eps = 2e-3 if dtype == torch.float16 else 1.5e-2
    for key in ("final_v", "final_w", "v_seq"):
        assert rel_err(half[key], full[key]) < eps, key
    if flips == 0:
        assert rel_err(half["grad_x"], full["grad_x"]) < 5 * eps


@pytest.mark.skipif(not HALF_HEADERS, reason="no CUDA toolkit headers (cuda_fp16.h with "
                    "crt/host_defines.h) for host compilation of half kernels")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_kernels_emulated_beat_pytorch_loop_in_same_dtype(dtype, adex):
    # half I/O with float math: closer to float64 than PyTorch's loop in that dtype (whose
    # arithmetic is in the half type); the gradient re-reads saved values in the half type,
    # so its error grows with T (T = 40: 1.3e-2 fp16, 4.4e-2 bf16 measured)
    x = (torch.randn(40, 2000, generator=torch.Generator().manual_seed(1)) + 1.0).to(dtype)
    kw = dict(params=dict(adex.defaults), learnable=("tau",))
    ref = run_and_grad(adex, "cpu", x.double(), **kw)
    ours = run_and_grad(adex, "cuda-emulated", x, **kw)
    loop = run_and_grad(adex, "torch", x, **kw)
    assert torch.equal(ours["spikes"].double(), ref["spikes"])
    for key in ("v_seq", "final_w", "grad_x", "grad_tau"):
        assert rel_err(ours[key], ref[key]) < rel_err(loop[key], ref[key]), key
    assert rel_err(ours["grad_x"], ref["grad_x"]) < (2.5e-2 if dtype == torch.float16 else 8e-2)


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def test_shim_is_part_of_the_package():
    text = shim()
    # thread_local only for kernels with barriers (recurrent layers), run with host threads
    start = text.index("#if defined(NG_EMULATE_THREADS)")
    end = text.index("#else", start)
    plain = text[:start] + text[end:]
    assert "#define threadIdx" in text and "thread_local" not in plain.replace(
        "no\n// thread_local", "")
    assert "thread_local" in text[start:end] and "__syncthreads" in text[start:end]
