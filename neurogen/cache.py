"""The caches of derived code and compiled kernels, registered in one place so that
:func:`forget_kernels` reaches all of them.

- :func:`memoize`: an ``lru_cache`` that :func:`forget_kernels` clears (the derivations,
  ``config.derivation``; the plans of compiled calls);
- :class:`Memory`: a thread-safe in-process map from a key to a built object (each kernel
  target's sources and compiled kernels, the host compiler's loaded libraries and their
  functions); the plan cache (``plan.PLANS``) registers itself too;
- :class:`LibraryCache`: compiled shared libraries on disk under :func:`cache_dir`,
  keyed by source, compiler and flags, written atomically (temp file + ``os.replace``)
  and sealed with their own hash, so a truncated, corrupted or foreign file is a miss,
  never loaded. CUDA kernels use CuPy's own cubin cache underneath a :class:`Memory`.

Not registered, on purpose: memoised pure functions whose answers cannot go stale (the
algebraic rewrites, the library models' specs), the host compiler's path (keyed by
``$CXX`` and ``$PATH``), and the CPU output buffers (:mod:`neurogen.buffers`, tensors
with controls of their own).
"""
import atexit
import functools
import hashlib
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Callable, Dict, List

_registry: List[object] = []  # objects with .forget()
_weak_registry = weakref.WeakSet()  # the same, for caches that die with their owner
generation = 0  # bumped by forget_kernels(); holders of kernel handles re-fetch on change
_lock = threading.Lock()


def register(obj, weak: bool = False):
    """Add ``obj`` (with a ``forget()`` method) to what :func:`forget_kernels` clears
    (``weak``: only while something else keeps ``obj``, e.g. a target's own caches)."""
    (_weak_registry.add if weak else _registry.append)(obj)
    return obj


def forget_kernels():
    """Drop every kernel handle, kernel source, plan and derivation this process holds:
    the next call derives, renders and looks kernels up again (disk cache, then compiler).
    Loaded libraries stay mapped; plans stay findable by the key a compiled graph holds;
    a decision taken once per process (no OpenMP with this compiler) stays."""
    global generation
    with _lock:
        generation += 1
        for obj in list(_registry) + list(_weak_registry):
            obj.forget()


class _Memoized:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def forget(self):
        self.fn.cache_clear()


def memoize(name: str, maxsize=None):
    """``functools.lru_cache(maxsize)``, cleared by :func:`forget_kernels`."""
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)
        register(_Memoized(name, cached))
        return cached
    return wrap


class Memory:
    """A named, thread-safe map ``key -> object`` built on first use, holding at most
    ``maxsize`` objects (the oldest go first)."""

    def __init__(self, name: str, maxsize: int = 512, weak: bool = False):
        self.name, self.maxsize = name, maxsize
        self._items: Dict[object, object] = {}
        self._lock = threading.Lock()
        self._building: Dict[object, threading.Lock] = {}
        self._generation = 0
        register(self, weak=weak)

    def get(self, key, build: Callable[[], object]):
        """The item for ``key``, built once: a second thread asking for the same key waits
        for the first; different keys build at the same time. An item built across a
        :meth:`forget` is returned but not kept."""
        item = self._items.get(key)
        if item is not None:
            return item
        with self._lock:
            lock = self._building.setdefault(key, threading.Lock())
            generation = self._generation
        try:
            with lock:
                item = self._items.get(key)
                if item is None:
                    item = build()
                    with self._lock:
                        if generation == self._generation:
                            if len(self._items) >= self.maxsize:
                                self._items.pop(next(iter(self._items)))
                            self._items[key] = item
        finally:
            with self._lock:
                self._building.pop(key, None)
        return item

    def forget(self):
        with self._lock:
            self._items.clear()
            self._generation += 1

    def __len__(self):
        return len(self._items)


def cache_dir() -> Path:
    """Where compiled kernels live: ``$NEUROGEN_CACHE_DIR``, else ``~/.cache/neurogen``."""
    env = os.environ.get("NEUROGEN_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurogen"


SEAL = b"\0neurogen-kernel-cache-v1:"


class LibraryCache:
    """Shared libraries on disk, ``<cache_dir>/<folder>/<key>.so``; ``load``/``save`` by
    key. ``save`` writes into a temporary folder beside the target and renames; the file
    carries a seal (a marker, the key and the SHA-256 of the library) that ``load``
    checks before mapping it (a truncated ``.so`` can SIGBUS on load)."""

    def __init__(self, folder: str = "cpu"):
        self.folder = folder
        self._fallback: Dict[Path, Path] = {}

    def folder_path(self) -> Path:
        return cache_dir() / self.folder

    def path(self, key: str) -> Path:
        return self.folder_path() / f"{key}.so"

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    @staticmethod
    def seal(data: bytes, key: str) -> bytes:
        # trailing bytes after an ELF image do not disturb dlopen
        return data + SEAL + key.encode() + hashlib.sha256(data).hexdigest().encode()

    @staticmethod
    def intact(path: Path, key: str) -> bool:
        try:
            data = path.read_bytes()
        except OSError:
            return False
        tail = len(SEAL) + len(key) + 64
        body, seal = data[:-tail], data[-tail:]
        return len(data) > tail and seal == SEAL + key.encode() + hashlib.sha256(
            body).hexdigest().encode()

    def load(self, key: str, open_library: Callable[[Path], object]):
        """The library for ``key`` (``open_library(path)``, which returns None for a file
        it cannot use) from the cache folder or this process's fallback folder, or None."""
        for path in (self.path(key), self._fallback_path(key)):
            if path is not None and self.intact(path, key):
                lib = open_library(path)
                if lib is not None:
                    return lib
        return None

    def save(self, key: str, build: Callable[[Path], None]) -> Path:
        """Build into a temporary folder (``build(out_path)`` writes the library) and move
        the sealed result into place atomically. Returns its path."""
        target = self.writable_folder() / f"{key}.so"
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
            out = Path(tmp) / "kernel.so"
            build(out)
            out.write_bytes(self.seal(out.read_bytes(), key))
            os.replace(out, target)  # readers see the old file or the whole new one
        return target

    def _fallback_path(self, key):
        private = self._fallback.get(self.folder_path())
        return None if private is None else private / f"{key}.so"

    def writable_folder(self) -> Path:
        """The cache folder, or (once warned) a private temporary folder when that one
        cannot be created or written (read-only home, a read-only $NEUROGEN_CACHE_DIR)."""
        folder = self.folder_path()
        if folder in self._fallback:
            return self._fallback[folder]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".build-"))
            return folder
        except OSError as exc:
            private = Path(tempfile.mkdtemp(prefix="neurogen-cache-"))
            atexit.register(shutil.rmtree, private, ignore_errors=True)
            self._fallback[folder] = private
            from .errors import warn_once
            warn_once(f"neurogen: cannot write the kernel cache {folder} "
                      f"({exc.strerror or exc}); compiling into the private folder {private} "
                      "for this process. Set $NEUROGEN_CACHE_DIR to a writable folder to keep "
                      "kernels between runs")
            return private

    def clear(self):
        """Remove the compiled libraries (``*.so`` named by a key) and leftover
        ``.build-*`` folders; other files are left alone. Returns the paths removed."""
        folder = self.folder_path()
        if not folder.is_dir():
            return []
        removed = []
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".build-") and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.suffix == ".so" and path.is_file() and _is_key(path.stem):
                path.unlink(missing_ok=True)
            else:
                continue
            removed.append(path)
        try:
            folder.rmdir()  # only if nothing else is left in it
        except OSError:
            pass
        return removed


def _is_key(stem):
    return len(stem) == 32 and all(c in "0123456789abcdef" for c in stem)


__all__ = ["register", "forget_kernels", "memoize", "Memory", "LibraryCache", "cache_dir"]
