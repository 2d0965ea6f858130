"""Input validation shared by every explainer and bound: one place that names each problem clearly.

Also the one place for parameter checks (`positive_number`, `nonnegative_number`, `positive_int`: a radius
eps, a sigma, a count), for the autograd context every gradient computation runs in (`autograd_enabled`,
`grad_ready`: explainers work when called inside `torch.inference_mode()` or `torch.no_grad()`), and for
the check that attributions are finite (`check_finite_attributions`). Captum's calling convention: tuple inputs
(`validate_input_tuple`), `additional_forward_args` (`forward_args`), outputs with more than two dimensions and
their index-tuple targets (`evaluate_outputs`, `resolve_output_target`). Input files: `load_array_file` (.npy,
.pt) and `single_example` (one example with or without its batch dimension)."""
from __future__ import annotations

import cmath
import contextlib
import functools
import math
import numbers
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar, Union

import torch
from torch import Tensor, nn

from certify.errors import CertifyError, InvalidInputError, ModelModeError, TargetError, UsageError

TargetLike = Union[None, int, Sequence[int], Tensor]
T = TypeVar("T")


def submodules(model: nn.Module) -> list[nn.Module]:
    """`model` and its submodules, each once (the modules `model.modules()` yields, read from the modules' own
    registries without its chain of generators: the model checks below run on every explainer call)."""
    found, seen, stack = [], set(), [model]
    while stack:
        module = stack.pop()
        if module is not None and module not in seen:  # a registered child may be None; `named_modules`' memo test
            seen.add(module)
            found.append(module)
            stack.extend(module._modules.values())
    return found


def all_finite(values: Tensor) -> bool:
    """Whether every entry of `values` is finite, by one sum on the common path: a NaN or infinite entry makes any
    sum NaN or infinite, so a finite sum proves every entry finite; a non-finite sum (such an entry, or finite
    entries whose sum overflows) is settled by the entry-wise check."""
    return cmath.isfinite(values.detach().sum().item()) or bool(torch.isfinite(values.detach()).all())


def check_eval_mode(model: nn.Module, modules: list[nn.Module] | None = None) -> None:
    """Refuse a model with any submodule in training mode: dropout and batch-norm would make the score
    function random or batch-dependent, and no explanation or bound of it would mean anything. `modules`:
    `submodules(model)` when the caller has it."""
    if any(module.training for module in (submodules(model) if modules is None else modules)):
        training = [name or type(model).__name__ for name, module in model.named_modules() if module.training]
        shown = ", ".join(training[:5]) + (" ..." if len(training) > 5 else "")
        raise ModelModeError(f"model is in training mode (modules: {shown}); call model.eval() first")


def validate_inputs(inputs: object) -> Tensor:
    """Check that `inputs` is a floating tensor with a batch dimension and only finite values."""
    if not isinstance(inputs, Tensor):
        raise InvalidInputError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise InvalidInputError(f"inputs must have a floating dtype, got {inputs.dtype}")
    if inputs.dim() < 2:
        raise InvalidInputError(
            f"inputs must have a batch dimension first, got shape {tuple(inputs.shape)}; use x.unsqueeze(0)"
        )
    if inputs.shape[0] == 0:
        raise InvalidInputError("inputs has an empty batch")
    if not all_finite(inputs):  # one reduction on the common path; the rows only when it fails
        bad = torch.nonzero(~torch.isfinite(inputs).flatten(1).all(dim=1)).flatten().tolist()
        raise InvalidInputError(f"inputs contain NaN or Inf (examples {bad[:10]})")
    return inputs


def validate_input_tuple(inputs: object) -> tuple[Tensor, ...]:
    """`inputs` (one tensor, or a tuple of tensors for a model of several inputs: Captum's convention) as a tuple
    of tensors checked by `validate_inputs`, all with one batch size; InvalidInputError otherwise."""
    if isinstance(inputs, Tensor):
        return (validate_inputs(inputs),)
    if not isinstance(inputs, tuple) or not inputs:
        raise InvalidInputError(f"inputs must be a torch.Tensor or a non-empty tuple of tensors, got {type(inputs).__name__}")
    tensors = tuple(validate_inputs(x) for x in inputs)
    sizes = [x.shape[0] for x in tensors]
    if len(set(sizes)) > 1:
        raise InvalidInputError(f"the input tensors must share their batch size (dimension 0), got sizes {sizes}")
    return tensors


def forward_args(additional_forward_args: object) -> tuple[Any, ...]:
    """Captum's `additional_forward_args` as the tuple of extra model arguments: None -> (), a tuple as it is,
    any other value -> (value,)."""
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def evaluate_logits(model: nn.Module, inputs: Tensor) -> Tensor:
    """Run the model, turning a shape mismatch into an error that names the input shape, and check that
    the output is a [batch, classes] matrix of finite logits."""
    return evaluate_outputs(model, (inputs,))


def evaluate_outputs(model: nn.Module, inputs: tuple[Tensor, ...], args: tuple[Any, ...] = (), matrix: bool = True) -> Tensor:
    """`model(*inputs, *args)`, turning a failure to evaluate into an InvalidInputError that names the input
    shapes, and checking that the output has the batch first and only finite values: a [batch, classes] matrix
    of logits, or with `matrix=False` any [batch, d_1, ..., d_k] (k >= 1) whose entries index-tuple targets
    select."""
    try:
        logits = model(*inputs, *args)
    except CertifyError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own code: torch reports shape mismatches as RuntimeError,
        # arity as TypeError; a user's forward may raise anything else
        shapes = tuple(inputs[0].shape) if len(inputs) == 1 else [tuple(x.shape) for x in inputs]
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise InvalidInputError(
            f"the model cannot evaluate inputs of shape {shapes} and dtype {inputs[0].dtype}: "
            f"{type(exc).__name__}{': ' + reason if reason else ''}"
        ) from exc
    n = inputs[0].shape[0]
    ranks_ok = isinstance(logits, Tensor) and (logits.dim() == 2 or (not matrix and logits.dim() > 2))
    if not ranks_ok or logits.shape[0] != n:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        other = "" if matrix else " (or outputs [batch, d_1, ..., d_k] with index-tuple targets)"
        raise InvalidInputError(f"the model must return logits of shape [batch, classes]{other}; got {shape}")
    if not all_finite(logits):
        raise InvalidInputError("the model returned NaN or Inf logits for these inputs")
    return logits


def resolve_target(target: TargetLike, logits: Tensor) -> Tensor:
    """Turn `target` (None = predicted class, an int, or one class per example) into a long tensor [N]."""
    if target is None:
        return logits.argmax(dim=1)
    return check_target(target, logits.shape[0], logits.shape[1], logits.device)


def resolve_output_target(target: object, outputs: Tensor) -> Tensor:
    """`target` for `outputs` [N, ...] as a long tensor: [N] class indices for outputs [N, C] (`resolve_target`),
    [N, k] index tuples for outputs [N, d_1, ..., d_k] with k >= 2 (Captum's convention: a tuple (i_1, ..., i_k)
    selects output[n, i_1, ..., i_k] of every example; a list of such tuples or a tensor [N, k], one per
    example). TargetError when an index tuple has another length, another count or an index out of range, and
    for None (the predicted class is defined for [N, C] outputs only)."""
    if outputs.dim() == 2:
        return resolve_target(target, outputs)  # type: ignore[arg-type]
    n, dims = outputs.shape[0], tuple(outputs.shape[1:])
    if target is None or isinstance(target, (bool, int)):
        raise TargetError(
            f"the model's outputs have shape {tuple(outputs.shape)}: target must be an index tuple of length "
            f"{len(dims)} (e.g. (c, i, j) selects output[n, c, i, j]) or one such tuple per example, got {target!r}"
        )
    try:
        index = torch.as_tensor(target, device=outputs.device)
    except (TypeError, ValueError) as exc:
        raise TargetError(f"target cannot be read as index tuples: {exc}") from exc
    if index.is_floating_point() or index.dtype == torch.bool:
        raise TargetError(f"target must hold integer indices, got dtype {index.dtype}")
    index = index.long()
    if isinstance(target, tuple) and index.dim() == 1:
        index = index.expand(n, -1)
    if tuple(index.shape) != (n, len(dims)):
        raise TargetError(
            f"target has shape {tuple(index.shape)}; outputs {tuple(outputs.shape)} need one index tuple of length "
            f"{len(dims)} for all examples or one per example ({n} x {len(dims)})"
        )
    bound = torch.tensor(dims, device=outputs.device)
    out_of_range = ((index < 0) | (index >= bound)).any(dim=1)
    if bool(out_of_range.any()):
        bad = index[out_of_range].tolist()
        raise TargetError(f"target index tuples {bad[:5]} out of range for outputs [N, {', '.join(map(str, dims))}]")
    return index


def check_target(target: TargetLike, n: int, num_classes: int, device: torch.device | str | None = None) -> Tensor:
    """`target` (an int, or one class index per example) as a long tensor [n] on `device`; TargetError when
    it is not integral, has another length, or names a class outside [0, num_classes)."""
    if isinstance(target, bool) or target is None:
        raise TargetError("target must be an int, a per-example sequence or tensor of ints, or None")
    if isinstance(target, int):
        if not 0 <= target < num_classes:  # before torch.full, which overflows on an int beyond 64 bits
            raise TargetError(f"target classes {[target] * min(n, 10)} out of range for a model with {num_classes} classes")
        resolved = torch.full((n,), target, dtype=torch.long, device=device)
    else:
        try:
            resolved = torch.as_tensor(target, device=device)
        except (TypeError, ValueError) as exc:
            raise TargetError(f"target cannot be read as class indices: {exc}") from exc
        if resolved.is_floating_point() or resolved.dtype == torch.bool:
            raise TargetError(f"target must hold integer class indices, got dtype {resolved.dtype}")
        resolved = resolved.long().flatten() if resolved.dim() <= 1 else resolved
        if resolved.dim() != 1 or resolved.numel() != n:
            raise TargetError(f"target has {resolved.numel()} entries for a batch of {n} examples")
    lo, hi = torch.aminmax(resolved) if resolved.numel() else (torch.zeros(()), torch.zeros(()))
    if int(lo) < 0 or int(hi) >= num_classes:
        bad = resolved[(resolved < 0) | (resolved >= num_classes)].tolist()
        raise TargetError(f"target classes {bad[:10]} out of range for a model with {num_classes} classes")
    return resolved


def positive_number(value: object, name: str = "eps") -> float:
    """`value` as a float if it is a finite real number > 0 (not a bool); else UsageError naming `name`.
    inf, NaN, 0 and negative values are refused: a radius or scale of inf would turn every bound into inf
    (or NaN) and be written as a certified number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def nonnegative_number(value: object, name: str) -> float:
    """`value` as a float if it is a finite real number >= 0 (not a bool); else UsageError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive_int(value: object, name: str, least: int = 1) -> int:
    """`value` if it is an int >= `least` (not a bool); else UsageError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise UsageError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def autograd_enabled() -> contextlib.AbstractContextManager:
    """Run the block with autograd on, also when the caller is inside `torch.inference_mode()` or
    `torch.no_grad()` (every gradient-based explanation needs it). Inputs created under inference mode must
    still be passed through `grad_ready`. Outside inference mode this is `torch.enable_grad()` itself (no
    generator-based context on every explainer call)."""
    return _outside_inference_mode() if torch.is_inference_mode_enabled() else torch.enable_grad()


@contextlib.contextmanager
def _outside_inference_mode() -> Iterator[None]:
    with torch.inference_mode(False), torch.enable_grad():
        yield


def with_autograd(function: Callable[..., T]) -> Callable[..., T]:
    """Decorator: run `function` under `autograd_enabled()` (for public entry points that differentiate)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with autograd_enabled():
            return function(*args, **kwargs)

    return wrapper


def check_differentiable(model: nn.Module, modules: list[nn.Module] | None = None) -> None:
    """Refuse a model whose parameters or buffers are inference tensors (created under `torch.inference_mode()`):
    autograd cannot differentiate through them (UsageError naming inference_mode). `modules`: `submodules(model)`
    when the caller has it."""
    inference = False
    for module in submodules(model) if modules is None else modules:
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            inference = inference or (tensor is not None and tensor.is_inference())
    if inference:
        frozen = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_inference()]
        if frozen:
            raise UsageError(
                f"the model's parameters {frozen[:3]}{f' (and {len(frozen) - 3} more)' if len(frozen) > 3 else ''} were "
                "created under torch.inference_mode(), so autograd cannot "
                "differentiate through them; create or load the model outside inference_mode (explainers may "
                "themselves be called inside it)"
            )


def check_explainable(model: nn.Module) -> None:
    """What every explainer call checks of the model, in one walk over its modules: `check_eval_mode`, then
    `check_differentiable`."""
    modules = submodules(model)
    check_eval_mode(model, modules)
    check_differentiable(model, modules)


def grad_ready(inputs: Tensor, model: nn.Module | None = None) -> Tensor:
    """`inputs` (any tensor: inputs, targets) usable by autograd: an inference tensor (created under
    `torch.inference_mode()`) is cloned into a normal tensor. With `model`, also `check_differentiable(model)`."""
    if model is not None:
        check_differentiable(model)
    if inputs.is_inference():
        with torch.inference_mode(False):
            return inputs.clone()
    return inputs


def check_finite_attributions(attributions: Tensor | tuple[Tensor, ...], method: str, exempt: Tensor | None = None) -> None:
    """Refuse non-finite attributions (a tensor [N, ...], or one per input tensor): InvalidInputError naming the
    examples. `exempt` [N] (bool) marks rows an explainer already reports as failed (e.g. a diverged solver,
    whose attributions are NaN by design)."""
    parts = attributions if isinstance(attributions, tuple) else (attributions,)
    if all(all_finite(a) for a in parts):  # the common path: one reduction per tensor
        return
    bad = ~torch.stack([torch.isfinite(a.detach()).flatten(1).all(dim=1) for a in parts]).all(dim=0)
    if exempt is not None:
        bad = bad & ~exempt.to(bad.device)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise InvalidInputError(
            f"{method}: non-finite attributions for examples {rows[:10]}{' ...' if len(rows) > 10 else ''}: the "
            "model's logits are finite but its gradient is NaN or Inf at the input or at points the method "
            "evaluates (e.g. sqrt or log at 0, or an overflow); no explanation is returned for such inputs"
        )


def baseline_tensor(inputs: Tensor, baselines: object) -> Tensor:
    """The baseline of path and perturbation methods as a tensor of the inputs' shape, dtype and device: None gives
    zeros, a finite number a constant, a tensor is broadcast to the inputs. InvalidInputError for another type, a
    shape that does not broadcast, or NaN/Inf values."""
    if baselines is None:
        return torch.zeros_like(inputs)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        baseline = torch.full_like(inputs, float(baselines))
    elif isinstance(baselines, Tensor):
        try:
            baseline = torch.broadcast_to(baselines.to(inputs), inputs.shape)
        except RuntimeError as exc:
            raise InvalidInputError(
                f"baselines of shape {tuple(baselines.shape)} do not broadcast to inputs {tuple(inputs.shape)}"
            ) from exc
    else:
        raise InvalidInputError(f"baselines must be a tensor, a number or None, got {type(baselines).__name__}")
    if not all_finite(baseline):
        raise InvalidInputError("baselines contain NaN or Inf")
    return baseline


ARRAY_SUFFIXES = (".npy", ".pt", ".pth")  # the array files `load_array_file` reads


def load_array_file(path: str | Path, what: str = "input") -> Tensor:
    """The array stored in `path` as a tensor of real numbers: a NumPy `.npy` file (read without pickles) or a
    PyTorch `.pt`/`.pth` file holding one tensor (read with `weights_only=True`); integers and booleans become
    float32, floats keep their dtype. InvalidInputError naming `what` and the file for a missing or non-regular
    file, another suffix, unreadable or corrupt content, a pickled object, a dict or list instead of a tensor, or
    a non-real dtype."""
    import numpy as np

    path = Path(path)
    try:
        exists, regular = path.exists(), path.is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise InvalidInputError(f"{what} file {str(path)[:200]}: {exc.strerror}") from None
    if not exists:
        raise InvalidInputError(f"{what} file {path} does not exist")
    if not regular:
        raise InvalidInputError(f"{what} file {path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise InvalidInputError(f"{what} file {path}: unsupported format {suffix or '(no suffix)'!r}; give a .npy file "
                                "or a .pt file holding one tensor (torch.save(x, path))")
    try:
        array = np.load(path, allow_pickle=False) if suffix == ".npy" else torch.load(path, weights_only=True)
    except pickle.UnpicklingError:  # torch's weights-only loader: not a torch.save file, or one holding objects
        raise InvalidInputError(f"cannot read {what} file {path}: not a tensor saved by torch.save (a corrupt file, or "
                                "one holding Python objects, which are never unpickled)") from None
    except Exception as exc:  # noqa: BLE001 - numpy and torch raise many types for a corrupt file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"cannot read {what} file {path} as {suffix}: {reason}") from None
    if isinstance(array, np.ndarray):
        if array.dtype.kind not in "biuf":
            raise InvalidInputError(f"{what} file {path}: expected an array of real numbers, got {array.dtype}")
        array = torch.from_numpy(np.ascontiguousarray(array))
    if not isinstance(array, Tensor):
        raise InvalidInputError(f"{what} file {path}: expected one tensor, got {type(array).__name__}; save the tensor "
                                "itself (torch.save(x, path))")
    if array.is_complex():
        raise InvalidInputError(f"{what} file {path}: expected an array of real numbers, got {array.dtype}")
    return array if array.is_floating_point() else array.to(torch.float32)


def single_example(x: Tensor, shape: Sequence[int] | None, what: str = "input") -> Tensor:
    """One example `x` as a batch [1, *shape], given with or without its batch dimension: `x` of shape `shape`,
    [1, *shape], or any shape holding prod(shape) values (a flat row-major array). With `shape` None (the model
    records none), a 1-D `x` is one flat example and a higher-rank `x` must carry its batch dimension.
    InvalidInputError for an empty array, a batch of more than one example, or a shape that does not fit."""
    if x.numel() == 0:
        raise InvalidInputError(f"the {what} is empty (shape {tuple(x.shape)})")
    if shape is None:
        batch = x.unsqueeze(0) if x.dim() == 1 else x
        if batch.shape[0] != 1:
            raise InvalidInputError(f"the {what} holds a batch of {batch.shape[0]} examples (shape {tuple(x.shape)}); "
                                    "give one example")
        return batch
    shape = tuple(int(s) for s in shape)
    if x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape and x.shape[0] != 1:
        raise InvalidInputError(f"the {what} holds a batch of {x.shape[0]} examples (shape {tuple(x.shape)}); give one "
                                f"example of shape {shape}")
    if x.numel() != math.prod(shape):
        raise InvalidInputError(f"the {what} has shape {tuple(x.shape)} ({x.numel()} values); the model takes one "
                                f"example of shape {shape} ({math.prod(shape)} values), with or without the batch "
                                "dimension")
    return x.reshape(1, *shape)
