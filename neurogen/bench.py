"""Benchmark suite: neurogen's kernels beside their peers, in one process, same inputs.

``neurogen bench`` (or ``python -m neurogen.bench``). Peers: the plain PyTorch
loop of the same equations (autograd), SpikingJelly 2.0's neuron (each
implementation it offers on the device; for the variants with a refractory period or a
clamp, its plain LIF and its ``FlexSN`` of the same neuron, Triton kernels on CUDA), and
``torch.compile`` of the loop (``--compile``, where it compiles). The floor is each workload's minimal bytes
over the copy bandwidth, measured again right before each workload (a machine whose
bandwidth drifts over minutes would otherwise set one workload's floor from another
moment). Writes a table, a JSON file and PNG plots; asserts nothing about speed.
"""
import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

import torch

from . import neuron
from .config import derivation, make_config

MODELS = ("IzhikevichNode", "LIFNode", "AdExNode", "LIFNode+refractory2", "LIFNode+clamp")
# neurogen name -> (SpikingJelly class, its operator package under spikingjelly._ops)
SJ_NAMES = {"LIFNode": ("LIFNode", "lif"), "IzhikevichNode": ("IzhikevichNode", "izhikevich")}
# SpikingJelly 2.0 picks one CUDA implementation per operator (env SJ_<OP>_CUDA_IMPLEMENTATION):
# its native CUDA extension (built from source only), Triton, or its torch reference.
SJ_CUDA_IMPLS = ("cuda", "triton", "torch")
TARGET_T = 64


@functools.lru_cache(maxsize=None)
def clamped_lif_spec():
    """SpikingJelly's LIF with a floor on the membrane (``clamp(H, v_min)``)."""
    lif = neuron.lif_spec()
    return lif.replace(name="clamped_lif", params={**lif.defaults, "v_min": -0.5},
                       charge={"v": "clamp(v + (x - (v - v_reset)) / tau, v_min)"})


# variants of library neurons (issue 19): name -> (factory(**module options), base neuron);
# the base runs beside them as "neurogen base" and its SpikingJelly neuron as the peer
VARIANTS = {
    "LIFNode+refractory2": (lambda **kw: neuron.LIFNode(refractory=2, **kw), "LIFNode"),
    "LIFNode+clamp": (lambda **kw: clamped_lif_spec().module(**kw), "LIFNode"),
}


# SpikingJelly 2.0 FlexSN cores of the same variants (its step function in torch ops; on
# CUDA FlexSN compiles it to Triton kernels, on the CPU it loops over the steps), with
# SpikingJelly's LIF arithmetic and its Sigmoid(alpha=4) surrogate, neurogen's default.
# tests/test_bench.py checks they give the variants' numbers (float64: spikes equal,
# states 1e-10, gradients 1e-8). name -> (core, number of states); the static inputs are
# the core's last arguments, named as the variant's parameters, with their defaults
def _flexsn_refractory_lif(x, v, refractory, tau, v_threshold, v_reset):
    """LIFNode(refractory=2): a refractory neuron keeps v and cannot fire."""
    from spikingjelly.activation_based.surrogate import sigmoid
    free = refractory <= 0
    h = torch.where(free, v + (x - (v - v_reset)) / tau, v)
    spike = sigmoid.apply(torch.where(free, h - v_threshold, -torch.ones_like(h)), 4.0)
    v_next = (1.0 - spike) * h + spike * v_reset
    counter = torch.where(spike > 0, 2.0 * torch.ones_like(h),
                          torch.where(refractory > 0, refractory - 1.0, torch.zeros_like(h)))
    return spike, v_next, counter


def _flexsn_clamped_lif(x, v, tau, v_threshold, v_reset, v_min):
    """The clamped LIF: SpikingJelly's charge with a floor at v_min, hard reset."""
    from spikingjelly.activation_based.surrogate import sigmoid
    h = torch.clamp(v + (x - (v - v_reset)) / tau, min=v_min)
    spike = sigmoid.apply(h - v_threshold, 4.0)
    return spike, (1.0 - spike) * h + spike * v_reset


FLEXSN = {
    "LIFNode+refractory2": (_flexsn_refractory_lif, 2),
    "LIFNode+clamp": (_flexsn_clamped_lif, 1),
}


def flexsn_peer(model_name, dtype=torch.float32):
    """A SpikingJelly ``FlexSN`` module running the same neuron as ``model_name``."""
    import inspect
    from spikingjelly.activation_based.neuron import FlexSN
    core, n_states = FLEXSN[model_name]
    defaults = spec_of(model_name).defaults
    static = list(inspect.signature(core).parameters)[1 + n_states:]
    return FlexSN(core, num_states=n_states, step_mode="m",
                  static_inputs=tuple(torch.tensor(defaults[k], dtype=dtype) for k in static))


def _flexsn_implementation(node, x):
    """Which of its implementations FlexSN ran: its torch loop off CUDA; on CUDA its Triton
    kernels, or its HOP scan where Triton was not available (its own fallback)."""
    if x.device.type != "cuda":
        return "torch loop"
    chosen = getattr(node, "_triton_capability", {}).get((x.device, x.dtype))
    return {True: "triton", False: "hop scan"}.get(chosen, "unknown")


def factory(model_name):
    """``(make(**module options), base library name)`` of a benchmark model."""
    if model_name in VARIANTS:
        return VARIANTS[model_name]
    return neuron.LIBRARY[model_name], model_name


def spec_of(model_name):
    make, _ = factory(model_name)
    return make().model


def machine(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def timer(device, repeats, budget_s=2.0):
    """Median time in ms of one call of ``fn``, after two warm-up calls: ``repeats``
    samples, fewer (at least 5) once ``budget_s`` is spent. CPU: perf_counter around one
    call. CUDA: events around a batch of back-to-back calls (as in a training loop, where
    the host prepares the next launch while the GPU works), divided by the batch size;
    calls under 20 ms are batched up to 20 ms (at most 20 calls), so the host's latency
    before a sample's first launch, which a training loop hides, is not counted whole."""
    def run(fn):
        fn()
        fn()
        batch = 1
        if device.type == "cuda":
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            batch = max(1, min(20, int(0.020 / max(time.perf_counter() - t0, 1e-6))))
        times = []
        t_end = time.perf_counter() + budget_s
        for i in range(repeats):
            if i >= 5 and time.perf_counter() > t_end:
                break
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(batch):
                    fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / batch)
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return run


def copy_bandwidth(device, measure, nbytes=1 << 28):
    """Achievable bandwidth (GB/s) of a large device-to-device copy (read + write)."""
    n = nbytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    ms = measure(lambda: dst.copy_(src))
    return 2 * n * 4 / ms / 1e6


def saved_bytes(step, x, grad_out):
    """Bytes autograd keeps for the backward, minus the input itself (measured by hooks)."""
    seen = {}

    def pack(t):
        if t.data_ptr() != x.data_ptr():
            seen[(t.data_ptr(), t.numel())] = t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    out.backward(grad_out)
    return sum(seen.values())


def peers(model_name, device, dtype, use_compile):
    """name -> factory of a fresh module for the workload (neurogen first)."""
    cls, base = factory(model_name)
    out = {"neurogen": lambda: cls(step_mode="m", backend="auto")}
    if base != model_name:  # a variant: its base neuron side by side
        out["neurogen base"] = lambda: neuron.LIBRARY[base](step_mode="m", backend="auto")
    out["torch loop"] = lambda: cls(step_mode="m", backend="torch")
    if use_compile:
        def compiled():
            node = cls(step_mode="m", backend="torch")
            node.forward = torch.compile(node.forward)
            return node
        out["torch.compile"] = compiled
    try:
        from spikingjelly.activation_based import neuron as sj
    except ImportError:
        return out
    if model_name in FLEXSN:  # (SpikingJelly has no such neuron class: its FlexSN of it)
        out["sj FlexSN"] = functools.partial(flexsn_peer, model_name, dtype)
    if base not in SJ_NAMES:
        return out
    cls_name, op = SJ_NAMES[base]
    if device.type != "cuda":
        out["spikingjelly"] = lambda: getattr(sj, cls_name)(step_mode="m")
        return out
    # what a user gets (its own choice; the torch reference for half types), then each one
    out["spikingjelly"] = functools.partial(_sj_on_cuda, getattr(sj, cls_name), op, "auto")
    for impl in SJ_CUDA_IMPLS:
        out[f"sj-{impl}"] = functools.partial(_sj_on_cuda, getattr(sj, cls_name), op, impl)
    return out


def _sj_on_cuda(cls, op, impl):
    """A SpikingJelly neuron whose operator runs ``impl`` on CUDA (as if the environment
    variable had chosen it; SpikingJelly reads it once at import, so set its selection)."""
    import importlib
    selection = importlib.import_module(f"spikingjelly._ops.{op}")._selection
    selection._requested = impl
    selection._selections.clear()
    return cls(step_mode="m")


def workload_bytes(model, elem, T, N, backward):
    """Minimal bytes of one call (and the saved bytes per neuron-step): inference reads x
    and writes spikes; training also writes the saved values, then reads them back with
    the spike gradient (and x, if the backward needs it) and writes grad_x."""
    cfg = make_config(model)
    _, bw = derivation(model, cfg.surrogate, False, ())
    per_step = 2                             # x in, spike out
    if backward:
        per_step += len(bw.saved)            # saved out
        per_step += 2 + len(bw.saved) + (1 if bw.needs_x else 0)  # grad in, saved in, grad_x out
    return (per_step * T + 2 * len(model.state_names)) * N * elem, len(bw.saved) * elem


def shapes(device, quick=False, Ts=None, Ns=None):
    """The (T, N) pairs to time. Given both ``Ts`` and ``Ns``: their grid. Otherwise a
    cross: T swept at a fixed N (the largest given, or 2^16 on CPU, 2^20 on GPU), then N
    swept at T = 64 (or the largest T given); :func:`run` relies on the N sweep coming
    last."""
    if Ts is not None and Ns is not None:
        return [(T, N) for T in Ts for N in Ns]
    gpu = device.type == "cuda"
    if Ts is None:
        Ts = [8, 32] if quick else [8, 32, TARGET_T, 128, 512]
    if Ns is None:
        Ns = [1 << 10, 1 << 12] if quick else (
            [1 << 10, 1 << 16, 1 << 20, 1 << 22] if gpu else [1 << 10, 1 << 14, 1 << 16])
    n_fix = max(n for n in Ns if n <= (1 << 20)) if gpu and not quick else max(Ns)
    t_fix = TARGET_T if TARGET_T in Ts else max(Ts)
    pairs = [(T, n_fix) for T in Ts] + [(t_fix, N) for N in Ns]
    return list(dict.fromkeys(pairs))


def run(device="cpu", quick=False, out="bench-output", models=MODELS, Ts=None, Ns=None,
        dtypes=None, use_compile=False, repeats=None):
    device = torch.device(device)
    measure = timer(device, repeats or (3 if quick else (25 if device.type == "cuda" else 7)))
    pairs = shapes(device, quick, Ts, Ns)
    if dtypes is None:
        dtypes = [torch.float32] if device.type == "cpu" else [torch.float32, torch.float16, torch.bfloat16]
    copy_bytes = 1 << 24 if quick else 1 << 28
    bandwidth = copy_bandwidth(device, measure, copy_bytes)
    info = {"machine": machine(device), "device": str(device), "copy_GBps": bandwidth,
            "shapes": pairs, "rows": []}
    print(f"neurogen bench on {info['machine']} ({device}); copy bandwidth {bandwidth:.1f} GB/s "
          "at the start (each row's floor uses a copy timed right before it)")
    header = (f"{'model':<15}{'mode':<8}{'dtype':<9}{'T':>5}{'N':>9}  {'impl':<14}{'ms':>9}"
              f"{'speed-up':>10}{'of floor':>9}{'saved B/ns':>11}{'copy GB/s':>10}")
    print(header)
    for model_name in models:
        spec = spec_of(model_name)
        for dtype in dtypes:
            todo = pairs
            if dtype != dtypes[0] and (Ts is None or Ns is None):
                # other dtypes of a cross: the two largest sizes of its N sweep, the pairs
                # at the T of the last pair (their point is the bytes they save, where
                # bytes dominate)
                todo = sorted(p for p in pairs if p[0] == pairs[-1][0])[-2:]
            for backward in (False, True):
                for T, N in todo:
                    info["rows"] += _one(spec, model_name, dtype, backward, T, N, device,
                                         measure, copy_bytes, use_compile)
        _write_json(info, out)  # after each model: a run cut short keeps what it measured
    _plots(info, out)
    print(f"wrote {out}/bench.json, {out}/time_vs_T.png, {out}/time_vs_N.png")
    return info


def _write_json(info, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.json"), "w") as f:
        json.dump(info, f, indent=1)


def _one(spec, model_name, dtype, backward, T, N, device, measure, copy_bytes, use_compile):
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.rand(T, N, generator=gen) * 2.0).to(device=device, dtype=dtype)
    g = torch.rand(T, N, generator=gen).to(device=device, dtype=dtype)
    elem = x.element_size()
    nbytes, ours_saved = workload_bytes(spec, elem, T, N, backward)
    # the bandwidth of this moment (5 copies), for this workload's floor
    bandwidth = copy_bandwidth(device, timer(device, 5), copy_bytes)
    floor_ms = nbytes / bandwidth / 1e6
    rows, base = [], None
    for impl, make in peers(model_name, device, dtype, use_compile).items():
        try:
            node = (make() if impl in ("neurogen", "neurogen base")
                    else make().to(device=device, dtype=dtype))
            xin = x.clone().requires_grad_(backward)

            def step():
                node.reset()
                return node(xin)

            if backward:
                def fn():
                    xin.grad = None  # as after optimizer.zero_grad(): no accumulation
                    step().backward(g)
            else:
                def fn():
                    with torch.no_grad():
                        step()
            ms = measure(fn)
            saved = saved_bytes(step, xin, g) / (T * N) if backward else 0.0
            detail = _flexsn_implementation(node, x) if impl == "sj FlexSN" else None
        except Exception as exc:  # a peer that fails on this workload is reported, not fatal
            print(f"  {impl}: not run ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
            continue
        base = base or ms
        row = dict(model=model_name, mode="fwd+bwd" if backward else "fwd",
                   dtype=str(dtype).replace("torch.", ""), T=T, N=N, impl=impl, ms=ms,
                   speedup_of_neurogen=ms / base, copy_GBps=bandwidth, floor_ms=floor_ms,
                   fraction_of_floor=floor_ms / ms,
                   saved_bytes_per_neuron_step=saved)
        if detail:
            row["implementation"] = detail
        rows.append(row)
        label = f"{impl} ({detail})" if detail else impl
        print(f"{model_name:<15}{row['mode']:<8}{row['dtype']:<9}{T:>5}{N:>9}  {label:<14}"
              f"{ms:>9.3f}{row['speedup_of_neurogen']:>9.1f}x{row['fraction_of_floor']:>9.2f}"
              f"{saved:>11.1f}{bandwidth:>10.1f}")
    return rows


def _plots(info, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in info["rows"] if r["mode"] == "fwd+bwd" and r["dtype"] == "float32"]
    for axis, other, name in (("T", "N", "time_vs_T.png"), ("N", "T", "time_vs_N.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        if rows:
            # the value of the other axis that the sweep along this one used (most points)
            fixed = max({r[other] for r in rows},
                        key=lambda v: (len({r[axis] for r in rows if r[other] == v}), v))
            for model in sorted({r["model"] for r in rows}):
                for impl in sorted({r["impl"] for r in rows}):
                    pts = sorted((r[axis], r["ms"]) for r in rows if r["model"] == model and
                                 r["impl"] == impl and r[other] == fixed)
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=f"{model} {impl}")
            ax.set(xscale="log", yscale="log", xlabel=axis, ylabel="ms (fwd+bwd, float32)",
                   title=f"{other} = {fixed}, {info['machine'][:60]}")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=100)
        plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="neurogen bench", description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (CI)")
    p.add_argument("--out", default="bench-output")
    p.add_argument("--models", nargs="+", default=list(MODELS),
                   choices=list(neuron.LIBRARY) + list(VARIANTS))
    p.add_argument("--T", nargs="+", type=int)
    p.add_argument("--N", nargs="+", type=int)
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float16", "bfloat16"],
                   help="default: float32 on CPU; float32, float16, bfloat16 on GPU")
    p.add_argument("--repeats", type=int, help="timed runs per point (median taken)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the loop")
    p.add_argument("--recurrent", action="store_true",
                   help="the recurrent workload instead (RecurrentLayer beside peers; T = 100 "
                        "unless --T, batch 64, H 256 and 512)")
    p.add_argument("--recurrent-models", nargs="+", default=None,
                   choices=["LIF", "ALIF", "Izhikevich"])
    p.add_argument("--H", nargs="+", type=int, help="hidden sizes of --recurrent")
    p.add_argument("--batch", type=int, default=64, help="batch of --recurrent")
    p.add_argument("--single-step", action="store_true",
                   help="per-step time of single-step training calls beside SpikingJelly")
    p.add_argument("--block", type=int, default=3,
                   help="--single-step: timed runs per library in each round (1: alternate)")
    args = p.parse_args(argv)
    if args.single_step:
        from . import bench_recurrent
        bench_recurrent.single_step(args.device, args.out, block=args.block)
        return 0
    if args.recurrent:
        from . import bench_recurrent
        bench_recurrent.run(args.device, args.out,
                            models=args.recurrent_models or bench_recurrent.MODELS,
                            Hs=args.H or bench_recurrent.HS, T=args.T[0] if args.T else 100,
                            batch=args.batch, repeats=args.repeats or 5)
        return 0
    dtypes = [getattr(torch, d) for d in args.dtypes] if args.dtypes else None
    run(args.device, args.quick, args.out, args.models, args.T, args.N, dtypes=dtypes,
        use_compile=args.compile, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
