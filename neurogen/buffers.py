"""A cache of large CPU output buffers, so repeated calls do not pay for fresh pages.

Each multi-step call writes several ``[T, N]`` tensors (spikes, the values saved
for the backward, ``grad_x``). On the CPU, torch takes large blocks straight from
the operating system and gives them back when freed, so every call first-touches
new pages: on the 2-core CI machine that page-faulting cost as much as the kernels
themselves (PERF_NOTES.md). Here a block freed by its tensor goes back to a
neurogen free list instead and the next call of the same size reuses it, already
mapped. CUDA tensors are not affected (torch's CUDA allocator already caches).

The tensors handed out are ordinary CPU tensors over numpy-owned memory; a block
returns to the cache when the last tensor viewing it is freed. They cannot be
resized in place (``resize_`` to a larger size raises), like any tensor made
with ``torch.from_numpy``.

Blocks of 16 MiB and more are placed at staggered offsets within a huge page (2 MiB):
successive ones would otherwise sit one page apart modulo 2 MiB, and a kernel that
streams several of them in step, once they outgrow the caches, took about 1.5 times as
long on the CI-class machine (PERF_NOTES.md 26). Each such block reserves up to 2 MiB of extra
address space (at most 1/16 of its size) for this; pages it does not touch take no memory.

Control: :func:`set_cpu_cache_limit` (bytes kept at most, 0 turns caching off;
``$NEUROGEN_CPU_CACHE_MB`` sets the starting value, default 1024 MiB),
:func:`empty_cpu_cache` (release every cached block), :func:`cpu_cache_info`.
"""
import math
import os
import threading
import weakref
from collections import defaultdict

import numpy as np
import torch

# Blocks below this size come from torch's allocator: malloc reuses them without
# returning pages to the system, so caching them buys nothing.
MIN_BYTES = 1 << 20
# Start of every tensor handed out: a cache line (torch's own CPU allocator aligns to 64
# too). numpy's 16-byte alignment made every other 32-byte vector store straddle two lines.
ALIGN = 64

# Blocks of at least STAGGER_BYTES start at staggered offsets modulo HUGE (a huge page):
# the k-th such block at page floor(frac(k * golden ratio) * pages) of its slack, plus
# ALIGN. Consecutive large allocations otherwise land one page apart modulo 2 MiB (each
# mmap'd region sits right below the previous one), and a kernel streaming through three
# such tensors in step took about 1.5 times as long on the CI-class machine once the
# tensors no longer fit the caches (PERF_NOTES.md 26).
STAGGER_BYTES = 16 << 20
PAGE = 4096
HUGE = 2 << 20
_GOLDEN = 0.6180339887498949


def _slack(nbytes):
    """Bytes of room a new block of ``nbytes`` gets for its staggered start: 0 below
    ``STAGGER_BYTES``, else ``HUGE`` or 1/16 of the block if that is less (a power of two).
    The room is address space; only the pages a tensor touches take memory (with
    transparent huge pages, at most one huge page of it)."""
    if nbytes < STAGGER_BYTES:
        return 0
    return min(HUGE, 1 << ((nbytes >> 4).bit_length() - 1))


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
          torch.bfloat16: np.int16}
_ITEMSIZE = {t: np.dtype(d).itemsize for t, d in _NUMPY.items()}


def aligned_empty(nbytes: int):
    """An uninitialised numpy uint8 block of ``nbytes`` starting on an ``ALIGN`` boundary
    (numpy's own blocks are only 16-byte aligned); it keeps its allocation alive through
    ``.base``."""
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


def _on_cpu(device) -> bool:
    # the string compare first: torch.device() costs a microsecond on every call
    return device == "cpu" or torch.device(device).type == "cpu"


def _limit_from_env():
    text = os.environ.get("NEUROGEN_CPU_CACHE_MB", "1024")
    try:
        mb = float(text)
    except ValueError:
        raise ValueError(f"$NEUROGEN_CPU_CACHE_MB must be a number of MiB (0 turns the CPU "
                         f"buffer cache off), not {text!r}") from None
    if mb < 0:
        raise ValueError(f"$NEUROGEN_CPU_CACHE_MB must be >= 0, not {text!r}")
    return int(mb * (1 << 20))


class _Cache:
    def __init__(self, limit):
        self.lock = threading.Lock()
        self.free = defaultdict(list)   # nbytes -> [aligned numpy uint8 block of nbytes]
        self.cached = 0                 # bytes in the free lists
        self.limit = limit
        self.hits = self.misses = 0
        self.placed = 0                 # blocks given a staggered start so far

    def take(self, nbytes):
        """A block of exactly ``nbytes`` starting on an ``ALIGN`` boundary."""
        with self.lock:
            blocks = self.free.get(nbytes)
            if blocks:
                self.cached -= nbytes
                self.hits += 1
                return blocks.pop()
            self.misses += 1
        slack = _slack(nbytes)
        if not slack:
            return aligned_empty(nbytes)
        with self.lock:
            k = self.placed
            self.placed += 1
        raw = np.empty(nbytes + slack + ALIGN, dtype=np.uint8)
        target = (int(k * _GOLDEN % 1.0 * (slack // PAGE)) * PAGE + ALIGN) % slack
        start = (target - raw.ctypes.data) % slack
        return raw[start:start + nbytes]  # keeps `raw` alive through .base

    def give(self, block):
        nbytes = block.nbytes
        with self.lock:
            if self.cached + nbytes <= self.limit:
                self.free[nbytes].append(block)
                self.cached += nbytes
            # else: dropped; numpy frees it

    def clear(self):
        with self.lock:
            self.free.clear()
            self.cached = 0


_cache = _Cache(_limit_from_env())


# id of a weakref to a handed-out numpy view -> (that weakref, its block); the callback
# returns the block when torch frees the view (a plain weakref costs a fraction of
# weakref.finalize, which is measurable at three blocks per training step: PERF_NOTES.md 21)
_out = {}


def _release(ref):
    try:
        _cache.give(_out.pop(id(ref))[1])
    except (AttributeError, TypeError):  # interpreter shutdown: globals may be gone already
        pass


def empty(shape, dtype, device):  # (also called with dtype= and device= as keywords)
    """Like ``torch.empty(shape, dtype=dtype, device=device)`` (contiguous), with large
    CPU blocks taken from and returned to neurogen's cache."""
    npdtype = _NUMPY.get(dtype)
    if npdtype is None or _cache.limit == 0 or not _on_cpu(device):
        return torch.empty(shape, dtype=dtype, device=device)
    nbytes = _ITEMSIZE[dtype]
    for s in shape:
        nbytes *= int(s)
    if nbytes < MIN_BYTES:
        return torch.empty(shape, dtype=dtype, device=device)
    block = _cache.take(nbytes)
    view = block.view(npdtype).reshape(shape)
    # torch keeps `view` alive exactly as long as the tensor's storage; when the storage
    # goes, `view` goes and the block returns to the cache
    ref = weakref.ref(view, _release)
    _out[id(ref)] = (ref, block)
    out = torch.from_numpy(view)
    return out.view(torch.bfloat16) if dtype == torch.bfloat16 else out


def empty_like(t):
    return empty(t.shape, t.dtype, t.device)


# Constant CPU tensors by (shape, value, dtype): a training loop's initial states and zero
# gradients would otherwise be filled on every call; on the 2-core CI machine each fill
# right after a kernel cost 30-60 us (PERF_NOTES.md 19). A few entries suffice.
_CONSTANTS_KEPT = 16
_constants = {}
_constants_lock = threading.Lock()


def constant(shape, value, dtype, device):
    """A tensor of ``shape`` filled with ``value`` that the caller only reads (kernel
    inputs). On the CPU the same tensor is handed out again for the same shape, value and
    dtype; one that was changed in place since (its version counter moved) is refilled.
    Other devices get a fresh ``torch.full``."""
    if not _on_cpu(device):
        return torch.full(shape, float(value), dtype=dtype, device=device)
    value = float(value)
    # the sign keeps -0.0 apart; NaN, unequal to itself, gets a key that is
    key = (tuple(shape), value if value == value else "nan", math.copysign(1.0, value), dtype)
    with _constants_lock:
        entry = _constants.pop(key, None)
        if entry is None or entry[0]._version != entry[1]:
            # (a normal tensor even when the first call runs under torch.inference_mode():
            # an inference tensor has no version counter to check on the next call)
            with torch.inference_mode(False):
                t = torch.full(key[0], value, dtype=dtype)
            entry = (t, t._version)
        _constants[key] = entry  # most recent last
        while len(_constants) > _CONSTANTS_KEPT:
            _constants.pop(next(iter(_constants)))
        return entry[0]


def set_cpu_cache_limit(nbytes: int):
    """Keep at most ``nbytes`` of freed CPU output blocks for reuse (0: no caching).
    Lowering the limit releases the blocks above it."""
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ValueError(f"the CPU buffer cache limit is a number of bytes >= 0, not {nbytes!r}")
    with _cache.lock:
        _cache.limit = nbytes
        for size in sorted(_cache.free, reverse=True):
            blocks = _cache.free[size]
            while blocks and _cache.cached > nbytes:
                blocks.pop()
                _cache.cached -= size


def empty_cpu_cache():
    """Release every cached CPU block to the system (tensors in use are not affected)."""
    _cache.clear()


def cpu_cache_info():
    """``dict(cached_bytes, limit_bytes, hits, misses)`` of the CPU buffer cache."""
    with _cache.lock:
        return dict(cached_bytes=_cache.cached, limit_bytes=_cache.limit, hits=_cache.hits,
                    misses=_cache.misses)
