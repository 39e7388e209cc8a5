"""The benchmark suite runs in a reduced size and writes its outputs (no speed asserted)."""
import json
import subprocess
import sys


def test_bench_quick_writes_table_json_and_plots(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "neurogen", "bench", "--quick", "--models",
                           "LIFNode", "IzhikevichNode", "--T", "8", "--N", "1024",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "copy bandwidth" in proc.stdout and "neurogen" in proc.stdout
    data = json.loads((out / "bench.json").read_text())
    assert data["copy_GBps"] > 0 and data["machine"]
    impls = {r["impl"] for r in data["rows"]}
    assert {"neurogen", "torch loop"} <= impls
    rows = [r for r in data["rows"] if r["impl"] == "neurogen" and r["mode"] == "fwd+bwd"]
    assert rows and all(r["ms"] > 0 and r["floor_ms"] > 0 and r["copy_GBps"] > 0 for r in rows)
    izh = [r for r in rows if r["model"] == "IzhikevichNode"][0]
    assert izh["saved_bytes_per_neuron_step"] <= 4 * 1.5   # h alone, plus states over T=8
    for name in ("time_vs_T.png", "time_vs_N.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_byte_floor_counts_saved_values_only_for_training():
    from neurogen import neuron
    from neurogen.bench import workload_bytes
    izh = neuron.IzhikevichNode.spec  # saves h alone: 1 tensor
    T, N = 10, 100
    fwd, saved = workload_bytes(izh, 4, T, N, backward=False)
    train, _ = workload_bytes(izh, 4, T, N, backward=True)
    states = 2 * 2 * N * 4  # initial states in, final states out
    assert saved == 4
    assert fwd == 2 * T * N * 4 + states           # x, spikes
    assert train == 6 * T * N * 4 + states         # + h out, grad in, h in, grad_x out


def test_default_shapes_sweep_T_and_N_as_a_cross():
    import torch
    from neurogen.bench import shapes
    cpu = shapes(torch.device("cpu"))
    assert [p for p in cpu if p[1] == 1 << 16] == [(8, 65536), (32, 65536), (64, 65536),
                                                   (128, 65536), (512, 65536)]
    assert [p for p in cpu if p[0] == 64] == [(64, 65536), (64, 1024), (64, 16384)]
    assert len(cpu) == len(set(cpu)) == 7
    gpu = shapes(torch.device("cuda"))
    assert (512, 1 << 20) in gpu and (64, 1 << 22) in gpu and (512, 1 << 22) not in gpu
    assert shapes(torch.device("cpu"), Ts=[8, 16], Ns=[10, 20]) == [(8, 10), (8, 20),
                                                                   (16, 10), (16, 20)]


def test_gpu_peers_name_each_spikingjelly_cuda_implementation():
    import importlib
    import pytest
    import torch
    from neurogen.bench import peers
    pytest.importorskip("spikingjelly")
    impls = peers("LIFNode", torch.device("cuda"), torch.float32, False)
    assert list(impls) == ["neurogen", "torch loop", "spikingjelly", "sj-cuda", "sj-triton",
                           "sj-torch"]
    selection = importlib.import_module("spikingjelly._ops.lif")._selection
    try:
        impls["sj-triton"]()   # builds the module and selects SpikingJelly's Triton kernels
        assert selection._requested == "triton" and not selection._selections
    finally:
        impls["spikingjelly"]()
    assert selection._requested == "auto"
    assert "sj-triton" not in peers("AdExNode", torch.device("cuda"), torch.float32, False)


def test_bench_variants_run_beside_their_base_and_spikingjelly(tmp_path):
    """The refractory and clamped LIF rows (issue 19) time the plain LIF and SpikingJelly's
    LIF in the same process, for the ratios in BENCHMARKS.md."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "neurogen", "bench", "--quick", "--models",
                           "LIFNode+refractory2", "LIFNode+clamp", "--T", "8", "--N", "1024",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "bench.json").read_text())["rows"]
    for model in ("LIFNode+refractory2", "LIFNode+clamp"):
        impls = {r["impl"] for r in rows if r["model"] == model}
        assert {"neurogen", "neurogen base", "torch loop", "spikingjelly", "sj FlexSN"} <= impls, \
            impls
    assert {r.get("implementation") for r in rows if r["impl"] == "sj FlexSN"} == {"torch loop"}


def test_bench_flexsn_peers_are_the_variants():
    """The bench's SpikingJelly FlexSN cores run the same neurons as the variants they are
    timed beside (float64, CPU, where FlexSN loops over its core in torch): spikes equal,
    final states 1e-10, input gradients 1e-8. The input goes below the clamp's floor
    (seen failing with the clamp left out of the FlexSN core, and with its counter set
    to 3)."""
    import pytest
    import torch
    from neurogen import bench
    pytest.importorskip("spikingjelly")
    D = torch.float64
    gen = torch.Generator().manual_seed(5)
    for name in bench.FLEXSN:
        make, _ = bench.factory(name)
        node = make(step_mode="m", backend="cpu")
        peer = bench.flexsn_peer(name, D)
        x = (torch.rand(40, 257, generator=gen, dtype=D) * 3.7 - 1.5).requires_grad_()
        g = torch.rand(40, 257, generator=gen, dtype=D)
        x2 = x.detach().clone().requires_grad_()
        ours, theirs = node(x), peer(x2)
        assert torch.equal(ours, theirs), name
        assert 0.05 < float(ours.detach().mean()) < 0.5    # (the branches are taken)
        for ours_state, theirs_state in zip(node.model.state_names, peer.states):
            torch.testing.assert_close(getattr(node, ours_state), theirs_state, rtol=0,
                                       atol=1e-10)
        (ours * g).sum().backward()
        (theirs * g).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-8)
