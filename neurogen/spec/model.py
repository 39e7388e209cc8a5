"""`NeuronModel`: a neuron declared as sympy equations, validated on creation."""
import difflib
import hashlib
import keyword
import math
import re
from typing import Mapping, Optional

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

from ..errors import SpecError
from .functions import BRANCH_FUNCTIONS, FUNCTIONS, UNSUPPORTED, canonical, surrogate_at
from .parse import parse_expr

spike = sp.Symbol("spike")
"""The spike of this step in a reset equation; always carries the surrogate gradient."""
spike_d = sp.Symbol("spike_d")
"""The spike in a reset equation, treated as a constant when ``detach_reset=True``."""

GROUPS = ("charge", "adaptation", "fire", "reset")
REFRACTORY = "refractory"
"""The name of the refractory counter state (steps left) of a model with ``refractory=``."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)



_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_C_WORDS = set("""
auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while bool true false class namespace new delete this template
typename using virtual public private protected operator friend catch try throw asm
half float2 float4 int2 int4 dim3 threadIdx blockIdx blockDim gridDim warpSize min max
compute_t io_t NAN INFINITY M_PI
exp log sqrt tanh sin cos atan pow fabs
""".split())
_RESERVED = {"spike", "spike_d", "pi", "E"} | set(FUNCTIONS)
_ALLOWED_FUNCS = (sp.exp, sp.log, sp.tanh, sp.sin, sp.cos, sp.atan, sp.Piecewise,
                  FUNCTIONS["sigmoid"]) + BRANCH_FUNCTIONS


def _check_name(name: str, role: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise SpecError(f"{role} name {name!r} must be an identifier such as 'v' or 'tau_w' "
                        "(letters, digits and '_', starting with a letter)")
    if (name in _C_WORDS or name in _RESERVED or keyword.iskeyword(name)
            or name.startswith(("ng_", "sg_")) or "__" in name):
        raise SpecError(f"{role} name {name!r} is reserved (a C/CUDA or Python word, a neurogen name, "
                        f"or has the 'ng_' or 'sg_' prefix (kernels' own names and surrogate "
                        f"arguments) or '__'); rename it, e.g. {name}_0")
    return name


def _key_name(key, role):
    if isinstance(key, sp.Symbol):
        return key.name
    if isinstance(key, str):
        return key.strip()
    raise SpecError(f"{role}: keys must be sympy Symbols or strings, got {type(key).__name__}")


def _to_expr(value, where) -> sp.Expr:
    if isinstance(value, str):
        expr = parse_expr(value, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        expr = sp.Float(value) if isinstance(value, float) else sp.Integer(value)
    elif isinstance(value, sp.Basic):
        expr = value
    else:
        raise SpecError(f"{where}: expected a sympy expression, a string or a number, "
                        f"got {type(value).__name__}")
    if isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Symbol):
        raise SpecError(f"{where}: {expr} is a condition, not a value")
    if not isinstance(expr, sp.Expr):
        raise SpecError(f"{where}: {expr} is a {type(expr).__name__}, not a scalar expression")
    # Plain symbols, matched by name: the user's assumptions (real=True...) do not matter.
    expr = expr.xreplace({s: sp.Symbol(s.name) for s in expr.free_symbols})
    _check_conditions(expr, where)
    return canonical(expr)


def _check_conditions(expr, where):
    """A condition (a comparison, and/or/not) may only choose a branch (where, Piecewise)."""
    def visit(node, in_condition):
        if isinstance(node, ExprCondPair):
            visit(node.expr, False)
            visit(node.cond, True)
            return
        is_condition = isinstance(node, (sp.logic.boolalg.BooleanFunction,
                                         sp.core.relational.Relational))
        if is_condition and not in_condition:
            raise SpecError(f"{where}: {node} is a condition used as a value; a condition "
                            f"chooses a branch: where({node}, value_if_true, value_if_false)")
        for a in node.args:
            visit(a, is_condition and not isinstance(node, sp.core.relational.Relational))
    visit(expr, False)


class NeuronModel:
    """A spiking neuron declared by its step equations.

    One step from previous states ``S`` and input ``x``: *charge* (from ``S``),
    *adaptation* (from the charged values), *fire* (``spike = fire >= 0``) and
    *reset* (may use ``spike`` and ``spike_d``). The first state fires and is
    stored in ``v_seq``. See ``docs/semantics.md``.

    >>> lif = NeuronModel("lif", states={"v": 0.0}, params={"tau": 2.0, "v_threshold": 1.0},
    ...                   charge={"v": "v + (x - v) / tau"}, fire="v - v_threshold",
    ...                   reset={"v": "(1 - spike_d) * v"})
    >>> lif.state_names, lif.param_names
    (('v',), ('tau', 'v_threshold'))
    """

    def __init__(self, name: str, states: Mapping, params: Optional[Mapping] = None,
                 charge: Optional[Mapping] = None, adaptation: Optional[Mapping] = None,
                 fire=None, reset: Optional[Mapping] = None, input: str = "x", doc: str = "",
                 output=None, refractory=None, refractory_hold=None, fire_strict=False):
        if not isinstance(name, str) or not _IDENT.fullmatch(name):
            raise SpecError(f"model name {name!r} must be an identifier such as 'adex'")
        self.name = name
        self.doc = doc
        self.input_name = _check_name(_key_name(input, "input"), "input")
        self.state_names, self.initial = self._read_states(states)
        self.param_names, self.defaults = self._read_params(params or {})
        self.charge = self._read_group("charge", charge)
        self.adaptation = self._read_group("adaptation", adaptation)
        self.reset = self._read_group("reset", reset)
        if fire is None:
            raise SpecError(f"model {name!r} has no fire expression: pass fire=, e.g. "
                            f"fire='{self.state_names[0]} - v_threshold' (spike when >= 0)")
        self.fire = _to_expr(fire, "fire")
        if not isinstance(fire_strict, bool):
            raise SpecError(f"fire_strict must be True (spike where fire > 0, as snnTorch and "
                            f"Norse) or False (fire >= 0), got {fire_strict!r}")
        self.fire_strict = fire_strict
        self.output = None if output is None else _to_expr(output, "output")
        if self.output is not None and self.output == spike:
            self.output = None  # the default: the module returns the spike
        self._validate()
        # what the user declared (model files, replace()); the groups above become the
        # effective equations once a refractory period is folded in
        self.declared = dict(states=dict(self.initial), charge=dict(self.charge),
                             adaptation=dict(self.adaptation), fire=self.fire,
                             reset=dict(self.reset))
        self.refractory, self.refractory_hold = None, ()
        self._fold_refractory(refractory, refractory_hold)
        self._check_argument_names()  # (after the fold: the counter's arguments too)

    # ---- reading -------------------------------------------------------------------
    def _read_states(self, states):
        if not isinstance(states, Mapping) or not states:
            raise SpecError("states must be a non-empty dict {state: initial value}, "
                            "e.g. {'v': 0.0}; the first state is the one that fires")
        names, initial = [], {}
        for key, value in states.items():
            n = _check_name(_key_name(key, "states"), "state")
            if n in initial:
                raise SpecError(f"state {n!r} is declared twice")
            if n == self.input_name:
                raise SpecError(f"{n!r} is the input symbol and cannot be a state")
            if value is None:
                raise SpecError(f"state {n!r} has no initial value: give one, e.g. {{'{n}': 0.0}}")
            names.append(n)
            initial[n] = _to_expr(value, f"initial value of state {n!r}")
        return tuple(names), initial

    def _read_params(self, params):
        if not isinstance(params, Mapping):
            raise SpecError("params must be a dict {parameter: default value}")
        names, defaults = [], {}
        for key, value in params.items():
            n = _check_name(_key_name(key, "params"), "parameter")
            if n in self.state_names:
                raise SpecError(f"{n!r} is declared both as a state and as a parameter; "
                                "a name is one or the other")
            if n == self.input_name:
                raise SpecError(f"{n!r} is the input symbol and cannot be a parameter")
            if n in defaults:
                raise SpecError(f"parameter {n!r} is declared twice")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SpecError(f"parameter {n!r} needs a finite number as default, got {value!r}")
            names.append(n)
            defaults[n] = float(value)
        return tuple(names), defaults

    def _read_group(self, group, equations):
        if equations is None:
            return {}
        if not isinstance(equations, Mapping):
            raise SpecError(f"{group} must be a dict {{state: expression}}")
        out = {}
        for key, value in equations.items():
            n = _key_name(key, group)
            if n not in self.state_names:
                close = difflib.get_close_matches(n, self.state_names, 1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(f"{group} equation for unknown state {n!r}; states are "
                                f"{list(self.state_names)}.{hint}")
            if n in out:
                raise SpecError(f"{group} equation of {n!r} is given twice")
            out[n] = _to_expr(value, f"{group} equation of {n!r}")
        return {n: out[n] for n in self.state_names if n in out}

    def _check_argument_names(self):
        """A kernel names its arguments after the states and parameters (``init_v``,
        ``p_tau``, ...; neurogen.abi) and its locals after the names themselves: a name
        that is another name's argument would be declared twice."""
        from .. import abi
        owners = {}
        for s in self.state_names:
            for group in ("init", "final", "grad_init", "grad_final", "saved"):
                owners[abi.name(group, s)] = f"state {s!r}"
        for k in self.param_names:
            for group in ("param", "grad_param"):
                owners[abi.name(group, k)] = f"parameter {k!r}"
        for group in ("x", "spike", "grad_spike", "grad_x"):
            owners[abi.name(group)] = "the kernels"
        for n in self.state_names + self.param_names + (self.input_name,):
            if n in owners:
                raise SpecError(f"the name {n!r} is the kernel argument of {owners[n]}; rename "
                                f"it, e.g. {n}_0")

    # ---- refractory periods --------------------------------------------------------
    def _fold_refractory(self, refractory, hold):
        """``refractory=k`` (steps, or the name of a parameter holding them): a spike at
        step t makes steps t+1 .. t+k refractory. The counter is the state
        :data:`REFRACTORY` (steps left); while it is positive the fire value is -1 (no
        spike, no surrogate gradient) and the charge and adaptation equations of the
        ``refractory_hold`` states (default: the firing state) keep the state's value."""
        if refractory is None or (_is_number(refractory) and refractory == 0):
            if hold is not None and tuple(hold):
                raise SpecError("refractory_hold names states held during a refractory "
                                "period, but the model has none: pass refractory=k too")
            return
        if isinstance(refractory, str):
            k = refractory.strip()
            if k not in self.param_names:
                close = difflib.get_close_matches(k, self.param_names, 1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(f"refractory={refractory!r} names no parameter; give a number "
                                f"of steps or a parameter of {list(self.param_names)}.{hint}")
            d = self.defaults[k]
            if d != int(d) or d < 0:
                raise SpecError(f"refractory parameter {k!r} has default {d}, not a whole "
                                "number of steps >= 0")
            count = sp.Symbol(k)
        elif _is_number(refractory):
            if refractory != int(refractory) or refractory < 0:
                raise SpecError(f"refractory={refractory!r} must be a whole number of steps "
                                ">= 0 (or the name of a parameter holding one)")
            k, count = int(refractory), sp.Integer(int(refractory))
        else:
            raise SpecError(f"refractory must be a whole number of steps or a parameter "
                            f"name, got {type(refractory).__name__}")
        if REFRACTORY in self.state_names or REFRACTORY in self.param_names:
            raise SpecError(f"the name {REFRACTORY!r} is taken by the refractory counter; "
                            "rename your state or parameter")
        if hold is None:
            hold = (self.v_name,)
        elif isinstance(hold, str):
            hold = (hold,)
        hold = tuple(_key_name(h, "refractory_hold") for h in hold)
        for h in hold:
            if h not in self.state_names:
                raise SpecError(f"refractory_hold names {h!r}, which is not a state; states "
                                f"are {list(self.state_names)}")
        c = sp.Symbol(REFRACTORY)
        refr = sp.StrictGreaterThan(c, 0)
        for group in ("charge", "adaptation"):
            eqs = getattr(self, group)
            for h in hold:
                if h in eqs:
                    eqs[h] = sp.Piecewise((sp.Symbol(h), refr), (eqs[h], True))
        self.fire = sp.Piecewise((sp.Integer(-1), refr), (self.fire, True))
        self.reset[REFRACTORY] = sp.Piecewise(
            (count, sp.StrictGreaterThan(spike, 0)), (c - 1, refr), (sp.Integer(0), True))
        self.state_names = self.state_names + (REFRACTORY,)
        self.initial[REFRACTORY] = sp.Integer(0)
        self.refractory, self.refractory_hold = k, hold

    # ---- validation ----------------------------------------------------------------
    def _validate(self):
        known = set(self.state_names) | set(self.param_names) | {self.input_name}
        for n, expr in self.initial.items():
            self._check_symbols(expr, set(self.param_names), f"initial value of state {n!r}",
                                "an initial value may use parameters only")
            self._check_expr(expr, set(self.param_names), f"initial value of state {n!r}", "initial")
        for group in ("charge", "adaptation"):
            for n, expr in getattr(self, group).items():
                self._check_expr(expr, known, f"{group} equation of {n!r}", group)
        self._check_expr(self.fire, known, "fire expression", "fire")
        if not self.fire.free_symbols & {sp.Symbol(s) for s in self.state_names}:
            raise SpecError(f"fire expression {self.fire} does not depend on any state; "
                            f"write it from the membrane state, e.g. '{self.state_names[0]} - v_threshold'")
        if self.input_name in {s.name for s in self.fire.free_symbols}:
            raise SpecError(f"fire expression {self.fire} uses the input {self.input_name!r}; "
                            "fire reads states after charge and adaptation only")
        for n, expr in self.reset.items():
            self._check_expr(expr, known | {"spike", "spike_d"}, f"reset equation of {n!r}", "reset")
        x = sp.Symbol(self.input_name)
        if not any(x in e.free_symbols for e in self.charge.values()):
            raise SpecError(f"no charge equation uses the input {self.input_name!r}; a neuron must "
                            f"be driven by its input, e.g. charge={{'v': 'v + {self.input_name}'}}")
        for n, expr in self.adaptation.items():
            if x in expr.free_symbols:
                raise SpecError(f"adaptation equation of {n!r} uses the input {self.input_name!r}; "
                                "only charge equations read the input")
        for n, expr in self.reset.items():
            if x in expr.free_symbols:
                raise SpecError(f"reset equation of {n!r} uses the input {self.input_name!r}; "
                                "only charge equations read the input")
        if self.output is not None:
            if spike_d in self.output.free_symbols:
                raise SpecError(f"output {self.output} uses 'spike_d'; the detached spike is "
                                "for resets (detach_reset=True cuts them); write 'spike'")
            if x in self.output.free_symbols:
                raise SpecError(f"output {self.output} uses the input {self.input_name!r}; the "
                                "output reads states after adaptation, parameters and 'spike'")
            self._check_expr(self.output, known | {"spike"}, "output", "output")

    def _check_symbols(self, expr, allowed, where, rule):
        for s in sorted(expr.free_symbols, key=lambda s: s.name):
            if s.name not in allowed:
                close = difflib.get_close_matches(s.name, sorted(allowed), 1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                if s.name in ("spike", "spike_d"):
                    raise SpecError(f"{where} uses {s.name!r}: spikes may appear only in reset "
                                    "equations")
                raise SpecError(f"{where} uses unknown symbol {s.name!r} ({rule}).{hint} "
                                "Declare it in states= or params=.")

    def _check_expr(self, expr, allowed, where, group):
        self._check_symbols(expr, allowed, where,
                            f"known: states, parameters and the input {self.input_name!r}")
        for node in sp.preorder_traversal(expr):
            if isinstance(node, UNSUPPORTED):
                raise SpecError(f"{where} uses {type(node).__name__}, which neurogen has no "
                                "gradient convention for; write it with floor, where or clamp")
            if isinstance(node, surrogate_at):
                raise SpecError(f"{where} calls surrogate_at, neurogen's own name for the "
                                "surrogate derivative; write sg_heaviside(u) instead")
            if isinstance(node, sp.Function) and not isinstance(node, _ALLOWED_FUNCS):
                raise SpecError(f"{where} calls unsupported function {type(node).__name__}; "
                                f"allowed: {', '.join(sorted(FUNCTIONS))}")
            if isinstance(node, (sp.Integral, sp.Derivative, sp.Sum, sp.Product)):
                raise SpecError(f"{where} contains {type(node).__name__}; write the discrete step")
            if node.is_Number and not node.is_finite:
                raise SpecError(f"{where} contains the non-finite number {node}")
            if node.is_number and node.is_real is False:
                raise SpecError(f"{where} contains the complex number {node}")

    # ---- derived facts ------------------------------------------------------------
    @property
    def v_name(self) -> str:
        """The state that fires and is stored in ``v_seq``."""
        return self.state_names[0]

    def canonical(self) -> str:
        """Deterministic text of the whole spec (the basis of :attr:`spec_hash`)."""
        if "_canonical" not in self.__dict__:
            self.__dict__["_canonical"] = self._canonical_text()
        return self.__dict__["_canonical"]

    def _canonical_text(self) -> str:
        lines = [f"name={self.name}", f"input={self.input_name}"]
        lines += [f"state {n} init={sp.srepr(self.initial[n])}" for n in self.state_names]
        lines += [f"param {n}={self.defaults[n]!r}" for n in self.param_names]
        for group in ("charge", "adaptation", "reset"):
            lines += [f"{group} {n}={sp.srepr(e)}" for n, e in getattr(self, group).items()]
        lines.append(f"fire={sp.srepr(self.fire)}")
        if self.output is not None:  # (the default adds nothing: existing hashes stay)
            lines.append(f"output={sp.srepr(self.output)}")
        if self.fire_strict:
            lines.append("fire_strict=True")
        if self.refractory is not None:
            lines.append(f"refractory={self.refractory!r} hold={self.refractory_hold}")
        custom = self.__dict__.get("_stages")
        if custom is not None:  # the default list adds nothing: existing hashes stay
            lines.append("stages=" + ";".join(st.canonical(self) for st in custom))
        return "\n".join(lines)

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def replace(self, **changes) -> "NeuronModel":
        """A copy with some constructor arguments changed (e.g. ``params=``)."""
        kwargs = self._arguments()
        if "refractory" in changes and "refractory_hold" not in changes and (
                changes["refractory"] is None or changes["refractory"] == 0):
            kwargs["refractory_hold"] = None  # no period: nothing to hold
        kwargs.update(changes)
        out = NeuronModel(**kwargs)
        custom = self.__dict__.get("_stages")
        return out if custom is None else out.with_stages(custom)

    def _arguments(self) -> dict:
        """The constructor arguments that make this model (as declared)."""
        d = self.declared
        return dict(name=self.name, states=dict(d["states"]), params=dict(self.defaults),
                    charge=dict(d["charge"]), adaptation=dict(d["adaptation"]), fire=d["fire"],
                    reset=dict(d["reset"]), input=self.input_name, doc=self.doc,
                    output=self.output, refractory=self.refractory,
                    refractory_hold=(self.refractory_hold if self.refractory is not None
                                     else None), fire_strict=self.fire_strict)

    @property
    def stages(self):
        """The stages of one step, in order (:mod:`neurogen.stages`): charge, adaptation,
        fire and reset, reading this model's groups, unless :meth:`with_stages` set others."""
        custom = self.__dict__.get("_stages")
        if custom is not None:
            return custom
        from ..stages import DEFAULT
        return DEFAULT

    def with_stages(self, stages) -> "NeuronModel":
        """A copy whose step runs ``stages`` (:class:`neurogen.stages.Stage` objects) instead
        of the default list, e.g. with a stage of one's own inserted::

            from neurogen import stages
            leak = stages.StateStage("leak", "l", "L", equations={"v": "0.9 * v"})
            m2 = model.with_stages(stages.DEFAULT[:2] + (leak,) + stages.DEFAULT[2:])
        """
        from ..stages import DEFAULT, Stage, Step
        stages = tuple(stages)
        if not all(isinstance(st, Stage) for st in stages):
            raise SpecError("with_stages takes neurogen.stages.Stage objects")
        out = NeuronModel(**self._arguments())
        if [st.canonical(out) for st in stages] != [st.canonical(out) for st in DEFAULT]:
            out.__dict__["_stages"] = stages
        out._check_stage_symbols()
        Step(out)  # every stage's equations exist and read what they may
        return out

    def _check_stage_symbols(self):
        known = set(self.state_names) | set(self.param_names)
        for stage in self.stages:
            if getattr(stage, "group", True) is None:  # a stage with equations of its own
                for n, expr in stage.equations(self).items():
                    extra = {"spike", "spike_d"} if stage.reads_spike else set()
                    self._check_expr(expr, known | extra, f"{stage.name} equation of {n!r}",
                                     stage.name)

    def __setstate__(self, state):
        # a model pickled before output/refractory existed (issue 19) has neither
        state.setdefault("output", None)
        state.setdefault("refractory", None)
        state.setdefault("refractory_hold", ())
        state.setdefault("fire_strict", False)
        if "declared" not in state:
            state["declared"] = dict(states=dict(state["initial"]), charge=dict(state["charge"]),
                                     adaptation=dict(state["adaptation"]), fire=state["fire"],
                                     reset=dict(state["reset"]))
        self.__dict__.update(state)

    def __eq__(self, other):
        return isinstance(other, NeuronModel) and self.canonical() == other.canonical()

    def __hash__(self):
        if "_hash" not in self.__dict__:
            self.__dict__["_hash"] = hash(self.canonical())
        return self.__dict__["_hash"]

    def __repr__(self):
        return (f"NeuronModel({self.name!r}, states={list(self.state_names)}, "
                f"params={self.defaults})")

    def __str__(self):
        from ..display import model_text
        return model_text(self)

    def _repr_latex_(self):
        from ..display import model_latex
        return "$$" + model_latex(self) + "$$"

    def _repr_markdown_(self):
        """Jupyter: states, parameters, the step and its derived backward (LaTeX)."""
        from ..display import model_markdown
        return model_markdown(self)

    # ---- model files (implemented in serialize.py) ------------------------------------
    def to_dict(self) -> dict:
        """Plain data (strings for expressions); ``NeuronModel.from_dict`` reads it back."""
        from .serialize import to_dict
        return to_dict(self)

    @classmethod
    def from_dict(cls, d) -> "NeuronModel":
        """The model described by a :meth:`to_dict` dict; equations are parsed, never run."""
        from .serialize import from_dict
        return from_dict(d)

    def to_json(self, path=None) -> str:
        """JSON text of :meth:`to_dict`, also written to ``path`` if given."""
        from .serialize import to_json
        return to_json(self, path)

    @classmethod
    def from_json(cls, path_or_text) -> "NeuronModel":
        """Load from a ``.json`` path or JSON text."""
        from .serialize import from_json
        return from_json(path_or_text)

    def to_toml(self, path=None) -> str:
        """TOML text of :meth:`to_dict`, also written to ``path`` if given."""
        from .serialize import to_toml
        return to_toml(self, path)

    @classmethod
    def from_toml(cls, path_or_text) -> "NeuronModel":
        """Load from a ``.toml`` path or TOML text (needs Python 3.11+ or ``tomli``)."""
        from .serialize import from_toml
        return from_toml(path_or_text)

    @classmethod
    def from_ode(cls, name, states, ode, params=None, fire=None, reset=None, dt=1.0,
                 method="auto", input="x", doc="", **options):
        """A model from ``d(state)/dt`` right-hand sides, discretised over a step of ``dt``
        (a parameter). See :func:`neurogen.spec.ode.from_ode` for the methods;
        ``options``: ``output``, ``refractory``, ``refractory_hold``, ``fire_strict``."""
        from .ode import from_ode
        return from_ode(name, states, ode, params=params, fire=fire, reset=reset, dt=dt,
                        method=method, input=input, doc=doc, **options)

    # ---- generation and modules (implemented in other modules) ---------------------
    @property
    def module(self):
        """``model.module(**options)``: a torch module running this model
        (:class:`neurogen.module.NeuronModule`); ``help(model.module)`` lists this model's
        parameters with their defaults beside the module's options."""
        return _module_factory(self)

    def cuda_source(self, kind: str = "forward", dtype: str = "float32", **config) -> str:
        """The CUDA source of the ``forward`` or ``backward`` kernel, exactly as compiled."""
        from ..targets import render
        return render(self, "cuda", kind, dtype, **config)

    def cpp_source(self, kind: str = "forward", dtype: str = "float32", **config) -> str:
        """The C++ source of the ``forward`` or ``backward`` CPU kernel, exactly as compiled."""
        from ..targets import render
        return render(self, "cpu", kind, dtype, **config)


def _module_factory(model):
    """``model.module``: a function with the real signature (the module's options, then the
    model's parameters with their defaults) and a docstring naming states and parameters."""
    import inspect

    from ..module import MODULE_OPTIONS, NeuronModule

    def module(**kwargs):
        return NeuronModule(model, **kwargs)

    kw = inspect.Parameter.KEYWORD_ONLY
    options = [inspect.Parameter(n, kw, default=d) for n, d in MODULE_OPTIONS.items()]
    names = {p.name for p in options}  # (a parameter named like an option: the module says)
    params = [inspect.Parameter(k, kw, default=model.defaults[k]) for k in model.param_names
              if k not in names]
    module.__signature__ = inspect.Signature(options + params)
    module.__name__ = "module"
    module.__qualname__ = f"{model.name}.module"
    lines = [f"A torch module running the neuron model {model.name!r} "
             "(neurogen.module.NeuronModule).", "",
             f"States: {', '.join(model.state_names)} (read and set as node.<state>).",
             "Parameters (each a float, a tensor broadcastable to the neuron shape, or an "
             "nn.Parameter to learn it):"]
    lines += [f"    {k} = {model.defaults[k]!r}" for k in model.param_names] or ["    (none)"]
    lines += ["", "Options: surrogate_function (default ng.surrogate.Sigmoid()), detach_reset, "
              "step_mode ('s' or 'm'), backend ('auto', 'cpu', 'cuda', 'cuda-emulated', "
              "'torch'), store_v_seq, record (states to keep per step as node.<state>_seq)."]
    if model.output is not None:
        lines.append(f"Returns the output {model.output} per step.")
    module.__doc__ = "\n".join(lines)
    return module
