"""The checker's OWN translation of a model into the network its certificates are about, written
independently of `certify.bounds.network` (it imports neither certify.bounds, certify.explain nor
certify.attacks), its own conformance check, and the checker's facts about N: `forward`, `gradient`,
`deviation_bound`, `lipschitz_bound` (the path-sum Lipschitz bound), the activations' own evaluation, slopes,
constants and rounding terms.

What is translated. The model (unwrapped from DataParallel / DistributedDataParallel / torch.compile; a
TorchScript module replaced by its graph rebuilt as fx, `certify.models.torchscript.translatable`, or refused
with its reason) is traced with torch.fx into a DAG of nodes. Every value is the network input, an AFFINE
function of earlier values, or the output of an elementwise activation. Affine ops: Linear, Conv1d/Conv2d
(stride, padding and padding modes, dilation, groups), BatchNorm1d/2d (eval, running statistics), AvgPool1d/2d,
AdaptiveAvgPool1d/2d, Flatten, Identity, Dropout (eval), certify.models.builders.Normalize; add / sub of two
values or of a constant, mul / div by a constant (a python number or a tensor that does not depend on the
input), neg, torch.cat, mean over non-batch dimensions, permute / transpose / squeeze(dim) / unsqueeze /
flatten / view / reshape keeping the batch dimension, contiguous. MaxPool1d/2d (any kernel, stride, padding,
dilation, ceil_mode) is modelled EXACTLY by ReLU layers: the entries of each window that lie inside the
input (padding is excluded, not read as a value) are reduced by a tournament, max(a, b) = a + relu(b - a),
ceil(log2 window) ReLU layers. Activations: ReLU, LeakyReLU, Softplus (threshold rule below), Sigmoid, Tanh,
GELU (approximate "none" -> ("gelu",), "tanh" -> ("gelu_tanh",)), SiLU, as modules, functions or methods.
A final Softmax / LogSoftmax over the class dimension is dropped and recorded as `head` (N is the logits
before it); anywhere else it is refused. Anything else raises SemanticsError naming the op: a product of
two input-dependent values, division by one, indexing, any other op or module, an in-place op on a value
another op reads or on a value that may share storage with another (aliasing: an in-place op is accepted only
on the result of an op that always allocates - Linear, Conv, BatchNorm, pooling, an out-of-place activation or
arithmetic op, cat, mean / sum, clone - or of an accepted in-place op on such a value; never on the input, a
parameter, or Identity / Dropout / Flatten / flatten / view / reshape / contiguous / permute / transpose /
squeeze / unsqueeze / expand / indexing / F.dropout or any other op; `y += c` is traced as the in-place
operator.iadd, ... and judged so; an op with out= is refused), forward / backward hooks (on the model's
modules and on every DataParallel / DistributedDataParallel / torch.compile wrapper level, checked before it
is stripped, with its training mode and instance-level forward), training mode, BatchNorm without running statistics, a
non-positive softplus beta, a softplus threshold whose switch to the identity is visible at float32
resolution (log1p(e^{-threshold}) > 2^-24 threshold).

The result, Stages: the DAG of layers
    h_0 = x (flat),  z_k = W_k h_k + b_k + sum_{j in skips[k]} S_{k,j} h_j  (j < k),
    h_{k+1} = sigma_k(z_k) (k < L-1),  N(x) = z_{L-1},
with mats[k] = W_k [out_k, size(h_k)] (all zero when z_k does not read h_k), skips[k][j] = S_{k,j}, biases[k]
= b_k, all float64, computed as the reverse-mode autograd Jacobians (and the values at 0) of the traced
graph's affine parts with respect to the earlier activation outputs, each treated as a free variable; acts:
("relu",), ("leaky_relu", slope), ("softplus", beta, threshold), ("sigmoid",), ("tanh",), ("gelu",),
("gelu_tanh",), ("silu",). A chain (no skips) translates to exactly the stages of the former chain-only
translation. N uses the EXACT softplus log(1 + e^{beta t}) / beta; `deviation_bound` bounds
sup_x max_j |T_j(x) - N_j(x)| for T the same graph with torch's thresholded softplus (identity where
beta t > threshold, below softplus by at most log1p(e^{-threshold}) / beta per unit).

Activation constants (ACTIVATION_BOUNDS): lipschitz = sup |sigma'|, curvature = sup |sigma''|, each the exact
value below evaluated in float64 (to ~1e-15) and rounded up by a relative 1e-12. relu 1 / -; leaky_relu
max(1, |slope|) / -; softplus 1 / beta/4. sigmoid: s' = s(1 - s) <= 1/4; s'' = s(1 - s)(1 - 2s), largest at
s = (3 - sqrt 3)/6: sqrt(3)/18. tanh: 1 - y^2 <= 1; |2y(1 - y^2)|, y = tanh t, largest at y = 1/sqrt 3:
4/(3 sqrt 3). gelu(t) = t Phi(t): gelu' = Phi + t phi, gelu'' = phi (2 - t^2), gelu''' = phi t (t^2 - 4);
gelu' is extremal at +-sqrt 2: gelu'(sqrt 2) = Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = 1.12890414518515...,
gelu'(-sqrt 2) = 1 - that > -1; |gelu''| peaks at 0 (2 phi(0) = sqrt(2/pi)) or at +-2 (0.108). silu(t) =
t s(t): silu'(t) + silu'(-t) = 1, silu'' = s(1 - s)(2 + t(1 - 2s)), whose positive root t* = 2.3993572805...
(Newton in float64) gives sup silu' = silu'(t*) = 1.099839320128867; |silu''| is largest at 0 (1/2).
gelu_tanh(t) = t s(2k(t + 0.044715 t^3)), k = sqrt(2/pi) (= 0.5 t (1 + tanh(k (t + 0.044715 t^3)))):
gelu_tanh' is largest at t* = 1.4185040 (ternary search in float64), sup gelu_tanh' = 1.1289930686587715;
|gelu_tanh''| is largest at 0 (sqrt(2/pi); the outer lobes reach 0.108). The tests re-measure every constant
on a dense grid (an upper bound, tight to 1e-9).

Conformance: the model as the user runs it (own dtype and device, no_grad) vs N in float64 at x and seeded
far points (1x to 1000x the input's norm); tolerance per logit 2 * (forward rounding bound of the model's
graph in its unit roundoff + that of N's float64 layers) + deviation_bound. The rounding bound goes node by
node with absolute parameters: an affine op of n terms adds gamma_n (|A| |v| + |c|) to |A| e (v the input
values, e their error bounds); exact ops (reshapes, permutes, cat, neg, gathers) carry e; an activation gives
lipschitz * e + its own rounding term (`act_rounding`). With a softmax head the model's output is compared
with softmax(N) (resp. log_softmax(N)) in float64, the logit tolerance t carried through the head's
l-inf Lipschitz constant (1/2 for softmax: row i of its Jacobian sums to 2 p_i (1 - p_i); 2 for log_softmax:
2 (1 - p_i)) plus the head's own rounding ((2 C + 10) u for softmax, 4 u (|y_i| + C + 8) for log_softmax,
C classes).
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import operator
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from certify.errors import UnsupportedError

_F32_UNIT = 2.0**-24
_U64 = 2.0**-53


class SemanticsError(UnsupportedError):
    """The checker cannot translate the model exactly (the message says which op and why)."""


_AFFINE = {nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
           nn.BatchNorm1d, nn.BatchNorm2d}
_IDENTITY = {nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d}
_ACT_MODULES = {nn.ReLU, nn.LeakyReLU, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU}
_MAXPOOL = {nn.MaxPool1d: 1, nn.MaxPool2d: 2}
_HEADS = {nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax"}
_TORCH_LEAVES = _AFFINE | _IDENTITY | _ACT_MODULES | set(_MAXPOOL) | set(_HEADS) | {nn.Flatten}

# (lipschitz = sup |sigma'|, curvature = sup |sigma''|), exact values rounded up (module doc); softplus's
# curvature is beta / 4 and relu / leaky_relu have none (a kink)
_UP = 1.0 + 1e-12
ACTIVATION_BOUNDS = {
    "relu": (1.0, math.inf),
    "sigmoid": (0.25, math.sqrt(3.0) / 18.0 * _UP),
    "tanh": (1.0, 4.0 / (3.0 * math.sqrt(3.0)) * _UP),
    "gelu": ((0.5 * (1.0 + math.erf(1.0)) + math.sqrt(2.0) * math.exp(-1.0) / math.sqrt(2.0 * math.pi)) * _UP,
             math.sqrt(2.0 / math.pi) * _UP),
    "gelu_tanh": (1.1289930686587715 * _UP, math.sqrt(2.0 / math.pi) * _UP),
    "silu": (1.099839320128867 * _UP, 0.5 * _UP),
}
_GELU_TANH_K = math.sqrt(2.0 / math.pi)


def _is_normalize(m: nn.Module) -> bool:
    """certify.models.builders.Normalize, recognised by its exact class name and module (the checker does not
    import the model builders): (x - mean) / std per channel, its buffers `mean` and `std`."""
    kind = type(m)
    return kind.__module__ == "certify.models.builders" and kind.__qualname__ == "Normalize"


def _is_leaf(m: nn.Module) -> bool:
    return type(m) in _TORCH_LEAVES or _is_normalize(m)


@dataclass
class Node:
    """One node of the checker's graph (float64, batched values [B, *shape]).

    inputs: indices of earlier nodes (0 is the network input). An activation node has `act` and one input
    (its pre-activation). An affine node has `run(*values)`; `absolute(keep, *values)` applies |A| (plus |c|
    when keep) to nonnegative values, for the rounding bound; `terms` is the length of its longest sum plus
    one (0: an exact op, whose `run` maps nonnegative errors to their nonnegative images)."""

    label: str
    inputs: tuple[int, ...] = ()
    run: Callable[..., Tensor] | None = None
    absolute: Callable[..., Tensor] | None = None
    terms: int = 0
    act: tuple | None = None


@dataclass
class Stages:
    """The DAG of layers (module doc): mats[k] = W_k, biases[k] = b_k, skips[k][j] = S_{k,j} (j < k), acts[k]
    = sigma_k (k < L - 1), head "softmax" / "log_softmax" / None; nodes: the traced graph (conformance)."""

    mats: list[Tensor]
    biases: list[Tensor]
    acts: list[tuple]
    input_shape: tuple[int, ...] = ()
    skips: dict[int, dict[int, Tensor]] = field(default_factory=dict)
    head: str | None = None
    nodes: list[Node] = field(default_factory=list, repr=False)
    logits_node: int = 0  # index in `nodes` of the value N returns

    @property
    def is_chain(self) -> bool:
        return not self.skips


# --------------------------------------------------------------------------------------------- activations


def lipschitz(a: tuple) -> float:
    """sup_t |sigma'(t)| of activation `a` (a rigorous upper bound; module doc)."""
    if a[0] == "leaky_relu":
        return max(1.0, abs(float(a[1])))
    if a[0] == "softplus":
        return 1.0
    return ACTIVATION_BOUNDS[a[0]][0]


def curvature(a: tuple) -> float:
    """sup_t |sigma''(t)| (inf for the kinked relu / leaky_relu)."""
    if a[0] == "leaky_relu":
        return math.inf
    if a[0] == "softplus":
        return float(a[1]) / 4
    return ACTIVATION_BOUNDS[a[0]][1]


def activate(a: tuple, z: Tensor) -> Tensor:
    """sigma(z) of N, elementwise (exact softplus, no threshold)."""
    name = a[0]
    if name == "relu":
        return z.clamp(min=0)
    if name == "leaky_relu":
        return torch.where(z > 0, z, z * float(a[1]))
    if name == "softplus":
        beta = a[1]
        return z.clamp(min=0) + torch.log1p(torch.exp(-beta * z.abs())) / beta
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "gelu":
        return z * torch.special.ndtr(z)
    if name == "gelu_tanh":  # 0.5 t (1 + tanh y) = t sigmoid(2 y): no cancellation where y << 0
        return z * torch.sigmoid(2 * _GELU_TANH_K * (z + 0.044715 * z**3))
    if name == "silu":
        return z * torch.sigmoid(z)
    raise SemanticsError(f"activation {name!r} is not modelled")


def slope(a: tuple, z: Tensor) -> Tensor:
    """sigma'(z) elementwise; at a kink the slope torch's autograd uses (relu 0 at 0, leaky_relu its slope)."""
    name = a[0]
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, float(a[1])))
    if name == "softplus":
        return torch.sigmoid(a[1] * z)
    if name == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 - torch.tanh(z) ** 2
    if name == "gelu":
        return torch.special.ndtr(z) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if name == "gelu_tanh":
        zc = z.clamp(-1e6, 1e6)  # beyond, s (1 - s) = 0 exactly: avoids inf * 0
        s = torch.sigmoid(2 * _GELU_TANH_K * (zc + 0.044715 * zc**3))
        return s + zc * s * (1 - s) * 2 * _GELU_TANH_K * (1 + 3 * 0.044715 * zc * zc)
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    raise SemanticsError(f"activation {name!r} is not modelled")


def act_rounding(a: tuple, z: Tensor, h: Tensor, u: float, tiny: float = 2.0**-1022) -> Tensor:
    """Bound on |computed sigma(z) - sigma(z)| of an implementation in unit roundoff u (torch's in the model's
    dtype, `activate` in float64), h = sigma(z): relu exact; leaky_relu one product (u |h|); softplus
    8 u (|h| + 1/beta): a few operations relative to the value, plus the rounded product beta t inside exp,
    whose relative error u beta |t| costs u |t| e^{-beta |t|} <= u / (e beta) absolutely; sigmoid, tanh: a few
    library calls accurate to a few ulps, relative to the value (16 u |h| + 16 tiny, the tiny term covering
    underflow to subnormals); gelu, gelu_tanh, silu: t times a factor in [0, 1] computed from a rounded
    argument, with a cancellation (1 + erf, 1 + tanh) that makes the error relative to t: 16 u (|h| + |t|) +
    16 tiny. For the model, callers pass 2 u: the parameters (slope, beta) are rounded to its dtype too."""
    name = a[0]
    if name == "relu":
        return torch.zeros_like(h)
    if name == "leaky_relu":
        return u * h.abs()
    if name == "softplus":
        return 8 * u * (h.abs() + 1.0 / float(a[1]))
    if name in ("sigmoid", "tanh"):
        return 16 * u * h.abs() + 16 * tiny
    return 16 * u * (h.abs() + z.abs()) + 16 * tiny


def act_error(a: tuple, e: Tensor, z: Tensor, h: Tensor, u: float, tiny: float = 2.0**-1022) -> Tensor:
    """Bound on the error of h = sigma(z) evaluated in unit roundoff u from a z known within e: lipschitz(a) e +
    `act_rounding`; relu (exact, 1-Lipschitz) passes e through as it is, the same numbers as 1 e + 0."""
    if a[0] == "relu":
        return e
    return lipschitz(a) * e + act_rounding(a, z, h, u, tiny)


def _slope_scale(a: tuple, z: Tensor) -> Tensor:
    """Sum of the magnitudes of the terms `slope` adds, each times (1 + the sensitivity to the rounding of
    its inner argument): the scale of the float64 evaluation error of sigma'(z)."""
    name = a[0]
    if name == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if name == "tanh":
        return 1 + torch.tanh(z) ** 2
    if name == "gelu":  # exp(-z^2 / 2) of a rounded z^2: relative error ~ z^2 u
        return torch.special.ndtr(z).abs() + (z * torch.exp(-0.5 * z * z)).abs() / math.sqrt(2 * math.pi) * (1 + z * z)
    if name == "gelu_tanh":  # s(y) of a rounded y = 2k(z + c z^3): relative error ~ |y| (1 - s) u
        zc = z.clamp(-1e6, 1e6)
        y = 2 * _GELU_TANH_K * (zc + 0.044715 * zc**3)
        s = torch.sigmoid(y)
        tail = (zc * s * (1 - s) * 2 * _GELU_TANH_K * (1 + 3 * 0.044715 * zc * zc)).abs()
        return s * (1 + y.abs() * (1 - s)) + tail * (4 + y.abs())
    s = torch.sigmoid(z)  # silu
    return s + (z * s * (1 - s)).abs()


def slope_error(a: tuple, z: Tensor, e_z: Tensor, d: Tensor, u: float) -> Tensor:
    """Bound on |slope(a, z~) computed in float64 - sigma'(z)| when |z~ - z| <= e_z: a kink within e_z
    changes the slope by |1 - slope| (relu, leaky_relu); a smooth one moves it by curvature * e_z, plus the
    evaluation's own rounding: 4 u for softplus (one sigmoid in [0, 1] of a rounded product), 16 u times
    `_slope_scale` (a few library calls accurate to a few ulps and a few products, relative to the terms
    summed, amplified by the rounding of inner arguments) plus an underflow floor for the others; d is the
    computed slope."""
    if a[0] in ("relu", "leaky_relu"):
        jump = 1.0 if a[0] == "relu" else abs(1.0 - float(a[1]))
        return (z.abs() <= e_z).to(z.dtype) * jump
    if a[0] == "softplus":
        return curvature(a) * e_z + 4 * u
    return curvature(a) * e_z + 16 * u * _slope_scale(a, z) + 2.0**-1000


# --------------------------------------------------------------------------------------------------- walk


# `y += c` on a tensor is in place (y and every alias of y change), but a plain fx Proxy has no __iadd__, so
# Python would fall back to __add__ and record an out-of-place add: the tracer's proxies record the in-place
# operator instead (operator.iadd, ...), which the in-place guard then judges
_AUGMENTED_ASSIGNMENT = {f"__i{name}__": getattr(operator, f"i{name}") for name in (
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift")}


class _RecordingProxy(fx.Proxy):
    def __getattr__(self, k: str) -> fx.Proxy:  # x.data, x.T: the same recording
        return _RecordingAttribute(self, k)


class _RecordingAttribute(fx.proxy.Attribute, _RecordingProxy):
    pass


def _record_inplace(op: Callable) -> Callable:
    return lambda self, other: self.tracer.create_proxy("call_function", op, (self, other), {})


for _dunder, _op in _AUGMENTED_ASSIGNMENT.items():
    setattr(_RecordingProxy, _dunder, _record_inplace(_op))


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m) or super().is_leaf_module(m, qualname)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _RecordingProxy(node, self)


def _dynamo_owns_forward(wrapper: nn.Module) -> bool:
    """The instance-level `forward` torch.compile's OptimizedModule sets: dynamo's function (from its
    eval_frame module) around wrapper._orig_mod.__call__ or around external_utils.wrap_inline(_orig_mod)
    (reached through `_call_lazy_check` for a lazy module); anything else is a monkeypatch."""
    from torch._dynamo import eval_frame as _frame, external_utils as _ext

    f = wrapper.__dict__.get("forward")
    if getattr(f, "__func__", None) is getattr(type(wrapper), "_call_lazy_check", None) and getattr(f, "__self__", None) is wrapper:
        f = wrapper.__dict__.get("_forward")
    if getattr(getattr(f, "__code__", None), "co_filename", None) != _frame.__file__:
        return False
    wrapped, target = getattr(f, "_torchdynamo_orig_callable", None), wrapper._orig_mod
    if getattr(wrapped, "__self__", None) is target and getattr(wrapped, "__func__", None) is type(target).__call__:
        return True
    cells = getattr(wrapped, "__closure__", None) or ()
    return (getattr(getattr(wrapped, "__code__", None), "co_filename", None) == _ext.__file__ and len(cells) == 1
            and cells[0].cell_contents is target)


def _check_wrapper_state(wrapper: nn.Module) -> None:
    """The wrapper's own hooks run around the module it wraps, so they are checked before it is stripped."""
    kind = type(wrapper).__name__
    if wrapper.training:
        raise SemanticsError(f"wrapper {kind} is in training mode")
    hooks = (wrapper._forward_hooks, wrapper._forward_pre_hooks, wrapper._backward_hooks,
             getattr(wrapper, "_backward_pre_hooks", {}))
    if any(len(h) for h in hooks):
        raise SemanticsError(f"wrapper {kind} has a forward or backward hook")
    if "forward" in vars(wrapper) and not (kind == "OptimizedModule" and _dynamo_owns_forward(wrapper)):
        raise SemanticsError(f"wrapper {kind} overrides forward on the instance")


def _strip(model: nn.Module, check: bool = False) -> nn.Module:
    """The wrapped module under DataParallel / DistributedDataParallel / torch.compile wrappers; with check,
    each wrapper level must pass `_check_wrapper_state`."""
    for _ in range(8):
        parallel = isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
        if not (parallel or (type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"))):
            break  # not a wrapper: nothing left to unwrap
        if check:
            _check_wrapper_state(model)
        model = model.module if parallel else model._orig_mod
    return model


def _threshold_ok(threshold: float) -> bool:
    if threshold == math.inf:
        return True
    return math.isfinite(threshold) and threshold > 0 and math.log1p(math.exp(-threshold)) <= _F32_UNIT * threshold


def _softplus_act(beta: Any, threshold: Any, where: str) -> tuple:
    if isinstance(beta, fx.Node) or isinstance(threshold, fx.Node):
        raise SemanticsError(f"{where}: softplus beta/threshold computed at run time are not modelled")
    beta, threshold = float(beta), float(threshold)
    if not (beta > 0 and math.isfinite(beta)):
        raise SemanticsError(f"{where}: softplus beta = {beta} (must be positive and finite)")
    if not _threshold_ok(threshold):
        raise SemanticsError(
            f"{where}: softplus threshold={threshold:g}: torch switches to the identity where beta*t > {threshold:g}, "
            "a jump visible at float32 resolution (the checker accepts thresholds >= 13.997; default 20)"
        )
    return ("softplus", beta, threshold)


_PLAIN_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _f64(module: nn.Module) -> nn.Module:
    """A float64 CPU copy of `module` in eval mode that shares no tensor with it (`_abs_copy` edits its copy in place).
    torch's own Linear, Conv1d and Conv2d (the class itself, no submodules, buffers or hooks) are copied as a new
    module object with float64 copies of their parameters: what deepcopy then .to(float64) gives, without deepcopy's
    walk through every attribute (three copies per affine module in every translation); any other module by
    deepcopy."""
    if (type(module) in _PLAIN_AFFINE and not module._modules and not module._buffers
            and not any(getattr(module, hooks, None) for hooks in _HOOKS)):
        clone = copy.copy(module)  # a new object with its own attribute dict; the parameters are replaced below
        clone._parameters = {name: None if p is None else nn.Parameter(p.detach().to("cpu", torch.float64, copy=True), p.requires_grad)
                             for name, p in module._parameters.items()}
        return clone.eval()
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float64).eval()


def _abs_copy(module: nn.Module, keep_constants: bool) -> nn.Module:
    """float64 copy computing |A| h (+ |c| when keep_constants) for the affine module h -> A h + c."""
    m = _f64(module)
    with torch.no_grad():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            m.weight.abs_()
            if m.bias is not None:
                m.bias.abs_() if keep_constants else m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(-m.running_mean.abs() if keep_constants else torch.zeros_like(m.running_mean))
            if m.weight is not None:
                m.weight.abs_()
                m.bias.abs_() if keep_constants else m.bias.zero_()
        elif _is_normalize(m):
            m.std.abs_()
            m.mean.copy_(-m.mean.abs() if keep_constants else torch.zeros_like(m.mean))
    return m  # pooling: nonnegative weights, no constant


def _terms(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Longest sum of the affine module (input per-example shape `shape`) plus one."""
    if isinstance(module, nn.Linear):
        return module.weight.shape[1] + 1
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return int(module.weight[0].numel()) + 1
    if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
        k = module.kernel_size
        return math.prod(k if isinstance(k, (tuple, list)) else (k,) * (2 if isinstance(module, nn.AvgPool2d) else 1)) + 1
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        return math.prod(shape[1:]) + 1  # a window is at most the whole plane
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return 6
    return 2  # Normalize: subtract, divide


def _flat_dims(per_example: tuple[int, ...], start: int, end: int, where: str) -> tuple[int, ...]:
    rank = len(per_example) + 1
    s, e = (start % rank if start < 0 else start), (end % rank if end < 0 else end)
    if s == 0:
        raise SemanticsError(f"{where}: flattening from dimension 0 merges the batch")
    if s > e:
        return per_example
    merged = 1
    for d in per_example[s - 1 : e]:
        merged *= d
    return per_example[: s - 1] + (merged,) + per_example[e:]


class _Batch:
    """The batch size read from a value (x.size(0), x.shape[0])."""


@dataclass
class _T:
    """An input-dependent value: node index in the checker's graph."""

    index: int


@dataclass
class _Shape:
    per_example: tuple[int, ...]


@dataclass
class _Head:
    kind: str
    logits: _T
    node: fx.Node


_BATCH = _Batch()
_PROBE_BATCH = 2
_INPLACE_OPS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                operator.itruediv: operator.truediv}
_ACT_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.leaky_relu: "leaky_relu",
                  F.softplus: "softplus", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
                  F.tanh: "tanh", F.gelu: "gelu", F.silu: "silu"}
_INPLACE_POSITION = {F.relu: 1, F.leaky_relu: 2, F.silu: 1, F.dropout: 3}  # positional `inplace` of the functional forms
_ACT_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh"}
_HEAD_FUNCTIONS = {F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax",
                   torch.log_softmax: "log_softmax"}
_ADD = {operator.add, torch.add, "add"}
_SUB = {operator.sub, torch.sub, torch.subtract, "sub", "subtract"}
_MUL = {operator.mul, torch.mul, torch.multiply, "mul", "multiply"}
_DIV = {operator.truediv, torch.div, torch.divide, torch.true_divide, "div", "divide", "true_divide"}
_NEG = {operator.neg, torch.neg, torch.negative, "neg", "negative"}
_REDUCE = {torch.mean: "mean", torch.sum: "sum", "mean": "mean", "sum": "sum"}
# functional pooling -> the module it computes and its arguments after the input, in order
_POOL_FUNCTIONS = {
    F.max_pool1d: (nn.MaxPool1d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.avg_pool1d: (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                  "divisor_override")),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
}


# producers whose result is always a newly allocated tensor (module doc, in-place ops); anything else (the
# input, parameters, Identity / Dropout / Flatten / flatten / view / reshape / contiguous / permute /
# transpose / squeeze / unsqueeze / expand / indexing / F.dropout, unknown ops) may alias another value
_NEW_STORAGE_MODULES = _AFFINE | _ACT_MODULES | set(_MAXPOOL) | set(_HEADS)
_NEW_STORAGE_FUNCTIONS = set(_ACT_FUNCTIONS) - {torch.relu_} | set(_HEAD_FUNCTIONS) | set(_POOL_FUNCTIONS) | {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub, torch.subtract,
    torch.mul, torch.multiply, torch.div, torch.divide, torch.true_divide, torch.neg, torch.negative, torch.cat,
    torch.concat, torch.mean, torch.sum, torch.clone}
_NEW_STORAGE_METHODS = {"add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "neg", "negative",
                        "mean", "sum", "clone", "relu", "sigmoid", "tanh", "softmax", "log_softmax"}


def _mutates(n: fx.Node, named: dict[str, nn.Module]) -> bool:
    """Whether node n is an in-place op (it modifies its first argument and returns it)."""
    t = n.target
    if n.op == "call_module":
        return bool(getattr(named.get(t), "inplace", False))
    if n.op == "call_method":
        return isinstance(t, str) and t.endswith("_") and not t.startswith("__")
    if n.op != "call_function":
        return False
    if t in _INPLACE_OPS or t in _AUGMENTED_ASSIGNMENT.values() or t is torch.relu_ or bool(n.kwargs.get("inplace", False)):
        return True
    if _name_of(n).endswith("_") and not _name_of(n).startswith("__"):  # torch.sigmoid_, torch.tanh_, ...
        return True
    position = _INPLACE_POSITION.get(t)
    return position is not None and len(n.args) > position and bool(n.args[position])


def _owns_storage(n: fx.Node, named: dict[str, nn.Module]) -> bool:
    """Whether the value of node n is storage no other value shares: made by an op that always allocates
    (clone only without memory_format), or an in-place op applied to such a value (same storage; its guard
    made sure no one else reads that value)."""
    if _mutates(n, named):
        target = n.args[0] if n.args else n.kwargs.get("input")
        return isinstance(target, fx.Node) and _owns_storage(target, named)
    if n.op == "call_module":
        return type(named.get(n.target)) in _NEW_STORAGE_MODULES or _is_normalize(named.get(n.target))
    if n.op == "call_function":
        fresh = n.target in _NEW_STORAGE_FUNCTIONS
    elif n.op == "call_method":
        fresh = n.target in _NEW_STORAGE_METHODS
    else:
        return False
    return fresh and not (n.target in ("clone", torch.clone) and n.kwargs.get("memory_format") is not None)


def _name_of(n: fx.Node) -> str:
    t = n.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _pairs(value: Any, dims: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * dims


class _Builder:
    """Walks the fx graph into `nodes` (module doc), refusing anything not modelled exactly."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]) -> None:
        self.model = model
        self.named = dict(model.named_modules())
        self.nodes: list[Node] = [Node("input")]
        self.probe: list[Tensor] = [torch.zeros((_PROBE_BATCH,) + input_shape, dtype=torch.float64)]

    def shape(self, ref: _T) -> tuple[int, ...]:
        return tuple(self.probe[ref.index].shape[1:])

    def add(self, label: str, inputs: tuple[_T, ...], run: Callable[..., Tensor] | None = None,
            absolute: Callable[..., Tensor] | None = None, terms: int = 0, act: tuple | None = None) -> _T:
        node = Node(label, tuple(r.index for r in inputs), run, absolute, terms, act)
        with torch.no_grad():
            args = [self.probe[r.index] for r in inputs]
            out = activate(act, args[0]) if act is not None else run(*args)  # type: ignore[misc]
        if out.dim() == 0 or out.shape[0] != _PROBE_BATCH:
            raise SemanticsError(f"op {label} does not keep the batch dimension")
        self.nodes.append(node)
        self.probe.append(out)
        return _T(len(self.nodes) - 1)

    def module(self, label: str, x: _T, module: nn.Module) -> _T:
        # the float64 copies run by their forward: the model's modules carry no hooks (`_check_module_state`), so
        # nn.Module.__call__'s hook dispatch would only add its cost to every evaluation of the node
        run, plus, bare = _f64(module).forward, _abs_copy(module, True).forward, _abs_copy(module, False).forward
        return self.add(label, (x,), run, lambda keep, v: (plus if keep else bare)(v), _terms(module, self.shape(x)))

    def exact(self, label: str, inputs: tuple[_T, ...], run: Callable[..., Tensor]) -> _T:
        return self.add(label, inputs, run)

    def reshape(self, label: str, x: _T, new: tuple[int, ...]) -> _T:
        if math.prod(new) != math.prod(self.shape(x)):
            raise SemanticsError(f"{label}: {self.shape(x)} -> {new} changes the example size")
        return self.exact(label, (x,), lambda h: h.reshape((h.shape[0],) + new))

    def maxpool(self, label: str, x: _T, module: nn.Module, dims: int) -> _T:
        """MaxPool as ReLU layers (module doc): gather each window's in-range entries (padded by repeating its
        first entry: max(a, a) = a), then a tournament max(a, b) = a + relu(b - a)."""
        shape = self.shape(x)
        if len(shape) != dims + 1:
            raise SemanticsError(f"{label}: MaxPool{dims}d on a per-example shape {shape} (expected channels + {dims} dims)")
        if module.return_indices:
            raise SemanticsError(f"{label}: MaxPool with return_indices is not modelled")
        kernel = _pairs(module.kernel_size, dims)
        stride = _pairs(module.stride if module.stride is not None else module.kernel_size, dims)
        padding, dilation = _pairs(module.padding, dims), _pairs(module.dilation, dims)
        with torch.no_grad():
            out_spatial = tuple(module(torch.zeros((1,) + shape)).shape[2:])
        per_dim = []
        for size, out, k, s, p, d in zip(shape[1:], out_spatial, kernel, stride, padding, dilation):
            windows = [[o * s - p + i * d for i in range(k) if 0 <= o * s - p + i * d < size] for o in range(out)]
            if any(not w for w in windows):
                raise SemanticsError(f"{label}: a pooling window lies entirely in the padding")
            per_dim.append(windows)
        flat = []
        for position in torch.cartesian_prod(*[torch.arange(len(w)) for w in per_dim]).reshape(-1, dims).tolist():
            entries = [0]
            for axis, o in enumerate(position):
                entries = [e * shape[1 + axis] + i for e in entries for i in per_dim[axis][o]]
            flat.append(entries)
        width = max(len(w) for w in flat)
        idx = torch.tensor([w + [w[0]] * (width - len(w)) for w in flat], dtype=torch.long)
        channels = shape[0]
        cur = self.exact(f"{label} (windows)", (x,), lambda v: v.reshape(v.shape[0], channels, -1)[:, :, idx])
        while width > 1:
            p = width // 2
            diff = self.add(f"{label} (b - a)", (cur,), lambda c, p=p: c[..., 1 : 2 * p : 2] - c[..., 0 : 2 * p : 2],
                            lambda keep, c, p=p: c[..., 1 : 2 * p : 2] + c[..., 0 : 2 * p : 2], 2)
            h = self.add(f"{label} (relu)", (diff,), act=("relu",))
            combine = lambda c, r, p=p: torch.cat([c[..., 0 : 2 * p : 2] + r, c[..., 2 * p :]], dim=-1)  # noqa: E731
            cur = self.add(f"{label} (a + relu)", (cur, h), combine, lambda keep, c, r, f=combine: f(c, r), 2)
            width = p + width % 2
        return self.exact(f"{label} (output)", (cur,), lambda c: c.reshape((c.shape[0], channels) + out_spatial))


def _check_module_state(model: nn.Module) -> None:
    from torch.nn.modules import module as _mod

    for name, m in model.named_modules():
        if m.training:
            raise SemanticsError(f"{name or 'model'} ({type(m).__name__}) is in training mode")
        hooks = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, getattr(m, "_backward_pre_hooks", {}))
        if any(len(h) for h in hooks):
            raise SemanticsError(f"{name or 'model'} ({type(m).__name__}) has a forward or backward hook")
        if "forward" in vars(m):
            raise SemanticsError(f"{name or 'model'} ({type(m).__name__}) overrides forward on the instance")
    if any(len(getattr(_mod, h, {}) or {}) for h in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                       "_global_backward_hooks", "_global_backward_pre_hooks")):
        raise SemanticsError("global forward or backward hooks are registered")


def _walk(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[Node], int, str | None]:
    """(nodes, index of the logits node, head) of the traced model (module doc; `model` from `_traceable`)."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001
        raise SemanticsError(f"torch.fx cannot trace the forward: {type(exc).__name__}: {exc}") from exc
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise SemanticsError(f"forward has {len(inputs)} inputs (one expected)")
    b = _Builder(model, input_shape)
    env: dict[fx.Node, Any] = {inputs[0]: _T(0)}

    def resolve(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(resolve(v) for v in a)
        if isinstance(a, dict):
            return {k: resolve(v) for k, v in a.items()}
        return a

    def tensor_arg(n: fx.Node, value: Any) -> _T:
        if not isinstance(value, _T):
            raise SemanticsError(f"op {_name_of(n)} ({n.op}) on a value that does not depend on the input is not modelled")
        return value

    def inplace_guard(n: fx.Node, inplace: bool) -> None:
        if not inplace:
            return
        target = n.args[0] if n.args else n.kwargs.get("input")
        if not isinstance(target, fx.Node):
            raise SemanticsError(f"in-place op {_name_of(n)} ({n.op}) on a value that is not computed from the input")
        if not _owns_storage(target, b.named):
            raise SemanticsError(
                f"in-place op {_name_of(n)} ({n.op}) overwrites the result of {_name_of(target)} ({target.op}), which "
                "may share storage with another value (aliasing: a view, the same tensor, or the model input); "
                "only a freshly allocated value may be modified in place"
            )
        if len(target.users) > 1:
            raise SemanticsError(f"in-place op {_name_of(n)} ({n.op}) overwrites a value other ops read")

    def constant(value: Any, where: str) -> Tensor | float:
        if isinstance(value, bool) or not isinstance(value, (int, float, Tensor)):
            raise SemanticsError(f"{where}: operand {type(value).__name__} is not a constant number or tensor")
        if isinstance(value, Tensor):
            if not value.is_floating_point():
                raise SemanticsError(f"{where}: a non-floating constant tensor is not modelled")
            return value.detach().to("cpu", torch.float64)
        return float(value)

    def activation(n: fx.Node, act: tuple, x: Any) -> _T:
        return b.add(f"{_name_of(n)}", (tensor_arg(n, x),), act=act)

    def head(n: fx.Node, kind: str, x: Any, dim: Any) -> _Head:
        x = tensor_arg(n, x)
        if len(b.shape(x)) != 1 or dim not in (None, 1, -1):
            raise SemanticsError(f"{kind} over dim {dim} of a per-example shape {b.shape(x)}: only a final "
                                 "softmax over the class dimension is modelled (dropped: bounds are about logits)")
        return _Head(kind, x, n)

    def affine_binary(n: fx.Node, op: str, left: Any, right: Any, alpha: float = 1.0) -> _T:
        """add / sub / mul / div where it is affine in the input-dependent operands; torch.add / sub's
        `alpha` scales the right operand (left + alpha * right)."""
        label = _name_of(n)
        lt, rt = isinstance(left, _T), isinstance(right, _T)
        if alpha != 1.0 and not (op in ("add", "sub") and (rt or lt)):
            raise SemanticsError(f"op {label} with alpha={alpha} is not modelled")
        if op in ("add", "sub") and lt and rt:
            sign = 1.0 if op == "add" else -1.0
            terms = 2 if alpha == 1.0 else 3
            return b.add(label, (left, right), lambda p, q, a=sign * alpha: p + a * q,
                         lambda keep, p, q, a=abs(alpha): p + a * q, terms)
        if op in ("add", "sub") and (lt or rt):
            if alpha != 1.0:
                if not lt:
                    raise SemanticsError(f"op {label}: a constant plus alpha={alpha} times a value is not modelled")
                right = alpha * constant(right, label)
            x, c = (left, constant(right, label)) if lt else (right, constant(left, label))
            if op == "add":
                run = lambda v, c=c: v + c  # noqa: E731
            else:
                run = (lambda v, c=c: v - c) if lt else (lambda v, c=c: c - v)
            mag = abs(c) if isinstance(c, float) else c.abs()
            return b.add(label, (x,), run, lambda keep, v, m=mag: v + m if keep else v + 0 * m, 2)
        if op == "mul" and lt != rt:
            x, c = (left, constant(right, label)) if lt else (right, constant(left, label))
            mag = abs(c) if isinstance(c, float) else c.abs()
            return b.add(label, (x,), lambda v, c=c: v * c, lambda keep, v, m=mag: v * m, 2)
        if op == "div" and lt and not rt:
            c = constant(right, label)
            if bool((torch.as_tensor(c) == 0).any()):
                raise SemanticsError(f"op {label}: division by a constant that has a zero")
            mag = abs(c) if isinstance(c, float) else c.abs()
            return b.add(label, (left,), lambda v, c=c: v / c, lambda keep, v, m=mag: v / m, 2)
        what = "a product of two values that depend on the input" if op == "mul" and lt and rt else (
            "division by a value that depends on the input" if op == "div" and rt else "an op on constants only")
        raise SemanticsError(f"op {label} ({n.op}): {what} is not modelled (not affine)")

    def view_shape(n: fx.Node, x: _T, dims: list) -> tuple[int, ...]:
        label = f".{_name_of(n)}()"
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        if not dims:
            raise SemanticsError(f"{label} without a shape")
        lead, tail = dims[0], list(dims[1:])
        size = math.prod(b.shape(x))
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in tail):
            raise SemanticsError(f"{label}: only the leading dimension may come from the input")
        if tail.count(-1) > 1:
            raise SemanticsError(f"{label}: two -1 in the shape")
        if lead is _BATCH:
            pass
        elif not (lead == -1 and -1 not in tail and math.prod(tail) == size):
            raise SemanticsError(f"{label}{tuple(dims)} does not keep the batch dimension")
        if -1 in tail:
            rest = math.prod(d for d in tail if d != -1)
            tail = [size // rest if d == -1 else d for d in tail] if rest else tail
        return tuple(tail)

    def dim_of(x: _T, d: Any, extra: int = 0) -> int:
        """A per-example dimension index >= 1 of value x (rank + extra for unsqueeze); refuses the batch."""
        if not isinstance(d, int) or isinstance(d, bool):
            raise SemanticsError(f"dimension {d!r} computed at run time is not modelled")
        rank = len(b.shape(x)) + 1 + extra
        if not -rank <= d < rank or d % rank == 0:
            raise SemanticsError(f"dimension {d} is the batch dimension (or out of range)")
        return d % rank

    for n in graph.nodes:
        if n.op == "placeholder":
            continue
        t = n.target
        args, kwargs = resolve(n.args), resolve(n.kwargs)
        if n.op == "output":
            out = args[0]
            if isinstance(out, _Head):
                return b.nodes, out.logits.index, out.kind
            if not isinstance(out, _T):
                raise SemanticsError("the forward does not return one tensor that depends on the input")
            return b.nodes, out.index, None
        used = []
        fx.node.map_arg((n.args, n.kwargs), lambda a: used.append(a) or a)
        for a in used:
            if isinstance(env[a], _Head):
                raise SemanticsError(f"{env[a].kind} feeds op {_name_of(n)}: only a final softmax / log_softmax (the "
                                     "model's output) is modelled")
        name = _name_of(n)
        # -- shape reads
        if n.op == "call_method" and t == "size" and isinstance(args[0], _T):
            dims = args[1:] or tuple(kwargs.values())
            if not dims:
                env[n] = _Shape(b.shape(args[0]))
            else:
                env[n] = _BATCH if dims[0] == 0 else b.shape(args[0])[dim_of(args[0], dims[0]) - 1]
            continue
        if n.op == "call_function" and t is getattr and isinstance(args[0], _T) and args[1] == "shape":
            env[n] = _Shape(b.shape(args[0]))
            continue
        if n.op == "call_function" and t is operator.getitem and isinstance(args[0], _Shape):
            i = args[1]
            if not isinstance(i, int):
                raise SemanticsError("slicing a shape is not modelled")
            rank = len(args[0].per_example) + 1
            if not -rank <= i < rank:
                raise SemanticsError(f"shape index {i} out of range")
            env[n] = _BATCH if i % rank == 0 else args[0].per_example[i % rank - 1]
            continue
        if n.op == "get_attr":
            value = model
            for part in str(t).split("."):
                value = getattr(value, part)
            env[n] = value
            continue
        if n.op == "call_module":
            m = b.named[t]
            kind = type(m)
            label = f"module {t} ({kind.__name__})"
            if not _is_leaf(m):
                raise SemanticsError(f"module {t} of type {kind.__name__} is not modelled")
            inplace_guard(n, bool(getattr(m, "inplace", False)))
            x = tensor_arg(n, args[0])
            if kind in _HEADS:
                env[n] = head(n, _HEADS[kind], x, m.dim)
            elif kind is nn.ReLU:
                env[n] = b.add(label, (x,), act=("relu",))
            elif kind is nn.LeakyReLU:
                env[n] = b.add(label, (x,), act=("leaky_relu", float(m.negative_slope)))
            elif kind is nn.Softplus:
                env[n] = b.add(label, (x,), act=_softplus_act(m.beta, m.threshold, f"module {t}"))
            elif kind is nn.Sigmoid:
                env[n] = b.add(label, (x,), act=("sigmoid",))
            elif kind is nn.Tanh:
                env[n] = b.add(label, (x,), act=("tanh",))
            elif kind is nn.SiLU:
                env[n] = b.add(label, (x,), act=("silu",))
            elif kind is nn.GELU:
                if m.approximate not in ("none", "tanh"):
                    raise SemanticsError(f"{label}: approximate={m.approximate!r} is not modelled")
                env[n] = b.add(label, (x,), act=("gelu",) if m.approximate == "none" else ("gelu_tanh",))
            elif kind in _MAXPOOL:
                env[n] = b.maxpool(label, x, m, _MAXPOOL[kind])
            elif kind is nn.Flatten:
                env[n] = b.reshape(label, x, _flat_dims(b.shape(x), m.start_dim, m.end_dim, f"module {t}"))
            elif kind in _IDENTITY:
                env[n] = b.exact(label, (x,), lambda h: h)
            else:
                if kind in (nn.BatchNorm1d, nn.BatchNorm2d) and (m.running_mean is None or m.running_var is None or not m.track_running_stats):
                    raise SemanticsError(
                        f"module {t} ({kind.__name__}) keeps no running statistics: it normalises by the batch even "
                        "in eval mode, so it is not a per-example function"
                    )
                env[n] = b.module(label, x, m)
            continue
        method = n.op == "call_method"
        fn = n.op == "call_function"
        if (method or fn) and n.kwargs.get("out") is not None:
            raise SemanticsError(f"op {name} writes into an existing tensor (out=): an in-place write, not modelled")
        position = _INPLACE_POSITION.get(t) if fn else None  # F.relu(x, True), F.leaky_relu(x, s, True)
        inplace = bool(kwargs.get("inplace", False)) or (method and isinstance(t, str) and t.endswith("_")) or \
            (position is not None and len(args) > position and bool(args[position])) or \
            (fn and t in _INPLACE_OPS) or (fn and t in _AUGMENTED_ASSIGNMENT.values()) or (fn and t is torch.relu_)
        base = t[:-1] if method and isinstance(t, str) and t.endswith("_") else _INPLACE_OPS.get(t, t) if fn else t
        inplace_guard(n, inplace)
        # -- activations and the head
        act_name = _ACT_FUNCTIONS.get(base) if fn else _ACT_METHODS.get(base) if method else None
        if act_name is not None:
            x = args[0]
            if act_name == "leaky_relu":
                slope_value = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
                env[n] = activation(n, ("leaky_relu", float(slope_value)), x)
            elif act_name == "softplus":
                beta = args[1] if len(args) > 1 else kwargs.get("beta", 1.0)
                threshold = args[2] if len(args) > 2 else kwargs.get("threshold", 20.0)
                env[n] = activation(n, _softplus_act(beta, threshold, "F.softplus"), x)
            elif act_name == "gelu":
                approximate = args[1] if len(args) > 1 else kwargs.get("approximate", "none")
                if approximate not in ("none", "tanh"):
                    raise SemanticsError(f"F.gelu(approximate={approximate!r}) is not modelled")
                env[n] = activation(n, ("gelu",) if approximate == "none" else ("gelu_tanh",), x)
            else:
                env[n] = activation(n, (act_name,), x)
            continue
        head_kind = _HEAD_FUNCTIONS.get(base) if fn else base if method and base in ("softmax", "log_softmax") else None
        if head_kind is not None:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if kwargs.get("dtype") is not None or (len(args) > 2 and args[2] is not None):
                raise SemanticsError(f"{head_kind} with a dtype argument is not modelled")
            env[n] = head(n, head_kind, args[0], dim)
            continue
        # -- affine arithmetic
        op = "add" if base in _ADD else "sub" if base in _SUB else "mul" if base in _MUL else "div" if base in _DIV else None
        if op is not None and (fn or method):
            alpha = kwargs.get("alpha", 1)
            if not isinstance(alpha, (int, float)) or (alpha != 1 and op not in ("add", "sub")):
                raise SemanticsError(f"op {name} with alpha={alpha!r} is not modelled")
            if kwargs.get("rounding_mode") is not None or len(args) != 2 or set(kwargs) - {"alpha"}:
                raise SemanticsError(f"op {name} with arguments {sorted(kwargs)} is not modelled")
            env[n] = affine_binary(n, op, args[0], args[1], float(alpha))
            continue
        if base in _NEG:
            env[n] = b.add(name, (tensor_arg(n, args[0]),), operator.neg, lambda keep, v: v, 0)
            continue
        if fn and base in (torch.cat, torch.concat):
            parts = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if not isinstance(parts, (list, tuple)) or not all(isinstance(p, _T) for p in parts):
                raise SemanticsError("torch.cat of values that do not all depend on the input is not modelled")
            d = dim_of(parts[0], dim)
            env[n] = b.exact(name, tuple(parts), lambda *vs, d=d: torch.cat(vs, dim=d))
            continue
        if base in _REDUCE:
            kind = _REDUCE[base]
            x = tensor_arg(n, args[0])
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            keep = bool(args[2] if len(args) > 2 else kwargs.get("keepdim", False))
            if dims is None or kwargs.get("dtype") is not None:
                raise SemanticsError(f"{kind} over all dimensions (the batch included) is not modelled")
            dims = tuple(dim_of(x, d) for d in (dims if isinstance(dims, (list, tuple)) else (dims,)))
            count = math.prod(b.shape(x)[d - 1] for d in set(dims))
            reduce = (lambda v, dims=dims, keep=keep: v.mean(dim=dims, keepdim=keep)) if kind == "mean" else \
                (lambda v, dims=dims, keep=keep: v.sum(dim=dims, keepdim=keep))
            env[n] = b.add(name, (x,), reduce, lambda k, v, f=reduce: f(v), count + 1)
            continue
        if fn and base in _POOL_FUNCTIONS:
            kind, names = _POOL_FUNCTIONS[base]
            x = tensor_arg(n, args[0])
            module = kind(**dict(zip(names, args[1:])), **kwargs)
            label = f"{name} ({kind.__name__})"
            env[n] = b.maxpool(label, x, module, _MAXPOOL[kind]) if kind in _MAXPOOL else b.module(label, x, module)
            continue
        if fn and base is F.dropout:
            training = args[2] if len(args) > 2 else kwargs.get("training", True)
            if training is not False:
                raise SemanticsError("F.dropout with training=True (random at every call) is not modelled")
            env[n] = b.exact(name, (tensor_arg(n, args[0]),), lambda v: v)
            continue
        if (method and base == "permute") or (fn and base is torch.permute):
            x = tensor_arg(n, args[0])
            order = list(args[1:]) if method else list(args[1] if len(args) > 1 else kwargs["dims"])
            if len(order) == 1 and isinstance(order[0], (list, tuple)):
                order = list(order[0])
            rank = len(b.shape(x)) + 1
            if len(order) != rank or order[0] % rank != 0:
                raise SemanticsError(f"permute{tuple(order)} moves the batch dimension")
            env[n] = b.exact(name, (x,), lambda v, o=tuple(order): v.permute(o))
            continue
        if (method and base == "transpose") or (fn and base is torch.transpose):
            x = tensor_arg(n, args[0])
            d0, d1 = dim_of(x, args[1]), dim_of(x, args[2])
            env[n] = b.exact(name, (x,), lambda v, d0=d0, d1=d1: v.transpose(d0, d1))
            continue
        if (method and base in ("squeeze", "unsqueeze")) or (fn and base in (torch.squeeze, torch.unsqueeze)):
            x = tensor_arg(n, args[0])
            which = base if isinstance(base, str) else base.__name__
            d = args[1] if len(args) > 1 else kwargs.get("dim")
            if d is None:
                raise SemanticsError("squeeze() without a dimension may squeeze the batch: not modelled")
            d = dim_of(x, d, 1 if which == "unsqueeze" else 0)
            env[n] = b.exact(name, (x,), (lambda v, d=d: v.unsqueeze(d)) if which == "unsqueeze" else (lambda v, d=d: v.squeeze(d)))
            continue
        if (fn and base is torch.flatten) or (method and base == "flatten"):
            x = tensor_arg(n, args[0])
            s = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            e = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            if not (isinstance(s, int) and isinstance(e, int)):
                raise SemanticsError("flatten with dimensions computed at run time")
            env[n] = b.reshape("flatten", x, _flat_dims(b.shape(x), int(s), int(e), "flatten"))
            continue
        if (method and base in ("view", "reshape")) or (fn and base is torch.reshape):
            x = tensor_arg(n, args[0])
            dims = list(args[1:]) if method else [args[1]]
            env[n] = b.reshape(f".{name}()", x, view_shape(n, x, dims))
            continue
        if (method and base in ("contiguous", "clone")) or (fn and base is torch.clone):
            env[n] = b.exact(name, (tensor_arg(n, args[0]),), lambda v: v)
            continue
        hint = " (indexing)" if t is operator.getitem else ""
        raise SemanticsError(f"op {name}{hint} ({n.op}) is not modelled")
    raise SemanticsError("the traced graph has no output")


# ---------------------------------------------------------------------------------------------- matrices


def _sources(nodes: list[Node], target: int) -> list[int]:
    """The activation outputs and / or the input (sorted node indices) that node `target` reads through
    affine nodes only."""
    found, stack, seen = set(), [target], set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if i == 0 or nodes[i].act is not None:
            found.add(i)
        else:
            stack.extend(nodes[i].inputs)
    return sorted(found)


def _affine_value(nodes: list[Node], target: int, frees: dict[int, Tensor]) -> Tensor:
    """Value of the affine node `target` given the values `frees` of its sources."""
    needed, stack = set(), [target]
    while stack:
        i = stack.pop()
        if i in needed or i in frees:
            continue
        needed.add(i)
        stack.extend(nodes[i].inputs)
    values = dict(frees)
    for i in sorted(needed):
        values[i] = nodes[i].run(*[values[j] for j in nodes[i].inputs])  # type: ignore[misc]
    return values[target]


def _affine_jacobians(stage: Callable[..., Tensor], sizes: list[int], m: int) -> tuple[Tensor, ...]:
    """Jacobians [m, n_i] of the affine map `stage` ([B, n_i] per source -> [B, m]) by one reverse pass: m copies
    of the input, the gradient of the sum of the diagonal of stage(copies) (copy r seeds output r), so row r of each
    Jacobian is the gradient of output r: the vector-Jacobian products of torch.autograd.functional.jacobian with
    one-hot seeds, without its grad_outputs, whose first use imports sympy (torch.fx.experimental.symbolic_shapes)."""
    leaves = [torch.zeros(m, n, dtype=torch.float64, requires_grad=True) for n in sizes]
    with torch.enable_grad():
        grads = torch.autograd.grad(stage(*leaves).diagonal().sum(), leaves, allow_unused=True)
    return tuple(torch.zeros(m, n, dtype=torch.float64) if g is None else g for g, n in zip(grads, sizes))


def _traceable(model: nn.Module, shape0: tuple[int, ...]) -> nn.Module:
    """The module `_walk` traces, after every refusal that does not depend on the traced graph (raises
    SemanticsError): torch's own classes and functions, not replacements (certify.models.integrity); the
    wrappers' state (`_strip`); a ScriptModule's graph rebuilt as fx (conformance then compares N with the
    ScriptModule itself); the modules' state (`_check_module_state`: training mode, hooks, instance forwards)."""
    from certify.models.integrity import check_torch_integrity
    from certify.models.torchscript import translatable

    try:
        check_torch_integrity(model)
    except UnsupportedError as exc:
        raise SemanticsError(str(exc)) from exc
    stripped = _strip(model, check=True)
    try:
        model = translatable(stripped, shape0)
        if model is not stripped:  # a module rebuilt from a ScriptModule's graph
            check_torch_integrity(model)
    except UnsupportedError as exc:
        raise SemanticsError(str(exc)) from exc
    if _is_leaf(model):  # fx always traces the root's own forward: wrap a bare module
        model = nn.Sequential(model).eval()
    _check_module_state(model)
    return model


def translate(model: nn.Module, input_shape: tuple[int, ...]) -> Stages:
    """The checker's translation of `model` for one example of shape `input_shape` (raises SemanticsError)."""
    shape0 = tuple(int(s) for s in input_shape)
    model = _traceable(model, shape0)
    nodes, logits, head = _walk(model, shape0)
    with torch.no_grad():  # per-example shapes of every node
        values: list[Tensor] = [torch.zeros((1,) + shape0, dtype=torch.float64)]
        for node in nodes[1:]:
            ins = [values[j] for j in node.inputs]
            values.append(activate(node.act, ins[0]) if node.act is not None else node.run(*ins))  # type: ignore[misc]
    shapes = [tuple(v.shape[1:]) for v in values]
    h_nodes = [0] + [i for i, node in enumerate(nodes) if node.act is not None]  # h_k is node h_nodes[k]
    layer_of = {i: k for k, i in enumerate(h_nodes)}
    z_nodes = [nodes[i].inputs[0] for i in h_nodes[1:]] + [logits]
    mats: list[Tensor] = []
    biases: list[Tensor] = []
    skips: dict[int, dict[int, Tensor]] = {}
    for k, target in enumerate(z_nodes):
        if target in layer_of:  # z_k is itself an activation output (or the input): the identity on it
            srcs = [target]
        else:
            srcs = _sources(nodes, target)

        def stage(*flats: Tensor, srcs: list[int] = srcs, target: int = target) -> Tensor:  # [B, n_i] -> [B, m]
            frees = {i: f.reshape((-1,) + shapes[i]) for i, f in zip(srcs, flats)}
            out = frees[target] if target in frees else _affine_value(nodes, target, frees)
            return out.reshape(out.shape[0], -1)

        with torch.no_grad():
            bias = stage(*(torch.zeros(1, math.prod(shapes[i]), dtype=torch.float64) for i in srcs))[0]
        jac = _affine_jacobians(stage, [math.prod(shapes[i]) for i in srcs], bias.numel()) if srcs else ()
        size_k = math.prod(shapes[h_nodes[k]])
        w = torch.zeros(bias.numel(), size_k, dtype=torch.float64)
        for i, part in zip(srcs, jac):
            j = layer_of[i]
            part = part.detach().reshape(bias.numel(), -1).contiguous()
            if j == k:
                w = part
            else:
                skips.setdefault(k, {})[j] = part
        mats.append(w)
        biases.append(bias)
    acts = [nodes[i].act for i in h_nodes[1:]]
    return Stages(mats, biases, acts, shape0, skips, head, nodes, logits)  # type: ignore[arg-type]


@dataclass
class Translation:
    """A kept translation: `stages` of the model whose content hash was `fingerprint`; `memo`: facts its users
    derive from the stages alone (independent of any input), kept as long as the stages."""

    stages: Stages
    fingerprint: str
    memo: dict = field(default_factory=dict)


_TRANSLATIONS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], Translation]]" = weakref.WeakKeyDictionary()


def cached_translation(model: nn.Module, input_shape: tuple[int, ...], fingerprint: str) -> Translation:
    """`translate(model, input_shape)`, kept per model OBJECT (a weak reference: the entry goes with the model) and
    input shape while `fingerprint`, the model's content hash (`certify.models.hashing.model_hash`: its module
    tree, the code of its forwards, its hooks and every parameter and buffer), is unchanged; an edited model
    hashes differently and is translated again. A kept translation is returned only after the refusals that do
    not depend on the traced graph pass again (`_traceable`: torch integrity, wrapper and module state), so a
    torch patched or a hook added since then is refused as by `translate`. Refusals (SemanticsError) are not
    kept."""
    shape0 = tuple(int(s) for s in input_shape)
    kept = _TRANSLATIONS.get(model)
    entry = None if kept is None else kept.get(shape0)
    if entry is not None and entry.fingerprint == fingerprint:
        _traceable(model, shape0)
        return entry
    entry = Translation(translate(model, shape0), fingerprint)
    if kept is None or any(e.fingerprint != fingerprint for e in kept.values()):
        kept = _TRANSLATIONS[model] = {}
    kept[shape0] = entry
    return entry


def clear_translation_cache() -> None:
    """Forget every kept translation (`cached_translation`)."""
    _TRANSLATIONS.clear()


# -------------------------------------------------------------------------------------------- evaluation


def _flat_input(stages: Any, x: Tensor) -> Tensor:
    x = torch.as_tensor(x).to("cpu", torch.float64)
    return x.reshape(-1, stages.mats[0].shape[1])


def _layers(stages: Any, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """([h_0 .. h_{L-1}], [z_0 .. z_{L-1}]) of N in float64 at flat points x [B, n]."""
    skips = getattr(stages, "skips", {}) or {}
    hs, zs = [x], []
    for k, (w, b) in enumerate(zip(stages.mats, stages.biases)):
        z = hs[k] @ w.T + b
        for j, s in skips.get(k, {}).items():
            z = z + hs[j] @ s.T
        zs.append(z)
        if k < len(stages.acts):
            hs.append(activate(stages.acts[k], z))
    return hs, zs


def forward(stages: Any, x: Tensor) -> Tensor:
    """N's logits [B, C] in float64 (exact softplus; before any softmax head) for x of shape [B,
    *input_shape], [B, n] or one example. `stages` is any object with mats, biases, acts (and skips)."""
    return _layers(stages, _flat_input(stages, x))[1][-1]


def gradient(stages: Any, x: Tensor, row: Tensor | int) -> Tensor:
    """Gradient of row . N at one example x (float64, exact softplus; at a kink the slope torch's autograd
    uses), shaped like x: backward through the layers and their skips. `row` is a vector over the logits
    or a logit index."""
    x = torch.as_tensor(x).to("cpu", torch.float64)
    skips = getattr(stages, "skips", {}) or {}
    _, zs = _layers(stages, x.reshape(1, -1))
    c = stages.mats[-1].shape[0]
    if isinstance(row, int):
        r = torch.zeros(c, dtype=torch.float64)
        r[row] = 1.0
    else:
        r = torch.as_tensor(row, dtype=torch.float64).reshape(c)
    g_h: list[Tensor | float] = [0.0] * len(stages.mats)  # d (row . N) / d h_k
    g_z = r.reshape(1, -1)
    for k in range(len(stages.mats) - 1, -1, -1):
        g_h[k] = g_h[k] + g_z @ stages.mats[k]
        for j, s in skips.get(k, {}).items():
            g_h[j] = g_h[j] + g_z @ s
        if k > 0:
            g_z = g_h[k] * slope(stages.acts[k - 1], zs[k - 1])  # type: ignore[operator]
    return torch.as_tensor(g_h[0]).reshape(x.shape)


def deviation_bound(stages: Stages) -> float:
    """Certified sup_x max_j |T_j(x) - N_j(x)|, T with torch's thresholded softplus: per unit gap g_k =
    log1p(e^{-threshold}) / beta; d(h_{k+1}) = lipschitz(sigma_k) d(z_k) + g_k, d(z_k) = |W_k| d(h_k) +
    sum_j |S_kj| d(h_j) (vectors, d(h_0) = 0), each sum rounded up; the result max d(z_{L-1})."""
    gaps = []
    for a in stages.acts:
        if a[0] == "softplus" and a[2] != math.inf:
            gaps.append(math.log1p(math.exp(-a[2])) / a[1] * (1 + 1e-13))
        else:
            gaps.append(0.0)
    if not any(gaps):
        return 0.0
    d_h = [torch.zeros(stages.mats[0].shape[1], dtype=torch.float64)]
    d = torch.zeros(stages.mats[0].shape[0], dtype=torch.float64)  # d(z_0) = 0: T and N share z_0
    for k in range(1, len(stages.mats)):
        d_h.append(lipschitz(stages.acts[k - 1]) * d + gaps[k - 1])
        w = stages.mats[k]
        total, cols = w.abs() @ d_h[k], w.shape[1]
        for j, s in stages.skips.get(k, {}).items():
            total, cols = total + s.abs() @ d_h[j], cols + s.shape[1]
        d = total * (1 + (cols + 4) * 2.0**-52)
    return float(d.max()) * (1 + 1e-14)


def _operator_norm(w: Tensor, p: float) -> float:
    """||w||_{p->p}: the spectral norm (p = 2) or the largest absolute row sum (p = inf)."""
    if not w.numel():
        return 0.0
    return float(torch.linalg.matrix_norm(w, ord=2)) if p == 2 else float(w.abs().sum(dim=1).max())


def _dual_norms(v: Tensor, p: float) -> Tensor:
    """||v||_q over dim 0 of v ([n] or [n, R] columns), q the dual exponent of p (2 for p = 2, 1 for p = inf)."""
    return v.norm(2, dim=0) if p == 2 else v.abs().sum(dim=0)


def layer_lipschitz(stages: Any, p: float) -> list[float]:
    """[L(h_0), .., L(h_{L-1})] of the path-sum bound (`lipschitz_bound`): the Lipschitz bounds of x -> h_k in
    the l_p norm (p = 2 or inf), the same for every row. `stages`: mats, skips, acts."""
    if not (p == 2 or math.isinf(p)):
        raise ValueError(f"p = {p}: the path-sum bound is implemented for p = 2 and p = inf")
    skips = getattr(stages, "skips", {}) or {}
    lips = [1.0]
    for k in range(len(stages.mats) - 1):
        lz = _operator_norm(stages.mats[k], p) * lips[k]
        for j, s in sorted(skips.get(k, {}).items()):
            lz = lz + _operator_norm(s, p) * lips[j]
        lips.append(lipschitz(stages.acts[k]) * lz)
    return lips


def lipschitz_bound(stages: Any, row: Tensor, p: float, lips: list[float] | None = None) -> float | Tensor:
    """Lipschitz constant of x -> row . N(x) in the l_p norm of the input (p = 2 or inf), the PATH-SUM bound
    over the DAG of layers (not rounded outward; the checker rounds it):

        L(h_0) = 1
        L(z_k) = ||W_k||_{p->p} L(h_k) + sum_{j in skips[k]} ||S_kj||_{p->p} L(h_j)       (k < L - 1)
        L(h_{k+1}) = lip(sigma_k) L(z_k)
        L(row . N) = ||row^T W_{L-1}||_q L(h_{L-1}) + sum_{j in skips[L-1]} ||row^T S_{L-1,j}||_q L(h_j)

    ||.||_{2->2} the spectral norm, ||.||_{inf->inf} the largest absolute row sum, q the dual exponent
    (||v||_2 for p = 2, ||v||_1 for p = inf), lip(sigma) = sup |sigma'| (`lipschitz`); the sums run in this
    order, skips by increasing j. Each L(h_k) bounds the Lipschitz constant of x -> h_k (triangle inequality
    over the terms of z_k), so the result bounds that of row . N. For a chain of relu / softplus layers it is
    exactly the product ||row^T W_{L-1}||_q prod_k ||W_k||_{p->p}. `stages`: mats, skips, acts; row [C] (a
    float) or rows [R, C] (a tensor [R], one bound per row); `lips`: `layer_lipschitz(stages, p)` when the
    caller has it already (it does not depend on the row)."""
    lips = layer_lipschitz(stages, p) if lips is None else lips
    skips = getattr(stages, "skips", {}) or {}
    last = len(stages.mats) - 1
    rows = torch.as_tensor(row, dtype=torch.float64)
    value = _dual_norms(stages.mats[last].T @ rows.transpose(0, -1), p) * lips[last]
    for j, s in sorted(skips.get(last, {}).items()):
        value = value + _dual_norms(s.T @ rows.transpose(0, -1), p) * lips[j]
    return float(value) if rows.dim() == 1 else value


def _roundoff(model: nn.Module) -> tuple[torch.dtype, torch.device, float]:
    first = next((t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    device = first.device if first is not None else torch.device("cpu")
    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        mode = torch.get_float32_matmul_precision()
        if mode != "highest":
            u = max(u, 2.0**-8 if mode == "medium" else 2.0**-11)
        if device.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32):
            u = max(u, 2.0**-11)
    return dtype, device, u


def _gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u) if n * u < 0.5 else math.inf


def _magnitudes(stages: Stages, hs: list[Tensor], absolute: tuple[list[Tensor], dict, list[Tensor]]) -> list[Tensor]:
    """[|W_k| |h_k| + sum_j |S_kj| |h_j| + |b_k|] [m, out_k] of every layer k at N's activations hs (from
    `_layers`); absolute: ([|W_k|], {k: {j: |S_kj|}}, [|b_k|])."""
    mags = []
    for k in range(len(stages.biases)):
        mag = hs[k].abs() @ absolute[0][k].T + absolute[2][k]
        for j, s in absolute[1].get(k, {}).items():
            mag = mag + hs[j].abs() @ s.T
        mags.append(mag)
    return mags


def _rounding(stages: Stages, pts: Tensor, u: float, tiny: float, hs: list[Tensor], zs: list[Tensor],
              absolute: tuple[list[Tensor], dict, list[Tensor]], mags: list[Tensor]) -> Tensor:
    """[m, C] forward rounding bound on the logits: the model's graph node by node in unit roundoff u (+
    float64), plus N's float64 layers (module doc) at the same points: hs, zs from `_layers`, mags from
    `_magnitudes`, absolute: ([|W_k|], {k: {j: |S_kj|}}, [|b_k|])."""
    with torch.no_grad():
        values = [pts.reshape((pts.shape[0],) + stages.input_shape)]
        errors = [torch.zeros_like(values[0])]
        for node in stages.nodes[1:]:
            vs = [values[j] for j in node.inputs]
            es = [errors[j] for j in node.inputs]
            if node.act is not None:
                value = activate(node.act, vs[0])
                err = act_error(node.act, es[0], vs[0], value, 2 * (u + _U64), tiny)
            else:
                value = node.run(*vs)  # type: ignore[misc]
                if node.terms == 0:
                    err = node.absolute(False, *es) if node.absolute is not None else node.run(*es)  # type: ignore[misc]
                else:
                    mags_in = [v.abs() + e for v, e in zip(vs, es)]
                    err = node.absolute(False, *es) + _gamma(node.terms, u + _U64) * node.absolute(True, *mags_in)  # type: ignore[misc]
            values.append(value)
            errors.append(err)
        model_err = errors[stages.logits_node].reshape(pts.shape[0], -1)
        en_h = [torch.zeros_like(hs[0])]
        for k, w in enumerate(stages.mats):
            en = en_h[k] @ absolute[0][k].T
            terms = w.shape[1] + 1
            for j, s in absolute[1].get(k, {}).items():
                en = en + en_h[j] @ s.T
                terms += s.shape[1] + 1
            en = en + _gamma(terms, _U64) * mags[k]
            if k < len(stages.acts):
                a = stages.acts[k]
                en_h.append(act_error(a, en, zs[k], hs[k + 1], _U64))
    return model_err + en


def _largest_value(hs: list[Tensor], mags: list[Tensor]) -> Tensor:
    """[m] largest |value| among N's pre-activations, activations and |W| |h| + sum |S| |h_j| + |b| sums (hs from
    `_layers`, mags from `_magnitudes`)."""
    top = torch.stack([h.abs().amax(dim=1) for h in hs]).amax(dim=0)
    for mag in mags:
        top = torch.maximum(top, mag.amax(dim=1))
    return top


def _head_output(head: str | None, logits: Tensor) -> Tensor:
    if head == "softmax":
        return torch.softmax(logits, dim=1)
    if head == "log_softmax":
        return torch.log_softmax(logits, dim=1)
    return logits


def _head_tolerance(head: str | None, tol: Tensor, out: Tensor, u: float) -> Tensor:
    """Tolerance on the model's output from the tolerance `tol` [m, C] on its logits (module doc)."""
    if head is None:
        return tol
    classes = tol.shape[1]
    worst = tol.amax(dim=1, keepdim=True)
    if head == "softmax":
        return 0.5 * worst + (2 * classes + 10) * u + torch.zeros_like(tol)
    return 2.0 * worst + 4 * u * (out.abs() + classes + 8)


FAR_SCALES = (1.0, 10.0, 100.0, 1000.0)  # far points of `check_conformance`: 8 at each multiple of max(||x||, 1)
_FAR_SCALE_ROWS = torch.tensor(FAR_SCALES, dtype=torch.float64).repeat_interleave(8)[:, None]  # [32, 1]: each far point's scale


@functools.lru_cache(maxsize=16)
def _far_directions(seed: int, n: int) -> tuple[Tensor, Tensor]:
    """(g [32, n], ||g|| [32, 1]) in float64: the Gaussian draws of `check_conformance`'s far points, 8 per scale
    of FAR_SCALES in this order from torch.Generator().manual_seed(seed), and their l2 norms; the same for every
    x, so drawn once per (seed, n). Shared: callers must not modify them."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.cat([torch.randn(8, n, generator=gen, dtype=torch.float64) for _ in FAR_SCALES])
    return g, g.norm(dim=1, keepdim=True)


def _conformance_constants(stages: Stages, memo: dict) -> tuple[tuple[list[Tensor], dict, list[Tensor]], float]:
    """(([|W_k|], {k: {j: |S_kj|}}, [|b_k|]), deviation_bound(stages)): what `check_conformance` uses of N alone,
    kept in `memo` (a dict that lives as long as `stages`)."""
    key = ("conformance constants",)
    if key not in memo:
        absolute = ([w.abs() for w in stages.mats], {k: {j: s.abs() for j, s in row.items()} for k, row in stages.skips.items()},
                    [b.abs() for b in stages.biases])
        memo[key] = (absolute, deviation_bound(stages))
    return memo[key]


def check_conformance(model: nn.Module, stages: Stages, x: Tensor, data: Tensor | None = None, seed: int = 1,
                      memo: dict | None = None) -> tuple[float, float, bool]:
    """(max_deviation, tolerance, passed) comparing the model as the user runs it with N at x, `data` (up
    to 64 rows) and 32 seeded far points (x + s max(||x||, 1) g / ||g||, g Gaussian, 8 for each scale s of
    FAR_SCALES); the two numbers are those of the binding point and output. `memo`: a dict kept with `stages`
    (`Translation.memo`), where the facts about N alone that the check uses (|W_k|, |S_kj|, `deviation_bound`)
    are kept between calls."""
    shape = stages.input_shape
    base = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape((-1,) + shape)
    pts = [base]
    if data is not None:
        pts.append(torch.as_tensor(data).detach().to("cpu", torch.float64).reshape((-1,) + shape)[:64])
    flat0 = base[0].reshape(-1)
    r = max(float(base.reshape(base.shape[0], -1).norm(dim=1).max()), 1.0)
    g, g_norm = _far_directions(seed, flat0.numel())
    pts.append((flat0 + (_FAR_SCALE_ROWS * r) * g / g_norm).reshape((-1,) + shape))  # s * r: one product, as in Python
    allpts = torch.cat(pts)
    inner = _strip(model)
    dtype, device, u = _roundoff(inner)
    as_run = allpts.to(dtype)
    try:
        with torch.no_grad():
            got = model(as_run.to(device)).detach().to("cpu", torch.float64)
            single = model(as_run[:1].to(device)).detach().to("cpu", torch.float64)
    except Exception:  # noqa: BLE001 - a model that fails on its own points does not conform
        return math.inf, 0.0, False
    return _deviation(stages, as_run, got, single, u, {} if memo is None else memo, base.shape[0])


@torch.inference_mode()
def _deviation(stages: Stages, as_run: Tensor, got: Tensor, single: Tensor, u: float, memo: dict,
               given: int) -> tuple[float, float, bool]:
    """`check_conformance`'s comparison of the model's outputs `got` at the points `as_run` (its dtype; the first
    `given` rows are x and data) and `single` at the first point alone with N's float64 values and the rounding
    tolerance there. Pure float64 arithmetic on the checker's own tensors, run in inference mode (no autograd
    bookkeeping on its small ops)."""
    dtype = as_run.dtype
    exact_in = as_run.to(torch.float64)
    hs, zs = _layers(stages, _flat_input(stages, exact_in))  # one pass of N for its values, rounding and range
    absolute, deviation = _conformance_constants(stages, memo)
    mags = _magnitudes(stages, hs, absolute)
    want = _head_output(stages.head, zs[-1])
    if got.numel() != want.numel():
        return math.inf, 0.0, False
    got = got.reshape(want.shape)
    tiny = torch.finfo(dtype).tiny
    tol_z = 2.0 * _rounding(stages, exact_in, u, tiny, hs, zs, absolute, mags) + deviation
    tol = _head_tolerance(stages.head, tol_z, want, u + _U64)
    single = single.reshape(-1)
    if not bool(((single - got[0]).abs() <= tol[0]).all()):
        k = int(((single - got[0]).abs() / tol[0]).argmax())
        return float((single - got[0]).abs()[k]), float(tol[0, k]), False
    ok = torch.isfinite(got).all(dim=1)
    diff = (got - want).abs()
    if not bool(ok.all()):  # a non-finite model output is excused only where N's own values come near the dtype's range
        big = ~(_largest_value(hs, mags) < torch.finfo(dtype).max / 16)  # NaN: an overflow upstream, as the issuer counts it
        if bool((~ok & ~big).any()) or not bool(ok[:given].all()):
            return math.inf, 0.0, False
        diff[~ok] = 0.0
    ratio = diff / tol
    ratio[diff == 0] = 0.0
    k = int(ratio.argmax())
    i, j = divmod(k, ratio.shape[1])
    dev, t = float(diff[i, j]), float(tol[i, j])
    return dev, t, bool(dev <= t)


def _act_json(a: tuple) -> dict[str, Any]:
    if a[0] == "softplus":
        return {"name": "softplus", "beta": a[1], "threshold": a[2] if a[2] != math.inf else "inf"}
    if a[0] == "leaky_relu":
        return {"name": "leaky_relu", "negative_slope": a[1]}
    return {"name": a[0]}


def summary(stages: Stages) -> dict[str, Any]:
    """JSON-able description of the checker's translation: layer widths, activations, skips (layer k ->
    the earlier layers it reads; absent for a chain), the dropped head, the deviation bound."""
    out: dict[str, Any] = {
        "layers": [int(w.shape[0]) for w in stages.mats],
        "activations": [_act_json(a) for a in stages.acts],
        "deviation": deviation_bound(stages),
    }
    if stages.skips:
        out["skips"] = {str(k): sorted(v) for k, v in sorted(stages.skips.items())}
    if stages.head is not None:
        out["head"] = stages.head
    return out
