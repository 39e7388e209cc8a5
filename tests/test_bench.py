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
    assert rows and all(r["ms"] > 0 and r["floor_ms"] > 0 for r in rows)
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
