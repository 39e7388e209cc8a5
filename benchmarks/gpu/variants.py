"""GPU experiment for PERF_NOTES.md: variants of the library's CUDA kernels, timed in one
process through the ordinary module path (CUDA events, median of 25 after warm-up).

Variants change only what the experiment names: a ``#pragma unroll K`` on the time loop
(K loads in flight per thread instead of one), the threads per block, and ``precise``:
the Sigmoid surrogate through expf and an IEEE division instead of the MUFU intrinsics. Prints each
kernel's registers and local memory, then ms and the fraction of the copy bandwidth
for fwd and fwd+bwd. Usage: ``python benchmarks/gpu/variants.py [T] [N]``.
"""
import statistics
import sys

import torch

import neurogen as ng
from neurogen import neuron
from neurogen.bench import copy_bandwidth, timer, workload_bytes
from neurogen.config import make_config
from neurogen.targets import cuda

TARGET = ng.targets.get("cuda")
ORIG_CONFIG = cuda.launch_config


FAST = "__fdividef(1.0F, 1.0F + __expf(-z))"
PRECISE = "1.0F / (1.0F + expf(-z))"


def use_variant(unroll, block, precise=False):
    def render(ir):
        text = cuda.render_cuda(ir)
        if precise:
            assert FAST in text or ir.dtype == "float64"
            text = text.replace(FAST, PRECISE)
        if unroll:
            text = text.replace("    for (int ng_t", f"    #pragma unroll {unroll}\n    for (int ng_t")
        return text
    TARGET.render = render
    cuda.launch_config = lambda n, b=block: ORIG_CONFIG(n, b)
    ng.forget_kernels()


def registers(model_cls, dtype):
    spec = model_cls.spec
    cfg = make_config(spec)
    out = []
    for kind in ("forward", "backward"):
        fn = TARGET.kernel(spec, kind, dtype, cfg, 0).fn
        out.append(f"{kind} regs={fn.num_regs} local={fn.local_size_bytes}B")
    return ", ".join(out)


def main():
    T = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    N = int(sys.argv[2]) if len(sys.argv) > 2 else 1 << 22
    dev = torch.device("cuda")
    measure = timer(dev, 25)
    bw = copy_bandwidth(dev, measure)
    props = torch.cuda.get_device_properties(dev)
    print(f"{props.name}, {props.multi_processor_count} SMs; copy {bw:.0f} GB/s; T={T} N={N}")
    sys.path.insert(0, "tests")
    from test_gpu import sigmoid_on_gpu
    z = torch.linspace(-20, 20, 1 << 22, device=dev)
    ref = torch.sigmoid(z.double())
    rel = ((sigmoid_on_gpu(z).double() - ref).abs() / ref).max().item()
    print(f"float kernels' ng_sigmoid on [-20, 20]: max relative error {rel:.3g}")
    variants = [(None, 256, False), (None, 256, True), (2, 256, False), (None, 512, False)]
    for model_name in ("LIFNode", "IzhikevichNode"):
        cls = neuron.LIBRARY[model_name]
        for dtype in (torch.float32, torch.bfloat16):
            dname = str(dtype).replace("torch.", "")
            use_variant(None, 256)
            print(f"{model_name} {dname}: {registers(cls, dname)}")
            gen = torch.Generator().manual_seed(0)
            x = (torch.rand(T, N, generator=gen) * 2).to(dev, dtype)
            g = torch.rand(T, N, generator=gen).to(dev, dtype)
            for unroll, block, precise in variants:
                use_variant(unroll, block, precise)
                node = cls(step_mode="m", backend="cuda")
                xin = x.clone().requires_grad_(True)

                def fwd():
                    with torch.no_grad():
                        node.reset()
                        node(x)

                def train():
                    xin.grad = None
                    node.reset()
                    node(xin).backward(g)
                row = []
                for mode, fn, backward in (("fwd", fwd, False), ("fwd+bwd", train, True)):
                    ms = statistics.median(measure(fn) for _ in range(3))
                    nbytes, _ = workload_bytes(cls.spec, x.element_size(), T, N, backward)
                    row.append(f"{mode} {ms:7.3f} ms {nbytes / ms / 1e6 / bw:5.2f}")
                print(f"  unroll={str(unroll):<4} block={block:<5} precise={precise!s:<6}"
                      + "   ".join(row), flush=True)
    use_variant(None, 256)


if __name__ == "__main__":
    main()
