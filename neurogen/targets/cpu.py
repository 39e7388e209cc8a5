"""The ``cpu`` target: the IR as C++ (``templates/cpp_kernel.cpp.j2``), built by the host
compiler (:mod:`neurogen.targets.host_compiler`), run over blocks of neurons on torch's
threads.

A kernel loops over neuron blocks (up to :data:`BLOCK` neurons); within a block, over
time, and within a time step over the block's neurons (the ``omp simd`` loop that
vectorises). The per-neuron values that live across time steps (carried variables and
per-neuron constants) sit in per-block arrays in a scratch buffer the launcher passes.
"""
import functools
import threading
from typing import List, Optional

import sympy as sp

from .. import abi, dtypes
from ..derive import SG
from ..ir import Let, Load, Set, reads, writes
from ..spec.functions import sigmoid, sigmoid_grad
from . import host_compiler
from .base import Kernel, KernelTarget
from .c_source import CLines, LaunchArg, env, header_context, signature

TYPES = {  # dtype: (C type of tensors, compute type, load, store)
    "float32": ("float", "float", "value", "value"),
    "float64": ("double", "double", "value", "value"),
    # torch's bfloat16 as its 16 raw bits, converted by hand
    "bfloat16": ("uint16_t", "float", "ng_bf16_to_float(value)", "ng_float_to_bf16(value)"),
}
# Neurons per block at most, and the bytes a block's per-neuron arrays may take on each
# thread (in the scratch buffer); the block size itself is chosen per call
# (cpu_blocks). Longer blocks mean longer contiguous runs per row for the prefetchers:
# 32768 (one block per thread at 2^16 neurons on 2 threads) against 8192 took the
# Izhikevich training step from 6.47 to 6.02 ms (PERF_NOTES.md 23). 512 KiB holds three
# float arrays of 32768 and stays within the 1-2 MiB of L2 per core of current x86 CPUs.
BLOCK = 32768
ARRAY_BUDGET = 512 << 10
# The launcher's own arguments, after the ABI's (rendered into every C++ kernel's
# signature from this list, and packed in this order by launch()).
LAUNCH_ARGS = (LaunchArg("ng_bs", "const ng_int64", "i64"),
               LaunchArg("ng_block_begin", "const ng_int64", "i64"),
               LaunchArg("ng_block_end", "const ng_int64", "i64"),
               LaunchArg("ng_threads", "const int", "i32"),
               LaunchArg("ng_scratch", "compute_t* __restrict__", "ptr"))


def max_block(n_arrays: int, compute: str) -> int:
    """The largest block (a power of two from 256 to :data:`BLOCK`) whose ``n_arrays``
    per-neuron arrays of ``compute`` values fit in :data:`ARRAY_BUDGET`."""
    size = 8 if compute == "double" else 4
    block = BLOCK
    while block > 256 and block * size * max(n_arrays, 1) > ARRAY_BUDGET:
        block //= 2
    return block


def separate_surrogate(expr, compute: str) -> bool:
    """Whether the C++ backward computes the surrogate derivative in its own pass: when
    it calls a math-library function (``expf`` through libmvec, or libm's scalar ``exp`` in
    double kernels). The call spills every vector register of a long loop body (a scalar
    call keeps the whole loop scalar); in a short loop of its own it costs far less.
    Functions the float kernels inline (``sigmoid``, ``sigmoid'``), and rational, piecewise
    and max/min forms stay in the main loop. Measured (PERF_NOTES.md 16, Izhikevich
    backward, T = 64, N = 2^16, in-process replays): Erf 5.3 -> 4.2 ms, PiecewiseExp 4.2 ->
    3.7 with the pass; Sigmoid float 2.90 inline against 3.00 with it."""
    if expr is None:
        return False
    inlined = (sp.Abs, sp.Piecewise) + ((sigmoid, sigmoid_grad) if compute == "float" else ())
    return any(isinstance(e, sp.Function) and not isinstance(e, inlined)
               for e in sp.preorder_traversal(expr))


def surrogate_pass(body, compute) -> Optional[dict]:
    """The statements computing ``ng_sg`` for a separate pass over a chunk of neurons
    (:func:`separate_surrogate` says when that pays), as
    ``{"statements": [...], "arrays": [names it reads from outside]}``, or None. The
    pass runs before the step's main loop, so it may only read carried variables the
    step has not yet changed."""
    at = next((i for i, st in enumerate(body) if isinstance(st, Let) and st.name == SG.name),
              None)
    if at is None or not separate_surrogate(body[at].expr, compute):
        return None
    need, picked = reads(body[at]), [at]
    for i in range(at - 1, -1, -1):
        st = body[i]
        if writes(st) in need:
            if not (isinstance(st, Let) and not st.var) and not (
                    isinstance(st, Load) and st.mode == "const"):
                return None  # a value the step changes before the surrogate: no pass
            picked.insert(0, i)
            need = (need - {st.name}) | reads(st)
    for i in picked:  # what the pass reads must still hold the step's starting value
        changed = {st.name for st in body[:i] if isinstance(st, Set)
                   or (isinstance(st, Load) and st.mode == "set")}
        if reads(body[i]) & changed:
            return None
    return dict(statements=[body[i] for i in picked], arrays=sorted(need))


class CpuTarget(KernelTarget):
    """Generated C++ on this machine's cores."""

    name = "cpu"
    auto_rank = 1
    dtypes = tuple(TYPES)

    def unavailable(self):
        return host_compiler.missing()

    def auto_key(self):
        return host_compiler.environment()

    def kernel_key(self, device):
        return (host_compiler.cxx(), host_compiler.cpu_threading())  # $CXX may change within a process

    def check(self, x):
        if x.device.type != "cpu":
            raise ValueError(f"backend='cpu' needs CPU tensors, got a tensor on {x.device}")
        if dtypes.NAMES.get(x.dtype) not in TYPES:
            raise TypeError(f"backend='cpu' runs float32, float64 or bfloat16, not {x.dtype}; "
                            "convert the input or use backend='torch'")

    def auto_refusal(self, x):
        if x.device.type != "cpu":
            return ""
        if dtypes.NAMES.get(x.dtype) not in TYPES:
            return (f"neurogen: the CPU kernels run float32/float64/bfloat16, not {x.dtype}; "
                    "using the (slower) torch backend")
        why = self.unavailable()
        return None if why is None else f"neurogen: falling back to the torch backend: {why}"

    def render(self, ir) -> str:
        if ir.dtype not in TYPES:
            raise ValueError(f"the C++ CPU kernels support {', '.join(TYPES)}, not {ir.dtype}")
        lines = CLines(ir)
        arrays = ir.constants + ir.carried
        ctx = header_context(ir, "cpp", TYPES)

        def loop(body):
            sg = surrogate_pass(body, ir.compute)
            text = lines(body)
            if sg is None:
                return text, None
            # the main loop reads the pass's value instead of computing it again
            text = [f"const compute_t {SG} = ng_sgbuf[ng_j - ng_c];"
                    if isinstance(st, Let) and st.name == SG.name else t
                    for st, t in zip(body, text)]
            return text, dict(lines=lines(sg["statements"]),
                              arrays=[a for a in arrays if a in sg["arrays"]])

        step, sg_step = loop(ir.step)
        scratch = scratch_arrays(ir)
        first, sg_first = loop(ir.first) if ir.first is not None else (None, None)
        ctx.update(signature=signature(list(ir.args) + list(LAUNCH_ARGS)),
                   uniform=lines(ir.uniform), per_neuron=lines(ir.per_neuron),
                   before=lines(ir.before), step=step, first=first, after=lines(ir.after),
                   arrays=arrays, carried=ir.carried, constants=ir.constants,
                   sg_step=sg_step, sg_first=sg_first, scratch=scratch,
                   rec=recurrent_context(ir) if ir.recurrent else None,
                   block=max_block(len(arrays) + len(scratch), ir.compute),
                   template="cpp_kernel.cpp.j2")
        return env.get_template("cpp_kernel.cpp.j2").render(**ctx)

    def compile(self, ir, source, device) -> Kernel:
        fn, openmp = host_compiler.compile_kernel(source, ir.name, fma=ir.compute == "float")
        arrays = len(ir.constants) + len(ir.carried) + len(scratch_arrays(ir))
        size = 8 if ir.compute == "double" else 4
        return Kernel(fn, ir, source, launch=dict(
            max_block=max_block(arrays, ir.compute), array_bytes=arrays * size, openmp=openmp))

    def launch(self, kernel, packed, n, T, device):
        launch_cpu(kernel, packed, n, T)

    def launch_recurrent(self, kernel, packed, n, T, H, device):
        launch_cpu(kernel, packed, n, T, unit=H)


def scratch_arrays(ir) -> List[str]:
    """The per-neuron block arrays a kernel needs besides its carried variables and
    constants: a recurrent kernel's term per neuron, and its forward's list of nonzero
    sources (indices and values)."""
    if not ir.recurrent:
        return []
    return ["ng_rec"] + (["ng_act", "ng_val"] if ir.kind == "forward" else [])


def recurrent_context(ir) -> dict:
    """What a recurrent kernel's pass before each step reads (its template's ``rec``): the
    forward sums the transposed weight's rows of the neurons that fired at t - 1 (the
    previous call's last output at t = 0); the backward the weight's rows weighted by the
    input gradients of step t + 1 (nothing at t = T - 1)."""
    n = abi.name
    if ir.kind == "forward":
        return dict(what="the recurrent input: W @ (the previous step's outputs), the "
                         "nonzero ones only", when="true", weight=n("rec_weight_t"),
                    source=f"ng_t == 0 ? {n('rec_out0')} + ng_i0 : {n('spike')} + "
                           "(ng_int64)(ng_t - 1) * ng_N + ng_i0", dense=False)
    # (gradients are dense: a register-tiled product rather than skipping zeros)
    return dict(what="the outputs' gradient through the next step's input: W^T @ grad_x[t + 1]",
                when="ng_t < ng_T - 1", weight=n("rec_weight"),
                source=f"{n('grad_x')} + (ng_int64)(ng_t + 1) * ng_N + ng_i0", dense=True)

def cpu_blocks(n: int, max_block: int, workers: int):
    """``(block size, number of blocks)`` for ``n`` neurons on ``workers`` threads: as
    few blocks as ``max_block`` allows, a multiple of ``workers`` (so a static split is
    even), of a size rounded up to 16 neurons (64-byte runs of float)."""
    per_worker_blocks = max(1, -(-n // (workers * max_block)))
    size = -(-n // (workers * per_worker_blocks))
    size = min(max_block, -(-size // 16) * 16)
    return size, -(-n // size)


def cpu_layout(kernel: Kernel, n: int, T: int, unit: int = 0):
    """``(block size, number of blocks, threads)`` of a call of ``kernel`` over ``n``
    neurons and ``T`` steps on ``torch.get_num_threads()`` threads; ``unit``: a recurrent
    kernel's sequence length (blocks of whole sequences)."""
    import torch
    facts = kernel.launch
    if unit:  # a recurrent kernel: blocks of whole sequences of `unit` neurons
        workers = max(1, min(torch.get_num_threads(), n // unit))
        if n * T * unit < 1 << 20:
            workers = 1
        seqs, per_block = n // unit, max(1, facts["max_block"] // unit)
        per_worker_blocks = max(1, -(-seqs // (workers * per_block)))
        per_block = -(-seqs // (workers * per_worker_blocks))
        size, blocks = per_block * unit, -(-seqs // per_block)
    else:
        workers = max(1, min(torch.get_num_threads(), -(-n // 16)))
        if n * T < 1 << 15:
            workers = 1  # too small to pay for waking threads
        size, blocks = cpu_blocks(n, facts["max_block"], workers)
    return size, blocks, min(workers, blocks)


def launch_cpu(kernel: Kernel, packed: List, n: int, T: int, unit: int = 0):
    """Call a C++ kernel on ``torch.get_num_threads()`` threads: its own OpenMP loop
    over neuron blocks (when built with OpenMP, see
    :func:`~neurogen.targets.host_compiler.cpu_threading`) or, otherwise, blocks split
    over Python threads (ctypes releases the GIL during the call). Each thread's block
    arrays live in the calling thread's scratch buffer (:func:`scratch`) rather than on
    the threads' stacks."""
    facts = kernel.launch
    size, blocks, workers = cpu_layout(kernel, n, T, unit)
    stride = facts["array_bytes"] * size
    base = scratch(workers * stride)
    fn = kernel.fn
    if workers == 1 or facts["openmp"]:
        host_compiler.call(fn, packed + _launch_values(size, 0, blocks, workers, base))
        return
    bounds = [blocks * w // workers for w in range(workers + 1)]
    futures = [_pool(workers).submit(host_compiler.call, fn, packed + _launch_values(
                   size, lo, hi, 1, base + w * stride))
               for w, (lo, hi) in enumerate(zip(bounds, bounds[1:])) if hi > lo]
    for f in futures:
        f.result()


_LAUNCH_KINDS = [a.kind for a in LAUNCH_ARGS]


def _launch_values(size, begin, end, threads, scratch_address):
    """LAUNCH_ARGS' values as ``[(kind, value)]``, in their order (their names above)."""
    return list(zip(_LAUNCH_KINDS, (size, begin, end, threads, scratch_address)))


_scratch_local = threading.local()


def scratch(nbytes: int) -> int:
    """Address of a 64-byte aligned buffer of at least ``nbytes`` that the calling thread
    reuses for every C++ kernel call (the kernels' per-thread block arrays; at most
    :data:`ARRAY_BUDGET` per kernel thread). Kept, not freed and allocated per call: a
    fresh buffer cost page faults on every call. A launch from one Python thread finishes
    before that thread launches again, so one buffer per thread suffices."""
    held = getattr(_scratch_local, "held", None)  # (buffer, its address)
    if held is None or held[0].nbytes < nbytes:
        from ..buffers import aligned_empty
        buf = aligned_empty(max(nbytes, 1))
        held = _scratch_local.held = (buf, buf.ctypes.data)
    return held[1]


@functools.lru_cache(maxsize=None)
def _pool(workers):
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurogen")


__all__ = ["CpuTarget", "TYPES", "BLOCK", "ARRAY_BUDGET", "LAUNCH_ARGS", "max_block",
           "cpu_blocks", "cpu_layout", "launch_cpu", "scratch", "surrogate_pass", "separate_surrogate"]
