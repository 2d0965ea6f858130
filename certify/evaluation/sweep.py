"""The parameter sweep of the MoreauGrad paper (Sec. 6.2, Figs. 2-3): how far MoreauGrad moves from the simple
gradient, and how sparse it is, as its rho and its sparsity eta grow, against SmoothGrad as its sigma grows.

For each setting, on the first n test inputs and their predicted classes:

* discrepancy = ||a(x) - grad f_c(x)||_2 / ||grad f_c(x)||_2 (relative l2 distance from the simple gradient);
* sparsity = the Gini index of |a(x)| (`certify.metrics.gini_index`);

each a mean with its 95% t-interval and n. Points compared "at matched sparsity" pair each MoreauGrad rho with
the SmoothGrad sigma whose mean Gini index is closest. Two rho values are marked: the paper's rule of thumb
rho = 1 / sqrt(E ||X||_2) (E over the inputs), and the certified-optimal rho of `certify.bounds.local.choose_rho`
(the rho of its grid minimising Corollary 1's certified stability bound at `eps`, per input; MoreauGrad's
rho = "auto"), reported with its spread over the inputs. SmoothGrad's sigma is relative to each input's range
(the registry's preset).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from certify.errors import UsageError
from certify.evaluation.statistics import summary
from certify.explain.base import Explainer
from certify.explain.moreaugrad import AutoRho
from certify.explain.registry import PRESETS, make_explainer, make_preset
from certify.metrics import gini_index
from certify.models.datasets import Dataset
from certify.validation import positive_number


@dataclass(frozen=True)
class SweepConfig:
    """n inputs; the grids of MoreauGrad's rho, its sparsity eta (at the preset's rho) and SmoothGrad's sigma;
    eps: the radius of the certified-optimal rho."""

    n: int = 16
    rhos: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)
    etas: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
    sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    eps: float = 0.5

    def __post_init__(self) -> None:
        if self.n < 1 or not self.rhos or not self.etas or not self.sigmas:
            raise UsageError(f"invalid sweep configuration {self}: need n >= 1 and non-empty grids")
        for value in (*self.rhos, *self.sigmas, self.eps):
            positive_number(value, "a sweep parameter")
        if any(e < 0 for e in self.etas):
            raise UsageError(f"sparsity eta must be >= 0, got {self.etas}")


def _point(explainer: Explainer, x: Tensor, target: Tensor, gradient: Tensor) -> dict[str, Any]:
    a = explainer.attribute(x, target=target).detach().flatten(1).double()
    g = gradient.flatten(1).double()
    return {"discrepancy": summary((a - g).norm(dim=1) / g.norm(dim=1).clamp_min(1e-300)), "gini": summary(gini_index(a))}


def run_sweep(model: nn.Module, data: Dataset, config: SweepConfig) -> dict[str, Any]:
    """The sweep of the module docstring; a JSON-ready dict with rows "rho", "eta", "sigma", the matched pairs
    and the marked rho values."""
    x = data.x_test[: config.n]
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    gradient = make_explainer("gradient", model).attribute(x, target=target).detach()
    rho_preset = PRESETS["moreaugrad"][1]
    thumb = 1.0 / math.sqrt(float(x.flatten(1).double().norm(dim=1).mean()))
    chosen, certified = AutoRho(config.eps)(model, x, target)
    moreau = lambda **p: make_explainer("moreaugrad", model, **{**rho_preset, **p})  # noqa: E731
    rhos = sorted({*config.rhos, thumb})
    rows = {
        "rho": [{"rho": r, **_point(moreau(rho=r), x, target, gradient)} for r in rhos],
        "eta": [{"rho": rho_preset["rho"], "eta": e, **_point(moreau(sparsity=e), x, target, gradient)} for e in config.etas],
        "sigma": [{"sigma": s, **_point(make_preset("smoothgrad", model, sigma=s), x, target, gradient)} for s in config.sigmas],
    }
    matched = []
    for row in rows["rho"]:
        near = min(rows["sigma"], key=lambda s: abs(s["gini"]["mean"] - row["gini"]["mean"]))
        matched.append({"rho": row["rho"], "sigma": near["sigma"], "gini_moreaugrad": row["gini"]["mean"],
                        "gini_smoothgrad": near["gini"]["mean"], "discrepancy_moreaugrad": row["discrepancy"]["mean"],
                        "discrepancy_smoothgrad": near["discrepancy"]["mean"]})
    return {
        "dataset": data.name, "n": int(x.shape[0]), "eps": config.eps,
        "rows": rows, "matched_sparsity": matched,
        "rule_of_thumb_rho": thumb,
        "certified_optimal_rho": {**summary(chosen[certified]), "certified_fraction": float(certified.double().mean()),
                                  "auto": _point(make_explainer("moreaugrad", model, rho="auto", eps=config.eps, tol=rho_preset["tol"]),
                                                 x, target, gradient)},
    }
