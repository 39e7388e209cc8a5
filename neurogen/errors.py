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


def warn_once(message: str, _seen=set()):
    """Warn (a RuntimeWarning) the first time ``message`` comes up in this process."""
    import warnings
    if message not in _seen:
        _seen.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
