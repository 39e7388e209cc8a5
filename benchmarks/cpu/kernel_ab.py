"""CPU experiment for PERF_NOTES.md: the C++ kernels of one training step timed alone,
as emitted and in variants, interleaved in one process.

A training step (``node.reset(); node(x).backward(g)``) is run once per variant to record
its two kernel calls (the compiled kernel, its arguments and buffers); the rounds then
replay each variant's kernels on the first step's arguments and warm buffers, variant
after variant, so a slow spell of the machine hits every
variant alike. Reports the minimum and median over the rounds of each round's fastest of
three calls, per kernel.

A variant is a Python file defining ``transform(source, kind, dtype) -> source`` (``kind``:
"forward" or "backward"); it edits the kernel text the library would compile, keeping the
kernels' arguments. Example,
a variant without the Sigmoid surrogate's separate pass::

    # no_pass.py
    from neurogen.targets import cpu
    cpu.separate_surrogate = lambda expr, compute: False
    def transform(source, kind, dtype):
        return source

Usage: ``python benchmarks/cpu/kernel_ab.py [--model IzhikevichNode] [--surrogate
Sigmoid] [--T 64] [--N 65536] [--rounds 12] [variant.py ...]``. The emitted kernels are
always the first row ("as emitted"). Variants that change generator settings (like the
example) apply from their import on, so list them after the plain ones.
"""
import argparse
import importlib.util
import statistics
import time

import torch

import neurogen as ng
from neurogen import neuron, plan
from neurogen import surrogate as sg
from neurogen.targets import cpu

TARGET = ng.targets.get("cpu")
ORIG_RENDER = type(TARGET).render


def load_variant(path):
    spec = importlib.util.spec_from_file_location(f"variant_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.transform


def use(transform):
    """Make the cpu target compile ``transform`` of each kernel (None: as emitted)."""
    def render(ir):
        text = ORIG_RENDER(TARGET, ir)
        return transform(text, ir.kind, ir.dtype) if transform else text
    TARGET.render = render
    ng.forget_kernels()  # a variant may have changed generator settings


def record_step(model_name, surrogate, x, g):
    """Run one training step; return its kernel calls, ``(kind, launch_cpu arguments)``,
    and what keeps their buffers alive."""
    calls, keep = [], []
    orig_plan_launch, orig_launch_cpu = plan.Plan.launch, cpu.launch_cpu

    def plan_launch(self, kind, cfg, values, n, T, device):
        keep.append(dict(values))  # the tensors behind the recorded pointers
        calls.append([kind, None])
        return orig_plan_launch(self, kind, cfg, values, n, T, device)

    def launch_cpu(*args, **kwargs):
        calls[-1][1] = (args, kwargs)
        return orig_launch_cpu(*args, **kwargs)

    node = getattr(neuron, model_name)(step_mode="m", backend="cpu",
                                       surrogate_function=surrogate)
    xin = x.clone().requires_grad_()
    node(xin).backward(g)  # compile
    plan.Plan.launch, cpu.launch_cpu = plan_launch, launch_cpu
    try:
        node.reset()
        xin.grad = None
        node(xin).backward(g)
    finally:
        plan.Plan.launch, cpu.launch_cpu = orig_plan_launch, orig_launch_cpu
    return calls, (keep, node, xin)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="IzhikevichNode")
    p.add_argument("--surrogate", default="Sigmoid")
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--N", type=int, default=1 << 16)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("variants", nargs="*")
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.T, args.N, generator=gen) * 2
    g = torch.rand(args.T, args.N, generator=gen)
    surrogate = getattr(sg, args.surrogate)()
    names = ["as emitted"] + args.variants
    steps = {}
    for name in names:
        use(None if name == "as emitted" else load_variant(name))
        steps[name] = record_step(args.model, surrogate, x, g)
    use(None)
    # every variant runs on the first step's buffers (the same pages for all: placement
    # alone moved identical kernels by 10% between two recorded steps); only the compiled
    # kernel differs, so a variant must keep the kernel's arguments
    # The calls of a step run in order (forward, then backward), three times a round, so
    # each kernel meets the caches a training step leaves it.
    base_calls = steps[names[0]][0]
    times = {(n, i): [] for n in names for i in range(len(base_calls))}
    for _ in range(args.rounds):
        for name in names:
            best = [float("inf")] * len(base_calls)
            for _ in range(3):
                for i, (kind, (cargs, ckwargs)) in enumerate(base_calls):
                    kernel = steps[name][0][i][1][0][0]
                    t0 = time.perf_counter()
                    cpu.launch_cpu(kernel, *cargs[1:], **ckwargs)
                    best[i] = min(best[i], time.perf_counter() - t0)
            for i, b in enumerate(best):
                times[(name, i)].append(b * 1e3)
    print(f"{args.model}, {args.surrogate}, T = {args.T}, N = {args.N}, {args.rounds} rounds "
          f"(ms: min / median of each round's best of 3)")
    for name in names:
        cells = []
        for i, (kind, _) in enumerate(steps[name][0]):
            v = times[(name, i)]
            cells.append(f"{kind:<8} {min(v):6.3f} / {statistics.median(v):6.3f}")
        print(f"  {name:<24} " + "   ".join(cells))


if __name__ == "__main__":
    main()
