"""Interleaved fwd+bwd timings (T=64, N=2^16, float32, CPU): plain LIF, LIF + 2-step
refractory, clamped LIF (neurogen, backend auto) and SpikingJelly 2.0's LIFNode."""
import statistics, time, sys
import torch
import neurogen as ng
from neurogen.bench import clamped_lif_spec
from spikingjelly.activation_based import neuron as sj
T, N = 64, 1 << 16
gen = torch.Generator().manual_seed(0)
x = torch.rand(T, N, generator=gen) * 2.0
g = torch.rand(T, N, generator=gen)
nodes = {"lif": ng.neuron.LIFNode(step_mode="m"),
         "lif+refractory2": ng.neuron.LIFNode(step_mode="m", refractory=2),
         "lif+clamp": clamped_lif_spec().module(step_mode="m"),
         "sj lif": sj.LIFNode(step_mode="m")}
xin = x.clone().requires_grad_()
def call(node):
    xin.grad = None  # as after optimizer.zero_grad() (as neurogen bench does)
    node.reset()
    node(xin).backward(g)
for n in nodes.values():
    call(n); call(n)
times = {k: [] for k in nodes}
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 15
for r in range(reps):
    for k, n in nodes.items():
        if k == "sj lif" and r % 3:
            continue
        t0 = time.perf_counter(); call(n); times[k].append((time.perf_counter() - t0) * 1e3)
med = {k: statistics.median(v) for k, v in times.items()}
for k, v in med.items():
    print(f"{k:16s} {v:8.3f} ms  ({len(times[k])} runs)  vs lif {v / med['lif']:.2f}x  "
          f"sj/this {med['sj lif'] / v:.1f}x")
with torch.no_grad():
    print("spike rate lif+refractory2:", float(nodes["lif+refractory2"](x).mean()), "lif:",
          float(nodes["lif"](x).mean()))
