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
