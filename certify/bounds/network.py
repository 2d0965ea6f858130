"""Canonical form of a supported network for the verification layer, obtained by TRACING what the model
computes, and the conformance check that the translation reproduces the model.

    z_1 = W_1 x + b_1,  a_k = sigma_k(z_k),  z_{k+1} = W_{k+1} a_k + b_{k+1},  logits = z_L.

Translation (`from_module`). The model (unwrapped from nn.DataParallel / DistributedDataParallel /
torch.compile) is traced with torch.fx and its graph is walked op by op. Supported, in a single chain (every
value used by exactly the next op): the modules Linear, Conv2d, AvgPool2d, Flatten, Identity, eval-mode
Dropout, eval-mode BatchNorm1d/2d with running statistics, `certify.models.builders.Normalize`, ReLU and
Softplus (exact classes: a subclass is traced through its own forward), and the functional / method forms
torch.flatten, Tensor.flatten / view / reshape keeping the batch dimension, Tensor.contiguous, F.relu,
torch.relu, Tensor.relu and F.softplus(beta, threshold). Consecutive affine ops are merged into one dense
float64 matrix (pushing the standard basis through the ops with their constant terms removed, so the matrix
is exact for a single Linear or Conv2d) and a bias (the ops applied to 0). Anything else raises
UnsupportedError naming the op and why: residual / branching graphs (an `add` of x and f(x), a value used
twice), Softmax or any other module or function, forward hooks, training mode, BatchNorm without running
statistics (it normalises by the batch, so it is not a per-example function), Softplus with beta <= 0,
multiple inputs or outputs, parameters read directly in a forward.

What function the claims are about (softplus threshold decision). Every bound in this package is about N,
the translated network with the EXACT softplus sigma(t) = log(1 + e^{beta t}) / beta. torch's Softplus
returns t where beta * t > threshold (ATen: `x * beta > threshold ? x : log1p(exp(x * beta)) / beta`); there
the two differ by log1p(e^{-beta t}) / beta, at most g = log1p(e^{-threshold}) / beta per unit (the sup, not
attained). Let T be the network torch's graph describes, in exact arithmetic (thresholded softplus). Since
activations are 1-Lipschitz, |T - N| after activation k is at most d_k + g_k, and before the next one
d_{k+1} = |W_{k+1}| (d_k + g_k) (elementwise); `net.deviation` = max over logits of d_L, rounded outward,
is a certified bound on sup_x max_j |T_j(x) - N_j(x)| (0 for ReLU networks). A threshold is ACCEPTED only
when the switch is below float32 resolution of the value where it happens: log1p(e^{-threshold}) <=
2^-24 * threshold (threshold >= 13.997; torch's default 20 gives g = 2.06e-9 / beta, inf gives 0). Below
that (e.g. threshold = 1: g = 0.313 per unit) torch's function visibly jumps at the switch and has no
Lipschitz constant or curvature, so the model is REFUSED with a message naming the threshold. The floating
point rounding of the model as the user runs it is not part of `deviation`; the conformance check bounds it.

Conformance (`conformance`). The model is evaluated as the user runs it (its own dtype and device, under
no_grad; never mutated) and N in float64 at the input(s), the given data points and seeded random points far
outside the data (Gaussian directions at 1x, 10x, 100x and 1000x the input's norm, where thresholds bite),
all in one batch, plus the first input alone (a per-example function must not depend on its batch). At each
point and logit j the tolerance is

    tol_j = 2 * (E_j(model) + E_j(N)) + net.deviation,

where E(model) is the standard forward rounding-error bound of the model's own op chain in its dtype (unit
roundoff u of the dtype; 2^-11 for float32 on CUDA with TF32 enabled): each affine op h -> A h + c with n
terms per output adds gamma_n (|A| |h| + |c|), gamma_n = n u / (1 - n u), and carries the incoming error
through |A|; softplus adds 6 u |sigma(z)|, ReLU and reshapes are exact. |A| |h| + |c| is computed by the op
with absolute parameters (per op, never from the merged matrix, so cancellation inside a merged stage
cannot shrink it). E(N) is the same bound for N's float64 evaluation of its dense stages. The factor 2
covers summation orders and kernels (blocked / vectorised) whose error is within the worst-case bound up
to that factor. So a correct translation passes at any magnitude, while a mis-translation (a dropped
residual, a wrong weight, a thresholded unit, batch statistics) differs by far more than rounding. (It is
a worst-case bound, about 100-1000x the rounding actually observed on the zoo models, so it does not see a
single weight off by 1e-3; it is there to catch a different function, not a tampered file - the model hash
does that.) A non-finite model output fails the check unless the magnitudes the ops handle at that point
approach the dtype's range (a 1000x far point in float16 is skipped and counted in `detail`); an internal
overflow such as softplus with threshold=inf computing exp(88.8) in float32 fails.

Affine maps are stored as dense matrices, which is exact and simple for the small models this layer targets;
memory grows as (inputs x units).
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from certify.bounds.activations import Activation, softplus_threshold_accepted
from certify.errors import UnsupportedError
from certify.models.builders import Normalize

AFFINE_TYPES = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, Normalize)
SHAPE_TYPES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
ACTIVATION_TYPES = (nn.ReLU, nn.Softplus)
_LEAF_TYPES = AFFINE_TYPES + SHAPE_TYPES + ACTIVATION_TYPES

TORCHSCRIPT_REFUSAL = (
    "the model is TorchScript (compiled code, not a Python forward that torch.fx can trace), so its graph is not "
    "translated; pass the eager module (module:callable) or an ONNX export (net.onnx)"
)

FLOAT32_UNIT = 2.0**-24  # reference resolution for the softplus threshold rule
U64 = 2.0**-53
CONFORMANCE_SAFETY = 2.0
SOFTPLUS_ROUNDING = 6  # rounding ops of a softplus evaluation, relative to its value


@dataclass
class _Op:
    """One traced op of the chain, kept for the conformance check's rounding bound (float64, CPU)."""

    label: str
    kind: str  # "affine", "shape" or "act"
    full: Callable[[Tensor], Tensor] | None = None  # the op in float64
    linear: Callable[[Tensor], Tensor] | None = None  # the op without its constant terms
    abs_full: Callable[[Tensor], Tensor] | None = None  # |A| h + |c|
    abs_linear: Callable[[Tensor], Tensor] | None = None  # |A| h
    terms: int = 0  # rounding ops per output (n of gamma_n)
    activation: Activation | None = None
    shape: tuple = ()  # per-example shape after the op


@dataclass
class AffineNetwork:
    """weights[k] is [out_k, in_k], biases[k] is [out_k]; activations[k] follows affine map k, and there
    is one activation fewer than affine maps (the last map gives the logits). `deviation` bounds
    sup_x max_j |T_j(x) - N_j(x)| (torch's thresholded softplus vs exact); `semantics` summarises the
    translation for certificates; `ops` is the traced op chain (used by `conformance`)."""

    weights: list[Tensor]
    biases: list[Tensor]
    activations: list[Activation]
    input_shape: tuple[int, ...]
    deviation: float = 0.0
    semantics: dict = field(default_factory=dict)
    ops: list = field(default_factory=list, repr=False)

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def num_classes(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def input_size(self) -> int:
        return self.weights[0].shape[1]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of N for flat inputs x [N, input_size] (float64 for rigorous use; exact softplus)."""
        h = x
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if k < len(self.activations):
                h = self.activations[k](h)
        return h

    def pre_activations(self, x: Tensor) -> list[Tensor]:
        """[z_1, ..., z_L] for flat inputs x [N, input_size]."""
        zs, h = [], x
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            zs.append(h)
            if k < len(self.activations):
                h = self.activations[k](h)
        return zs

    def to(self, device: torch.device | str) -> "AffineNetwork":
        return AffineNetwork(
            [w.to(device) for w in self.weights],
            [b.to(device) for b in self.biases],
            self.activations,
            self.input_shape,
            self.deviation,
            self.semantics,
            self.ops,
        )


# ----------------------------------------------------------------------------------------------- tracing


def unwrap(model: nn.Module) -> nn.Module:
    """The module that computes: strips DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class _Tracer(fx.Tracer):
    """Exact supported classes are leaves (their forward is the one modelled); everything else is traced
    through, so an overridden forward is seen op by op."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m) in _LEAF_TYPES:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _check_model_state(model: nn.Module) -> None:
    from torch.nn.modules import module as module_impl

    for name, m in model.named_modules():
        label = name or type(m).__name__
        if m.training:
            raise UnsupportedError(
                f"module {label} ({type(m).__name__}) is in training mode (dropout / batch statistics change the "
                "function); call model.eval() first"
            )
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or getattr(m, "_backward_pre_hooks", None):
            raise UnsupportedError(
                f"module {label} ({type(m).__name__}) has a forward or backward hook, which can change what it "
                "computes or differentiates; certify models only hook-free modules"
            )
        if "forward" in m.__dict__:
            raise UnsupportedError(
                f"module {label} ({type(m).__name__}) has its own instance-level forward (a monkeypatch): tracing "
                "treats the module as its class, so the function it computes would not be the one modelled"
            )
    if any(getattr(module_impl, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                         "_global_backward_hooks", "_global_backward_pre_hooks")):
        raise UnsupportedError("a global forward or backward hook is registered; it can change what every module computes")


def trace(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is a refusal
        raise UnsupportedError(
            f"cannot trace the model's forward with torch.fx ({type(exc).__name__}: {exc}); certify models only "
            "forwards it can trace op by op"
        ) from exc


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_function":
        return f"function {getattr(node.target, '__name__', node.target)}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    return f"{node.op} {node.target}"


def _node_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _numel(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def _double(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float64).eval()


def _set(module: nn.Module, name: str, value: Tensor | None) -> None:
    if value is None:
        return
    current = getattr(module, name)
    if isinstance(current, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=False))
    else:
        setattr(module, name, value)


def _affine_variants(module: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, int]:
    """(full, linear, abs_full, abs_linear, terms) float64 copies of a supported affine module."""
    full = _double(module)
    lin, afull, alin = _double(module), _double(module), _double(module)
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        for m in (afull, alin):
            _set(m, "weight", m.weight.detach().abs())
        if module.bias is not None:
            _set(lin, "bias", torch.zeros_like(lin.bias))
            _set(alin, "bias", torch.zeros_like(alin.bias))
            _set(afull, "bias", afull.bias.detach().abs())
        if isinstance(module, nn.Linear):
            terms = module.in_features + 1
        else:
            terms = module.in_channels // module.groups * _numel(tuple(module.kernel_size)) + 1
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        # eval with running stats: (h - mean) / sqrt(var + eps) * w + b
        _set(lin, "running_mean", torch.zeros_like(lin.running_mean))
        _set(alin, "running_mean", torch.zeros_like(alin.running_mean))
        _set(afull, "running_mean", -afull.running_mean.abs())
        if module.affine:
            for m in (afull, alin):
                _set(m, "weight", m.weight.detach().abs())
            _set(lin, "bias", torch.zeros_like(lin.bias))
            _set(alin, "bias", torch.zeros_like(alin.bias))
            _set(afull, "bias", afull.bias.detach().abs())
        terms = 6
    elif isinstance(module, Normalize):
        _set(lin, "mean", torch.zeros_like(lin.mean))
        _set(alin, "mean", torch.zeros_like(alin.mean))
        _set(afull, "mean", -afull.mean.abs())
        for m in (afull, alin):
            _set(m, "std", m.std.abs())
        terms = 2
    elif isinstance(module, nn.AvgPool2d):
        k = module.kernel_size
        terms = (_numel(tuple(k)) if isinstance(k, (tuple, list)) else k * k) + 1
    else:  # pragma: no cover - guarded by the caller
        raise UnsupportedError(f"no affine model of {type(module).__name__}")
    return full, lin, afull, alin, terms


def _module_op(name: str, module: nn.Module) -> _Op:
    kind = type(module).__name__
    label = f"{name}: {kind}"
    if isinstance(module, nn.ReLU):
        return _Op(label, "act", activation=Activation("relu"))
    if isinstance(module, nn.Softplus):
        return _Op(label, "act", activation=_softplus(float(module.beta), float(module.threshold), f"module {name} ({module})"))
    if isinstance(module, SHAPE_TYPES):
        fn = _double(module)
        return _Op(label, "shape", full=fn)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not module.track_running_stats or module.running_mean is None or module.running_var is None:
            raise UnsupportedError(
                f"module {name} ({module}) has no running statistics (track_running_stats=False), so even in eval "
                "mode it normalises by the batch: the output for one example depends on the other rows, and it is "
                "not a per-example function; refit it with track_running_stats=True or fold it into the previous layer"
            )
    full, lin, afull, alin, terms = _affine_variants(module)
    return _Op(label, "affine", full=full, linear=lin, abs_full=afull, abs_linear=alin, terms=terms)


def _softplus(beta: float, threshold: float, where: str) -> Activation:
    if not (math.isfinite(beta) and beta > 0):
        raise UnsupportedError(f"{where}: softplus beta must be positive and finite, got {beta}")
    if math.isnan(threshold) or not softplus_threshold_accepted(threshold):
        gap = math.log1p(math.exp(-threshold)) / beta if math.isfinite(threshold) and threshold > -700 else math.inf
        raise UnsupportedError(
            f"{where}: Softplus threshold={threshold:g} - torch returns the identity where beta*t > {threshold:g}, "
            f"which is below the exact softplus by up to log1p(exp(-{threshold:g}))/beta = {gap:.3g} per unit: the "
            "function torch computes jumps there and has no Lipschitz constant or curvature. certify accepts a "
            "threshold only when that switch is below float32 resolution (threshold >= 13.997; torch's default is 20)"
        )
    return Activation("softplus", beta, threshold)


def _reshape_op(label: str, shape: tuple[int, ...], new_shape: tuple[int, ...]) -> _Op:
    if _numel(new_shape) != _numel(shape):
        raise UnsupportedError(f"{label}: reshape from {shape} to {new_shape} changes the size of one example")

    def fn(h: Tensor) -> Tensor:
        return h.reshape(h.shape[0], *new_shape)

    return _Op(label, "shape", full=fn)


def _flatten_shape(shape: tuple[int, ...], start: int, end: int, label: str) -> tuple[int, ...]:
    ndim = len(shape) + 1
    start = start + ndim if start < 0 else start
    end = end + ndim if end < 0 else end
    if start <= 0:
        raise UnsupportedError(f"{label} flattens the batch dimension (start_dim=0); not a per-example function")
    if start > end:
        return shape
    dims = (1,) + shape
    return shape[: start - 1] + (_numel(dims[start : end + 1]),) + shape[end:]


def _view_shape(node: fx.Node, shape: tuple[int, ...], batch_nodes: set, label: str) -> tuple[int, ...]:
    spec = list(node.args[1:]) or list(node.kwargs.get("shape", node.kwargs.get("size", ())))
    if len(spec) == 1 and isinstance(spec[0], (tuple, list)):
        spec = list(spec[0])
    if not spec:
        raise UnsupportedError(f"{label} has no shape argument")
    first, rest = spec[0], spec[1:]
    if any(not isinstance(s, int) for s in rest):
        raise UnsupportedError(f"{label}: only the first dimension may be computed from the input (the batch size)")
    n = _numel(shape)
    if isinstance(first, fx.Node):
        if first not in batch_nodes:
            raise UnsupportedError(f"{label}: first dimension {first} is not the batch size of the input")
    elif first != -1 or any(s == -1 for s in rest) or _numel(tuple(rest)) != n:
        raise UnsupportedError(
            f"{label}: shape {tuple(spec)} does not keep the batch dimension (use x.view(x.size(0), ...) or flatten(1))"
        )
    if sum(1 for s in rest if s == -1) > 1:
        raise UnsupportedError(f"{label}: more than one -1 in shape {tuple(spec)}")
    known = _numel(tuple(s for s in rest if s != -1))
    rest = [n // known if s == -1 else s for s in rest] if known else rest
    return tuple(int(s) for s in rest)


def trace_ops(model: nn.Module, input_shape: tuple[int, ...]) -> list[_Op]:
    """The model's traced op chain (refusing anything not modelled exactly), with per-example shapes."""
    model = unwrap(model)
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedError(TORCHSCRIPT_REFUSAL)
    _check_model_state(model)
    if type(model) in _LEAF_TYPES:  # the root is always traced through; a bare supported module is a chain of one
        model = nn.Sequential(model).eval()
    graph = trace(model)
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedError(f"the model's forward takes {len(placeholders)} inputs; certify models one input tensor")
    current = placeholders[0]
    shape = tuple(int(s) for s in input_shape)
    aux: set = set()  # nodes that only read the batch size
    size_objs: set = set()
    batch_nodes: set = set()
    ops: list[_Op] = []
    modules = dict(model.named_modules())
    chain: set = {current}  # values of the chain so far (their batch size may be read)
    for node in nodes:  # shape reads, known before the walk so they never count as a second use of a value
        if (node.op == "call_method" and node.target == "size") or (
            node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)
        ):
            aux.add(node)
        elif node.op == "call_function" and node.target is operator.getitem and node.args and node.args[0] in aux:
            aux.add(node)

    def consume(node: fx.Node) -> None:
        nonlocal current
        args = _node_args(node)
        data = [a for a in args if a not in aux]
        if data != [current]:
            others = ", ".join(_describe(a) for a in data if a is not current) or "none"
            raise UnsupportedError(
                f"{_describe(node)} does not take exactly the previous value as its input (other inputs: {others}); "
                "only a single chain of ops is modelled"
            )
        users = [u for u in current.users if u not in aux]
        if users != [node]:
            raise UnsupportedError(
                f"the value {current.name} is used by more than one op ({', '.join(_describe(u) for u in users)}): "
                "a residual or branching graph (e.g. x + f(x), an `add`) is not supported yet"
            )
        current = node
        chain.add(node)

    for node in nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            out = node.args[0]
            if out is not current:
                raise UnsupportedError(f"the forward returns {out!r}, not the end of a single chain of ops")
            users = [u for u in current.users if u not in aux]
            if users != [node]:
                raise UnsupportedError(
                    f"the value {current.name} is used by more than one op ({', '.join(_describe(u) for u in users)}): "
                    "a residual or branching graph (e.g. x + f(x), an `add`) is not supported yet"
                )
            continue
        target = node.target
        # batch-size reads: x.size(0), x.size()[0], x.shape[0]
        if node.op == "call_method" and target == "size" and node.args and node.args[0] in chain:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim is None:
                size_objs.add(node)
            elif dim == 0:
                batch_nodes.add(node)
            else:
                raise UnsupportedError(f"{_describe(node)}({dim}): only the batch size may be read from the input")
            aux.add(node)
            continue
        if node.op == "call_function" and target is getattr and node.args[0] in chain and node.args[1] == "shape":
            size_objs.add(node)
            aux.add(node)
            continue
        if node.op == "call_function" and target is operator.getitem and node.args[0] in size_objs:
            if node.args[1] != 0:
                raise UnsupportedError(f"reading dimension {node.args[1]} of the input shape is not modelled")
            batch_nodes.add(node)
            aux.add(node)
            continue
        if node.op == "get_attr":
            raise UnsupportedError(
                f"the forward reads parameter/buffer {target!r} directly (used by "
                f"{', '.join(_describe(u) for u in node.users)}); certify models only whole supported modules"
            )
        label = _describe(node)
        if node.op == "call_module":
            module = modules[target]
            if type(module) not in _LEAF_TYPES:
                raise UnsupportedError(
                    f"module {target} ({type(module).__name__}) is not modelled exactly; supported: "
                    + ", ".join(t.__name__ for t in _LEAF_TYPES)
                )
            consume(node)
            if isinstance(module, nn.Flatten):
                op = _reshape_op(f"{target}: Flatten", shape, _flatten_shape(shape, module.start_dim, module.end_dim, f"module {target} ({module})"))
            else:
                op = _module_op(target, module)
        elif node.op == "call_function" and target in (torch.relu, F.relu):
            consume(node)
            op = _Op(label, "act", activation=Activation("relu"))
        elif node.op == "call_method" and target == "relu":
            consume(node)
            op = _Op(label, "act", activation=Activation("relu"))
        elif node.op == "call_function" and target is F.softplus:
            consume(node)
            beta = node.args[1] if len(node.args) > 1 else node.kwargs.get("beta", 1.0)
            threshold = node.args[2] if len(node.args) > 2 else node.kwargs.get("threshold", 20.0)
            if isinstance(beta, fx.Node) or isinstance(threshold, fx.Node):
                raise UnsupportedError(f"{label}: beta and threshold must be constants")
            op = _Op(label, "act", activation=_softplus(float(beta), float(threshold), label))
        elif (node.op == "call_function" and target is torch.flatten) or (node.op == "call_method" and target == "flatten"):
            consume(node)
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            if not (isinstance(start, int) and isinstance(end, int)):
                raise UnsupportedError(f"{label}: flatten dimensions must be constants")
            op = _reshape_op(label, shape, _flatten_shape(shape, int(start), int(end), label))
        elif node.op == "call_method" and target in ("view", "reshape"):
            consume(node)
            op = _reshape_op(label, shape, _view_shape(node, shape, batch_nodes, label))
        elif node.op == "call_method" and target == "contiguous":
            consume(node)
            op = _Op(label, "shape", full=lambda h: h)
        else:
            detail = "an `add` (residual connection) " if target in (operator.add, torch.add, "add", operator.iadd) else ""
            raise UnsupportedError(
                f"{label} {detail}is not modelled exactly; certify supports a single chain of Linear, Conv2d, AvgPool2d, "
                "Flatten/view/reshape, Identity, eval Dropout, eval BatchNorm with running stats, Normalize, ReLU and Softplus"
            )
        if op.kind != "act":
            with torch.no_grad():
                try:
                    out = op.full(torch.zeros(1, *shape, dtype=torch.float64))
                except Exception as exc:  # noqa: BLE001
                    raise UnsupportedError(f"{label} fails on an input of shape {shape}: {exc}") from exc
            shape = tuple(out.shape[1:])
        op.shape = shape
        ops.append(op)
    return ops


# ----------------------------------------------------------------------------------------- translation


def _stage(ops: list[_Op], in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    n = _numel(in_shape)
    with torch.no_grad():
        h = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
        b = torch.zeros(1, *in_shape, dtype=torch.float64)
        for op in ops:
            h = (op.linear or op.full)(h)
            b = op.full(b)
    return h.reshape(n, -1).T.contiguous(), b.reshape(-1).contiguous()


def _abs_matvec_up(w_abs: Tensor, v: Tensor) -> Tensor:
    """|W| v for v >= 0, rounded up (float64 sums of nonnegative terms: relative error <= gamma_n)."""
    n = w_abs.shape[1]
    return (w_abs @ v) * (1 + (n + 2) * 2.0**-52)


def deviation_of(weights: list[Tensor], activations: list[Activation]) -> float:
    """Certified sup_x max_j |T_j(x) - N_j(x)|: d_{k+1} = |W_{k+1}| (d_k + g_k), rounded up."""
    if all(a.threshold_gap == 0.0 for a in activations):
        return 0.0
    d = torch.zeros(weights[0].shape[0], dtype=torch.float64)
    for k, act in enumerate(activations):
        w = weights[k + 1].detach().to("cpu", torch.float64).abs()
        d = _abs_matvec_up(w, d + act.threshold_gap * (1 + 2.0**-52))
    return float(d.max()) * (1 + 2.0**-50) if d.numel() else 0.0


def from_module(model: nn.Module, input_shape: tuple[int, ...]) -> AffineNetwork:
    """Canonical float64 form N of `model` for one example of shape `input_shape` (no batch dimension),
    by tracing its forward with torch.fx; raises UnsupportedError naming any op it does not model exactly."""
    input_shape = tuple(int(s) for s in input_shape)
    ops = trace_ops(model, input_shape)
    weights: list[Tensor] = []
    biases: list[Tensor] = []
    activations: list[Activation] = []
    pending: list[_Op] = []
    stage_shape = shape = input_shape
    stage_labels: list[list[str]] = [[]]
    for op in ops:
        if op.kind == "act":
            w, b = _stage(pending, stage_shape)  # no pending op: an identity stage (exact)
            weights.append(w)
            biases.append(b)
            activations.append(op.activation)
            pending = []
            stage_shape = shape
            stage_labels.append([])
        else:
            pending.append(op)
            shape = op.shape
            stage_labels[-1].append(op.label)
    w, b = _stage(pending, stage_shape)
    weights.append(w)
    biases.append(b)
    deviation = deviation_of(weights, activations)
    semantics = {
        "translation": "torch.fx trace of the model's forward, op by op; consecutive affine ops merged into dense float64 maps",
        "ops": [op.label + (f" ({op.activation.name})" if op.activation else "") for op in ops],
        "input_shape": list(input_shape),
        "layers": [w.shape[0] for w in weights],
        "activations": [a.to_json() for a in activations],
        "softplus": (
            "claims are about the exact softplus log(1 + exp(beta t)) / beta; torch returns t where beta t > threshold, "
            "within `deviation` of it on the logits (certified, for all inputs)"
            if any(a.name == "softplus" for a in activations)
            else "no softplus"
        ),
        "deviation": deviation,
    }
    return AffineNetwork(weights, biases, activations, input_shape, deviation, semantics, ops)


# ----------------------------------------------------------------------------------------- conformance


@dataclass
class Conformance:
    """Result of comparing the model (as the user runs it) with N. `tolerance` and `max_deviation` are those
    of the binding point and logit (largest deviation / tolerance ratio), so passed == (max_deviation <=
    tolerance) and every other point is within its own tolerance too; `points` is how many were compared."""

    tolerance: float
    max_deviation: float
    points: int
    passed: bool
    detail: str
    ratio: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-able record (JSON has no infinity: a non-finite number, from a model that failed, is null)."""

        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"tolerance": num(self.tolerance), "max_deviation": num(self.max_deviation), "points": self.points, "passed": self.passed}


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Unit roundoff of the model's arithmetic: eps/2 of its dtype; float32 with TF32 (CUDA) or reduced
    float32 matmul precision uses that format's."""
    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        precision = torch.get_float32_matmul_precision()
        if precision == "medium":
            u = max(u, 2.0**-8)
        elif precision == "high":
            u = max(u, 2.0**-11)
        if device.type == "cuda" and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32):
            u = max(u, 2.0**-11)
    return u


def _gamma(terms: int, u: float) -> float:
    nu = terms * u
    return nu / (1 - nu) if nu < 0.5 else math.inf


def rounding_bound(net: AffineNetwork, points: Tensor, u: float) -> Tensor:
    """[m, C] bound on |model - N| from rounding (without the safety factor or `deviation`): the model's op
    chain in unit roundoff u (plus float64 for building N), and N's dense float64 evaluation."""
    return _rounding(net, points, u)[0]


def _peak(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).abs().amax(dim=1) if t[0].numel() else torch.zeros(t.shape[0], dtype=t.dtype)


def _rounding(net: AffineNetwork, points: Tensor, u: float) -> tuple[Tensor, Tensor]:
    """(rounding bound [m, C], peak [m]): peak is the largest magnitude any op of the chain handles
    (|A| |h| + |c|, activation values), so an overflow of the model's dtype is told from a wrong function."""
    with torch.no_grad():
        h = points.to("cpu", torch.float64)
        err = torch.zeros_like(h)
        peak = _peak(h)
        for op in net.ops:
            if op.kind == "shape":
                h, err = op.full(h), op.full(err)
            elif op.kind == "act":
                h = op.activation(h)
                err = err + (SOFTPLUS_ROUNDING * (u + U64) * h.abs() if op.activation.name == "softplus" else 0.0)
            else:
                g = _gamma(op.terms, u + U64)
                mag = op.abs_full(h.abs())
                peak = torch.maximum(peak, _peak(mag))
                err = op.abs_linear(err) + g * mag
                h = op.full(h)
        model_err = err.reshape(err.shape[0], -1)
        # N's own float64 evaluation of its dense stages
        a = points.to("cpu", torch.float64).reshape(points.shape[0], -1)
        e = torch.zeros_like(a)
        for k, (w, b) in enumerate(zip(net.weights, net.biases)):
            w, b = w.to("cpu", torch.float64), b.to("cpu", torch.float64)
            g = _gamma(w.shape[1] + 1, U64)
            e = e @ w.abs().T + g * (a.abs() @ w.abs().T + b.abs())
            a = a @ w.T + b
            if k < len(net.activations):
                a = net.activations[k](a)
                e = e + (SOFTPLUS_ROUNDING * U64 * a.abs() if net.activations[k].name == "softplus" else 0.0)
    return model_err + e, peak


def far_points(x: Tensor, count: int = 8, scales: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0), seed: int = 0) -> Tensor:
    """Seeded points x0 + s * r * g / ||g|| for Gaussian g, r = max(||x_i||_2, 1) over the inputs, s in scales."""
    gen = torch.Generator().manual_seed(seed)
    flat = x.reshape(x.shape[0], -1).to("cpu", torch.float64)
    radius = max(float(flat.norm(dim=1).max()), 1.0)
    out = []
    for s in scales:
        g = torch.randn(count, flat.shape[1], generator=gen, dtype=torch.float64)
        out.append(flat[0] + s * radius * g / g.norm(dim=1, keepdim=True))
    return torch.cat(out).reshape(-1, *x.shape[1:])


def conformance(model: nn.Module, net: AffineNetwork, x: Tensor, data: Tensor | None = None, seed: int = 0) -> Conformance:
    """Compare the model as the user runs it with N at x (one example or a batch), up to 64 rows of `data`
    and 32 seeded far points (module docstring: the tolerance and why)."""
    shape = tuple(net.input_shape)
    x = torch.as_tensor(x)
    x = x.reshape(-1, *shape)
    parts = [x.detach().to("cpu", torch.float64)]
    if data is not None:
        parts.append(torch.as_tensor(data).detach().reshape(-1, *shape)[:64].to("cpu", torch.float64))
    parts.append(far_points(parts[0], seed=seed))
    points = torch.cat(parts)
    inner = unwrap(model)
    dtype, device = _model_dtype_device(inner)
    u = unit_roundoff(dtype, device)
    seen = points.to(dtype)
    try:
        with torch.no_grad():
            got = model(seen.to(device)).detach().to("cpu", torch.float64)
            alone = model(seen[:1].to(device)).detach().to("cpu", torch.float64)
    except Exception as exc:  # noqa: BLE001 - the model itself fails: no conformance
        return Conformance(math.inf, math.inf, 0, False, f"the model raised on the conformance points: {type(exc).__name__}: {exc}")
    seen64 = seen.to(torch.float64)
    want = net.forward(seen64.reshape(seen64.shape[0], -1).to(net.weights[0].device)).to("cpu")
    if got.reshape(got.shape[0], -1).shape != want.shape:
        return Conformance(math.inf, math.inf, 0, False, f"the model returns shape {tuple(got.shape)}, N {tuple(want.shape)}")
    got = got.reshape(want.shape)
    bound, peak = _rounding(net, seen64, u)
    tol = CONFORMANCE_SAFETY * bound + net.deviation
    n_x = parts[0].shape[0]
    if not torch.equal(alone.reshape(-1), got[0]):
        gap = (alone.reshape(-1) - got[0]).abs()
        worst = int((gap / tol[0]).argmax())
        diff = float(gap[worst])
        if not diff <= float(tol[0, worst]):
            return Conformance(
                float(tol[0, worst]), diff, 1, False,
                f"the model's output for the first input changes by {diff:.3g} when evaluated alone instead of in a batch: "
                "it is not a per-example function (batch statistics?)",
            )
    finite = torch.isfinite(got).all(dim=1)
    # a non-finite output is an ordinary overflow only where the values the ops handle approach the dtype's
    # range (a 1000x far point in float16); elsewhere the model computes something N does not (e.g. a
    # softplus with a threshold above 88.7 overflowing exp in float32)
    in_range = peak < torch.finfo(dtype).max / 16
    bad = ~finite & in_range
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        return Conformance(
            math.inf, math.inf, int(points.shape[0]), False,
            f"the model's logits are not finite at point #{i} (norm {float(seen64[i].norm()):.3g}) although every value "
            f"N computes there stays below {float(peak[i]):.3g}, far inside {dtype}'s range: the model overflows "
            "internally (e.g. softplus exp above its threshold), so it is not the function N",
        )
    skipped = int((~finite).sum())
    diff = (got - want).abs()
    diff[~finite] = 0.0
    ratio = torch.where(tol > 0, diff / tol, torch.where(diff > 0, torch.full_like(diff, math.inf), torch.zeros_like(diff)))
    flat_idx = int(ratio.argmax())
    i, j = divmod(flat_idx, ratio.shape[1])
    worst_ratio = float(ratio[i, j])
    passed = worst_ratio <= 1.0 and math.isfinite(worst_ratio)
    kinds = ["input"] * n_x + ["data"] * (parts[1].shape[0] if data is not None else 0)
    kinds += [f"far x{s:g}" for s in (1.0, 10.0, 100.0, 1000.0) for _ in range(8)]
    detail = (
        f"{'passed' if passed else 'FAILED'}: worst point #{i} ({kinds[i]}, norm {float(seen64[i].norm()):.3g}), logit {j}: "
        f"|model - N| = {float(diff[i, j]):.3g} vs tolerance {float(tol[i, j]):.3g} (unit roundoff {u:.3g} of {dtype}, "
        f"softplus deviation {net.deviation:.3g})"
    )
    if skipped:
        detail += f"; {skipped} far point(s) where the model overflowed in {dtype} were not compared"
    return Conformance(float(tol[i, j]), float(diff[i, j]), int(finite.sum()), passed, detail, worst_ratio)
