"""Library neurons, each declared as a `NeuronModel` (no hand-written kernels).

Constructors, defaults and step semantics follow SpikingJelly 2.0
(``spikingjelly.activation_based.neuron``) and ``docs/semantics.md``. Each
class's ``spec`` is its model with default structure; ``node.model`` is the
model an instance runs (it differs for soft reset or ``decay_input=False``).
Copy and modify a spec with ``spec.replace(...)``.
"""
import functools
import math
from typing import Optional

from . import surrogate as sg
from .errors import SpecError
from .module import NeuronModule
from .spec.model import NeuronModel

__all__ = ["IFNode", "LIFNode", "ParametricLIFNode", "QIFNode", "EIFNode", "CUBALIFNode",
           "AdaptBaseNode", "IzhikevichNode", "AdExNode", "LIBRARY"]


def _v_reset_eqs(soft: bool, detached_hard_jump: bool):
    """Reset of ``v``: soft ``v - spike_d * v_threshold``; hard as in semantics.md."""
    if soft:
        return "v - spike_d * v_threshold"
    jump = "spike_d" if detached_hard_jump else "spike"
    return f"(1 - spike_d) * v + {jump} * v_reset"


def _base_params(soft, **extra):
    params = dict(extra)
    params["v_threshold"] = 1.0
    if not soft:
        params["v_reset"] = 0.0
    return params


class _LibraryNode(NeuronModule):
    """Shared constructor plumbing: build the spec, then a NeuronModule on it."""

    def __init__(self, model, params, surrogate_function, detach_reset, step_mode, backend,
                 store_v_seq, v_reset, refractory=0, record=()):
        if v_reset is None:
            params.pop("v_reset", None)
        if refractory != 0:  # (0: SpikingJelly's neuron, bitwise)
            if isinstance(refractory, str):
                raise SpecError("library neurons take refractory= as a whole number of steps; "
                                "for a period held in a parameter declare the model "
                                "(spec.replace(params=..., refractory='t_ref'))")
            model = model.replace(refractory=refractory)
        super().__init__(model, surrogate_function=surrogate_function, detach_reset=detach_reset,
                         step_mode=step_mode, backend=backend, store_v_seq=store_v_seq,
                         record=record, **params)
        if v_reset is None:
            self.__dict__["v_reset"] = None


def _require(cond, message):
    if not cond:
        raise SpecError(message)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_rest_reset(cls, v_threshold, v_rest, v_reset):
    """SpikingJelly's QIF/EIF constraints under hard reset."""
    if v_reset is None:
        return
    if _is_number(v_threshold) and _is_number(v_reset):
        _require(v_threshold > v_reset, f"{cls} needs v_threshold > v_reset, got "
                 f"v_threshold={v_threshold}, v_reset={v_reset}")
    if _is_number(v_rest) and _is_number(v_reset):
        _require(v_rest >= v_reset, f"{cls} needs v_rest >= v_reset, got v_rest={v_rest}, "
                 f"v_reset={v_reset}")


# ---- IF / LIF / PLIF / QIF / EIF --------------------------------------------------------
@functools.lru_cache(maxsize=None)
def if_spec(soft: bool = False) -> NeuronModel:
    return NeuronModel("if_node", states={"v": 0.0 if soft else "v_reset"},
                       params=_base_params(soft), charge={"v": "v + x"},
                       fire="v - v_threshold", reset={"v": _v_reset_eqs(soft, True)})


@functools.lru_cache(maxsize=None)
def lif_spec(soft: bool = False, decay_input: bool = True) -> NeuronModel:
    r = "0" if soft else "v_reset"
    charge = f"v + (x - (v - {r})) / tau" if decay_input else f"v - (v - {r}) / tau + x"
    return NeuronModel("lif_node", states={"v": 0.0 if soft else "v_reset"},
                       params=_base_params(soft, tau=2.0), charge={"v": charge},
                       fire="v - v_threshold", reset={"v": _v_reset_eqs(soft, True)})


@functools.lru_cache(maxsize=None)
def plif_spec(soft: bool = False, decay_input: bool = True) -> NeuronModel:
    r = "0" if soft else "v_reset"
    charge = (f"v + (x - (v - {r})) * sigmoid(w)" if decay_input
              else f"v - (v - {r}) * sigmoid(w) + x")
    return NeuronModel("parametric_lif_node", states={"v": 0.0 if soft else "v_reset"},
                       params=_base_params(soft, w=0.0), charge={"v": charge},
                       fire="v - v_threshold", reset={"v": _v_reset_eqs(soft, True)})


@functools.lru_cache(maxsize=None)
def qif_spec(soft: bool = False) -> NeuronModel:
    return NeuronModel("qif_node", states={"v": 0.0 if soft else "v_reset"},
                       params=_base_params(soft, tau=2.0, v_c=0.8, a0=1.0, v_rest=0.0),
                       charge={"v": "v + (x + a0 * (v - v_rest) * (v - v_c)) / tau"},
                       fire="v - v_threshold", reset={"v": _v_reset_eqs(soft, True)})


@functools.lru_cache(maxsize=None)
def eif_spec(soft: bool = False) -> NeuronModel:
    return NeuronModel(
        "eif_node", states={"v": 0.0 if soft else "v_reset"},
        params=_base_params(soft, tau=2.0, delta_T=1.0, theta_rh=0.8, v_rest=0.0),
        charge={"v": "v + (x + v_rest - v + delta_T * exp((v - theta_rh) / delta_T)) / tau"},
        fire="v - v_threshold", reset={"v": _v_reset_eqs(soft, True)})


class IFNode(_LibraryNode):
    """Integrate-and-fire: ``H = v + x``."""
    spec = if_spec()

    def __init__(self, v_threshold=1.0, v_reset: Optional[float] = 0.0, surrogate_function=None,
                 detach_reset=False, step_mode="s", backend="auto", store_v_seq=False,
                 *, refractory=0, record=()):
        super().__init__(if_spec(v_reset is None),
                         dict(v_threshold=v_threshold, v_reset=v_reset), surrogate_function,
                         detach_reset, step_mode, backend, store_v_seq, v_reset, refractory, record)


class LIFNode(_LibraryNode):
    """Leaky integrate-and-fire: ``H = v + (x - (v - v_reset)) / tau`` (``decay_input``)."""
    spec = lif_spec()

    def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset: Optional[float] = 0.0,
                 surrogate_function=None, detach_reset=False, step_mode="s", backend="auto",
                 store_v_seq=False, *, refractory=0, record=()):
        if _is_number(tau):
            _require(tau > 1.0, f"LIFNode needs tau > 1 (as SpikingJelly asserts), got tau={tau}")
        self.decay_input = decay_input
        super().__init__(lif_spec(v_reset is None, bool(decay_input)),
                         dict(tau=tau, v_threshold=v_threshold, v_reset=v_reset),
                         surrogate_function, detach_reset, step_mode, backend, store_v_seq, v_reset,
                         refractory, record)


class ParametricLIFNode(_LibraryNode):
    """LIF with learnable ``w``: ``1/tau = sigmoid(w)``, ``w`` starts at ``-log(init_tau - 1)``."""
    spec = plif_spec()

    def __init__(self, init_tau=2.0, decay_input=True, v_threshold=1.0,
                 v_reset: Optional[float] = 0.0, surrogate_function=None, detach_reset=False,
                 step_mode="s", backend="auto", store_v_seq=False, *, refractory=0, record=()):
        import torch
        _require(_is_number(init_tau) and init_tau > 1.0,
                 f"ParametricLIFNode needs init_tau > 1, got init_tau={init_tau}")
        self.decay_input = decay_input
        w = torch.nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.0)))
        super().__init__(plif_spec(v_reset is None, bool(decay_input)),
                         dict(w=w, v_threshold=v_threshold, v_reset=v_reset),
                         surrogate_function, detach_reset, step_mode, backend, store_v_seq, v_reset,
                         refractory, record)


class QIFNode(_LibraryNode):
    """Quadratic integrate-and-fire: ``H = v + (x + a0 (v - v_rest)(v - v_c)) / tau``."""
    spec = qif_spec()

    def __init__(self, tau=2.0, v_c=0.8, a0=1.0, v_threshold=1.0, v_rest=0.0,
                 v_reset: Optional[float] = -0.1, surrogate_function=None, detach_reset=False,
                 step_mode="s", backend="auto", store_v_seq=False, *, refractory=0, record=()):
        if _is_number(tau):
            _require(tau > 1.0, f"QIFNode needs tau > 1, got tau={tau}")
        if _is_number(a0):
            _require(a0 > 0, f"QIFNode needs a0 > 0, got a0={a0}")
        _check_rest_reset("QIFNode", v_threshold, v_rest, v_reset)
        super().__init__(qif_spec(v_reset is None),
                         dict(tau=tau, v_c=v_c, a0=a0, v_threshold=v_threshold, v_rest=v_rest,
                              v_reset=v_reset),
                         surrogate_function, detach_reset, step_mode, backend, store_v_seq, v_reset,
                         refractory, record)


class EIFNode(_LibraryNode):
    """Exponential integrate-and-fire."""
    spec = eif_spec()

    def __init__(self, tau=2.0, delta_T=1.0, theta_rh=0.8, v_threshold=1.0, v_rest=0.0,
                 v_reset: Optional[float] = -0.1, surrogate_function=None, detach_reset=False,
                 step_mode="s", backend="auto", store_v_seq=False, *, refractory=0, record=()):
        if _is_number(tau):
            _require(tau > 1.0, f"EIFNode needs tau > 1, got tau={tau}")
        if _is_number(delta_T):
            _require(delta_T > 0, f"EIFNode needs delta_T > 0, got delta_T={delta_T}")
        _check_rest_reset("EIFNode", v_threshold, v_rest, v_reset)
        super().__init__(eif_spec(v_reset is None),
                         dict(tau=tau, delta_T=delta_T, theta_rh=theta_rh,
                              v_threshold=v_threshold, v_rest=v_rest, v_reset=v_reset),
                         surrogate_function, detach_reset, step_mode, backend, store_v_seq, v_reset,
                         refractory, record)


# ---- CUBA LIF -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def cuba_lif_spec(soft: bool = False) -> NeuronModel:
    params = _base_params(soft, c_decay=0.5, v_decay=0.75)
    params["v_threshold"] = 0.5
    return NeuronModel("cuba_lif_node", states={"v": 0.0 if soft else "v_reset", "c": 0.0},
                       params=params,
                       charge={"c": "c_decay * c + x", "v": "v_decay * v + c_decay * c + x"},
                       fire="v - v_threshold", reset={"v": _v_reset_eqs(soft, True)})


class CUBALIFNode(_LibraryNode):
    """Current-based LIF: ``c <- c_decay c + x``; ``H = v_decay v + c_decay c + x``."""
    spec = cuba_lif_spec()

    def __init__(self, c_decay=0.5, v_decay=0.75, v_threshold=0.5, v_reset: Optional[float] = 0.0,
                 surrogate_function=None, detach_reset=False, step_mode="s", backend="auto",
                 store_v_seq=False, *, refractory=0, record=()):
        super().__init__(cuba_lif_spec(v_reset is None),
                         dict(c_decay=c_decay, v_decay=v_decay, v_threshold=v_threshold,
                              v_reset=v_reset),
                         surrogate_function if surrogate_function is not None else sg.Rect(),
                         detach_reset, step_mode, backend, store_v_seq, v_reset, refractory, record)


# ---- adaptive neurons (the seed's AdaptBaseNode family) -----------------------------------
ADAPT_DEFAULTS = dict(v_threshold=1.0, v_reset=0.0, v_rest=0.0, w_rest=0.0, tau_w=2.0, a=0.0,
                      b=0.0)


def adaptive_spec(name: str, charge: str, extra_params: dict, soft: bool = False) -> NeuronModel:
    """An adaptive neuron: the given charge of ``v`` plus AdaptBaseNode's ``w``.

    ``w`` adapts as ``w + (a (v - v_rest) - w) / tau_w`` from the charged ``v``
    and jumps by ``b * spike`` at reset; hard reset of ``v`` is the seed's
    ``(1 - spike_d) v + spike v_reset``.
    """
    params = dict(extra_params)
    params.update({k: v for k, v in ADAPT_DEFAULTS.items() if not (soft and k == "v_reset")})
    return NeuronModel(
        name, states={"v": 0.0 if soft else "v_reset", "w": "w_rest"}, params=params,
        charge={"v": charge}, adaptation={"w": "w + (a * (v - v_rest) - w) / tau_w"},
        fire="v - v_threshold",
        reset={"v": _v_reset_eqs(soft, False), "w": "w + b * spike"})


class AdaptBaseNode(_LibraryNode):
    """Base of adaptive neurons (seed semantics). Give the charge of ``v`` as a string
    or sympy expression in ``v``, ``w``, ``x`` and parameters (``extra_params``)."""
    spec = None

    def __init__(self, v_threshold=1.0, v_reset: Optional[float] = 0.0, v_rest=0.0, w_rest=0.0,
                 tau_w=2.0, a=0.0, b=0.0, surrogate_function=None, detach_reset=False,
                 step_mode="s", backend="auto", store_v_seq=False,
                 *, refractory=0, record=(), charge=None,
                 extra_params=None, name="adaptive_node", **extra_values):
        if charge is None:
            raise NotImplementedError(
                "AdaptBaseNode needs the charge of v: pass charge='v + (x - w - v) / tau' (with "
                "extra_params={'tau': 2.0}) or use IzhikevichNode / AdExNode")
        if _is_number(tau_w):
            _require(tau_w != 0, "AdaptBaseNode needs tau_w != 0")
        extra = dict(extra_params or {})
        model = adaptive_spec(name, charge, extra, v_reset is None)
        values = {**extra, **extra_values}
        values.update(v_threshold=v_threshold, v_reset=v_reset, v_rest=v_rest, w_rest=w_rest,
                      tau_w=tau_w, a=a, b=b)
        super().__init__(model, values, surrogate_function, detach_reset, step_mode, backend,
                         store_v_seq, v_reset, refractory, record)


IZHIKEVICH_CHARGE = "v + (x + a0 * (v - v_rest) * (v - v_c) - w) / tau"
ADEX_CHARGE = "v + (x + v_rest - v + delta_T * exp((v - theta_rh) / delta_T) - w) / tau"


@functools.lru_cache(maxsize=None)
def izhikevich_spec(soft: bool = False) -> NeuronModel:
    return adaptive_spec("izhikevich_node", IZHIKEVICH_CHARGE,
                         dict(tau=2.0, v_c=0.8, a0=1.0), soft)


@functools.lru_cache(maxsize=None)
def adex_spec(soft: bool = False) -> NeuronModel:
    return adaptive_spec("adex_node", ADEX_CHARGE,
                         dict(tau=2.0, delta_T=1.0, theta_rh=0.8), soft)


class IzhikevichNode(AdaptBaseNode):
    """Izhikevich neuron (seed signature and defaults)."""
    spec = izhikevich_spec()

    def __init__(self, tau=2.0, v_c=0.8, a0=1.0, v_threshold=1.0, v_reset: Optional[float] = 0.0,
                 v_rest=-0.1, w_rest=0.0, tau_w=2.0, a=0.0, b=0.0, surrogate_function=None,
                 detach_reset=False, step_mode="s", backend="auto", store_v_seq=False,
                 *, refractory=0, record=()):
        if _is_number(tau):
            _require(tau > 1.0, f"IzhikevichNode needs tau > 1, got tau={tau}")
        if _is_number(a0):
            _require(a0 > 0, f"IzhikevichNode needs a0 > 0, got a0={a0}")
        _LibraryNode.__init__(
            self, izhikevich_spec(v_reset is None),
            dict(tau=tau, v_c=v_c, a0=a0, v_threshold=v_threshold, v_reset=v_reset,
                 v_rest=v_rest, w_rest=w_rest, tau_w=tau_w, a=a, b=b),
            surrogate_function, detach_reset, step_mode, backend, store_v_seq, v_reset,
            refractory, record)


class AdExNode(AdaptBaseNode):
    """Adaptive exponential integrate-and-fire: EIF charge minus ``w``, with adaptation."""
    spec = adex_spec()

    def __init__(self, tau=2.0, delta_T=1.0, theta_rh=0.8, v_threshold=1.0,
                 v_reset: Optional[float] = -0.1, v_rest=0.0, w_rest=0.0, tau_w=2.0, a=0.0,
                 b=0.0, surrogate_function=None, detach_reset=False, step_mode="s",
                 backend="auto", store_v_seq=False, *, refractory=0, record=()):
        if _is_number(tau):
            _require(tau > 1.0, f"AdExNode needs tau > 1, got tau={tau}")
        if _is_number(delta_T):
            _require(delta_T > 0, f"AdExNode needs delta_T > 0, got delta_T={delta_T}")
        _LibraryNode.__init__(
            self, adex_spec(v_reset is None),
            dict(tau=tau, delta_T=delta_T, theta_rh=theta_rh, v_threshold=v_threshold,
                 v_reset=v_reset, v_rest=v_rest, w_rest=w_rest, tau_w=tau_w, a=a, b=b),
            surrogate_function, detach_reset, step_mode, backend, store_v_seq, v_reset,
            refractory, record)


LIBRARY = {cls.__name__: cls for cls in (IFNode, LIFNode, ParametricLIFNode, QIFNode, EIFNode,
                                         CUBALIFNode, IzhikevichNode, AdExNode)}
