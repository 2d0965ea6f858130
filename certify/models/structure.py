"""The module structure a model must have before anything walks it: no cycle among its submodules (torch's own
eval(), train(), state_dict() and repr() recurse forever on one; a shared submodule, a DAG, is fine)."""
from __future__ import annotations

from torch import nn

from certify.errors import UnsupportedError


def require_acyclic(model: nn.Module) -> None:
    """Raise UnsupportedError naming the path of a submodule reachable from itself (a depth-first walk over the
    modules' own registries, each module expanded once)."""
    done: set[int] = set()
    on_path: dict[int, str] = {}  # the modules being expanded (the current path) -> their path
    stack: list[tuple[nn.Module, str, bool]] = [(model, type(model).__name__, False)]
    while stack:
        module, path, leaving = stack.pop()
        if leaving:
            del on_path[id(module)]
            done.add(id(module))
            continue
        if id(module) in done:
            continue
        on_path[id(module)] = path
        stack.append((module, path, True))  # popped after every child's subtree
        for name, child in module._modules.items():
            if child is None:
                continue
            if id(child) in on_path:
                raise UnsupportedError(
                    f"the model's submodules form a cycle ({path}.{name} is {on_path[id(child)]} again): torch's "
                    "eval(), state_dict() and repr() recurse forever on it; keep the back-reference out of the module "
                    "registry (e.g. set it with object.__setattr__)")
            stack.append((child, f"{path}.{name}", False))
