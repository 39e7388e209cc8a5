"""The stages of one time step, and the step as a straight-line program over them.

A step is an ordered list of :class:`Stage` objects (charge, adaptation, fire, reset
for a declared model; ``model.stages``). Each stage reads the states' current values
(the previous state before the first stage) and either gives some states new values
(a :class:`StateStage`) or computes the fire value and the spike (:class:`FireStage`).
:class:`Step` turns the list into single assignments (``ng_h_v = ...``), which the
derivation differentiates in reverse (:mod:`neurogen.derive`), the lowering turns into
kernel statements (:mod:`neurogen.lower`), the display prints and the torch reference
evaluates, each by iterating the same list. A new stage is a new object here; nothing
downstream names the stages.

Symbols: ``v`` is a state's value before the step, ``ng_<tag>_v`` its value after the
stage with that tag (``h`` charge, ``a`` adaptation, ``r`` reset), ``ng_u`` the fire
value and ``spike`` (``spike_d``, detached when ``detach_reset=True``) the spike.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import sympy as sp

from .errors import SpecError
from .spec.model import spike, spike_d

U = sp.Symbol("ng_u")
SPIKE = spike
OUT = sp.Symbol("ng_out")


def P(name: str) -> sp.Symbol:
    """A model name (a state's value before the step, a parameter, the input)."""
    return sp.Symbol(name)


class Stage:
    """One stage of a step.

    ``name`` labels it (display, errors); ``tag`` names its new values (``ng_<tag>_<s>``);
    ``grad_tag`` names the gradients of the values it reads in the derived backward
    (``ng_g<grad_tag>_<s>``; None: no names of their own, the sums run on into the
    stage before). ``reads_spike``: its equations may use ``spike``/``spike_d`` (the
    stage must come after fire).
    """

    name = "stage"
    tag = ""
    grad_tag: Optional[str] = None
    reads_spike = False

    def equations(self, model) -> Dict[str, sp.Expr]:
        """``{state: expression}`` in the model's symbols; a state's symbol means its
        value entering this stage."""
        raise NotImplementedError

    def canonical(self, model) -> str:
        """Deterministic text of what the stage does in ``model`` (part of the spec hash
        when the stage list is not the default one)."""
        eqs = ";".join(f"{s}={sp.srepr(e)}" for s, e in self.equations(model).items())
        return (f"{type(self).__module__}.{type(self).__qualname__}({self.name},{self.tag},"
                f"{self.grad_tag},{self.reads_spike},{eqs})")


class StateStage(Stage):
    """A stage that gives states new values: ``state <- expression`` for each equation,
    all read from the values entering the stage (simultaneous).

    The model's groups are ``StateStage("adaptation", "a", "B", group="adaptation")`` and
    so on;
    a stage of one's own passes ``equations={"v": "0.9 * v"}`` instead of ``group``.
    """

    def __init__(self, name: str, tag: str, grad_tag: Optional[str] = None,
                 group: Optional[str] = None, equations=None, reads_spike: bool = False):
        self.name, self.tag, self.grad_tag = name, tag, grad_tag
        self.group, self.reads_spike = group, reads_spike
        if (group is None) == (equations is None):
            raise ValueError("give a StateStage either group= (a model group) or equations=")
        self._equations = None if equations is None else {
            str(s): _expr(e, f"{name} equation of {s!r}") for s, e in equations.items()}

    def equations(self, model):
        if self.group is not None:
            return getattr(model, self.group)
        unknown = set(self._equations) - set(model.state_names)
        if unknown:
            raise SpecError(f"stage {self.name!r} has equations for unknown states "
                            f"{sorted(unknown)}; states are {list(model.state_names)}")
        return {s: self._equations[s] for s in model.state_names if s in self._equations}

    def __repr__(self):
        return f"StateStage({self.name!r})"


class FireStage(Stage):
    """``u = fire`` and ``spike = (u >= 0)``, with the surrogate derivative in the backward;
    then the step's output (``model.output``, e.g. ``spike * v``; the spike itself when
    None) from the same values and the spike."""

    name, tag, grad_tag = "fire", "", "V"

    def equations(self, model):
        return {}

    def fire(self, model) -> sp.Expr:
        return model.fire

    def output(self, model) -> Optional[sp.Expr]:
        return getattr(model, "output", None)

    def canonical(self, model):
        out = self.output(model)
        return (f"{type(self).__module__}.{type(self).__qualname__}"
                f"({sp.srepr(self.fire(model))}"
                + ("" if out is None else f",{sp.srepr(out)}") + ")")

    def __repr__(self):
        return "FireStage()"


_RESERVED_TAGS = {"g", "sv", "acc", "c", "k", "p", "gseq"}  # (names the derivation and lowering use)


def _check_tags(stages):
    """Stage tags name symbols (``ng_<tag>_v``, ``ng_g<grad_tag>_v``): they must be
    distinct and clash with no name neurogen makes itself."""
    tags = [st.tag for st in stages if st.tag]
    grads = [st.grad_tag for st in stages if st.grad_tag]
    if len(tags) != len(set(tags)) or len(grads) != len(set(grads)):
        raise SpecError(f"stage tags must be distinct, got tags {tags} and gradient tags {grads}")
    for st in stages:
        if st.tag and (not st.tag.isalpha() or not st.tag.islower() or st.tag in _RESERVED_TAGS):
            raise SpecError(f"stage {st.name!r}: tag {st.tag!r} must be lower-case letters and "
                            f"not one of {sorted(_RESERVED_TAGS)}")
        if st.grad_tag and (not st.grad_tag.isalpha() or not st.grad_tag.isupper()):
            raise SpecError(f"stage {st.name!r}: gradient tag {st.grad_tag!r} must be "
                            "upper-case letters")
    if "P" in grads:
        raise SpecError("the gradient tag 'P' is taken: ng_gP_<s> are the gradients of the "
                        "previous states")


def _expr(value, where):
    from .spec.model import _to_expr
    return _to_expr(value, where)


CHARGE = StateStage("charge", "h", None, group="charge")  # its gradients: the outputs ng_gP
ADAPTATION = StateStage("adaptation", "a", "B", group="adaptation")
FIRE = FireStage()
RESET = StateStage("reset", "r", None, group="reset", reads_spike=True)
DEFAULT = (CHARGE, ADAPTATION, FIRE, RESET)


@dataclass(frozen=True)
class Assignment:
    """``target = expr`` in one stage. ``state``: the state whose new value this is (None
    for the fire value and the spike). ``spike``: the target is the spike, ``expr`` the
    fire value it thresholds (forward ``expr >= 0``, backward the surrogate)."""
    target: sp.Symbol
    expr: sp.Expr
    stage: int
    state: Optional[str] = None
    spike: bool = False


class Step:
    """One step of ``model`` over ``model.stages`` as single assignments.

    ``reads[k]``: the symbol of each state's value entering stage ``k``;
    ``assignments``: in order; ``final``: each state's symbol after the step (its
    previous value for a state no stage changes)."""

    def __init__(self, model):
        self.model = model
        self.stages: Tuple[Stage, ...] = tuple(model.stages)
        self.states = model.state_names
        self.params = [P(k) for k in model.param_names]
        self.x = P(model.input_name)
        cur = {s: P(s) for s in self.states}
        self.output = SPIKE  # what the step returns (OUT when the model has an output)
        # spike = fire > 0 (strict) or fire >= 0 (the default)
        self.strict = bool(getattr(model, "fire_strict", False))
        self.reads: List[Dict[str, sp.Symbol]] = []
        self.assignments: List[Assignment] = []
        fired = False
        _check_tags(self.stages)
        for k, stage in enumerate(self.stages):
            self.reads.append(dict(cur))
            to_cur = {P(s): cur[s] for s in self.states}
            if isinstance(stage, FireStage):
                if fired:
                    raise SpecError("the stage list has two fire stages")
                self.assignments.append(Assignment(U, stage.fire(model).xreplace(to_cur), k))
                self.assignments.append(Assignment(SPIKE, U, k, spike=True))
                out = stage.output(model)
                if out is not None:
                    self.assignments.append(Assignment(OUT, out.xreplace(to_cur), k))
                    self.output = OUT
                fired = True
                continue
            new = {}
            for s, e in stage.equations(model).items():
                if (e.has(spike) or e.has(spike_d)) and not (fired and stage.reads_spike):
                    raise SpecError(f"{stage.name} equation of {s!r} uses the spike; only a "
                                    "stage after fire that reads spikes (reset) may")
                target = sp.Symbol(f"ng_{stage.tag}_{s}")
                self.assignments.append(Assignment(target, e.xreplace(to_cur), k, state=s))
                new[s] = target
            cur.update(new)
        if not fired:
            raise SpecError("the stage list has no fire stage")
        self.final: Dict[str, sp.Symbol] = cur
        self.defs = {a.target: a for a in self.assignments}

    def stage_assignments(self, k: int) -> List[Assignment]:
        return [a for a in self.assignments if a.stage == k]

    def state_of(self, sym) -> Optional[str]:
        """The state a value symbol belongs to (its previous value or a stage's new value)."""
        if sym in self.defs:
            return self.defs[sym].state
        return sym.name if sym.name in self.states else None

    def stage_of(self, sym) -> Optional[Stage]:
        """The stage that computes ``sym`` (None for a previous value)."""
        a = self.defs.get(sym)
        return None if a is None else self.stages[a.stage]


__all__ = ["Stage", "StateStage", "FireStage", "Step", "Assignment", "DEFAULT", "CHARGE",
           "ADAPTATION", "FIRE", "RESET", "U", "SPIKE", "OUT", "P"]
