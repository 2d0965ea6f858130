"""TorchScript front door: the graph of a ScriptModule (a `torch.jit.save` file of a scripted or traced
module) rebuilt as a torch.fx GraphModule of the torch modules and functions the verification layer
translates, so a TorchScript model gets the same translation and conformance check as an eager one.

Who uses what. The model the user runs stays the ScriptModule: explanations and the conformance checks
(certify.bounds.network.conformance, the checker's certify.certificates.semantics.check_conformance)
evaluate it. Only the translations call `translatable(model, input_shape)`, which returns an eager model
unchanged and a ScriptModule's rebuilt graph; the conformance check then compares the ScriptModule with the
N translated from that graph, so a rebuilding mistake fails the check instead of reaching a certificate.

How. The module (eval mode) is frozen without numerics-changing passes (`torch.jit.freeze(...,
optimize_numerics=False)`: parameters and attributes become constants, `if self.training` branches fold),
its calls are inlined and in-place ops rewritten out where that is safe (`_jit_pass_remove_mutation`). Each
remaining node maps to exactly one fx node with the same parameters:

    aten::linear -> nn.Linear         aten::conv1d / conv2d / _convolution(_mode) -> nn.Conv1d / 2d
    aten::pad (reflect / replicate / circular) feeding a convolution -> its padding_mode
    aten::batch_norm (eval, running statistics) -> nn.BatchNorm1d / 2d
    aten::max_pool1d / 2d, avg_pool1d / 2d, adaptive_avg_pool1d / 2d -> nn.MaxPool1d / 2d, AvgPool..., Adaptive...
    aten::relu, leaky_relu, softplus (beta, threshold), sigmoid, tanh, gelu (approximate), silu,
    softmax, log_softmax              -> the nn module with the same arguments
    aten::add / sub / rsub / mul / div / neg -> operator.add / sub / mul / truediv / neg (alpha folded as a mul)
    aten::cat -> torch.cat            aten::flatten -> torch.flatten
    aten::view / reshape / permute / transpose / squeeze / unsqueeze / mean / size -> the Tensor method
    aten::__getitem__ -> operator.getitem (of a size)
    aten::dropout (train=False), contiguous, aten::Int, prim::NumToTensor -> the value itself

A tensor constant that is not a layer's parameter becomes a buffer read by get_attr. Input checks (an If
whose only effect is to raise) are removed (`_drop_guards`): where one fails the model raises, so the
conformance check fails there. Anything else (other control flow left after freezing, a second required input or output, in-place ops that alias, dtype casts
(aten::to), any other op) raises UnsupportedError naming the op and saying to pass the eager module or an
ONNX export. Whether the rebuilt graph is modelled exactly is then the translation's decision, as for any
model.

Why not torch.onnx.export and onnx2torch (the ONNX front door). torch 2.13 still exports a ScriptModule,
but only with the deprecated TorchScript-based exporter (`dynamo=False`; the default one needs onnxscript),
and the export loses what the translation needs: ONNX Softplus has no beta or threshold (the export
computes softplus(beta x) / beta with no threshold, so N's deviation bound would be about another
function), GELU becomes an Erf formula and SiLU x * sigmoid(x) (products of two input-dependent values,
refused), and onnx2torch cannot convert the default opset's Constant nodes. TorchScript also needs no
extra package this way.

Input shape. TorchScript files do not record one, so the graph is rebuilt for the per-example shape the
translation is asked about: an all-zero example of that shape runs alongside (it picks BatchNorm1d or 2d by
the rank of its input).
"""
from __future__ import annotations

import operator
import warnings
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.nn.utils import skip_init  # no random initialisation: the user's RNG state is left alone

from certify.errors import UnsupportedError

ALTERNATIVES = "pass the eager module (module:callable) or an ONNX export (net.onnx)"

_ALIASES = {"aten::Int", "prim::NumToTensor", "aten::contiguous"}  # x.size(0) as traced; a no-op
_DROPOUTS = {"aten::dropout", "aten::feature_dropout", "aten::alpha_dropout", "aten::feature_alpha_dropout"}
_METHODS = {
    "aten::view": "view", "aten::reshape": "reshape", "aten::permute": "permute", "aten::transpose": "transpose",
    "aten::squeeze": "squeeze", "aten::unsqueeze": "unsqueeze", "aten::size": "size",
}
_ARITHMETIC = {"aten::mul": operator.mul, "aten::neg": operator.neg, "aten::__getitem__": operator.getitem}


def translatable(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """What the translation should trace for `model` (per-example input shape `input_shape`): the model
    itself, or for a torch.jit.ScriptModule its graph rebuilt as an fx GraphModule (`to_graph_module`).
    Raises UnsupportedError when a ScriptModule's graph cannot be rebuilt."""
    if isinstance(model, torch.jit.ScriptModule):
        return to_graph_module(model, input_shape)
    return model


def _refuse(what: str) -> UnsupportedError:
    return UnsupportedError(f"TorchScript model: {what}; {ALTERNATIVES}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _source_line(node: torch._C.Node) -> str:
    """`file:line` of the Python source a node came from, when TorchScript kept it."""
    text = str(node).splitlines()[0].split("#", 1)
    return f" at {text[1].strip().rsplit('/', 1)[-1]}" if len(text) == 2 and text[1].strip() else ""


class _Pad:
    """An aten::pad waiting for the convolution it feeds: Conv1d / Conv2d with padding_mode reflect /
    replicate / circular compute exactly F.pad(x, pad, mode) followed by the convolution without padding."""

    def __init__(self, source: Any, pad: list[int], mode: str, where: str) -> None:
        self.source, self.pad, self.mode, self.where = source, pad, mode, where


class _Builder:
    """Rebuilds one frozen, inlined TorchScript graph as an fx graph (module docstring), evaluating an
    example input alongside."""

    def __init__(self) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[Any, Any] = {}  # TorchScript value -> fx Node, python value or constant tensor
        self.example: dict[fx.Node, Any] = {}  # fx node -> its value at the example input
        self.names: set[str] = set()

    # -- values -----------------------------------------------------------------------------------------

    def _name(self, hint: str) -> str:
        base = "".join(c if c.isalnum() else "_" for c in hint).strip("_") or "op"
        if base[0].isdigit():
            base = "m_" + base
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def value(self, v: Any) -> Any:
        """The fx argument for TorchScript value v (a constant tensor becomes a buffer read by get_attr)."""
        got = self.env[v]
        if isinstance(got, _Pad):
            raise _refuse(f"op aten::pad{got.where} (mode {got.mode}) is translated only as the padding of the "
                          "convolution that reads it")
        if isinstance(got, Tensor):
            debug = v.debugName().removeprefix("self.")
            name = self._name(debug if debug and not debug[0].isdigit() else "constant")
            self.root.register_buffer(name, got.detach().clone())
            node = self.graph.get_attr(name)
            self.example[node] = getattr(self.root, name)
            self.env[v] = node
            return node
        if isinstance(got, (list, tuple)) and any(isinstance(g, Tensor) for g in got):
            raise _refuse("a list of constant tensors is not translated")
        return got

    def constant(self, v: Any, what: str) -> Any:
        """The python value or tensor of a TorchScript value that must be a constant (a layer parameter)."""
        got = self.env[v]
        if isinstance(got, fx.Node) or (isinstance(got, (list, tuple)) and any(isinstance(g, fx.Node) for g in got)):
            raise _refuse(f"{what} is computed from the input, not a constant")
        return got

    def _ex(self, arg: Any) -> Any:
        return fx.node.map_arg(arg, lambda n: self.example[n])

    def emit(self, op: str, target: Any, args: tuple, hint: str = "") -> fx.Node:
        if op == "call_module":
            name = self._name(hint)
            self.root.add_module(name, target.eval())
            node = self.graph.call_module(name, args)
            self.example[node] = target(*self._ex(args))
        elif op == "call_method":
            node = self.graph.call_method(target, args)
            first, *rest = self._ex(args)
            self.example[node] = getattr(first, target)(*rest)
        else:
            node = self.graph.call_function(target, args)
            self.example[node] = target(*self._ex(args))
        return node

    # -- layers -----------------------------------------------------------------------------------------

    def layer(self, module: nn.Module, x: Any, params: dict[str, Tensor | None], hint: str) -> fx.Node:
        """`module` (built with skip_init) with the TorchScript constants as its parameters / buffers."""
        for name, tensor in params.items():
            if tensor is None:
                continue
            if not isinstance(tensor, Tensor):
                raise _refuse(f"{hint}: parameter {name} is not a tensor constant")
            current = getattr(module, name)
            setattr(module, name, nn.Parameter(tensor.detach().clone(), requires_grad=False)
                    if isinstance(current, nn.Parameter) else tensor.detach().clone())
        return self.emit("call_module", module, (self.value(x),), hint)


def _hint(node: torch._C.Node, index: int = 1) -> str:
    """A module name from the constant a layer reads (`self.fc1.weight` -> fc1), else the op name."""
    inputs = list(node.inputs())
    name = inputs[index].debugName() if len(inputs) > index else ""
    if name.startswith("self.") and "." in name[5:]:
        return name[5:].rsplit(".", 1)[0]
    return node.kind().split("::")[-1]


def _pair(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _conv(b: _Builder, node: torch._C.Node, ins: list) -> fx.Node:
    kind = node.kind()
    weight, bias = b.constant(ins[1], "the convolution weight"), b.constant(ins[2], "the convolution bias")
    if not isinstance(weight, Tensor) or weight.dim() not in (3, 4):
        shape = tuple(getattr(weight, "shape", ()))
        raise _refuse(f"{kind} with a weight of shape {shape}: only Conv1d / Conv2d are translated")
    stride, padding, dilation = (_pair(b.constant(ins[i], f"{kind} argument")) for i in (3, 4, 5))
    if kind == "aten::_convolution":
        transposed, output_padding, groups = (b.constant(ins[i], f"{kind} argument") for i in (6, 7, 8))
        if transposed:
            raise _refuse(f"{kind} is a transposed convolution, which is not translated")
    else:
        groups = b.constant(ins[6], f"{kind} groups")
    cls = nn.Conv1d if weight.dim() == 3 else nn.Conv2d
    out_ch, in_per_group = weight.shape[0], weight.shape[1]
    source, mode = ins[0], "zeros"
    pad = b.env[source]
    if isinstance(pad, _Pad):  # F.pad(x, [left, right, top, bottom], mode) then an unpadded convolution
        d = weight.dim() - 2
        pairs = [pad.pad[2 * i : 2 * i + 2] for i in range(len(pad.pad) // 2)]
        if len(pad.pad) != 2 * d or any(p[0] != p[1] for p in pairs) or any(int(q) != 0 for q in _flat(padding)):
            raise _refuse(f"op aten::pad{pad.where} with {pad.pad} before a convolution with padding {padding} is not "
                          "the padding of one Conv1d / Conv2d")
        source, mode, padding = pad.source, pad.mode, tuple(p[0] for p in reversed(pairs))
    module = skip_init(cls, in_per_group * groups, out_ch, tuple(weight.shape[2:]), stride=stride, padding=padding,
                       dilation=dilation, groups=groups, bias=bias is not None, padding_mode=mode, device=weight.device,
                       dtype=weight.dtype)
    return b.layer(module, source, {"weight": weight, "bias": bias}, _hint(node))


def _flat(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _pad(b: _Builder, node: torch._C.Node, ins: list) -> _Pad:
    pad, mode, value = (b.constant(ins[i], "aten::pad argument") for i in (1, 2, 3))
    if mode not in ("reflect", "replicate", "circular") or value is not None:
        raise _refuse(f"op aten::pad{_source_line(node)} with mode {mode!r} is not translated")
    if isinstance(b.env[ins[0]], _Pad):
        raise _refuse(f"op aten::pad{_source_line(node)} of a padded value is not translated")
    return _Pad(ins[0], list(pad), mode, _source_line(node))


def _linear(b: _Builder, node: torch._C.Node, ins: list) -> fx.Node:
    weight, bias = b.constant(ins[1], "the linear weight"), b.constant(ins[2], "the linear bias")
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise _refuse("aten::linear with a weight that is not a matrix")
    module = skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    return b.layer(module, ins[0], {"weight": weight, "bias": bias}, _hint(node))


def _batch_norm(b: _Builder, node: torch._C.Node, ins: list) -> fx.Node:
    weight, bias, mean, var = (b.constant(ins[i], "a batch norm parameter") for i in (1, 2, 3, 4))
    training, momentum, eps = (b.constant(ins[i], "a batch norm argument") for i in (5, 6, 7))
    if training or mean is None or var is None:
        raise _refuse("aten::batch_norm normalises by batch statistics (training mode or no running statistics)")
    x = b.value(ins[0])
    rank = b.example[x].dim() if isinstance(x, fx.Node) else 0
    if rank not in (2, 3, 4):
        raise _refuse(f"aten::batch_norm on a rank-{rank} tensor: only BatchNorm1d / 2d are translated")
    cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    module = cls(mean.shape[0], eps=eps, momentum=momentum, affine=weight is not None, device=mean.device, dtype=mean.dtype)
    return b.layer(module, ins[0], {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var},
                   _hint(node, 3))


def _pool(b: _Builder, node: torch._C.Node, ins: list) -> fx.Node:
    kind = node.kind()
    c = [b.constant(v, f"{kind} argument") for v in ins[1:]]
    two = kind.endswith("2d")
    if kind.startswith("aten::max_pool"):
        kernel, stride, padding, dilation, ceil_mode = c[:5]
        module = (nn.MaxPool2d if two else nn.MaxPool1d)(_pair(kernel), _pair(stride) or None, _pair(padding),
                                                         _pair(dilation), ceil_mode=ceil_mode)
    elif kind.startswith("aten::avg_pool"):
        kernel, stride, padding, ceil_mode, count_include_pad = c[:5]
        extra = {"divisor_override": c[5]} if two else {}
        module = (nn.AvgPool2d if two else nn.AvgPool1d)(_pair(kernel), _pair(stride) or None, _pair(padding),
                                                         ceil_mode=ceil_mode, count_include_pad=count_include_pad, **extra)
    else:
        module = (nn.AdaptiveAvgPool2d if two else nn.AdaptiveAvgPool1d)(_pair(c[0]))
    return b.emit("call_module", module, (b.value(ins[0]),), kind.split("::")[-1])


def _activation(b: _Builder, node: torch._C.Node, ins: list) -> fx.Node:
    kind = node.kind()
    c = [b.constant(v, f"{kind} argument") for v in ins[1:]]
    if kind == "aten::leaky_relu":
        module: nn.Module = nn.LeakyReLU(c[0])
    elif kind == "aten::softplus":
        module = nn.Softplus(beta=c[0], threshold=c[1])
    elif kind == "aten::gelu":
        module = nn.GELU(approximate=c[0] if c else "none")
    elif kind in ("aten::softmax", "aten::log_softmax"):
        if len(c) > 1 and c[1] is not None:
            raise _refuse(f"{kind} with a dtype argument (a cast) is not translated")
        module = (nn.Softmax if kind == "aten::softmax" else nn.LogSoftmax)(dim=c[0])
    else:
        module = {"aten::relu": nn.ReLU, "aten::sigmoid": nn.Sigmoid, "aten::tanh": nn.Tanh, "aten::silu": nn.SiLU}[kind]()
    return b.emit("call_module", module, (b.value(ins[0]),), kind.split("::")[-1])


def _add_sub(b: _Builder, node: torch._C.Node, ins: list) -> fx.Node:
    kind = node.kind()
    a, c = b.value(ins[0]), b.value(ins[1])
    alpha = b.constant(ins[2], f"{kind} alpha") if len(ins) > 2 else 1
    if kind == "aten::div":
        if len(ins) > 2 and b.constant(ins[2], "aten::div rounding mode") is not None:
            raise _refuse("aten::div with a rounding mode is not translated")
        return b.emit("call_function", operator.truediv, (a, c))
    if kind == "aten::rsub":  # other - alpha * self
        a, c = c, a
    if alpha != 1:  # self + alpha * other, self - alpha * other
        c = b.emit("call_function", operator.mul, (c, alpha))
    return b.emit("call_function", operator.add if kind == "aten::add" else operator.sub, (a, c))


_LAYERS: dict[str, Callable[[_Builder, torch._C.Node, list], Any]] = {
    "aten::linear": _linear,
    "aten::conv1d": _conv, "aten::conv2d": _conv, "aten::_convolution": _conv, "aten::_convolution_mode": _conv,
    "aten::pad": _pad,
    "aten::batch_norm": _batch_norm,
    **{f"aten::{p}": _pool for p in ("max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
                                     "adaptive_avg_pool1d", "adaptive_avg_pool2d")},
    **{f"aten::{a}": _activation for a in ("relu", "leaky_relu", "softplus", "sigmoid", "tanh", "gelu", "silu",
                                           "softmax", "log_softmax")},
    "aten::add": _add_sub, "aten::sub": _add_sub, "aten::rsub": _add_sub, "aten::div": _add_sub,
}


def _node(b: _Builder, node: torch._C.Node) -> None:
    kind = node.kind()
    ins, outs = list(node.inputs()), list(node.outputs())
    if kind == "prim::Constant":
        b.env[outs[0]] = outs[0].toIValue()
    elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
        items = [b.value(v) for v in ins]
        b.env[outs[0]] = items if kind == "prim::ListConstruct" else tuple(items)
    elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
        seq = b.value(ins[0])
        for i, out in enumerate(outs):
            b.env[out] = seq[i] if isinstance(seq, (list, tuple)) else b.emit("call_function", operator.getitem, (seq, i))
    elif kind in _ALIASES:
        b.env[outs[0]] = b.value(ins[0])
    elif kind in _DROPOUTS:
        if b.constant(ins[2], f"{kind} train flag"):
            raise _refuse(f"{kind} in training mode changes the function at random")
        b.env[outs[0]] = b.value(ins[0])
    elif kind in _LAYERS:
        b.env[outs[0]] = _LAYERS[kind](b, node, ins)
    elif kind in _METHODS:
        b.env[outs[0]] = b.emit("call_method", _METHODS[kind], tuple(b.value(v) for v in ins))
    elif kind in _ARITHMETIC:
        b.env[outs[0]] = b.emit("call_function", _ARITHMETIC[kind], tuple(b.value(v) for v in ins))
    elif kind == "aten::flatten":
        b.env[outs[0]] = b.emit("call_function", torch.flatten, tuple(b.value(v) for v in ins))
    elif kind == "aten::cat":
        b.env[outs[0]] = b.emit("call_function", torch.cat, (b.value(ins[0]), b.constant(ins[1], "aten::cat dim")))
    elif kind == "aten::mean":
        if len(ins) < 4 or b.constant(ins[3], "aten::mean dtype") is not None:
            raise _refuse("aten::mean over all dimensions or with a dtype (a cast) is not translated")
        b.env[outs[0]] = b.emit("call_method", "mean", (b.value(ins[0]), b.constant(ins[1], "aten::mean dims"),
                                                        b.constant(ins[2], "aten::mean keepdim")))
    elif kind.endswith("_") and not kind.endswith("__"):
        raise _refuse(f"in-place op {kind}{_source_line(node)} on a value that is used elsewhere is not translated")
    else:
        raise _refuse(f"op {kind}{_source_line(node)} is not translated")


def _example(model: nn.Module, input_shape: tuple[int, ...]) -> Tensor:
    """Zeros [1, *input_shape] in the dtype and on the device of the module's first floating-point
    parameter or buffer (float32 on the CPU without one)."""
    first = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    if first is None:
        return torch.zeros(1, *input_shape)
    return torch.zeros(1, *input_shape, dtype=first.dtype, device=first.device)


def _drop_guards(graph: torch._C.Graph) -> int:
    """Remove the input checks left after freezing (e.g. BatchNorm2d's `if input.dim() != 4: raise`): an
    If with no outputs, one empty branch and one that raises. Where the check passes the model computes
    the rest of the graph; where it fails the model raises, and the conformance check, which runs the
    model, fails. Returns how many were removed."""
    guards = [
        node for node in graph.nodes()
        if node.kind() == "prim::If" and not list(node.outputs())
        and any(not list(block.nodes()) for block in node.blocks())
        and any(n.kind() == "prim::RaiseException" for block in node.blocks() for n in block.nodes())
    ]
    for node in guards:
        node.destroy()
    return len(guards)


def to_graph_module(model: torch.jit.ScriptModule, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """The ScriptModule's forward as an eval-mode fx GraphModule (module docstring), for per-example
    inputs of shape `input_shape`. The GraphModule records `certify_source` ({"format": "torchscript",
    "ops": the TorchScript ops, "guards": input checks removed}). Raises UnsupportedError naming what is not
    translated."""
    if model.training:
        raise UnsupportedError("the TorchScript module is in training mode (dropout / batch statistics change the "
                               "function); call model.eval() first")
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript; the user's file is TorchScript all the same
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.", category=DeprecationWarning)
            frozen = torch.jit.freeze(model, optimize_numerics=False)
    except Exception as exc:  # noqa: BLE001 - freezing fails on modules TorchScript itself cannot freeze
        raise _refuse(f"torch.jit.freeze failed ({_first_line(exc)})") from exc
    graph = frozen.graph.copy()
    torch._C._jit_pass_inline(graph)
    torch._C._jit_pass_remove_mutation(graph)
    torch._C._jit_pass_dce(graph)
    inputs = list(graph.inputs())[1:]  # the first is the module itself
    # the schema through _c: reading model.forward caches it in the instance __dict__ (and changes nothing else)
    arguments = model._c._get_method("forward").schema.arguments[1:]
    required = [i for i, a in zip(inputs, arguments) if not a.has_default_value()]
    if len(required) != 1 or inputs[0] is not required[0] or inputs[0].type().kind() != "TensorType":
        raise _refuse(f"its forward takes {len(required)} required inputs ({', '.join(str(i.type()) for i in required)}); "
                      "certify models one input tensor")
    guards = _drop_guards(graph)
    torch._C._jit_pass_dce(graph)  # the guards' conditions
    for node in graph.nodes():  # named before any op inside or before it
        if node.kind() in ("prim::If", "prim::Loop"):
            raise _refuse(f"{node.kind()}{_source_line(node)}: control flow left after freezing (it depends on the "
                          "input) is not translated")
    b = _Builder()
    x = b.graph.placeholder("x")
    b.example[x] = _example(model, tuple(int(s) for s in input_shape))
    b.env[inputs[0]] = x
    for value, argument in zip(inputs[1:], arguments[1:]):  # optional arguments keep their defaults
        b.env[value] = argument.default_value
    kinds = set()
    for node in graph.nodes():
        kinds.add(node.kind())
        try:
            _node(b, node)
        except UnsupportedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the example evaluation or an argument pattern not expected
            raise _refuse(f"op {node.kind()}{_source_line(node)} could not be rebuilt ({_first_line(exc)})") from exc
    outputs = list(graph.outputs())
    if len(outputs) != 1 or not isinstance(b.env.get(outputs[0]), fx.Node):
        raise _refuse("its forward does not return one tensor computed from the input; certify models one output "
                      "(the logits)")
    b.graph.output(b.env[outputs[0]])
    module = fx.GraphModule(b.root, b.graph, class_name="TorchScriptGraph").eval()
    module.certify_source = {"format": "torchscript", "ops": sorted(kinds), "guards": guards}  # type: ignore[assignment]
    return module
