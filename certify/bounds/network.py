"""Canonical form of a supported network for the verification layer, obtained by TRACING what the model
computes, and the conformance check that the translation reproduces the model.

The graph IR (N). A DAG of L affine layers with skip terms:

    h_0 = x (flat input, float64)
    z_k = W_k h_k + b_k + sum_{j in skips[k]} S_{k,j} h_j        (k = 0 .. L-1; j < k)
    h_{k+1} = sigma_k(z_k)                                       (k < L-1, elementwise)
    logits = z_{L-1}

A chain is the special case without skips (`is_chain`). W_k may be all zero when layer k reads skips only.

Translation (`from_module`). The model (unwrapped from nn.DataParallel / DistributedDataParallel /
torch.compile, each wrapper level first checked like a module: no hooks, eval mode, no instance-level forward
other than torch.compile's own; a TorchScript module's frozen graph rebuilt as an fx GraphModule by
`certify.models.torchscript.translatable`) is traced with torch.fx and its graph is walked node by node;
values the output does not depend on (dead code) make no layers. Every value is either an
AFFINE FORM over earlier layer outputs ({j: matrix} + constant, dense float64) or the output of an
elementwise activation, which starts a layer: z = the form (its h_k part is W_k, the others are skips),
h = sigma(z). Linear ops act on forms by pushing the standard basis of each h_j through the op with its
constant terms removed (exact for a single Linear or Conv), and the constant through the op itself, so a
chain translates to the same matrices as consecutive ops merged stage by stage. Modelled:

- affine modules (exact classes; a subclass is traced through its own forward): Linear, Conv1d / Conv2d
  (stride, padding and padding modes zeros / reflect / replicate / circular, dilation, groups), eval-mode
  BatchNorm1d/2d with running statistics, `certify.models.builders.Normalize`, AvgPool1d/2d,
  AdaptiveAvgPool1d/2d; data movement: Flatten, Identity, eval-mode Dropout; and the functions / methods
  flatten, view, reshape (keeping the batch dimension), permute, transpose, squeeze(dim), unsqueeze,
  contiguous, clone, torch.cat / concat, mean and sum over non-batch dimensions, F.dropout with
  training=False, and the functional pooling F.max_pool1d/2d, F.avg_pool1d/2d, F.adaptive_avg_pool1d/2d
  (modelled as the module they call);
- add / sub of two values or of a constant (torch.add / sub with a constant alpha), mul / div by a constant
  (a python number or a constant tensor read with get_attr), neg;
- MaxPool1d/2d (any kernel, stride, padding, dilation, ceil_mode), EXACTLY via ReLU layers with skips:
  max(a, b) = a + relu(b - a), a tournament over each window (ceil(log2 window) ReLU layers; padded entries
  are excluded, not zeros: a window clipped by the padding repeats its first entry, max(a, a) = a); the
  window layout is checked against torch's own pooling at translation time;
- activations (module, functional and method forms): ReLU, LeakyReLU, Softplus (threshold rule below), Sigmoid, Tanh, GELU (approximate "none" -> "gelu", "tanh" -> "gelu_tanh"), SiLU
  (also as x * sigmoid(x), the form ONNX exports, when that sigmoid is read by the product only);
- a final Softmax / LogSoftmax over the class dimension is dropped: N is the logits BEFORE it, `head`
  records it and `semantics` says so. Anywhere else it is refused.

Anything else raises UnsupportedError naming the op and why: a product of two input-dependent values
("mul"), division by an input-dependent value, reductions over the batch, torch.max over a dimension,
indexing, any other module or function (a parameter read with get_attr and used by such an op is refused
with that op), forward hooks, training mode, BatchNorm without running statistics (it normalises by the
batch, so it is not a per-example function), Softplus with beta <= 0, an in-place op (x += y, x.relu_(),
x.add_(c), F.relu(x, inplace=True), a module with inplace=True) unless the value it modifies is FRESH storage
and read by no other op (the traced graph shows the op's result but not the modification, so another reader,
or a value sharing the storage, would see a value N does not model), multiple inputs or outputs. Fresh: the
output of an op that always allocates a new tensor (Linear, Conv, BatchNorm, pooling, an out-of-place
activation or arithmetic op, torch.cat, mean / sum, clone, a Softmax), or of an in-place op accepted on
such a value (torchvision's `out += identity; out = relu(out)` with ReLU(inplace=True)). Never fresh: the
model's input, a parameter, and the output of any op that may return a view of its input or the input
itself (Identity, eval Dropout / F.dropout, Flatten, flatten, view, reshape, contiguous, permute, transpose,
squeeze, unsqueeze, expand, indexing, anything else): an in-place op there is refused (aliasing). The
tracer records augmented assignment (`y += c`, in place on a tensor) as the in-place operator.iadd, ...
(a plain fx Proxy would record the out-of-place y + c), and any op writing into an existing tensor (out=)
is refused.

What function the claims are about (softplus threshold decision). Every bound in this package is about N,
the translated network with the EXACT softplus sigma(t) = log(1 + e^{beta t}) / beta. torch's Softplus
returns t where beta * t > threshold (ATen: `x * beta > threshold ? x : log1p(exp(x * beta)) / beta`); there
the two differ by log1p(e^{-beta t}) / beta, at most g = log1p(e^{-threshold}) / beta per unit (the sup, not
attained). Let T be the network torch's graph describes, in exact arithmetic (thresholded softplus). With
d_h the elementwise bound on |T - N| of a layer output (d_{h_0} = 0),

    d_{z_k} = |W_k| d_{h_k} + sum_j |S_{k,j}| d_{h_j},   d_{h_{k+1}} = Lip(sigma_k) d_{z_k} + g_k,

and `net.deviation` = max over logits of d_{z_{L-1}}, rounded outward, is a certified bound on
sup_x max_j |T_j(x) - N_j(x)| (0 without softplus). A threshold is ACCEPTED only when the switch is below
float32 resolution of the value where it happens: log1p(e^{-threshold}) <= 2^-24 * threshold (threshold >=
13.997; torch's default 20 gives g = 2.06e-9 / beta, inf gives 0). Below that (e.g. threshold = 1: g =
0.313 per unit) torch's function visibly jumps at the switch and has no Lipschitz constant or curvature, so
the model is REFUSED with a message naming the threshold. The floating point rounding of the model as the
user runs it is not part of `deviation`; the conformance check bounds it.

Conformance (`conformance`). The model is evaluated as the user runs it (its own dtype and device, under
no_grad; never mutated) and N in float64 at the input(s), the given data points and seeded random points far
outside the data (Gaussian directions at 1x, 10x, 100x and 1000x the input's norm, where thresholds bite),
all in one batch, plus the first input alone (a per-example function must not depend on its batch). With a
dropped head, the model's output is compared with softmax / log_softmax of N's logits, in float64. At each
point and output j the tolerance is

    tol_j = 2 * (L_head max_i (E_i(model) + E_i(N)) + R_j(head)) + L_head * net.deviation
            (tol_j = 2 (E_j(model) + E_j(N)) + net.deviation without a head),

where E(model) is the standard worst-case forward rounding-error bound of the model's own graph in its dtype
(unit roundoff u of the dtype; 2^-11 for float32 on CUDA with TF32 enabled), propagated node by node:

- an affine op h -> A h + c with n rounded terms per output adds gamma_n (|A| |h| + |c|), gamma_n = n u /
  (1 - n u), and carries the incoming error through |A| (|A| |h| + |c| is computed by the op with absolute
  parameters, per op, never from a merged matrix, so cancellation cannot shrink it); an op with a python
  number or a constant tensor counts 3 terms (the constant's conversion to the dtype, the op, and the
  reciprocal some kernels take for a division);
- a sum a + alpha b adds the errors (times |alpha|) and gamma_1 (|a| + |alpha b|) (gamma_3 when alpha != 1
  or a constant is added); concatenation, reshapes and max pooling carry the error unchanged (max is
  1-Lipschitz in the max norm: |max a - max b| <= max |a - b|);
- an activation carries the error times its Lipschitz constant (Activation.lipschitz: sup |sigma'|) and adds
  its own rounding, `Activation.evaluation_error(z, dtype)` in the model's dtype (the bound on torch's
  kernel there and on this package's float64 value, with the amplification of rounded inner arguments and
  an underflow floor; its docstring says why it is safe): ReLU is exact, LeakyReLU 2 u |sigma(z)| (the
  product x * slope, plus the slope rounded to the dtype), softplus 8 u |sigma(z)| plus its argument term,
  Sigmoid, Tanh and SiLU 16 u |sigma(z)|, GELU (both forms) 16 u (|sigma(z)| + |z|) plus the amplification
  of 1 + erf / 1 + tanh where it cancels (z < 0); CUDA's exp / tanh / erf are within 2 ulp as well, so
  the same count of roundings covers them. The activations run as torch's own kernels in the dtype,
  whatever the matmul precision (TF32 affects the affine ops only);

E(N) is the same bound for N's float64 evaluation of its layers (n = the number of columns of W_k and
S_{k,j} plus one per matrix product). For a head, L_head is its Lipschitz constant in the max norm
(softmax: the Jacobian diag(s) - s s^T has row sums of absolute values 2 s_i (1 - s_i) <= 1/2; log_softmax:
I - 1 s^T has 2 (1 - s_i) <= 2; by the mean value theorem these bound the change along the segment) and
R(head) = 2 (C + 8) (u + u64) (|y_j| + 1) its own rounding in the model's dtype and in float64 (C classes:
the max subtraction, exp / log to <= 2 ulp, the sum of C terms and the division / subtraction; |z_i - max|
<= |log_softmax_i|, and s_i |z_i - max| <= 1/e, so the argument's rounding is absolute at most u (|y| + 1)).
The factor 2 covers summation orders and kernels (blocked / vectorised) whose error is within the
worst-case bound up to that factor. So a correct translation passes at any magnitude, while a
mis-translation (a dropped residual, a wrong weight, a thresholded unit, batch statistics) differs by far
more than rounding. (It is a worst-case bound, about 100-1000x the rounding actually observed on the zoo
models, so it does not see a single weight off by 1e-3; it is there to catch a different function, not a
tampered file - the model hash does that.) A non-finite model output fails the check unless the magnitudes
the ops handle at that point approach the dtype's range (a 1000x far point in float16 is skipped and
counted in `detail`); an internal overflow such as softplus with threshold=inf computing exp(88.8) in
float32 fails.

Affine maps are stored as dense matrices, which is exact and simple for the small models this layer targets;
memory grows as (inputs x units).
"""
from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from certify.bounds.activations import Activation, softplus_threshold_accepted
from certify.errors import UnsupportedError
from certify.models.builders import Normalize
from certify.models.integrity import check_torch_integrity
from certify.models.torchscript import translatable

AFFINE_TYPES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.BatchNorm1d, nn.BatchNorm2d, Normalize,
)
SHAPE_TYPES = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)
MAXPOOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d)
HEAD_TYPES = (nn.Softmax, nn.LogSoftmax)
_PLAIN_ACTIVATIONS = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu"}  # no parameters
_LEAF_TYPES = AFFINE_TYPES + SHAPE_TYPES + ACTIVATION_TYPES + MAXPOOL_TYPES + HEAD_TYPES
# spatial dimensions of the modules that take [batch, channels, *spatial]
_SPATIAL = {nn.Conv1d: 1, nn.Conv2d: 2, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AdaptiveAvgPool1d: 1,
            nn.AdaptiveAvgPool2d: 2, nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.BatchNorm2d: 2}

U64 = 2.0**-53
CONFORMANCE_SAFETY = 2.0
CONSTANT_TERMS = 3  # rounded operations of an op with a constant operand (conversion, op, reciprocal)
HEADS = {"softmax": 0.5, "log_softmax": 2.0}  # dropped head -> its Lipschitz constant in the max norm

_ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
_SUB = {operator.sub, operator.isub, torch.sub, torch.subtract, "sub", "sub_", "subtract"}
_MUL = {operator.mul, operator.imul, torch.mul, torch.multiply, "mul", "mul_", "multiply"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide, "div", "div_", "divide",
        "true_divide"}
_NEG = {operator.neg, torch.neg, torch.negative, "neg", "negative"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_REDUCE = {torch.mean: "mean", torch.sum: "sum", "mean": "mean", "sum": "sum"}
_HEAD_FNS = {F.softmax: "softmax", torch.softmax: "softmax", "softmax": "softmax", F.log_softmax: "log_softmax",
             torch.log_softmax: "log_softmax", "log_softmax": "log_softmax"}
# functional pooling -> the module it calls, with its argument names after the input
_POOL_FNS = {
    F.max_pool1d: (nn.MaxPool1d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    F.avg_pool1d: (nn.AvgPool1d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")),
    F.adaptive_avg_pool1d: (nn.AdaptiveAvgPool1d, ("output_size",)),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
}
_INPLACE_FNS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
                operator.ipow, operator.imatmul, operator.iand, operator.ior, operator.ixor, operator.ilshift,
                operator.irshift, torch.relu_}
# ops whose output is always a newly allocated tensor (never a view of an input, nor the input itself): the
# only values an in-place op may modify (in-place forms are told apart first, by `_mutated_input`)
_FRESH_MODULES = set(AFFINE_TYPES) | set(MAXPOOL_TYPES) | set(HEAD_TYPES) | set(ACTIVATION_TYPES)
_FRESH_FNS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub, torch.subtract,
    torch.mul, torch.multiply, torch.div, torch.divide, torch.true_divide, torch.neg, torch.negative,
    torch.cat, torch.concat, torch.concatenate, torch.mean, torch.sum,
    torch.relu, F.relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.softplus, F.gelu, F.silu,
    F.softmax, torch.softmax, F.log_softmax, torch.log_softmax,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
}
_FRESH_METHODS = {"add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "neg", "negative",
                  "mean", "sum", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "__add__", "__sub__", "__mul__",
                  "__truediv__", "__radd__", "__rsub__", "__rmul__", "__rtruediv__", "__neg__"}
_SHAPE_FNS = {operator.getitem, getattr, torch.flatten, torch.reshape, torch.permute, torch.transpose,
              torch.squeeze, torch.unsqueeze, F.dropout, torch.clone}
_SHAPE_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "contiguous", "size",
                  "dim", "clone", "expand", "__getitem__"}
_INPLACE_ARG = {F.relu: 1, F.leaky_relu: 2, F.silu: 1, F.dropout: 3, F.hardtanh: 3, F.elu: 2, F.relu6: 1}


@dataclass
class _Op:
    """One traced op of the model's graph, kept for the conformance check's rounding bound (float64, CPU).
    kind: "input"; "move" (data movement: reshape, permute, cat via `full`, max pooling - error carried
    unchanged); "affine" (full / linear / abs_full = |A| h + |c| / abs_linear = |A| h, `terms` rounded terms
    per output); "sum" (sum of coefs[i] * args[i] plus `constant`); "act". `args` index earlier ops."""

    label: str
    kind: str
    args: tuple[int, ...] = ()
    full: Callable[..., Tensor] | None = None  # the op in float64
    linear: Callable[[Tensor], Tensor] | None = None  # the op without its constant terms
    abs_full: Callable[[Tensor], Tensor] | None = None  # |A| h + |c|
    abs_linear: Callable[[Tensor], Tensor] | None = None  # |A| h
    terms: int = 0  # rounding ops per output (n of gamma_n)
    activation: Activation | None = None
    coefs: tuple[float, ...] = ()  # "sum"
    constant: Tensor | None = None  # "sum": the constant added (float64)
    shape: tuple = ()  # per-example shape after the op


@dataclass
class AffineNetwork:
    """The graph IR (module docstring). weights[k] W_k is [out_k, size(h_k)], biases[k] [out_k];
    skips[k][j] S_{k,j} is [out_k, size(h_j)] for j < k (`{}` for a chain); activations[k] follows layer k
    (one fewer than layers: the last gives the logits). `deviation` bounds sup_x max_j |T_j(x) - N_j(x)|
    (torch's thresholded softplus vs exact); `head` is "softmax" / "log_softmax" when a final one was dropped
    (N gives the logits before it), else None; `semantics` summarises the translation for certificates;
    `ops` is the traced op graph (used by `conformance`)."""

    weights: list[Tensor]
    biases: list[Tensor]
    activations: list[Activation]
    input_shape: tuple[int, ...]
    deviation: float = 0.0
    semantics: dict = field(default_factory=dict)
    ops: list = field(default_factory=list, repr=False)
    skips: dict[int, dict[int, Tensor]] = field(default_factory=dict)
    head: str | None = None

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def num_classes(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def input_size(self) -> int:
        return self.weights[0].shape[1]

    @property
    def is_chain(self) -> bool:
        """True when no layer reads a skip (z_k depends on h_k only)."""
        return not any(self.skips.values())

    def _evaluate(self, x: Tensor, keep: bool) -> list[Tensor]:
        """z_k in order (all of them when `keep`, else the logits only); h_j is dropped once no layer reads it."""
        needed = {j for row in self.skips.values() for j in row}
        hs: dict[int, Tensor] = {0: x}
        zs = []
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = hs[k] @ w.T + b
            for j, s in self.skips.get(k, {}).items():
                z = z + hs[j] @ s.T
            if keep or k == self.depth - 1:
                zs.append(z)
            if k not in needed:
                del hs[k]
            if k < len(self.activations):
                hs[k + 1] = self.activations[k](z)
        return zs

    def pre_activations(self, x: Tensor) -> list[Tensor]:
        """[z_0, ..., z_{L-1}] ([N, out_k] each) for flat inputs x [N, input_size]."""
        return self._evaluate(x, keep=True)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of N [N, num_classes] for flat inputs x [N, input_size] (float64 for rigorous use)."""
        return self._evaluate(x, keep=False)[-1]

    def to(self, device: torch.device | str) -> "AffineNetwork":
        return replace(
            self,
            weights=[w.to(device) for w in self.weights],
            biases=[b.to(device) for b in self.biases],
            skips={k: {j: s.to(device) for j, s in row.items()} for k, row in self.skips.items()},
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


def _is_wrapper(model: nn.Module) -> bool:
    return isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) or (
        type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"))


def _compiled_forward_is_dynamo(model: nn.Module) -> bool:
    """torch.compile's OptimizedModule sets `forward` on the instance: dynamo's wrapper of the wrapped module's
    __call__ (or of wrap_inline(module); behind `_call_lazy_check` for a lazy module). True only for that."""
    import torch._dynamo.eval_frame as eval_frame
    import torch._dynamo.external_utils as external_utils

    inner = model._orig_mod
    fn = vars(model).get("forward")
    if getattr(fn, "__self__", None) is model and getattr(fn, "__func__", None) is getattr(type(model), "_call_lazy_check", None):
        fn = vars(model).get("_forward")
    code = getattr(fn, "__code__", None)
    if code is None or code.co_filename != eval_frame.__file__:
        return False
    orig = getattr(fn, "_torchdynamo_orig_callable", None)
    if getattr(orig, "__self__", None) is inner and getattr(orig, "__func__", None) is type(inner).__call__:
        return True
    cells = [c.cell_contents for c in (getattr(orig, "__closure__", None) or ())]
    code = getattr(orig, "__code__", None)
    return code is not None and code.co_filename == external_utils.__file__ and len(cells) == 1 and cells[0] is inner


def _check_wrapper(model: nn.Module) -> None:
    """A DataParallel / DistributedDataParallel / torch.compile wrapper runs its own hooks (and could carry an
    instance-level forward) around the module it wraps: checked here, before it is stripped."""
    label = f"wrapper {type(model).__name__}"
    if model.training:
        raise UnsupportedError(f"{label} is in training mode; call model.eval() first")
    if model._forward_hooks or model._forward_pre_hooks or model._backward_hooks or getattr(model, "_backward_pre_hooks", None):
        raise UnsupportedError(
            f"{label} has a forward or backward hook, which can change what the model computes or differentiates; "
            "certify models only hook-free modules (the wrapper's hooks run around the wrapped module)"
        )
    if "forward" in model.__dict__ and not (type(model).__name__ == "OptimizedModule" and _compiled_forward_is_dynamo(model)):
        raise UnsupportedError(
            f"{label} has its own instance-level forward (a monkeypatch): the function it computes would not be the "
            "wrapped module's"
        )


def unwrap_checked(model: nn.Module) -> nn.Module:
    """`unwrap`, refusing a wrapper level with hooks, training mode or an instance-level forward."""
    while _is_wrapper(model):
        _check_wrapper(model)
        model = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model._orig_mod
    return model


# augmented assignment: a torch.fx Proxy has no __iadd__, so Python falls back to __add__ and `y += c`
# (in place on a tensor: it modifies y and every alias of y) would be recorded as the out-of-place y + c
_AUGMENTED = {"__iadd__": operator.iadd, "__isub__": operator.isub, "__imul__": operator.imul,
              "__itruediv__": operator.itruediv, "__ifloordiv__": operator.ifloordiv, "__imod__": operator.imod,
              "__ipow__": operator.ipow, "__imatmul__": operator.imatmul, "__iand__": operator.iand,
              "__ior__": operator.ior, "__ixor__": operator.ixor, "__ilshift__": operator.ilshift,
              "__irshift__": operator.irshift}


class _InplaceProxy(fx.Proxy):
    """A Proxy that records augmented assignment as the in-place operator (operator.iadd, ...), so the
    in-place rule (`_Walker._inplace`) sees it; attributes (x.data, x.T) get the same."""

    def __getattr__(self, k: str) -> fx.Proxy:
        return _InplaceAttribute(self, k)


class _InplaceAttribute(fx.proxy.Attribute, _InplaceProxy):
    pass


def _augmented(fn: Callable) -> Callable:
    def method(self: fx.Proxy, other: Any) -> fx.Proxy:
        return self.tracer.create_proxy("call_function", fn, (self, other), {})

    return method


for _name, _fn in _AUGMENTED.items():
    setattr(_InplaceProxy, _name, _augmented(_fn))


class _Tracer(fx.Tracer):
    """Exact supported classes are leaves (their forward is the one modelled); everything else is traced
    through, so an overridden forward is seen op by op. Augmented assignment is recorded as in place."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if type(m) in _LEAF_TYPES:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _InplaceProxy(node, self)


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


def _tuple(value: Any, d: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * d


def _adaptive_window(size_in: int, size_out: int) -> int:
    """Largest window of adaptive pooling along one dimension: [floor(i I / O), ceil((i + 1) I / O))."""
    return max(-((-(i + 1) * size_in) // size_out) - (i * size_in) // size_out for i in range(size_out))


def _affine_variants(module: nn.Module, shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, int]:
    """(full, linear, abs_full, abs_linear, terms) float64 copies of a supported affine module whose input has
    per-example shape `shape`."""
    full = _double(module)
    lin, afull, alin = _double(module), _double(module), _double(module)
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
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
    elif isinstance(module, (nn.AvgPool1d, nn.AvgPool2d)):
        terms = _numel(_tuple(module.kernel_size, _SPATIAL[type(module)])) + 1
    elif isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        d = _SPATIAL[type(module)]
        out = [o if o is not None else i for o, i in zip(_tuple_or_none(module.output_size, d), shape[-d:])]
        terms = _numel(tuple(_adaptive_window(i, o) for i, o in zip(shape[-d:], out))) + 1
    else:  # pragma: no cover - guarded by the caller
        raise UnsupportedError(f"no affine model of {type(module).__name__}")
    return full, lin, afull, alin, terms


def _tuple_or_none(value: Any, d: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * d


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


def _leaky(slope: Any, where: str) -> Activation:
    if isinstance(slope, (fx.Node, bool)) or not isinstance(slope, (int, float)) or not math.isfinite(slope):
        raise UnsupportedError(f"{where}: LeakyReLU negative_slope must be a finite constant, got {slope}")
    return Activation("leaky_relu", negative_slope=float(slope))


def _gelu(approximate: Any, where: str) -> Activation:
    if approximate not in ("none", "tanh"):
        raise UnsupportedError(f"{where}: GELU approximate={approximate!r} is not modelled (only 'none' and 'tanh')")
    return Activation("gelu" if approximate == "none" else "gelu_tanh")


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
    if _numel(tuple(rest)) != n:
        raise UnsupportedError(f"{label}: reshape from {shape} to {tuple(rest)} changes the size of one example")
    return tuple(int(s) for s in rest)


def _dims(value: Any, ndim: int, label: str) -> tuple[int, ...]:
    """Non-batch dimensions `value` (int or sequence) of a batched tensor with ndim dimensions, normalised."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not items or any(not isinstance(d, int) or isinstance(d, bool) for d in items):
        raise UnsupportedError(f"{label}: dimensions must be constant integers, got {value!r}")
    dims = tuple(d + ndim if d < 0 else d for d in items)
    if any(not 0 <= d < ndim for d in dims):
        raise UnsupportedError(f"{label}: dimension out of range in {value!r}")
    if 0 in dims:
        raise UnsupportedError(f"{label} acts on the batch dimension: the output for one example would depend on the others")
    return dims


def _pool_windows(module: nn.Module, shape: tuple[int, ...], label: str) -> tuple[list[list[int]], tuple[int, ...]]:
    """Windows of a MaxPool module on per-example shape [*lead, *spatial]: for each flat output index the flat
    input indices it takes the max over (padded positions excluded), and the per-example output shape; the
    layout is checked against torch's pooling of a random input."""
    d = _SPATIAL[type(module)]
    if module.return_indices:
        raise UnsupportedError(f"{label}: MaxPool with return_indices=True is not modelled")
    k = _tuple(module.kernel_size, d)
    s = _tuple(module.stride if module.stride is not None else module.kernel_size, d)
    p, dil = _tuple(module.padding, d), _tuple(module.dilation, d)
    pool = _double(module)
    probe = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    try:
        with torch.no_grad():
            expected = pool(probe)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedError(f"{label} fails on an input of shape {shape}: {exc}") from exc
    out_shape = tuple(expected.shape[1:])
    spatial_in, spatial_out = shape[len(shape) - d:], out_shape[len(out_shape) - d:]
    per_dim = [
        [[o * s[i] - p[i] + dil[i] * t for t in range(k[i]) if 0 <= o * s[i] - p[i] + dil[i] * t < spatial_in[i]]
         for o in range(spatial_out[i])]
        for i in range(d)
    ]
    n_lead, n_in = _numel(shape[: len(shape) - d]), _numel(spatial_in)
    windows: list[list[int]] = []
    for c in range(n_lead):
        if d == 1:
            windows += [[c * n_in + i for i in w] for w in per_dim[0]]
        else:
            windows += [[c * n_in + i * spatial_in[1] + j for i in w0 for j in w1] for w0 in per_dim[0] for w1 in per_dim[1]]
    flat = probe.reshape(-1)
    got = torch.stack([flat[torch.tensor(w)].max() if w else flat.new_tensor(math.nan) for w in windows])
    if len(windows) != expected.numel() or not torch.equal(got, expected.reshape(-1)):
        raise UnsupportedError(f"{label}: the pooling windows could not be reproduced exactly (kernel {k}, stride {s}, "
                               f"padding {p}, dilation {dil}, ceil_mode {module.ceil_mode})")
    return windows, out_shape


# ----------------------------------------------------------------------------------------- affine forms


@dataclass
class _Form:
    """A value of the traced graph as an affine form over layer outputs: sum_j (terms[j] applied to h_j) +
    const. terms[j] is [size(h_j), *shape] (the images of h_j's standard basis), const is [1, *shape], both
    float64; `op` indexes the model op that computes the value (for conformance)."""

    terms: dict[int, Tensor]
    const: Tensor
    op: int = -1

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.const.shape[1:])


def _map(form: _Form, full: Callable[[Tensor], Tensor], linear: Callable[[Tensor], Tensor] | None, label: str) -> _Form:
    """The form of op(value): `linear` (the op without its constant terms; default `full`) on every term,
    `full` on the constant. Refuses an op that does not keep the batch dimension."""
    lin = linear or full
    try:
        terms = {j: lin(t) for j, t in form.terms.items()}
        const = full(form.const)
    except Exception as exc:  # noqa: BLE001 - the op cannot take this input: refused
        raise UnsupportedError(f"{label} fails on an input of shape {form.shape}: {exc}") from exc
    if const.shape[0] != 1 or any(t.shape[0] != form.terms[j].shape[0] or t.shape[1:] != const.shape[1:] for j, t in terms.items()):
        raise UnsupportedError(f"{label} does not keep the batch dimension: not a per-example function")
    return _Form(terms, const)


def _check_constant(c: Tensor, shape: tuple[int, ...], label: str) -> None:
    if c.dim() > len(shape) + 1 or (c.dim() == len(shape) + 1 and c.shape[0] != 1):
        raise UnsupportedError(
            f"{label}: the constant of shape {tuple(c.shape)} would broadcast over the batch dimension of a value of "
            f"per-example shape {shape}: not a per-example function"
        )


def _lincomb(parts: list[tuple[float, _Form | Tensor]], label: str) -> _Form:
    """sum_i coef_i * operand_i (forms and constant tensors, broadcast like torch)."""
    forms = [(a, f) for a, f in parts if isinstance(f, _Form)]
    consts = [(a, c) for a, c in parts if not isinstance(c, _Form)]
    ranks = {len(f.shape) for _, f in forms}
    if len(ranks) != 1:
        raise UnsupportedError(f"{label}: operands of different ranks would broadcast over the batch dimension")
    shape = forms[0][1].shape
    for _, c in consts:
        _check_constant(c, shape, label)
    try:
        full = torch.broadcast_shapes(*[f.const.shape for _, f in forms], *[c.shape for _, c in consts])
    except RuntimeError as exc:
        raise UnsupportedError(f"{label}: operands do not broadcast: {exc}") from exc
    if full[0] != 1:
        raise UnsupportedError(f"{label} would broadcast over the batch dimension: not a per-example function")
    terms: dict[int, Tensor] = {}
    const = torch.zeros(full, dtype=torch.float64)
    for a, f in forms:
        const = const + (f.const if a == 1 else a * f.const)
        for j, t in f.terms.items():
            v = (t if a == 1 else a * t).expand(t.shape[0], *full[1:])
            terms[j] = terms[j] + v if j in terms else v
    for a, c in consts:
        const = const + (c if a == 1 else a * c)
    return _Form({j: t.contiguous() for j, t in sorted(terms.items())}, const)


def _cat(forms: list[_Form], dim: int) -> _Form:
    """Concatenation along batched dimension dim >= 1 (a term absent from a part is zero there)."""
    keys = sorted({j for f in forms for j in f.terms})
    terms = {}
    for j in keys:
        n = next(f.terms[j].shape[0] for f in forms if j in f.terms)
        terms[j] = torch.cat([f.terms.get(j, f.const.new_zeros((n, *f.shape))) for f in forms], dim=dim)
    return _Form(terms, torch.cat([f.const for f in forms], dim=dim))


class _Translation:
    """The layers of N built while the graph is walked, and the model's op graph (for conformance)."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        n = _numel(input_shape)
        self.ops: list[_Op] = [_Op("input", "input", shape=input_shape)]
        self.weights: list[Tensor] = []
        self.biases: list[Tensor] = []
        self.activations: list[Activation] = []
        self.skips: dict[int, dict[int, Tensor]] = {}
        self.sizes = [n]  # size of h_j
        self.input = _Form({0: torch.eye(n, dtype=torch.float64).reshape(n, *input_shape)},
                           torch.zeros(1, *input_shape, dtype=torch.float64), 0)

    def record(self, op: _Op, form: _Form) -> _Form:
        """Append the model op computing `form`'s value; the form, tagged with it."""
        op.shape = form.shape
        self.ops.append(op)
        return replace(form, op=len(self.ops) - 1)

    def close(self, form: _Form) -> None:
        """Layer k = len(weights) with z_k = the form: its h_k part is W_k (zero if absent), the rest skips."""
        k = len(self.weights)
        assert all(j <= k for j in form.terms), "a form reads a layer output that does not exist yet"
        n_out = _numel(form.shape)

        def matrix(j: int, t: Tensor) -> Tensor:
            return t.reshape(self.sizes[j], -1).T.contiguous()

        self.weights.append(matrix(k, form.terms[k]) if k in form.terms else torch.zeros(n_out, self.sizes[k], dtype=torch.float64))
        self.biases.append(form.const.reshape(-1).contiguous())
        row = {j: matrix(j, t) for j, t in form.terms.items() if j != k}
        if row:
            self.skips[k] = row

    def layer(self, form: _Form, activation: Activation) -> _Form:
        """z_k = form, h_{k+1} = activation(z_k); the form of h_{k+1} (untagged)."""
        self.close(form)
        self.activations.append(activation)
        n = _numel(form.shape)
        self.sizes.append(n)
        k = len(self.activations)
        return _Form({k: torch.eye(n, dtype=torch.float64).reshape(n, *form.shape)}, torch.zeros(1, *form.shape, dtype=torch.float64))

    def maxpool(self, form: _Form, module: nn.Module, label: str) -> _Form:
        """Exact max pooling: each window's in-range entries (padded to a common width by repeating its first
        entry: max(a, a) = a), then a tournament max(a, b) = a + relu(b - a) over entries (0, 1), (2, 3), ...,
        an odd last entry passed on; one ReLU layer per round, its units ordered (channel, output position,
        pair) - the layout of the checker's translation."""
        windows, out_shape = _pool_windows(module, form.shape, label)
        width = max(len(w) for w in windows)
        index = torch.tensor([w + [w[0]] * (width - len(w)) for w in windows])
        cand = _map(form, lambda t: t.reshape(t.shape[0], -1)[:, index], None, label)
        relu = Activation("relu")
        while width > 1:
            p = width // 2
            a = _map(cand, lambda t, p=p: t[..., 0 : 2 * p : 2], None, label)
            b = _map(cand, lambda t, p=p: t[..., 1 : 2 * p : 2], None, label)
            h = self.layer(_lincomb([(1.0, b), (-1.0, a)], label), relu)
            winners = _lincomb([(1.0, a), (1.0, h)], label)
            cand = _cat([winners, _map(cand, lambda t, p=p: t[..., 2 * p :], None, label)], 2) if width % 2 else winners
            width = p + width % 2
        return _map(cand, lambda t: t.reshape(t.shape[0], *out_shape), None, label)


# ----------------------------------------------------------------------------------------- graph walk

_MISSING = object()


class _Walker:
    """Walks the traced graph in order, giving every node a value: a _Form, a constant (float64 tensor) or a
    batch-size read; builds N's layers and the model's op graph."""

    def __init__(self, model: nn.Module, graph: fx.Graph, input_shape: tuple[int, ...]) -> None:
        self.model = model
        self.nodes = list(graph.nodes)
        self.modules = dict(model.named_modules())
        self.tr = _Translation(input_shape)
        self.values: dict[fx.Node, Any] = {}
        self.aux: set = set()  # nodes that only read the batch size
        self.size_objs: set = set()
        self.batch_nodes: set = set()
        self.head: str | None = None
        self.output: _Form | None = None
        # x * sigmoid(x) (SiLU as ONNX exports it) where the sigmoid is read by that product only: one SiLU
        self.silu_products: dict[fx.Node, fx.Node] = {}
        self.fused_sigmoids: set = set()
        for node in self.nodes:
            if node.op in ("call_function", "call_method") and node.target in _MUL and len(node.args) == 2 and not node.kwargs:
                for x, s in (node.args, node.args[::-1]):
                    if isinstance(s, fx.Node) and self._is_sigmoid(s) and s.args[:1] == (x,) and list(s.users) == [node]:
                        self.silu_products[node] = x
                        self.fused_sigmoids.add(s)
                        break
        for node in self.nodes:  # shape reads, known before the walk
            if (node.op == "call_method" and node.target == "size") or (
                node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)
            ):
                self.aux.add(node)
            elif (node.op == "call_function" and node.target is operator.getitem and node.args
                  and isinstance(node.args[0], fx.Node) and node.args[0] in self.aux):
                self.aux.add(node)

    def run(self) -> None:
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedError(f"the model's forward takes {len(placeholders)} inputs; certify models one input tensor")
        self.values[placeholders[0]] = self.tr.input
        live: set = set()  # the nodes the output depends on; the others (dead code) make no layers
        stack = [n for n in self.nodes if n.op == "output"]
        while stack:
            n = stack.pop()
            if n not in live:
                live.add(n)
                stack.extend(n.all_input_nodes)
        for node in self.nodes:
            if node.op in ("call_function", "call_method") and node.kwargs.get("out") is not None:
                raise UnsupportedError(f"{_describe(node)} writes its result into an existing tensor (out=), which "
                                       "modifies that tensor and its aliases in place: not modelled")
            mutated = self._mutated_input(node)
            if mutated is not None:
                self._inplace(node, mutated, _describe(node))
            if node.op != "placeholder" and node not in live:
                self._dead(node)
                continue
            if node.op == "placeholder":
                continue
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, fx.Node) or not isinstance(self.values.get(out), _Form):
                    raise UnsupportedError(f"the forward returns {out!r}, not one tensor computed from the input")
                self.output = self.values[out]
                continue
            if self._batch_read(node) or node in self.fused_sigmoids:
                continue
            if node in self.silu_products:
                label = f"{_describe(node)} (x * sigmoid(x): SiLU)"
                x = self.values.get(self.silu_products[node])
                if not isinstance(x, _Form):
                    raise UnsupportedError(f"{label}: its input is not a value computed from the model's input")
                self.values[node] = self._activate(x, Activation("silu"), label)
                continue
            if node.op == "get_attr":
                self.values[node] = self._attribute(node)
                continue
            value = self._visit(node, _describe(node))
            self.values[node] = value

    def _dead(self, node: fx.Node) -> None:
        """A node the output does not depend on makes no layer, but an op certify does not know could still
        modify its inputs (torch.ops.aten.relu_.default, a torch.fx.wrap'ed function calling .clamp_()):
        unused ops must be known pure ones (fresh or reshaping torch ops, leaf modules, batch reads)."""
        if node.op in ("get_attr", "output") or self._batch_read(node) or node in self.aux:
            return
        if node.op == "call_module" and type(self.modules[node.target]) in _LEAF_TYPES:
            return
        if node.op == "call_function" and (node.target in _FRESH_FNS or node.target in _SHAPE_FNS):
            return
        if node.op == "call_method" and (node.target in _FRESH_METHODS or node.target in _SHAPE_METHODS):
            return
        raise UnsupportedError(
            f"{_describe(node)} is not modelled; its result is unused, but an op certify does not know may modify "
            "its inputs in place, so it is refused even there"
        )

    # --- helpers -------------------------------------------------------------------------------------

    def _is_sigmoid(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return type(self.modules[node.target]) is nn.Sigmoid
        return (node.op == "call_method" and node.target == "sigmoid") or (
            node.op == "call_function" and node.target in (torch.sigmoid, F.sigmoid))

    def _batch_read(self, node: fx.Node) -> bool:
        """x.size(0), x.size()[0], x.shape[0] of a computed value: the batch size (nothing else may be read)."""
        target = node.target
        data = bool(node.args) and isinstance(node.args[0], fx.Node) and isinstance(self.values.get(node.args[0]), _Form)
        if node.op == "call_method" and target == "size" and data:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dim is None:
                self.size_objs.add(node)
            elif dim == 0:
                self.batch_nodes.add(node)
            else:
                raise UnsupportedError(f"{_describe(node)}({dim}): only the batch size may be read from the input")
            return True
        if node.op == "call_function" and target is getattr and data and node.args[1] == "shape":
            self.size_objs.add(node)
            return True
        if node.op == "call_function" and target is operator.getitem and node.args and isinstance(node.args[0], fx.Node) \
                and node.args[0] in self.size_objs:
            if node.args[1] != 0:
                raise UnsupportedError(f"reading dimension {node.args[1]} of the input shape is not modelled")
            self.batch_nodes.add(node)
            return True
        return False

    def _attribute(self, node: fx.Node) -> Tensor:
        obj: Any = self.model
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, Tensor) or not (obj.is_floating_point() or obj.dtype in (torch.int32, torch.int64)):
            raise UnsupportedError(f"the forward reads attribute {node.target!r} ({type(obj).__name__}), which is not a numeric tensor")
        return obj.detach().to("cpu", torch.float64, copy=True)  # a snapshot: never aliases the model's storage

    @staticmethod
    def _arg(node: fx.Node, i: int, name: str, default: Any = _MISSING) -> Any:
        if len(node.args) > i:
            return node.args[i]
        if name in node.kwargs:
            return node.kwargs[name]
        if default is _MISSING:
            raise UnsupportedError(f"{_describe(node)}: missing argument {name}")
        return default

    def _value(self, a: Any, label: str) -> _Form | Tensor:
        if isinstance(a, fx.Node):
            if a in self.values:
                return self.values[a]
            raise UnsupportedError(f"{label}: its input {_describe(a)} is not a value certify models (the batch size or a shape read?)")
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return torch.tensor(float(a), dtype=torch.float64)
        raise UnsupportedError(f"{label}: argument {a!r} is not modelled")

    def _form(self, node: fx.Node, i: int, name: str, label: str) -> _Form:
        value = self._value(self._arg(node, i, name), label)
        if not isinstance(value, _Form):
            raise UnsupportedError(f"{label}: its input is a constant, not a value computed from the model's input")
        return value

    def _require_none(self, node: fx.Node, name: str, label: str) -> None:
        value = node.kwargs.get(name)
        if value is not None:
            raise UnsupportedError(f"{label}: {name}={value!r} is not modelled")

    def _mutated_input(self, node: fx.Node) -> Any:
        """The argument an in-place op modifies (x += y, x.relu_(), F.relu(x, inplace=True), a module with
        inplace=True), or None."""
        target = node.target
        if node.op == "call_module":
            inplace = bool(getattr(self.modules[target], "inplace", False))
        elif node.op == "call_method":
            inplace = str(target).endswith("_") and not str(target).startswith("__")
        elif node.op == "call_function":
            position = _INPLACE_ARG.get(target)
            name = getattr(target, "__name__", "")
            inplace = target in _INPLACE_FNS or (name.endswith("_") and not name.startswith("__")) or bool(
                node.kwargs.get("inplace", node.args[position] if position is not None and len(node.args) > position else False))
        else:
            inplace = False
        return (node.args[0] if node.args else node.kwargs.get("input")) if inplace else None

    def _fresh(self, node: fx.Node) -> bool:
        """Whether `node`'s value is storage of its own: the output of an op that always allocates a new tensor
        (module docstring), or of an accepted in-place op on such a value (the same storage,
        read by nothing else before: `_inplace` checked that). Never the model input, a parameter, or the
        output of an op that may return a view of its input or the input itself (Identity, Dropout, Flatten,
        flatten, view, reshape, contiguous, permute, transpose, squeeze, unsqueeze, expand, indexing, ...)."""
        if node.op == "call_module":
            module = self.modules[node.target]
            if getattr(module, "inplace", False):
                return self._mutated_input(node) is not None and self._fresh_input(node)
            return type(module) in _FRESH_MODULES
        if node.op not in ("call_function", "call_method"):
            return False  # the input (placeholder), a parameter / buffer (get_attr)
        if self._mutated_input(node) is not None:
            return self._fresh_input(node)
        target = node.target
        if node.op == "call_method":
            if target == "clone":
                return node.kwargs.get("memory_format") is None
            return target in _FRESH_METHODS
        if target is torch.clone:
            return node.kwargs.get("memory_format") is None
        return target in _FRESH_FNS

    def _fresh_input(self, node: fx.Node) -> bool:
        mutated = self._mutated_input(node)
        return isinstance(mutated, fx.Node) and self._fresh(mutated)

    def _inplace(self, node: fx.Node, mutated: Any, label: str) -> None:
        """An in-place op is its out-of-place twin only when (a) the value it modifies is fresh storage
        (`_fresh`): not a view or alias of another value, whose other readers would see the modification the
        traced graph does not show, and (b) nothing else reads that value (a later reader would see the
        modification; an earlier one may be a view of it)."""
        if not isinstance(mutated, fx.Node) or mutated.op == "get_attr":
            raise UnsupportedError(f"{label} modifies a constant or parameter in place")
        if not self._fresh(mutated):
            raise UnsupportedError(
                f"{label} modifies its input in place, and that input ({_describe(mutated)}) is not known to be "
                "fresh storage: it may be an alias (a view, or the same tensor) of another value - the model's "
                "input or an earlier result - whose readers would see the modification the traced graph does not "
                "show (aliasing); apply in-place ops only to the output of Linear / Conv / BatchNorm / pooling / an "
                "activation / arithmetic, or use the out-of-place form"
            )
        others = [u for u in mutated.users if u is not node and u not in self.aux]
        if others:
            raise UnsupportedError(
                f"{label} modifies its input in place and that value is also read by "
                f"{', '.join(_describe(u) for u in others)}: the traced graph would not see the modification"
            )

    def _affine(self, x: _Form, label: str, full: Callable, linear: Callable | None, abs_full: Callable,
                abs_linear: Callable, terms: int) -> _Form:
        form = _map(x, full, linear, label)
        return self.tr.record(_Op(label, "affine", (x.op,), full, linear or full, abs_full, abs_linear, terms), form)

    def _move(self, x: _Form, label: str, fn: Callable[[Tensor], Tensor]) -> _Form:
        return self.tr.record(_Op(label, "move", (x.op,), full=fn), _map(x, fn, None, label))

    def _activate(self, x: _Form, activation: Activation, label: str) -> _Form:
        return self.tr.record(_Op(label, "act", (x.op,), activation=activation), self.tr.layer(x, activation))

    def _sum(self, parts: list[tuple[float, Any]], label: str) -> _Form:
        forms = [(a, f) for a, f in parts if isinstance(f, _Form)]
        if not forms:
            raise UnsupportedError(f"{label} on constants only is not modelled")
        form = _lincomb(parts, label)
        consts = [a * c for a, c in parts if not isinstance(c, _Form)]
        constant = sum(consts[1:], consts[0]) if consts else None
        exact = not consts and all(abs(a) == 1 for a, _ in forms)
        op = _Op(label, "sum", tuple(f.op for _, f in forms), coefs=tuple(float(a) for a, _ in forms), constant=constant,
                 terms=1 if exact else CONSTANT_TERMS)
        return self.tr.record(op, form)

    # --- dispatch ------------------------------------------------------------------------------------

    def _visit(self, node: fx.Node, label: str) -> _Form:
        target = node.target
        if node.op == "call_module":
            module = self.modules[target]
            if type(module) not in _LEAF_TYPES:
                raise UnsupportedError(
                    f"module {target} ({type(module).__name__}) is not modelled exactly; supported: "
                    + ", ".join(t.__name__ for t in _LEAF_TYPES)
                )
            return self._module(node, module, f"module {target} ({type(module).__name__})")
        if node.op not in ("call_function", "call_method"):
            raise UnsupportedError(f"{label} is not modelled")
        activation = self._activation_of(node, label)
        if activation is not None:
            return self._activate(self._form(node, 0, "input", label), activation, label)
        head = _HEAD_FNS.get(target)
        if head is not None:
            self._require_none(node, "dtype", label)
            return self._head(node, head, self._form(node, 0, "input", label), self._arg(node, 1, "dim", None), label)
        if target in _ADD or target in _SUB:
            a = self._value(self._arg(node, 0, "input"), label)
            b = self._value(self._arg(node, 1, "other"), label)
            alpha = node.kwargs.get("alpha", 1)
            if isinstance(alpha, fx.Node) or not isinstance(alpha, (int, float)):
                raise UnsupportedError(f"{label}: alpha must be a constant")
            return self._sum([(1.0, a), ((-1.0 if target in _SUB else 1.0) * float(alpha), b)], label)
        if target in _NEG:
            return self._sum([(-1.0, self._form(node, 0, "input", label))], label)
        if target in _MUL or target in _DIV:
            return self._scale(node, target in _DIV, label)
        if target in _CAT and node.op == "call_function":
            return self._concat(node, label)
        if node.op == "call_function" and target in _POOL_FNS:
            cls, names = _POOL_FNS[target]
            given = dict(zip(names, node.args[1:]), **{k: v for k, v in node.kwargs.items() if k in names})
            if set(node.kwargs) - set(names) - {"input"} or any(isinstance(v, fx.Node) for v in given.values()):
                raise UnsupportedError(f"{label}: pooling arguments must be constants ({node.kwargs})")
            try:
                module = cls(**given)
            except (TypeError, ValueError) as exc:
                raise UnsupportedError(f"{label}: {exc}") from exc
            return self._module(node, module, f"{label} ({cls.__name__})")
        if node.op == "call_function" and target is F.dropout:
            if self._arg(node, 2, "training", True) is not False:
                raise UnsupportedError(f"{label} with training=True (random): call model.eval() / pass training=self.training")
            return self._move(self._form(node, 0, "input", label), label, lambda h: h)
        if target in _REDUCE:
            return self._reduce(node, _REDUCE[target], label)
        return self._shape_op(node, label)

    def _activation_of(self, node: fx.Node, label: str) -> Activation | None:
        """The activation a call_function / call_method node applies, or None."""
        target, method = node.target, node.op == "call_method"
        if (method and target in ("relu", "relu_")) or (not method and target in (torch.relu, F.relu, torch.relu_)):
            return Activation("relu")
        if (method and target in ("sigmoid", "sigmoid_")) or (not method and target in (torch.sigmoid, F.sigmoid)):
            return Activation("sigmoid")
        if (method and target in ("tanh", "tanh_")) or (not method and target in (torch.tanh, F.tanh)):
            return Activation("tanh")
        if method:
            return None
        if target is F.leaky_relu:
            return _leaky(self._arg(node, 1, "negative_slope", 0.01), label)
        if target is F.softplus:
            beta, threshold = self._arg(node, 1, "beta", 1.0), self._arg(node, 2, "threshold", 20.0)
            if isinstance(beta, fx.Node) or isinstance(threshold, fx.Node):
                raise UnsupportedError(f"{label}: beta and threshold must be constants")
            return _softplus(float(beta), float(threshold), label)
        if target is F.gelu:
            return _gelu(self._arg(node, 1, "approximate", "none"), label)
        if target is F.silu:
            return Activation("silu")
        return None

    def _module(self, node: fx.Node, module: nn.Module, label: str) -> _Form:
        x = self._form(node, 0, "input", label)
        d = _SPATIAL.get(type(module))
        if d is not None and len(x.shape) != d + 1:
            raise UnsupportedError(f"{label} expects a per-example input of {d + 1} dimensions (channels, spatial), got {x.shape}")
        if isinstance(module, nn.LeakyReLU):
            return self._activate(x, _leaky(module.negative_slope, label), label)
        if isinstance(module, nn.Softplus):
            return self._activate(x, _softplus(float(module.beta), float(module.threshold), f"module {node.target} ({module})"), label)
        if isinstance(module, nn.GELU):
            return self._activate(x, _gelu(module.approximate, label), label)
        if type(module) in _PLAIN_ACTIVATIONS:
            return self._activate(x, Activation(_PLAIN_ACTIVATIONS[type(module)]), label)
        if isinstance(module, HEAD_TYPES):
            return self._head(node, "softmax" if isinstance(module, nn.Softmax) else "log_softmax", x, module.dim, label)
        if isinstance(module, MAXPOOL_TYPES):
            return self.tr.record(_Op(label, "move", (x.op,), full=_double(module)), self.tr.maxpool(x, module, label))
        if isinstance(module, nn.Flatten):
            new = _flatten_shape(x.shape, module.start_dim, module.end_dim, f"module {node.target} ({module})")
            return self._move(x, label, lambda h: h.reshape(h.shape[0], *new))
        if isinstance(module, SHAPE_TYPES):
            return self._move(x, label, _double(module))
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not module.track_running_stats or module.running_mean is None or module.running_var is None:
                raise UnsupportedError(
                    f"module {node.target} ({module}) has no running statistics (track_running_stats=False), so even in "
                    "eval mode it normalises by the batch: the output for one example depends on the other rows, and it "
                    "is not a per-example function; refit it with track_running_stats=True or fold it into the previous layer"
                )
            if isinstance(module, nn.BatchNorm1d) and len(x.shape) not in (1, 2):
                raise UnsupportedError(f"{label} expects a per-example input of 1 or 2 dimensions, got {x.shape}")
        full, lin, afull, alin, terms = _affine_variants(module, x.shape)
        return self._affine(x, label, full, lin, afull, alin, terms)

    def _head(self, node: fx.Node, name: str, x: _Form, dim: Any, label: str) -> _Form:
        users = list(node.users)
        if not (len(users) == 1 and users[0].op == "output" and users[0].args[0] is node):
            raise UnsupportedError(
                f"{label}: {name} is modelled only as the final output over the class dimension (a head, dropped: "
                "bounds are about the logits); here its result is used by "
                + ", ".join(_describe(u) for u in users)
            )
        if len(x.shape) != 1 or dim not in (1, -1, None):
            raise UnsupportedError(f"{label}: {name} over dim={dim} of a per-example value of shape {x.shape} is not a "
                                   "head over the class dimension")
        self.head = name
        return x

    def _scale(self, node: fx.Node, divide: bool, label: str) -> _Form:
        a = self._value(self._arg(node, 0, "input"), label)
        b = self._value(self._arg(node, 1, "other"), label)
        what = "div" if divide else "mul"
        if isinstance(a, _Form) and isinstance(b, _Form):
            raise UnsupportedError(f"{label} ({what}): a product or quotient of two input-dependent values is not affine; "
                                   "certify models mul / div by constants only")
        if not isinstance(a, _Form) and not isinstance(b, _Form):
            raise UnsupportedError(f"{label} ({what}) on constants only is not modelled")
        if divide and not isinstance(a, _Form):
            raise UnsupportedError(f"{label} (div): division by an input-dependent value is not modelled")
        if divide and node.kwargs.get("rounding_mode") is not None:
            raise UnsupportedError(f"{label} (div): rounding_mode={node.kwargs['rounding_mode']!r} is not modelled")
        x, c = (a, b) if isinstance(a, _Form) else (b, a)
        _check_constant(c, x.shape, label)
        if divide and bool((c == 0).any()):
            raise UnsupportedError(f"{label} (div): division by a constant with zero entries")
        magnitude = c.abs()
        if divide:
            return self._affine(x, label, lambda h: h / c, None, lambda h: h / magnitude, lambda h: h / magnitude, CONSTANT_TERMS)
        return self._affine(x, label, lambda h: h * c, None, lambda h: h * magnitude, lambda h: h * magnitude, CONSTANT_TERMS)

    def _concat(self, node: fx.Node, label: str) -> _Form:
        items = self._arg(node, 0, "tensors")
        dim = node.kwargs.get("dim", node.kwargs.get("axis", node.args[1] if len(node.args) > 1 else 0))
        if not isinstance(items, (list, tuple)) or not items:
            raise UnsupportedError(f"{label}: expects a list of tensors")
        forms = [self._value(i, label) for i in items]
        if any(not isinstance(f, _Form) for f in forms):
            raise UnsupportedError(f"{label}: concatenating a constant tensor is not modelled")
        ranks = {len(f.shape) for f in forms}
        if len(ranks) != 1:
            raise UnsupportedError(f"{label}: operands of different ranks")
        (axis,) = _dims(dim, ranks.pop() + 1, label)
        try:
            form = _cat(forms, axis)
        except RuntimeError as exc:
            raise UnsupportedError(f"{label}: {exc}") from exc
        op = _Op(label, "move", tuple(f.op for f in forms), full=lambda *hs: torch.cat(hs, dim=axis))
        return self.tr.record(op, form)

    def _reduce(self, node: fx.Node, kind: str, label: str) -> _Form:
        x = self._form(node, 0, "input", label)
        self._require_none(node, "dtype", label)
        dim = self._arg(node, 1, "dim", None)
        keepdim = self._arg(node, 2, "keepdim", False)
        if dim is None:
            raise UnsupportedError(f"{label} without dim reduces over the batch dimension too: not a per-example function")
        if not isinstance(keepdim, bool):
            raise UnsupportedError(f"{label}: keepdim must be a constant")
        dims = _dims(dim, len(x.shape) + 1, label)
        count = _numel(tuple(x.shape[d - 1] for d in set(dims)))

        def fn(h: Tensor) -> Tensor:
            return h.mean(dim=dims, keepdim=keepdim) if kind == "mean" else h.sum(dim=dims, keepdim=keepdim)

        return self._affine(x, label, fn, None, fn, fn, count + 1 if kind == "mean" else count)

    def _shape_op(self, node: fx.Node, label: str) -> _Form:
        target, method = node.target, node.op == "call_method"
        is_ = (lambda name, fn: target == name if method else target is fn)  # noqa: E731
        if is_("flatten", torch.flatten):
            x = self._form(node, 0, "input", label)
            start, end = self._arg(node, 1, "start_dim", 0), self._arg(node, 2, "end_dim", -1)
            if not (isinstance(start, int) and isinstance(end, int)):
                raise UnsupportedError(f"{label}: flatten dimensions must be constants")
            new = _flatten_shape(x.shape, int(start), int(end), label)
            return self._move(x, label, lambda h: h.reshape(h.shape[0], *new))
        if (method and target in ("view", "reshape")) or (not method and target is torch.reshape):
            x = self._form(node, 0, "input", label)
            new = _view_shape(node, x.shape, self.batch_nodes, label)
            return self._move(x, label, lambda h: h.reshape(h.shape[0], *new))
        if (method and target in ("contiguous", "clone")) or (not method and target is torch.clone):
            self._require_none(node, "memory_format", label)
            return self._move(self._form(node, 0, "input", label), label, lambda h: h)
        if is_("permute", torch.permute):
            x = self._form(node, 0, "input", label)
            spec = list(node.args[1:]) or list(node.kwargs.get("dims", ()))
            if len(spec) == 1 and isinstance(spec[0], (tuple, list)):
                spec = list(spec[0])
            nd = len(x.shape) + 1
            if len(spec) != nd or any(not isinstance(d, int) for d in spec):
                raise UnsupportedError(f"{label}: permutation {tuple(spec)} is not constant or has the wrong length")
            perm = tuple(d + nd if d < 0 else d for d in spec)
            if sorted(perm) != list(range(nd)) or perm[0] != 0:
                raise UnsupportedError(f"{label}: permutation {tuple(spec)} moves the batch dimension or is not a permutation")
            return self._move(x, label, lambda h: h.permute(*perm))
        if is_("transpose", torch.transpose):
            x = self._form(node, 0, "input", label)
            nd = len(x.shape) + 1
            (a,) = _dims(self._arg(node, 1, "dim0"), nd, label)
            (b,) = _dims(self._arg(node, 2, "dim1"), nd, label)
            return self._move(x, label, lambda h: h.transpose(a, b))
        if is_("squeeze", torch.squeeze):
            x = self._form(node, 0, "input", label)
            dim = self._arg(node, 1, "dim", None)
            if dim is None:
                raise UnsupportedError(f"{label} without dim would drop a batch of one: not a per-example function; pass dim")
            dims = _dims(dim, len(x.shape) + 1, label)
            return self._move(x, label, lambda h: h.squeeze(dims))
        if is_("unsqueeze", torch.unsqueeze):
            x = self._form(node, 0, "input", label)
            dim = self._arg(node, 1, "dim")
            nd = len(x.shape) + 2
            if not isinstance(dim, int) or not -nd <= dim < nd or (dim + nd if dim < 0 else dim) == 0:
                raise UnsupportedError(f"{label}: unsqueeze at dim={dim!r} does not keep the batch dimension first")
            at = dim + nd if dim < 0 else dim
            return self._move(x, label, lambda h: h.unsqueeze(at))
        detail = ""
        if target in (torch.max, torch.amax, torch.min, torch.amin, "max", "amax", "min", "amin"):
            detail = " (a max / min over a dimension is not modelled; use MaxPool)"
        elif target in (operator.getitem, "__getitem__"):
            detail = " (indexing that is not a reshape is not modelled)"
        raise UnsupportedError(
            f"{label} is not modelled exactly{detail}; certify models affine ops (Linear, Conv1d/2d, BatchNorm, pooling, "
            "add / sub, mul / div by constants, cat, mean, reshapes) and the activations ReLU, LeakyReLU, Softplus, "
            "Sigmoid, Tanh, GELU, SiLU"
        )


# ----------------------------------------------------------------------------------------- translation


def _abs_matvec_up(w_abs: Tensor, v: Tensor) -> Tensor:
    """|W| v for v >= 0, rounded up (float64 sums of nonnegative terms: relative error <= gamma_n)."""
    n = w_abs.shape[1]
    return (w_abs @ v) * (1 + (n + 2) * 2.0**-52)


def deviation_of(weights: list[Tensor], activations: list[Activation], skips: dict[int, dict[int, Tensor]] | None = None) -> float:
    """Certified sup_x max_j |T_j(x) - N_j(x)| (module docstring): d_{z_k} = |W_k| d_{h_k} + sum_j |S_kj| d_{h_j},
    d_{h_{k+1}} = Lip(sigma_k) d_{z_k} + g_k, d_{h_0} = 0, rounded up; the max over the logits."""
    if all(a.threshold_gap == 0.0 for a in activations):
        return 0.0
    skips = skips or {}
    d_h = [torch.zeros(weights[0].shape[1], dtype=torch.float64)]
    d = d_h[0]
    for k, w in enumerate(weights):
        parts = [(w, d_h[k])] + [(s, d_h[j]) for j, s in skips.get(k, {}).items()]
        d = sum(_abs_matvec_up(m.detach().to("cpu", torch.float64).abs(), v) for m, v in parts)
        if len(parts) > 1:
            d = d * (1 + len(parts) * 2.0**-52)
        if k < len(activations):
            act = activations[k]
            lip = act.lipschitz
            carried = d if lip == 1.0 else d * lip * (1 + 2.0**-52)
            d_h.append(carried + act.threshold_gap * (1 + 2.0**-52))
    return float(d.max()) * (1 + 2.0**-50) if d.numel() else 0.0


def from_module(model: nn.Module, input_shape: tuple[int, ...]) -> AffineNetwork:
    """Canonical float64 form N of `model` (the graph IR, module docstring) for one example of shape
    `input_shape` (no batch dimension), by tracing its forward with torch.fx; raises UnsupportedError naming
    any op it does not model exactly."""
    input_shape = tuple(int(s) for s in input_shape)
    check_torch_integrity(model)  # torch's own classes and functions, not replacements (certify.models.integrity)
    model = translatable(unwrap_checked(model), input_shape)  # a TorchScript module: its graph rebuilt for fx
    check_torch_integrity(model)
    _check_model_state(model)
    if type(model) in _LEAF_TYPES:  # the root is always traced through; a bare supported module is a chain of one
        model = nn.Sequential(model).eval()
    walker = _Walker(model, trace(model), input_shape)
    with torch.no_grad():
        walker.run()
    tr, out = walker.tr, walker.output
    assert out is not None
    tr.close(out)
    tr.ops.append(_Op("output", "move", (out.op,), full=lambda h: h, shape=out.shape))
    deviation = deviation_of(tr.weights, tr.activations, tr.skips)
    semantics = {
        "translation": (
            "torch.fx trace of the model's forward, node by node; every value an affine form over earlier layer outputs "
            "(dense float64 maps), every elementwise activation starting a layer, max pooling exact via ReLU layers"
        ),
        "ops": [op.label + (f" ({op.activation.name})" if op.activation else "") for op in tr.ops[1:-1]],
        "input_shape": list(input_shape),
        "layers": [w.shape[0] for w in tr.weights],
        "skips": {str(k): sorted(row) for k, row in sorted(tr.skips.items())},
        "activations": [a.to_json() for a in tr.activations],
        "head": (
            {"name": walker.head, "note": f"the model's final {walker.head} is dropped: N and every bound are about the "
             f"logits before it (conformance compares the model with {walker.head} of N's logits)"}
            if walker.head else None
        ),
        "softplus": (
            "claims are about the exact softplus log(1 + exp(beta t)) / beta; torch returns t where beta t > threshold, "
            "within `deviation` of it on the logits (certified, for all inputs)"
            if any(a.name == "softplus" for a in tr.activations)
            else "no softplus"
        ),
        "deviation": deviation,
    }
    return AffineNetwork(tr.weights, tr.biases, tr.activations, input_shape, deviation, semantics, tr.ops, tr.skips, walker.head)


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


def apply_head(head: str | None, logits: Tensor) -> Tensor:
    """The dropped head applied to N's logits [N, C] (identity without one)."""
    if head == "softmax":
        return torch.softmax(logits, dim=1)
    if head == "log_softmax":
        return torch.log_softmax(logits, dim=1)
    return logits


def rounding_bound(net: AffineNetwork, points: Tensor, u: float, dtype: torch.dtype) -> Tensor:
    """[m, C] bound on |model output - N's output (through the dropped head, if any)| from rounding, without the
    safety factor or `deviation`: the model's op graph in unit roundoff u (plus float64 for building N) with
    its activations run in `dtype` (the model's), N's float64 evaluation and, with a head, its Lipschitz
    constant and own rounding. points: [m, *input_shape]."""
    return _rounding(net, points, u, dtype)[0]


def _peak(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).abs().amax(dim=1) if t[0].numel() else torch.zeros(t.shape[0], dtype=t.dtype)


def _model_rounding(net: AffineNetwork, points: Tensor, u: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(bound on |model logits - exact logits| [m, C], peak [m]) by propagating the forward rounding bound
    through the model's op graph node by node (affine ops in unit roundoff u, activations by torch's kernels
    in `dtype`); peak is the largest magnitude any op handles (|A| |h| + |c|,
    activation values), so an overflow of the model's dtype is told from a wrong function."""
    v = u + U64
    values: list[tuple[Tensor, Tensor]] = []
    peak = _peak(points)
    for op in net.ops:
        ins = [values[i] for i in op.args]
        if op.kind == "input":
            h, err = points, torch.zeros_like(points)
        elif op.kind == "move":
            h, err = op.full(*[a for a, _ in ins]), op.full(*[e for _, e in ins])
        elif op.kind == "act":
            (z, e), act = ins[0], op.activation
            h = act(z)
            err = act.lipschitz * e + act.evaluation_error(z, dtype)
            peak = torch.maximum(peak, _peak(h))
        elif op.kind == "sum":
            h = sum(c * a for c, (a, _) in zip(op.coefs, ins))
            mag = sum(abs(c) * a.abs() for c, (a, _) in zip(op.coefs, ins))
            err = sum(abs(c) * e for c, (_, e) in zip(op.coefs, ins))
            if op.constant is not None:
                h, mag = h + op.constant, mag + op.constant.abs()
            err = err + _gamma(op.terms, v) * mag
            peak = torch.maximum(peak, _peak(mag))
        else:  # affine
            (a, e), g = ins[0], _gamma(op.terms, v)
            mag = op.abs_full(a.abs())
            peak = torch.maximum(peak, _peak(mag))
            err = op.abs_linear(e) + g * mag
            h = op.full(a)
        values.append((h, err))
    err = values[-1][1]
    return err.reshape(err.shape[0], -1), peak


def _network_rounding(net: AffineNetwork, x: Tensor) -> tuple[Tensor, Tensor]:
    """(N's float64 logits [m, C], bound on their rounding error [m, C]) for flat inputs x [m, input_size]."""
    hs, es = [x], [torch.zeros_like(x)]
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        parts = [(w.to("cpu", torch.float64), k)] + [(s.to("cpu", torch.float64), j) for j, s in net.skips.get(k, {}).items()]
        g = _gamma(sum(m.shape[1] for m, _ in parts) + len(parts), U64)
        z = hs[k] @ parts[0][0].T + b.to("cpu", torch.float64)
        mag = hs[k].abs() @ parts[0][0].abs().T + b.to("cpu", torch.float64).abs()
        e = es[k] @ parts[0][0].abs().T
        for m, j in parts[1:]:
            z = z + hs[j] @ m.T
            mag = mag + hs[j].abs() @ m.abs().T
            e = e + es[j] @ m.abs().T
        e = e + g * mag
        if k < len(net.activations):
            act = net.activations[k]
            h = act(z)
            hs.append(h)
            es.append(act.lipschitz * e + act.evaluation_error(z, torch.float64))
    return z, e


def _rounding(net: AffineNetwork, points: Tensor, u: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(rounding bound [m, C] of the compared outputs, peak [m]) - see `rounding_bound` and `_model_rounding`."""
    with torch.no_grad():
        points = points.to("cpu", torch.float64)
        model_err, peak = _model_rounding(net, points, u, dtype)
        logits, net_err = _network_rounding(net, points.reshape(points.shape[0], -1))
        bound = model_err + net_err
        if net.head is not None:
            y = apply_head(net.head, logits)
            # output j of the head depends on EVERY logit: its change is at most L_head (l-inf) times the
            # largest logit error at the point, carried to every output
            worst = bound.amax(dim=1, keepdim=True)
            bound = HEADS[net.head] * worst + 2 * (y.shape[1] + 8) * (u + U64) * (y.abs() + 1)
    return bound, peak


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
    """Compare the model as the user runs it with N (through its dropped head, if any) at x (one example or a
    batch), up to 64 rows of `data` and 32 seeded far points (module docstring: the tolerance and why)."""
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
        with torch.no_grad():  # clones: a model that modifies its input in place must not move the points
            got = model(seen.clone().to(device)).detach().to("cpu", torch.float64)
            alone = model(seen[:1].clone().to(device)).detach().to("cpu", torch.float64)
    except Exception as exc:  # noqa: BLE001 - the model itself fails: no conformance
        return Conformance(math.inf, math.inf, 0, False, f"the model raised on the conformance points: {type(exc).__name__}: {exc}")
    seen64 = seen.to(torch.float64)
    with torch.no_grad():
        want = apply_head(net.head, net.forward(seen64.reshape(seen64.shape[0], -1).to(net.weights[0].device)).to("cpu"))
    if got.reshape(got.shape[0], -1).shape != want.shape:
        return Conformance(math.inf, math.inf, 0, False, f"the model returns shape {tuple(got.shape)}, N {tuple(want.shape)}")
    got = got.reshape(want.shape)
    bound, peak = _rounding(net, seen64, u, dtype)
    tol = CONFORMANCE_SAFETY * bound + HEADS.get(net.head, 1.0) * net.deviation
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
        f"{'passed' if passed else 'FAILED'}: worst point #{i} ({kinds[i]}, norm {float(seen64[i].norm()):.3g}), "
        f"{'output' if net.head else 'logit'} {j}: |model - N| = {float(diff[i, j]):.3g} vs tolerance {float(tol[i, j]):.3g} "
        f"(unit roundoff {u:.3g} of {dtype}, softplus deviation {net.deviation:.3g}"
        + (f", N's logits through the dropped {net.head}" if net.head else "") + ")"
    )
    if skipped:
        detail += f"; {skipped} far point(s) where the model overflowed in {dtype} were not compared"
    return Conformance(float(tol[i, j]), float(diff[i, j]), int(finite.sum()), passed, detail, worst_ratio)
