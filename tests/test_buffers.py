"""The CPU output-buffer cache (neurogen.buffers) and the CPU threading modes."""
import gc
import subprocess
import threading
import sys

import pytest
import torch

import neurogen as ng
from neurogen import buffers, neuron
from neurogen.errors import warn_once
from neurogen.targets import cpu, host_compiler

BIG = (64, 8192)  # 2 MiB in float32: above buffers.MIN_BYTES


@pytest.fixture(autouse=True)
def fresh_cache():
    buffers.empty_cpu_cache()
    limit = buffers.cpu_cache_info()["limit_bytes"]
    yield
    buffers.set_cpu_cache_limit(limit)
    buffers.empty_cpu_cache()


def test_freed_block_is_reused_and_live_blocks_are_not():
    a = buffers.empty(BIG, torch.float32, "cpu")
    b = buffers.empty(BIG, torch.float32, "cpu")
    assert a.shape == BIG and a.dtype == torch.float32 and a.is_contiguous()
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    del a
    gc.collect()
    hits = counts()[0]
    c = buffers.empty(BIG, torch.float32, "cpu")
    assert c.data_ptr() == ptr
    assert counts()[0] == hits + 1


def test_a_view_keeps_its_block_alive():
    a = buffers.empty(BIG, torch.float32, "cpu")
    a.fill_(3.0)
    row = a[5]
    ptr = a.data_ptr()
    del a
    gc.collect()
    b = buffers.empty(BIG, torch.float32, "cpu")
    b.fill_(-1.0)
    assert b.data_ptr() != ptr
    assert torch.all(row == 3.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtypes(dtype):
    t = buffers.empty(BIG, dtype, "cpu")
    assert t.dtype == dtype and t.shape == BIG
    t.fill_(1.5)
    assert float(t.float().mean()) == 1.5


def counts():
    info = buffers.cpu_cache_info()
    return info["hits"], info["misses"]


def test_large_blocks_start_at_staggered_offsets_within_a_huge_page():
    # 16 MiB blocks (the [64, 65536] float32 tensors of the benchmark's target) and 64 MiB
    # ones: successive allocations would sit one page apart modulo 2 MiB without this
    for shape in [(64, 1 << 16), (256, 1 << 16)]:
        nbytes = shape[0] * shape[1] * 4
        slack = buffers._slack(nbytes)
        assert slack == min(buffers.HUGE, nbytes // 16)
        blocks = [buffers.empty(shape, torch.float32, "cpu") for _ in range(4)]
        offsets = [t.data_ptr() % slack for t in blocks]
        assert all(t.data_ptr() % buffers.ALIGN == 0 for t in blocks)
        gaps = [abs(a - b) for i, a in enumerate(offsets) for b in offsets[i + 1:]]
        assert min(gaps) >= slack // 8, offsets  # golden-ratio steps: far apart
        for i, t in enumerate(blocks):  # each block is its own memory, all of it usable
            t.fill_(float(i))
            t[-1, -1] = -1.0
        for i, t in enumerate(blocks):
            assert float(t[0, 0]) == i and float(t[-1, -2]) == i and float(t[-1, -1]) == -1.0
    # below the threshold: no room reserved, plain 64-byte alignment
    assert buffers._slack(buffers.STAGGER_BYTES - 1) == 0


def test_small_and_uncached_requests_use_torch():
    before = counts()
    buffers.empty((16, 16), torch.float32, "cpu")
    buffers.set_cpu_cache_limit(0)
    for _ in range(3):
        buffers.empty(BIG, torch.float32, "cpu")
    assert counts() == before and buffers.cpu_cache_info()["cached_bytes"] == 0


def test_limit_trims_and_bounds_the_cache():
    blocks = [buffers.empty(BIG, torch.float32, "cpu") for _ in range(3)]
    nbytes = blocks[0].numel() * 4
    del blocks
    gc.collect()
    assert buffers.cpu_cache_info()["cached_bytes"] == 3 * nbytes
    buffers.set_cpu_cache_limit(nbytes)
    assert buffers.cpu_cache_info()["cached_bytes"] == nbytes
    buffers.empty_cpu_cache()
    assert buffers.cpu_cache_info()["cached_bytes"] == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True])
def test_bad_limit(bad):
    with pytest.raises(ValueError, match="bytes"):
        buffers.set_cpu_cache_limit(bad)


def test_bad_environment_value_is_named():
    code = "import neurogen.buffers"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"NEUROGEN_CPU_CACHE_MB": "lots", "PATH": ""})
    assert proc.returncode != 0 and "NEUROGEN_CPU_CACHE_MB" in proc.stderr


def test_outputs_kept_by_the_user_are_never_overwritten():
    # training-loop pattern: outputs of call 1 kept while call 2 runs on recycled blocks
    torch.manual_seed(0)
    node = neuron.IzhikevichNode(step_mode="m", backend="cpu")
    xs = [(torch.rand(32, 8192) * 2).requires_grad_() for _ in range(3)]
    kept = []
    for x in xs:
        node.reset()
        out = node(x)
        out.backward(torch.ones_like(out))
        kept.append((out.detach().clone(), out, x.grad.clone(), x.grad))
    buffers.set_cpu_cache_limit(0)  # recompute each call alone, with the cache off
    for (ref_out, out, ref_grad, grad), x in zip(kept, xs):
        assert torch.equal(out.detach(), ref_out) and torch.equal(grad, ref_grad)
        x2 = x.detach().clone().requires_grad_()
        node.reset()
        out2 = node(x2)
        out2.backward(torch.ones_like(out2))
        assert torch.equal(out2.detach(), ref_out) and torch.equal(x2.grad, ref_grad)


def test_training_loop_reuses_blocks():
    node = neuron.LIFNode(step_mode="m", backend="cpu")
    x = torch.rand(32, 8192, requires_grad=True)
    hits = counts()[0]
    for _ in range(4):
        x.grad = None
        node.reset()
        node(x).sum().backward()
    assert counts()[0] - hits >= 6  # spikes, saved values, grad_x: from the cache after call 1


def test_threading_modes_agree(monkeypatch):
    torch.manual_seed(1)
    x = (torch.rand(16, 3 * 2048 + 77, dtype=torch.float64) * 2).requires_grad_()
    results, launched = {}, []
    launch = cpu.launch_cpu
    monkeypatch.setattr(cpu, "launch_cpu",
                        lambda k, *a: launched.append(k.launch["openmp"]) or launch(k, *a))
    for mode in ("pool", "openmp"):
        monkeypatch.setattr(host_compiler, "cpu_threading", lambda mode=mode: mode)
        ng.forget_kernels()  # plans cached by the first mode must not be reused
        launched.clear()
        node = neuron.IzhikevichNode(step_mode="m", backend="cpu")
        x.grad = None
        out = node(x)
        out.backward(torch.rand_like(out, generator=torch.Generator().manual_seed(2)))
        results[mode] = (out.detach(), x.grad.clone(), node.v.clone())
        assert launched == [mode == "openmp"] * 2  # forward and backward, built for the mode
    ng.forget_kernels()
    for a, b in zip(results["pool"], results["openmp"]):
        assert torch.equal(a, b)


def test_threading_override(monkeypatch):
    host_compiler.cpu_threading.cache_clear()
    monkeypatch.setenv("NEUROGEN_CPU_THREADING", "sideways")
    with pytest.raises(ValueError, match="NEUROGEN_CPU_THREADING"):
        host_compiler.cpu_threading()
    monkeypatch.setenv("NEUROGEN_CPU_THREADING", "pool")
    assert host_compiler.cpu_threading() == "pool"
    host_compiler.cpu_threading.cache_clear()
    monkeypatch.delenv("NEUROGEN_CPU_THREADING")
    assert host_compiler.cpu_threading() in ("openmp", "pool")
    host_compiler.cpu_threading.cache_clear()


def test_compiler_without_openmp_falls_back_to_the_pool_with_a_warning(monkeypatch):
    import neurogen as ng
    monkeypatch.setattr(host_compiler, "cpu_threading", lambda: "openmp")
    monkeypatch.setattr(host_compiler, "CPU_OPENMP_FLAGS",
                        host_compiler.CPU_FLAGS + ("-fno-such-openmp-flag-neurogen",))
    monkeypatch.setattr(host_compiler, "_openmp_failed", [])
    warn_once.__defaults__[0].clear()
    ng.forget_kernels()
    x = torch.rand(16, 3 * 2048 + 5, dtype=torch.float64) * 2
    with pytest.warns(RuntimeWarning, match="cannot build the CPU kernels with -fopenmp"):
        out = ng.neuron.LIFNode(step_mode="m", backend="cpu")(x)
    ref = ng.neuron.LIFNode(step_mode="m", backend="torch")(x)
    assert torch.equal(out, ref)
    ng.forget_kernels()  # later tests get OpenMP-built kernels again


def test_a_broken_source_still_raises_compile_error(monkeypatch):
    import neurogen as ng
    monkeypatch.setattr(host_compiler, "cpu_threading", lambda: "openmp")
    monkeypatch.setattr(host_compiler, "_openmp_failed", [])
    with pytest.raises(ng.CompileError):
        host_compiler.compile_kernel('extern "C" void f() { not C++ }', "f")
    assert not host_compiler._openmp_failed  # a bad source does not turn OpenMP off


def test_cpu_blocks_split_evenly_within_the_largest_block():
    for n, max_block, workers in [(65536, 8192, 2), (20000, 8192, 2), (17, 8192, 2),
                                  (1, 8192, 1), (100_000, 256, 3), (8193, 8192, 1)]:
        size, blocks = cpu.cpu_blocks(n, max_block, workers)
        assert size <= max_block and size % 16 == 0
        assert (blocks - 1) * size < n <= blocks * size
    assert cpu.cpu_blocks(20000, 8192, 2) == (5008, 4)   # 2 blocks per thread, not 2 + 1
    assert cpu.cpu_blocks(65536, 8192, 2) == (8192, 8)


def test_cpu_block_arrays_stay_within_the_array_budget():
    from neurogen.targets.cpu import ARRAY_BUDGET as CPU_ARRAY_BUDGET
    from neurogen.targets.cpu import BLOCK as CPU_BLOCK
    from neurogen.targets.cpu import max_block as cpu_max_block
    assert cpu_max_block(3, "float") == CPU_BLOCK
    for n_arrays in (1, 8, 9, 40, 200):
        for compute, size in (("float", 4), ("double", 8)):
            block = cpu_max_block(n_arrays, compute)
            assert 256 <= block <= CPU_BLOCK
            assert block == 256 or block * size * n_arrays <= CPU_ARRAY_BUDGET


def test_results_do_not_depend_on_the_block_size(monkeypatch):
    x = (torch.rand(12, 5000, generator=torch.Generator().manual_seed(3)) * 2).requires_grad_()
    g = torch.rand(12, 5000, generator=torch.Generator().manual_seed(4))
    out = {}
    for name, blocks in (("default", cpu.cpu_blocks),
                         ("small", lambda n, max_block, workers: (16, -(-n // 16)))):
        monkeypatch.setattr(cpu, "cpu_blocks", blocks)
        node = neuron.IzhikevichNode(step_mode="m", backend="cpu")
        x.grad = None
        spikes = node(x)
        spikes.backward(g)
        out[name] = (spikes.detach().clone(), node.v.detach().clone(), x.grad.clone())
    for a, b in zip(out["default"], out["small"]):
        assert torch.equal(a, b)


def test_constant_tensors_are_shared_and_refilled_after_a_change():
    a = buffers.constant((1000,), 0.5, torch.float32, "cpu")
    assert torch.equal(a, torch.full((1000,), 0.5))
    assert buffers.constant((1000,), 0.5, torch.float32, "cpu") is a
    assert buffers.constant((1000,), 0.25, torch.float32, "cpu") is not a
    assert buffers.constant((1000,), 0.5, torch.float64, "cpu").dtype == torch.float64
    a.add_(1.0)  # someone wrote into it: the next caller gets a fresh one, filled right
    b = buffers.constant((1000,), 0.5, torch.float32, "cpu")
    assert b is not a and torch.equal(b, torch.full((1000,), 0.5))
    nan = buffers.constant((3,), float("nan"), torch.float32, "cpu")
    assert nan.isnan().all() and buffers.constant((3,), float("nan"), torch.float32, "cpu") is nan
    for k in range(40):  # bounded
        buffers.constant((k + 1,), 0.0, torch.float32, "cpu")
    assert len(buffers._constants) <= buffers._CONSTANTS_KEPT


def test_initial_states_from_the_constant_cache_stay_correct():
    # a training loop from reset(): the shared initial states are only read, and a loss on
    # the final state alone (spikes and v_seq unused: autograd passes None for them)
    node = neuron.IzhikevichNode(step_mode="m", backend="cpu")
    x = (torch.rand(6, 300, generator=torch.Generator().manual_seed(1)) * 2).requires_grad_()
    grads = []
    for _ in range(3):
        node.reset()
        node(x)
        x.grad = None
        node.v.sum().backward()
        grads.append(x.grad.clone())
    assert grads[0].abs().sum() > 0 and all(torch.equal(grads[0], g) for g in grads[1:])
    ref = neuron.IzhikevichNode(step_mode="m", backend="torch")
    x.grad = None
    ref(x)
    ref.v.sum().backward()
    torch.testing.assert_close(grads[0], x.grad, rtol=1e-4, atol=1e-5)


SMALL_STACK = """
import threading, torch
from neurogen import neuron
threading.stack_size(256 * 1024)   # below the block arrays of one Izhikevich backward block
result = {}
def run():
    x = (torch.rand(16, 65536) * 2).requires_grad_()
    node = neuron.IzhikevichNode(step_mode="m", backend="cpu")
    node(x).sum().backward()
    result["ok"] = bool(torch.isfinite(x.grad).all())
t = threading.Thread(target=run)
t.start(); t.join()
print(result)
"""


def test_kernels_run_on_a_thread_with_a_small_stack():
    # the block arrays (384 KiB for the Izhikevich backward at 2^16 neurons) live in a
    # scratch buffer, not on the stack: a 256 KiB thread stack used to overflow
    proc = subprocess.run([sys.executable, "-c", SMALL_STACK], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "{'ok': True}" in proc.stdout


def test_scratch_is_per_thread_and_reused():
    a = cpu.scratch(1 << 20)
    assert a % 64 == 0 and cpu.scratch(1000) == a   # smaller requests reuse it
    other = {}
    t = threading.Thread(target=lambda: other.setdefault("a", cpu.scratch(1 << 20)))
    t.start()
    t.join()
    assert other["a"] != a
