"""The ``neurogen`` command: list, show, emit, check, demo, bench, cache."""
import argparse
import importlib.util
import os
import re
import sys
import time

from . import surrogate as sg
from .config import derivation, make_config
from .lower import DTYPES
from .errors import BackendUnavailableError, CompileError, SpecError

KINDS = ("forward", "backward")
ALIASES = {"if": "IFNode", "lif": "LIFNode", "plif": "ParametricLIFNode", "qif": "QIFNode",
           "eif": "EIFNode", "cuba_lif": "CUBALIFNode", "cubalif": "CUBALIFNode",
           "izhikevich": "IzhikevichNode", "adex": "AdExNode"}


def load_model(ref: str):
    """A library name (``izhikevich``), a model file (``adex.json``, ``adex.toml``) or
    ``path/to/file.py:variable``."""
    from . import neuron
    from .spec import serialize
    from .spec.model import NeuronModel
    name = ALIASES.get(ref.lower(), ref)
    if name in neuron.LIBRARY:
        return neuron.LIBRARY[name].spec
    if ref.lower().endswith((".json", ".toml")):
        try:
            return serialize.load(ref)
        except FileNotFoundError:
            raise SystemExit(f"neurogen: no such file {ref!r}") from None
    if ":" in ref:
        path, var = ref.rsplit(":", 1)
        spec = importlib.util.spec_from_file_location("neurogen_user_model", path)
        if spec is None:
            raise SystemExit(f"neurogen: cannot load {path!r} (expected a .py file)")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except FileNotFoundError:
            raise SystemExit(f"neurogen: no such file {path!r}") from None
        model = getattr(module, var, None)
        if not isinstance(model, NeuronModel):
            raise SystemExit(f"neurogen: {path}:{var} is not a NeuronModel")
        return model
    known = ", ".join(sorted(ALIASES) + sorted(neuron.LIBRARY))
    raise SystemExit(f"neurogen: unknown model {ref!r}; library models: {known}; "
                     "or give a model file (.json, .toml) or path/to/file.py:variable")


def _surrogate(text):
    classes = {c.__name__: c for c in sg.LIBRARY}
    m = re.fullmatch(r"(\w+)(?:\((.*)\))?", text.strip())
    if not m or m.group(1) not in classes:
        raise argparse.ArgumentTypeError(f"unknown surrogate {text!r}; choose from "
                                         + ", ".join(classes))
    kwargs = {}
    try:
        for part in filter(None, (m.group(2) or "").split(",")):
            k, _, v = part.partition("=")
            kwargs[k.strip()] = float(v)
        return classes[m.group(1)](**kwargs)
    except (TypeError, ValueError) as exc:
        cls = classes[m.group(1)]
        raise argparse.ArgumentTypeError(
            f"bad surrogate {text!r} ({exc}); write e.g. "
            f"'{cls.__name__}({', '.join(f'{k}={v}' for k, v in cls.defaults.items())})'") from None


def cmd_list(args):
    from . import neuron
    print("Neurons (neurogen.neuron):")
    for name, cls in neuron.LIBRARY.items():
        spec = cls.spec
        print(f"  {name:<18} states {', '.join(spec.state_names):<6} "
              f"params {', '.join(spec.param_names)}")
    print("Surrogates (neurogen.surrogate):")
    for cls in sg.LIBRARY:
        print(f"  {cls.__name__:<18} {cls().key()}: g'(u) = {cls().derivative_expr()}")


def _learnable(model, args):
    learn = tuple(args.learnable or ())
    unknown = [k for k in learn if k not in model.param_names]
    if unknown:
        raise SystemExit(f"neurogen: --learnable names unknown parameter(s) {unknown}; "
                         f"{model.name}'s parameters are {list(model.param_names)}")
    return learn


def cmd_show(args):
    from .display import backward_text, value_plan_text
    model = load_model(args.model)
    learn = _learnable(model, args)
    print(model)
    print("\nBackward of one step (reverse mode; ng_g_* = gradient w.r.t. a state after reset):")
    print(backward_text(model, args.surrogate, args.detach_reset, learn))
    step, bw = derivation(model, make_config(model, surrogate=args.surrogate).surrogate,
                       args.detach_reset, learn)
    nbytes = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}[args.dtype]
    saved = ", ".join(saved_name(step, y) for y in bw.saved) or "nothing"
    print(f"\nSaved per neuron-step for the backward: {saved} "
          f"({len(bw.saved) * nbytes} bytes in {args.dtype})")
    recomputed = ([f"previous {s}" for s in bw.prev] + [saved_name(step, y) for y in bw.recompute
                                                         if step.state_of(y) is not None]
                  + (["x (re-read)"] if bw.needs_x else []))
    if recomputed:
        print("Recomputed in the backward: " + ", ".join(recomputed))
    print("\n" + value_plan_text(step, bw))


def saved_name(step, sym):
    """``v after charge``, ``w before the step``: a saved value in words."""
    stage = step.stage_of(sym)
    state = step.state_of(sym)
    return f"{state} before the step" if stage is None else f"{state} after {stage.name}"


def _config(model, args):
    learn = _learnable(model, args)
    return dict(surrogate=args.surrogate, detach_reset=args.detach_reset,
                store_v_seq=args.store_v_seq, learnable=learn)


def cmd_emit(args):
    from . import targets
    model = load_model(args.model)
    kernel_targets = [n for n in targets.names()
                      if isinstance(targets.get(n), targets.KernelTarget)]
    if args.target not in kernel_targets + ["cpp"]:
        raise SystemExit(f"neurogen: --target must be one of {kernel_targets} (or cpp, the "
                         f"cpu target's language), not {args.target!r}")
    try:
        text = targets.render(model, args.target, args.kernel, args.dtype,
                              **_config(model, args))
    except ValueError as exc:  # e.g. a dtype the target has no kernels for
        raise SystemExit(f"neurogen: {exc}") from None
    print(text, end="")


def cmd_check(args):
    from .targets import render
    from .targets.cuda import compile_ptx
    from . import neuron
    refs = args.models or list(neuron.LIBRARY)
    failures = 0
    ptxas = _which("ptxas")
    for ref in refs:
        model = load_model(ref)
        for dtype in args.dtype or list(DTYPES):
            for kind in KINDS:
                src = render(model, "cuda", kind, dtype, learnable=(), store_v_seq=True,
                             recurrent=args.recurrent)
                for arch in args.arch:
                    t0 = time.perf_counter()
                    try:
                        ptx = compile_ptx(src, arch.replace("sm_", "compute_"))
                    except CompileError as exc:
                        failures += 1
                        print(f"FAIL {model.name} {kind} {dtype} {arch}\n{exc.log}")
                        continue
                    ms = (time.perf_counter() - t0) * 1e3
                    info = _ptxas_info(ptxas, ptx, arch) if ptxas else "ptxas not found"
                    what = f"{kind}{'+rec' if args.recurrent else ''}"
                    print(f"ok   {model.name:<20} {what:<8} {dtype:<8} {arch}  nvrtc {ms:6.1f} ms  {info}")
    if failures:
        print(f"{failures} kernel(s) failed to compile")
        return 1
    return 0


def _which(name):
    import shutil
    return shutil.which(name)


def _ptxas_info(ptxas, ptx, arch):
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        proc = subprocess.run([ptxas, "-v", f"-arch={arch}", f.name, "-o", "/dev/null"],
                              capture_output=True, text=True)
    text = proc.stderr
    regs = re.search(r"Used (\d+) registers", text)
    stack = re.search(r"(\d+) bytes stack frame", text)
    spill = re.findall(r"(\d+) bytes spill (?:stores|loads)", text)
    if proc.returncode != 0:
        return "ptxas failed: " + text.strip().splitlines()[-1]
    return (f"registers {regs.group(1) if regs else '?'}, stack {stack.group(1) if stack else 0} B, "
            f"spill {sum(int(s) for s in spill)} B")


def cmd_demo(args):
    from .demo import run_demo
    return run_demo(quick=args.quick, out=args.out, epochs=args.epochs)


def cmd_cache(args):
    from .cache import cache_dir
    from .targets.host_compiler import LIBRARIES, clear_cache
    if args.action == "path":
        print(cache_dir())
        return 0
    removed = clear_cache()
    print(f"removed {len(removed)} compiled kernel file(s) and build folder(s) from "
          f"{LIBRARIES.folder_path()}")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="neurogen", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="library neurons and surrogates").set_defaults(func=cmd_list)

    def model_opts(q):
        q.add_argument("--surrogate", type=_surrogate, default=sg.Sigmoid(),
                       help="e.g. Sigmoid, 'ATan(alpha=3)' (default Sigmoid(alpha=4))")
        q.add_argument("--detach-reset", action="store_true")
        q.add_argument("--learnable", nargs="*", metavar="PARAM", help="parameters with gradients")
        q.add_argument("--dtype", default="float32", choices=list(DTYPES))

    q = sub.add_parser("show", help="equations, derived backward, saved quantities")
    q.add_argument("model", help="library name or path/to/file.py:variable")
    model_opts(q)
    q.set_defaults(func=cmd_show)
    q = sub.add_parser("emit", help="print the exact kernel source that runs")
    q.add_argument("model")
    q.add_argument("--target", default="cuda",
                   help="a kernel target: cuda (default), cpu (or cpp), cuda-emulated")
    q.add_argument("--kernel", default="forward", choices=KINDS)
    q.add_argument("--store-v-seq", action="store_true")
    model_opts(q)
    q.set_defaults(func=cmd_emit)
    q = sub.add_parser("check", help="compile every kernel with NVRTC; ptxas resource use")
    q.add_argument("models", nargs="*", help="default: every library neuron")
    q.add_argument("--arch", nargs="+", default=["sm_80", "sm_90"])
    q.add_argument("--dtype", nargs="+", choices=list(DTYPES))
    q.add_argument("--recurrent", action="store_true",
                   help="the kernels of a RecurrentLayer (a barrier per step)")
    q.set_defaults(func=cmd_check)
    sub.add_parser("bench", help="benchmarks beside peers (neurogen bench --help)")
    q = sub.add_parser("demo", help="declare a neuron, show its kernel, train a small SNN")
    q.add_argument("--quick", action="store_true", help="a reduced run (for tests)")
    q.add_argument("--epochs", type=int, default=None)
    q.add_argument("--out", default="neurogen-demo-output", help="folder for the plots")
    q.set_defaults(func=cmd_demo)
    q = sub.add_parser("cache", help="where compiled CPU kernels live; clear them")
    q.add_argument("action", choices=["path", "clear"],
                   help="path: print the cache folder; clear: remove neurogen's compiled kernels")
    q.set_defaults(func=cmd_cache)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own parser: options pass through untouched
        from .bench import main as bench_main
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except SpecError as exc:
        print(f"neurogen: invalid model: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailableError as exc:
        print(f"neurogen: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader (e.g. `| head`) closed the pipe: stop quietly, without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
