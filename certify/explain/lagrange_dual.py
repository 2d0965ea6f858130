"""Lagrange-dual explainer: the minimal decision-flipping perturbation and the sensitivity score at the
decision boundary (Lagrange Dual Explainers proposal, Sec. 3 and Algorithm 1; DESIGN section 4.3).

For input x and class c (the target), with margin m_c = f_c - max_{j != c} f_j and domain box [lo, hi]:

    r* = min ||delta||_p  s.t.  m_c(x + delta) <= 0,  lo <= x + delta <= hi,

solved per class pair m_cj = f_c - f_j and minimised over j (`certify.explain.minimal_perturbation`).
The Lagrangian is L(delta, lam) = ||delta||_p + lam * m_c(x + delta) with lam >= 0. **Sign erratum:** the
proposal writes lam * (max_j f_j - f_c) = -lam * m_c, which has the wrong sign for the constraint
m_c <= 0; the package uses +lam * m_c (DESIGN section 9).

The attribution is the sensitivity score s = lam* * grad m_cj(x + delta*) of the pair j that attains r*,
with lam* the KKT multiplier at the returned witness (lam* = 1 / ||grad m_cj||_q when no domain bound is
active, q dual to p). At a KKT point s = -v for a subgradient v of ||.||_p at delta* (p = 2:
s = -delta*/||delta*||_2): it points from the boundary back towards x, with the sign of grad m_c (DESIGN
section 3's sign rule: the sign of the gradient it generalises).

Per-example diagnostics of `explain()` (float64 unless stated):
  delta [N, ...] (the witness, 0 where none), norm (||delta||_p of that delta, rounded up: a certified upper
  bound on r* when flipped; 0 when m_c(x) <= 0; inf when no witness was found), flipped (bool, m_c < 0 at
  x + delta both for a float64 copy of the model and for the model in its own dtype at x + delta.to(x.dtype)),
  margin (m_c(x + delta), float64), model_margin (the same from the model in its own dtype), input_margin
  (m_c(x)), pair_class (long, the j attaining the minimum, -1 if none), multiplier (lam*), kkt_residual
  (distance from 0 to the KKT set, see `kkt_stationarity`), iterations (long), gradient_evaluations (long),
  status (long; see `STATUS_MESSAGES`: 0 witness, 1 margin <= 0 so r* = 0, 2 no witness within budget, 3 the
  model's dtype and float64 disagree on the decision at x).
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from certify.explain.base import Explainer, Explanation
from certify.explain.minimal_perturbation import STATUS_MESSAGES, check_solver_options, minimal_perturbation
from certify.validation import positive_int
from certify.vocabulary import Domain, norm_json, parse_norm

__all__ = ["LagrangeDual", "STATUS_MESSAGES"]


class LagrangeDual(Explainer):
    """`LagrangeDual(model, p=2, domain=None, max_iter=500, method="fmn", restarts=4, seed=0, **solver_options)`.

    `p` in {1, 2, inf}; `domain` = (lo, hi), scalars or tensors broadcastable to the inputs, or None;
    `method` "fmn" (default, converges in practice) or "gda" (the proposal's Algorithm 1, with
    `step_size`, `dual_step_size` and `multiplier_init` as solver options)."""

    method_name = "lagrange-dual"

    def __init__(
        self,
        model: nn.Module,
        p: float | int | str = 2,
        domain: tuple[object, object] | None = None,
        max_iter: int = 500,
        method: str = "fmn",
        restarts: int = 4,
        seed: int = 0,
        **solver_options: float,
    ) -> None:
        super().__init__(model)
        check_solver_options(method, solver_options)
        positive_int(max_iter, "max_iter")
        positive_int(restarts, "restarts")
        self.p = parse_norm(p)
        self.domain = domain
        self.max_iter = max_iter
        self.method = method
        self.restarts = restarts
        self.seed = seed
        self.solver_options = dict(solver_options)

    def params(self) -> dict[str, Any]:
        return {
            "p": norm_json(self.p),
            "method": self.method,
            "max_iter": self.max_iter,
            "restarts": self.restarts,
            "seed": self.seed,
            "domain": _domain_json(self.domain),
            **self.solver_options,
        }

    def _explain(self, inputs: Tensor, target: Tensor) -> Explanation:
        result = minimal_perturbation(
            self.model,
            inputs,
            target,
            p=self.p,
            domain=self.domain,
            method=self.method,
            max_iter=self.max_iter,
            restarts=self.restarts,
            seed=self.seed,
            **self.solver_options,
        )
        diagnostics = {
            "delta": result.delta,
            "norm": result.norm,
            "flipped": result.flipped,
            "margin": result.margin,
            "model_margin": result.model_margin,
            "input_margin": result.input_margin,
            "pair_class": result.pair_class,
            "multiplier": result.multiplier,
            "kkt_residual": result.kkt_residual,
            "iterations": result.iterations,
            "gradient_evaluations": result.gradient_evaluations,
            "status": result.status,
        }
        attributions = result.sensitivity.to(inputs.dtype)
        return Explanation(attributions, target, self.method_name, self.params(), diagnostics)


def _domain_json(domain: Any) -> Any:
    """The input domain as recorded in certificates (vocabulary.Domain's JSON; None when unbounded or absent)."""
    box = Domain.of(domain)
    return box.to_json() if box is not None and box.bounded else None
