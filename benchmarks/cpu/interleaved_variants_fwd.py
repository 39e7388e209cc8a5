"""Interleaved forward-only (no grad) timings: plain LIF, LIF + 2-step refractory, clamped
LIF (T=64, N=2^16, float32, CPU)."""
import statistics, time, torch, neurogen as ng
from neurogen.bench import clamped_lif_spec
T, N = 64, 1 << 16
x = torch.rand(T, N, generator=torch.Generator().manual_seed(0)) * 2.0
nodes = {"lif": ng.neuron.LIFNode(step_mode="m"),
         "lif+refractory2": ng.neuron.LIFNode(step_mode="m", refractory=2),
         "lif+clamp": clamped_lif_spec().module(step_mode="m")}
def call(n):
    with torch.no_grad():
        n.reset(); n(x)
for n in nodes.values(): call(n); call(n)
times = {k: [] for k in nodes}
for r in range(31):
    for k, n in nodes.items():
        t0 = time.perf_counter(); call(n); times[k].append((time.perf_counter() - t0) * 1e3)
med = {k: statistics.median(v) for k, v in times.items()}
for k, v in med.items():
    print(f"fwd {k:16s} {v:7.3f} ms  vs lif {v / med['lif']:.2f}x")
