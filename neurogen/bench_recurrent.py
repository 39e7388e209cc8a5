"""The recurrent workload of ``neurogen bench --recurrent``: a layer whose input at step t
adds ``W @ out[t-1]``, forward and backward of a whole sequence, beside its peers in the
same process on the same input.

Peers: SpikingJelly 2.0's neuron in step mode with an ``nn.Linear`` (the neurons it has),
snnTorch 1.0 ``RLeaky`` and Norse 1.1 ``LIFRecurrent`` (LIF only; Norse's cell also
multiplies its input by an input weight every step, which the others do not), the plain
torch loop (neurogen's torch step and ``nn.Linear``) and neurogen's own ``step_mode="s"``
loop. The floor is the three matrix products of each step (the forward one counted at the
measured spike rate, as an event-driven product needs) at the GEMM rate measured in the
same run on the ``grad_W`` product (``[H, T*B] @ [T*B, H]``). Asserts nothing about speed.
"""
import json
import os

import torch
from torch import nn

from . import neuron
from .bench import machine, timer
from .recurrent import RecurrentLayer
from .spec.model import NeuronModel

MODELS = ("LIF", "ALIF", "Izhikevich")
HS = (256, 512)


def alif_spec():
    """LIF with a spike-triggered adaptive threshold (the demo's neuron)."""
    return NeuronModel("alif", states={"v": 0.0, "th": "th0"},
                       params={"tau": 2.0, "tau_th": 8.0, "th0": 1.0, "beta": 0.2},
                       charge={"v": "v + (x - v) / tau"},
                       adaptation={"th": "th + (th0 - th) / tau_th"},
                       fire="v - th", reset={"v": "(1 - spike_d) * v", "th": "th + beta * spike"})


def _neurogen_node(model, **kw):
    if model == "LIF":
        return neuron.LIFNode(**kw)
    if model == "Izhikevich":
        return neuron.IzhikevichNode(**kw)
    return alif_spec().module(**kw)


# input scale per model: spike rates of a few to 20 percent with the default weights
SCALE = {"LIF": 1.5, "ALIF": 1.5, "Izhikevich": 2.0}


class _StepLoop(nn.Module):
    """A single-step neuron and an ``nn.Linear`` recurrence stepped in Python."""

    def __init__(self, node, H, reset):
        super().__init__()
        self.node, self.lin, self._reset = node, nn.Linear(H, H, bias=False), reset

    def forward(self, x):
        self._reset(self.node)
        prev, outs = torch.zeros_like(x[0]), []
        for t in range(x.shape[0]):
            prev = self.node(x[t] + self.lin(prev))
            outs.append(prev)
        return torch.stack(outs)


class _Layer(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        self.layer.reset()
        return self.layer(x)


class _SnnTorch(nn.Module):
    def __init__(self, H):
        super().__init__()
        import snntorch
        # beta = 1 - 1/tau of SpikingJelly's default tau = 2; reset to zero as the others
        self.cell = snntorch.RLeaky(beta=0.5, linear_features=H, reset_mechanism="zero")

    def forward(self, x):
        spk, mem = self.cell.init_rleaky()
        outs = []
        for t in range(x.shape[0]):
            spk, mem = self.cell(x[t], spk, mem)
            outs.append(spk)
        return torch.stack(outs)


class _Norse(nn.Module):
    def __init__(self, H):
        super().__init__()
        import norse.torch as nt
        self.cell = nt.LIFRecurrent(H, H)

    def forward(self, x):
        return self.cell(x)[0]


def peers(model, H, device):
    """name -> a fresh module mapping ``[T, B, H]`` to the output sequence."""
    out = {"neurogen": lambda: _Layer(RecurrentLayer(_neurogen_node(model, backend="auto"), H)),
           "neurogen step loop": lambda: _StepLoop(
               _neurogen_node(model, backend="auto", step_mode="s"), H, lambda n: n.reset()),
           "torch loop": lambda: _StepLoop(
               _neurogen_node(model, backend="torch", step_mode="s"), H, lambda n: n.reset())}
    try:
        from spikingjelly.activation_based import neuron as sj
        cls = {"LIF": "LIFNode", "Izhikevich": "IzhikevichNode"}.get(model)
        if cls is not None:
            out["spikingjelly"] = lambda: _StepLoop(getattr(sj, cls)(step_mode="s"), H,
                                                    lambda n: n.reset())
    except ImportError:
        pass
    if model == "LIF":
        try:
            import snntorch  # noqa: F401
            out["snntorch RLeaky"] = lambda: _SnnTorch(H)
        except ImportError:
            pass
        try:
            import norse.torch  # noqa: F401
            out["norse LIFRecurrent"] = lambda: _Norse(H)
        except ImportError:
            pass
    return out


def gemm_rate(device, measure, rows, H):
    """Multiply-adds per second of the ``grad_W`` product ``[H, rows] @ [rows, H]``."""
    a = torch.rand(rows, H, device=device)
    b = torch.rand(rows, H, device=device)
    ms = measure(lambda: a.t() @ b)
    return rows * H * H / (ms * 1e-3)


def run(device="cpu", out="bench-output", models=MODELS, Hs=HS, T=100, batch=64,
        repeats=5):
    device = torch.device(device)
    measure = timer(device, repeats, budget_s=20.0)
    info = {"machine": machine(device), "device": str(device), "T": T, "batch": batch,
            "rows": []}
    print(f"neurogen bench --recurrent on {info['machine']} ({device}): T = {T}, batch "
          f"{batch}, forward + backward of the whole sequence")
    print(f"{'model':<12}{'H':>5}  {'impl':<20}{'ms':>9}{'vs neurogen':>12}{'of floor':>9}"
          f"{'spike rate':>11}")
    for model in models:
        for H in Hs:
            info["rows"] += _one(model, H, T, batch, device, measure)
            _write(info, out)
    _plot(info, out)
    print(f"wrote {out}/recurrent.json, {out}/recurrent_time_vs_H.png")
    return info


def _one(model, H, T, B, device, measure):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, H, generator=gen) * SCALE[model]).to(device)
    g = torch.rand(T, B, H, generator=gen).to(device)
    rate_gemm = gemm_rate(device, measure, T * B, H)
    rows, base, rate = [], None, None
    for impl, make in peers(model, H, device).items():
        try:
            torch.manual_seed(1)
            net = make().to(device)
            xin = x.clone().requires_grad_()

            def fn():
                xin.grad = None
                net(xin).backward(g)
            ms = measure(fn)
            if impl == "neurogen":
                with torch.no_grad():
                    rate = float(net(x).float().mean())
        except Exception as exc:  # a peer that fails is reported, not fatal
            print(f"  {impl}: not run ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
            continue
        base = base or ms
        flops = T * B * H * H * (rate + 2.0)  # forward at the spike rate, backward, grad_W
        floor_ms = flops / rate_gemm * 1e3
        row = dict(model=model, H=H, T=T, batch=B, impl=impl, ms=ms,
                   vs_neurogen=ms / base, floor_ms=floor_ms, fraction_of_floor=floor_ms / ms,
                   spike_rate=rate, gemm_madd_per_s=rate_gemm)
        rows.append(row)
        print(f"{model:<12}{H:>5}  {impl:<20}{ms:>9.2f}{row['vs_neurogen']:>11.1f}x"
              f"{row['fraction_of_floor']:>9.2f}{rate:>11.3f}")
    fastest_peer = min((r["ms"] for r in rows if not r["impl"].startswith("neurogen")),
                       default=None)
    if fastest_peer is not None and rows and rows[0]["impl"] == "neurogen":
        print(f"  neurogen: {fastest_peer / rows[0]['ms']:.1f}x the fastest peer, "
              f"{rows[0]['ms'] / rows[0]['floor_ms']:.2f}x the floor "
              f"(GEMM {rate_gemm / 1e9:.1f} G multiply-adds/s)")
    return rows


def _write(info, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "recurrent.json"), "w") as f:
        json.dump(info, f, indent=1)


def _plot(info, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for model in sorted({r["model"] for r in info["rows"]}):
        for impl in sorted({r["impl"] for r in info["rows"]}):
            pts = sorted((r["H"], r["ms"]) for r in info["rows"]
                         if r["model"] == model and r["impl"] == impl)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"{model} {impl}")
    floors = {}
    for r in info["rows"]:
        floors.setdefault((r["model"], r["H"]), r["floor_ms"])
    for model in sorted({m for m, _ in floors}):
        pts = sorted((H, ms) for (m, H), ms in floors.items() if m == model)
        ax.plot(*zip(*pts), linestyle=":", color="gray")
    ax.set(xscale="log", yscale="log", xlabel="H (hidden neurons)",
           ylabel="ms (fwd+bwd, float32)",
           title=f"recurrent, T = {info['T']}, batch {info['batch']}; dotted: floor\n"
                 f"{info['machine'][:70]}")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "recurrent_time_vs_H.png"), dpi=100)
    plt.close(fig)


# ---- single-step calls ---------------------------------------------------------------------
def single_step(device="cpu", out="bench-output", shapes=((64, 256), (1, 64)), steps=20,
                repeats=21, block=3):
    """Per-step time of a training loop of single-step calls (``step_mode="s"``): forward
    of each step, one backward through all of them (each step's input a leaf of its own,
    as a layer's output would be), neurogen's LIF beside SpikingJelly 2.0's in the same
    process: ``repeats`` rounds, each running every library ``block`` timed times after one
    untimed run (``block=1``: strictly alternating single runs). Also inference
    (``torch.no_grad``)."""
    import time
    device = torch.device(device)
    try:
        from spikingjelly.activation_based import neuron as sj
    except ImportError:
        sj = None
    info = {"machine": machine(device), "device": str(device), "steps": steps, "rows": []}
    info["block"] = block
    print(f"neurogen bench --single-step on {info['machine']} ({device}): LIF, {steps} "
          "single-step calls, then one backward; us per step, median over "
          f"{repeats} rounds of {block} timed runs per library"
          + (" (strictly alternating)" if block <= 1 else " (after one untimed)"))
    print(f"{'shape':<12}{'mode':<10}{'impl':<14}{'us/step':>9}{'vs neurogen':>13}")
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(steps, *shape, generator=gen) * 1.5).to(device)
        g = torch.rand(steps, *shape, generator=gen).to(device)
        nodes = {"neurogen": neuron.LIFNode(step_mode="s", backend="auto")}
        if sj is not None:
            nodes["spikingjelly"] = sj.LIFNode(step_mode="s").to(device)
        for mode in ("fwd+bwd", "fwd"):
            fns = {}
            for impl, node in nodes.items():
                xs = [x[t].clone().requires_grad_(mode == "fwd+bwd") for t in range(steps)]

                def fn(node=node, xs=xs, train=mode == "fwd+bwd"):
                    node.reset()
                    if train:
                        for q in xs:
                            q.grad = None
                        torch.stack([node(q) for q in xs]).backward(g)
                    else:
                        with torch.no_grad():
                            for q in xs:
                                node(q)
                fns[impl] = fn
            times = {k: [] for k in fns}
            for f in fns.values():
                f()
                f()
            for _ in range(repeats):
                for k, f in fns.items():
                    # a block of runs of one library, the first untimed: the state a
                    # training loop running only this library is in (strictly alternating
                    # single runs measure each after the other's, on cold caches)
                    for i in range(block + 1 if block > 1 else 1):
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        f()
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        if block <= 1 or i > 0:
                            times[k].append((time.perf_counter() - t0) / steps * 1e6)
            base = None
            for impl, ts in times.items():
                us = sorted(ts)[len(ts) // 2]
                base = base or us
                row = dict(shape=list(shape), mode=mode, impl=impl, us_per_step=us,
                           vs_neurogen=us / base)
                info["rows"].append(row)
                print(f"{'x'.join(map(str, shape)):<12}{mode:<10}{impl:<14}{us:>9.1f}"
                      f"{us / base:>12.2f}x")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "single_step.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


__all__ = ["run", "peers", "gemm_rate", "single_step", "MODELS", "HS"]
