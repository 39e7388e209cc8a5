"""Typed errors raised by neurogen, each naming what is wrong and how to fix it, and
its one-time warnings."""


class SpecError(ValueError):
    """A neuron model declaration is invalid (names the equation at fault)."""


class CompileError(RuntimeError):
    """A generated kernel failed to compile.

    ``source`` holds the numbered source text and ``log`` the compiler output.
    """

    def __init__(self, message: str, source: str = "", log: str = ""):
        self.source = source
        self.log = log
        numbered = "\n".join(
            f"{i + 1:5d}  {line}" for i, line in enumerate(source.splitlines()))
        full = message
        if log:
            full += "\n--- compiler log ---\n" + log.strip()
        if source:
            full += "\n--- source ---\n" + numbered
        super().__init__(full)
        self.numbered_source = numbered


class BackendUnavailableError(RuntimeError):
    """A requested backend cannot run here (missing package, compiler or GPU)."""


class UnsupportedTransformError(RuntimeError):
    """A kernel was handed a tensor without memory of its own: a ``torch.func``
    transform's wrapper (``vmap``, ``grad``, ``jacrev``, ``is_grads_batched=True``)."""


def no_storage(name: str, tensor) -> UnsupportedTransformError:
    """The error for a kernel argument ``name`` whose ``tensor`` has no data pointer."""
    return UnsupportedTransformError(
        f"neurogen's kernels read tensors' memory directly, and {name} is a "
        f"{type(tensor).__name__} without storage of its own, as torch.func transforms "
        "(vmap, grad, jacrev, jvp) and autograd.grad(..., is_grads_batched=True) make: these "
        "are not supported on the kernel backends. Use backend='torch' (the same equations "
        "in torch ops) for them, or loop over the batch.")


def warn_once(message: str, _seen=set()):
    """Warn (a RuntimeWarning) the first time ``message`` comes up in this process."""
    import warnings
    if message not in _seen:
        _seen.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
