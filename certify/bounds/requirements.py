"""What a bound method requires of the network, as refusals that name the reason: methods written for a
chain of layers (LipSDP, the curvature bounds, alpha-CROWN, branch and bound) refuse a graph with skip
terms, naming the first skip; methods written for ReLU (the LP, alpha-CROWN, the checkable relaxation
claims) refuse other activations, naming the layer and the activation.

`*_refusal` returns the reason (None when the requirement holds), for methods that return a refused
`BoundResult`; `require_*` raises UnsupportedError with it."""
from __future__ import annotations

from certify.bounds.network import AffineNetwork
from certify.errors import UnsupportedError


def chain_refusal(net: AffineNetwork, method: str) -> str | None:
    """Why `method`, implemented for chains, cannot run on this network (its first skip), or None."""
    skips = [(k, j) for k in sorted(net.skips) for j in sorted(net.skips[k])]
    if not skips:
        return None
    k, j = skips[0]
    source = "the input h_0" if j == 0 else f"h_{j}, the output of layer {j - 1}"
    more = f" (and {len(skips) - 1} more skip term{'s' if len(skips) > 2 else ''})" if len(skips) > 1 else ""
    return (f"{method} is implemented for chains of layers; this network has a skip connection into layer {k} "
            f"(z_{k} reads {source}){more}, e.g. a residual add, a concatenation or a max-pool tournament")


DISPLAY = {"relu": "ReLU", "leaky_relu": "leaky ReLU", "gelu": "GELU", "gelu_tanh": "GELU (tanh approximation)",
           "silu": "SiLU"}


def _display(name: str) -> str:
    return DISPLAY.get(name, name)


def activation_refusal(net: AffineNetwork, method: str, allowed: tuple[str, ...]) -> str | None:
    """Why `method`, implemented for the activations `allowed`, cannot run on this network, or None."""
    for k, act in enumerate(net.activations):
        if act.name not in allowed:
            return (f"{method} handles {' and '.join(map(_display, allowed))} activations only; hidden layer {k} of "
                    f"this network has {_display(act.name)}")
    return None


def require_chain(net: AffineNetwork, method: str) -> None:
    reason = chain_refusal(net, method)
    if reason is not None:
        raise UnsupportedError(reason)


def require_relu(net: AffineNetwork, method: str) -> None:
    reason = activation_refusal(net, method, ("relu",))
    if reason is not None:
        raise UnsupportedError(reason)
