"""The checker's OWN translation of a model into the network its certificates are about, written
independently of `certify.bounds.network` (it imports neither certify.bounds, certify.explain nor
certify.attacks), and its own conformance check.

What is translated. The model (unwrapped from DataParallel / DistributedDataParallel / torch.compile) is
traced with torch.fx; its graph must be one chain of: Linear, Conv2d, AvgPool2d, Flatten, Identity, Dropout
(eval), BatchNorm1d/2d (eval, running statistics), certify.models.builders.Normalize, ReLU, Softplus (exact
classes; subclasses are traced through their own forward), torch.flatten / .flatten / .view / .reshape keeping
the batch dimension, .contiguous, F.relu / torch.relu / .relu, F.softplus. Anything else raises
SemanticsError(reason): a value used twice (residual `add`, branches), any other op or module, forward hooks,
training mode, BatchNorm without running statistics, a non-positive softplus beta, a softplus threshold whose
switch to the identity is visible at float32 resolution (log1p(e^{-threshold}) > 2^-24 threshold).

The result, Stages(mats, biases, acts): dense float64 matrices (the Jacobian of each affine stage, computed by
reverse-mode autograd in float64), biases (the stage at 0), acts ("relu",) or ("softplus", beta, threshold).
The network N of the claims uses the EXACT softplus log(1 + e^{beta t}) / beta; `deviation_bound` bounds
sup_x max_j |T_j(x) - N_j(x)| for T the same graph with torch's thresholded softplus (identity where
beta t > threshold, below softplus by at most log1p(e^{-threshold}) / beta per unit).

Conformance: the model as the user runs it (own dtype and device, no_grad) vs N in float64 at x and seeded
far points (1x to 1000x the input's norm); tolerance per logit 2 * (forward rounding bound of the model's op
chain in its unit roundoff + that of N's float64 stages) + deviation_bound, the rounding bound computed per
module with absolute parameters (gamma_n (|A| |h| + |c|) per affine op of n terms, 6 u |value| per softplus).
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

from certify.errors import UnsupportedError

_F32_UNIT = 2.0**-24
_U64 = 2.0**-53


class SemanticsError(UnsupportedError):
    """The checker cannot translate the model exactly (the message says which op and why)."""


_AFFINE = {nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d}
_IDENTITY = {nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d}
_TORCH_LEAVES = _AFFINE | _IDENTITY | {nn.Flatten, nn.ReLU, nn.Softplus}


def _is_normalize(m: nn.Module) -> bool:
    """certify.models.builders.Normalize, recognised by its exact class name and module (the checker does not
    import the model builders): (x - mean) / std per channel, its buffers `mean` and `std`."""
    kind = type(m)
    return kind.__module__ == "certify.models.builders" and kind.__qualname__ == "Normalize"


def _is_leaf(m: nn.Module) -> bool:
    return type(m) in _TORCH_LEAVES or _is_normalize(m)


@dataclass
class Piece:
    """One affine module or reshape of a stage (float64 copies), kept for the rounding bound."""

    name: str
    run: Callable[[Tensor], Tensor]
    magnitude: Callable[[Tensor], Tensor] | None = None  # |A| h + |c| (None: exact reshape)
    carry: Callable[[Tensor], Tensor] | None = None  # |A| e
    terms: int = 0


@dataclass
class Stages:
    mats: list[Tensor]
    biases: list[Tensor]
    acts: list[tuple]
    input_shape: tuple[int, ...] = ()
    pieces: list[list[Piece]] = field(default_factory=list, repr=False)  # per stage, for conformance


# --------------------------------------------------------------------------------------------------- walk


class _LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m) or super().is_leaf_module(m, qualname)


def _strip(model: nn.Module) -> nn.Module:
    for _ in range(8):
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
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


def _f64(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).to(device="cpu", dtype=torch.float64).eval()


def _abs_copy(module: nn.Module, keep_constants: bool) -> nn.Module:
    """float64 copy computing |A| h (+ |c| when keep_constants) for the affine module h -> A h + c."""
    m = _f64(module)
    with torch.no_grad():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
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
    return m


def _terms(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.weight.shape[1] + 1
    if isinstance(module, nn.Conv2d):
        return int(module.weight[0].numel()) + 1
    if isinstance(module, nn.AvgPool2d):
        k = module.kernel_size
        return (k[0] * k[1] if isinstance(k, (tuple, list)) else k * k) + 1
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


def _walk(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, Any]]:
    """[("piece", Piece) | ("act", tuple)] in order, refusing anything not modelled exactly."""
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
    try:
        graph = _LeafTracer().trace(model)
    except Exception as exc:  # noqa: BLE001
        raise SemanticsError(f"torch.fx cannot trace the forward: {type(exc).__name__}: {exc}") from exc
    named = dict(model.named_modules())
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise SemanticsError(f"forward has {len(inputs)} inputs (one expected)")
    value: fx.Node = inputs[0]
    per_example = tuple(input_shape)
    batch_reads: set = set()
    shape_objects: set = set()
    out: list[tuple[str, Any]] = []
    seen: list[fx.Node] = [value]  # chain values so far: reading their batch size is harmless
    shape_reads: set = set()  # every size / shape read, so it never counts as a second use of a value
    for n in graph.nodes:
        if n.op == "call_method" and n.target == "size":
            shape_reads.add(n)
        elif n.op == "call_function" and n.target is getattr and len(n.args) == 2 and n.args[1] == "shape":
            shape_reads.add(n)
        elif n.op == "call_function" and n.target is operator.getitem and n.args and n.args[0] in shape_reads:
            shape_reads.add(n)

    def name_of(n: fx.Node) -> str:
        t = n.target
        return t if isinstance(t, str) else getattr(t, "__name__", str(t))

    def take(n: fx.Node) -> None:
        nonlocal value
        used = []
        fx.node.map_arg((n.args, n.kwargs), lambda a: used.append(a) or a)
        data = [a for a in used if a not in shape_reads]
        if data != [value]:
            raise SemanticsError(f"op {name_of(n)} ({n.op}) reads {[name_of(a) for a in data]}, not just the previous value")
        readers = [u for u in value.users if u not in shape_reads]
        if len(readers) != 1:
            raise SemanticsError(
                f"value {value.name} feeds {len(readers)} ops ({', '.join(name_of(u) for u in readers)}); "
                "residual / branching graphs (add of x and f(x)) are not modelled"
            )
        value = n
        seen.append(n)

    def piece(label: str, module: nn.Module | None, fn: Callable[[Tensor], Tensor] | None = None) -> None:
        nonlocal per_example
        if module is not None:
            run = _f64(module)
            p = Piece(label, run, _abs_copy(module, True), _abs_copy(module, False), _terms(module))
        else:
            p = Piece(label, fn)  # type: ignore[arg-type]
        with torch.no_grad():
            probe = p.run(torch.zeros((1,) + per_example, dtype=torch.float64))
        per_example = tuple(probe.shape[1:])
        out.append(("piece", p))

    def reshaped(label: str, new: tuple[int, ...]) -> None:
        if math.prod(new) != math.prod(per_example):
            raise SemanticsError(f"{label}: {per_example} -> {new} changes the example size")
        piece(label, None, lambda h, new=new: h.reshape((h.shape[0],) + new))

    for n in graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            if n.args[0] is not value or len([u for u in value.users if u not in shape_reads]) != 1:
                raise SemanticsError("the output is not the end of a single chain (residual / branching / several outputs)")
            break
        t = n.target
        if n.op == "call_method" and t == "size" and n.args[0] in seen:
            dims = n.args[1:] or tuple(n.kwargs.values())
            if dims and dims[0] != 0:
                raise SemanticsError(f"reads input dimension {dims[0]}; only the batch size is modelled")
            (batch_reads if dims else shape_objects).add(n)
            continue
        if n.op == "call_function" and t is getattr and n.args[0] in seen and n.args[1] == "shape":
            shape_objects.add(n)
            continue
        if n.op == "call_function" and t is operator.getitem and n.args[0] in shape_objects:
            if n.args[1] != 0:
                raise SemanticsError(f"reads input dimension {n.args[1]}; only the batch size is modelled")
            batch_reads.add(n)
            continue
        if n.op == "call_module":
            m = named[t]
            kind = type(m)
            if not _is_leaf(m):
                raise SemanticsError(f"module {t} of type {kind.__name__} is not modelled")
            take(n)
            if kind is nn.ReLU:
                out.append(("act", ("relu",)))
            elif kind is nn.Softplus:
                out.append(("act", _softplus_act(m.beta, m.threshold, f"module {t}")))
            elif kind is nn.Flatten:
                reshaped(f"module {t}", _flat_dims(per_example, m.start_dim, m.end_dim, f"module {t}"))
            elif kind in _IDENTITY:
                piece(f"module {t}", None, lambda h: h)
            else:
                if kind in (nn.BatchNorm1d, nn.BatchNorm2d) and (m.running_mean is None or m.running_var is None or not m.track_running_stats):
                    raise SemanticsError(
                        f"module {t} ({kind.__name__}) keeps no running statistics: it normalises by the batch even "
                        "in eval mode, so it is not a per-example function"
                    )
                piece(f"module {t}", m)
            continue
        if n.op == "call_function" and t in (F.relu, torch.relu) or n.op == "call_method" and t == "relu":
            take(n)
            out.append(("act", ("relu",)))
            continue
        if n.op == "call_function" and t is F.softplus:
            take(n)
            a = list(n.args[1:3])
            beta = a[0] if len(a) > 0 else n.kwargs.get("beta", 1.0)
            threshold = a[1] if len(a) > 1 else n.kwargs.get("threshold", 20.0)
            out.append(("act", _softplus_act(beta, threshold, "F.softplus")))
            continue
        if (n.op == "call_function" and t is torch.flatten) or (n.op == "call_method" and t == "flatten"):
            take(n)
            s = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
            e = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
            if not (isinstance(s, int) and isinstance(e, int)):
                raise SemanticsError("flatten with dimensions computed at run time")
            reshaped("flatten", _flat_dims(per_example, int(s), int(e), "flatten"))
            continue
        if n.op == "call_method" and t in ("view", "reshape"):
            take(n)
            dims = list(n.args[1:])
            if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
                dims = list(dims[0])
            if not dims:
                raise SemanticsError(f".{t}() without a shape")
            lead, tail = dims[0], dims[1:]
            size = math.prod(per_example)
            if not all(isinstance(d, int) for d in tail):
                raise SemanticsError(f".{t}(): only the leading dimension may come from the input")
            if isinstance(lead, fx.Node):
                if lead not in batch_reads:
                    raise SemanticsError(f".{t}(): leading dimension is not the batch size")
            elif not (lead == -1 and -1 not in tail and math.prod(tail) == size):
                raise SemanticsError(f".{t}{tuple(dims)} does not keep the batch dimension")
            if tail.count(-1) > 1:
                raise SemanticsError(f".{t}(): two -1 in the shape")
            if -1 in tail:
                rest = math.prod(d for d in tail if d != -1)
                tail = [size // rest if d == -1 else d for d in tail] if rest else tail
            reshaped(f".{t}()", tuple(tail))
            continue
        if n.op == "call_method" and t == "contiguous":
            take(n)
            continue
        if n.op == "get_attr":
            raise SemanticsError(f"the forward reads {t!r} directly; only whole supported modules are modelled")
        label = name_of(n)
        hint = " (residual add)" if label in ("add", "iadd", "add_") else ""
        raise SemanticsError(f"op {label}{hint} ({n.op}) is not modelled")
    return out


# ---------------------------------------------------------------------------------------------- matrices


def _jacobian_stage(pieces: list[Piece], shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """(W, b) of an affine stage: the reverse-mode Jacobian at 0 in float64 and the value at 0."""
    def stage(flat: Tensor) -> Tensor:
        h = flat.reshape((1,) + shape)
        for p in pieces:
            h = p.run(h)
        return h.reshape(-1)

    zero = torch.zeros(math.prod(shape), dtype=torch.float64)
    with torch.no_grad():
        bias = stage(zero)
    if not pieces:
        return torch.eye(zero.numel(), dtype=torch.float64), bias
    jac = torch.autograd.functional.jacobian(stage, zero, vectorize=True)
    return jac.detach().contiguous(), bias.detach()


def translate(model: nn.Module, input_shape: tuple[int, ...]) -> Stages:
    """The checker's translation of `model` for one example of shape `input_shape` (raises SemanticsError)."""
    model = _strip(model)
    if isinstance(model, torch.jit.ScriptModule):
        raise SemanticsError(
            "TorchScript module: compiled code the checker does not translate; give the eager module "
            "(module:callable) or an ONNX export"
        )
    if _is_leaf(model):  # fx always traces the root's own forward: wrap a bare module
        model = nn.Sequential(model).eval()
    items = _walk(model, tuple(int(s) for s in input_shape))
    acts: list[tuple] = []
    groups: list[list[Piece]] = [[]]
    for kind, item in items:
        if kind == "act":
            acts.append(item)
            groups.append([])
        else:
            groups[-1].append(item)
    mats: list[Tensor] = []
    biases: list[Tensor] = []
    shape = tuple(int(s) for s in input_shape)
    for group in groups:  # an activation keeps the per-example shape of its stage's output
        w, b = _jacobian_stage(group, shape)
        with torch.no_grad():
            h = torch.zeros((1,) + shape, dtype=torch.float64)
            for p in group:
                h = p.run(h)
        shape = tuple(h.shape[1:])
        mats.append(w)
        biases.append(b)
    return Stages(mats, biases, acts, tuple(int(s) for s in input_shape), groups)


# -------------------------------------------------------------------------------------------- evaluation


def _act(a: tuple, z: Tensor) -> Tensor:
    if a[0] == "relu":
        return z.clamp(min=0)
    beta = a[1]
    return z.clamp(min=0) + torch.log1p(torch.exp(-beta * z.abs())) / beta


def _act_slope(a: tuple, z: Tensor) -> Tensor:
    if a[0] == "relu":
        return (z > 0).to(z.dtype)
    return torch.sigmoid(a[1] * z)


def forward(stages: Stages, x: Tensor) -> Tensor:
    """N's logits in float64 (exact softplus) for x of shape [B, *input_shape], [B, n] or one example."""
    x = torch.as_tensor(x).to("cpu", torch.float64)
    h = x.reshape(-1, stages.mats[0].shape[1])
    for k, (w, b) in enumerate(zip(stages.mats, stages.biases)):
        h = h @ w.T + b
        if k < len(stages.acts):
            h = _act(stages.acts[k], h)
    return h


def gradient(stages: Stages, x: Tensor, row: Tensor | int) -> Tensor:
    """Gradient of row . N at one example x (float64, exact softplus; a ReLU's slope at 0 is taken 0, as
    torch does), shaped like x. `row` is a vector over the logits or a logit index."""
    x = torch.as_tensor(x).to("cpu", torch.float64)
    h = x.reshape(1, -1)
    zs = []
    for k, (w, b) in enumerate(zip(stages.mats, stages.biases)):
        h = h @ w.T + b
        if k < len(stages.acts):
            zs.append(h)
            h = _act(stages.acts[k], h)
    c = stages.mats[-1].shape[0]
    if isinstance(row, int):
        r = torch.zeros(c, dtype=torch.float64)
        r[row] = 1.0
    else:
        r = torch.as_tensor(row, dtype=torch.float64).reshape(c)
    g = r.reshape(1, -1)
    for k in range(len(stages.mats) - 1, -1, -1):
        g = g @ stages.mats[k]
        if k > 0:
            g = g * _act_slope(stages.acts[k - 1], zs[k - 1])
    return g.reshape(x.shape)


def deviation_bound(stages: Stages) -> float:
    """Certified sup_x max_j |T_j(x) - N_j(x)|, T with torch's thresholded softplus: per unit gap
    log1p(e^{-threshold}) / beta, carried through |W| (activations are 1-Lipschitz); rounded up."""
    gaps = []
    for a in stages.acts:
        if a[0] == "softplus" and a[2] != math.inf:
            gaps.append(math.log1p(math.exp(-a[2])) / a[1] * (1 + 1e-13))
        else:
            gaps.append(0.0)
    if not any(gaps):
        return 0.0
    d = torch.zeros(stages.mats[0].shape[0], dtype=torch.float64)
    for k, gap in enumerate(gaps):
        w = stages.mats[k + 1]
        d = (w.abs() @ (d + gap)) * (1 + (w.shape[1] + 4) * 2.0**-52)
    return float(d.max()) * (1 + 1e-14)


def _roundoff(model: nn.Module) -> tuple[torch.dtype, torch.device, float]:
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    device = tensors[0].device if tensors else torch.device("cpu")
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


def _rounding(stages: Stages, pts: Tensor, u: float) -> Tensor:
    """[m, C] forward rounding bound: model's pieces in unit roundoff u (+ float64), plus N's float64 stages."""
    with torch.no_grad():
        h = pts.reshape((pts.shape[0],) + stages.input_shape)
        e = torch.zeros_like(h)
        for k, group in enumerate(stages.pieces):
            for p in group:
                if p.magnitude is None:
                    h, e = p.run(h), p.run(e)
                else:
                    e = p.carry(e) + _gamma(p.terms, u + _U64) * p.magnitude(h.abs())
                    h = p.run(h)
            if k < len(stages.acts):
                h = _act(stages.acts[k], h)
                if stages.acts[k][0] == "softplus":
                    e = e + 6 * (u + _U64) * h.abs()
        total = e.reshape(e.shape[0], -1)
        a = pts.reshape(pts.shape[0], -1)
        en = torch.zeros_like(a)
        for k, (w, b) in enumerate(zip(stages.mats, stages.biases)):
            en = en @ w.abs().T + _gamma(w.shape[1] + 1, _U64) * (a.abs() @ w.abs().T + b.abs())
            a = a @ w.T + b
            if k < len(stages.acts):
                a = _act(stages.acts[k], a)
                if stages.acts[k][0] == "softplus":
                    en = en + 6 * _U64 * a.abs()
    return total + en


def _largest_value(stages: Stages, pts: Tensor) -> Tensor:
    """[m] largest |value| among N's pre-activations, activations and |W| |a| + |b| sums at each point."""
    a = pts.reshape(pts.shape[0], -1)
    top = a.abs().amax(dim=1)
    for k, (w, b) in enumerate(zip(stages.mats, stages.biases)):
        top = torch.maximum(top, (a.abs() @ w.abs().T + b.abs()).amax(dim=1))
        a = a @ w.T + b
        if k < len(stages.acts):
            a = _act(stages.acts[k], a)
    return top


def check_conformance(model: nn.Module, stages: Stages, x: Tensor, data: Tensor | None = None, seed: int = 1) -> tuple[float, float, bool]:
    """(max_deviation, tolerance, passed) comparing the model as the user runs it with N at x, `data` (up
    to 64 rows) and 32 seeded far points; the two numbers are those of the binding point and logit."""
    shape = stages.input_shape
    base = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape((-1,) + shape)
    pts = [base]
    if data is not None:
        pts.append(torch.as_tensor(data).detach().to("cpu", torch.float64).reshape((-1,) + shape)[:64])
    gen = torch.Generator().manual_seed(seed)
    flat0 = base[0].reshape(-1)
    r = max(float(base.reshape(base.shape[0], -1).norm(dim=1).max()), 1.0)
    for scale in (1.0, 10.0, 100.0, 1000.0):
        g = torch.randn(8, flat0.numel(), generator=gen, dtype=torch.float64)
        pts.append((flat0 + scale * r * g / g.norm(dim=1, keepdim=True)).reshape((-1,) + shape))
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
    exact_in = as_run.to(torch.float64)
    want = forward(stages, exact_in)
    if got.numel() != want.numel():
        return math.inf, 0.0, False
    got = got.reshape(want.shape)
    tol = 2.0 * _rounding(stages, exact_in, u) + deviation_bound(stages)
    single = single.reshape(-1)
    if not bool(((single - got[0]).abs() <= tol[0]).all()):
        k = int(((single - got[0]).abs() / tol[0]).argmax())
        return float((single - got[0]).abs()[k]), float(tol[0, k]), False
    ok = torch.isfinite(got).all(dim=1)
    # a non-finite model output is excused only where N's own values come near the dtype's range
    big = _largest_value(stages, exact_in) >= torch.finfo(dtype).max / 16
    if bool((~ok & ~big).any()) or not bool(ok[: base.shape[0]].all()):
        return math.inf, 0.0, False
    diff = (got - want).abs()
    diff[~ok] = 0.0
    ratio = diff / tol
    ratio[diff == 0] = 0.0
    k = int(ratio.argmax())
    i, j = divmod(k, ratio.shape[1])
    dev, t = float(diff[i, j]), float(tol[i, j])
    return dev, t, bool(dev <= t)


def summary(stages: Stages) -> dict[str, Any]:
    """JSON-able description of the checker's translation."""
    return {
        "layers": [int(w.shape[0]) for w in stages.mats],
        "activations": [
            {"name": "relu"} if a[0] == "relu" else {"name": "softplus", "beta": a[1], "threshold": a[2] if a[2] != math.inf else "inf"}
            for a in stages.acts
        ],
        "deviation": deviation_bound(stages),
    }
