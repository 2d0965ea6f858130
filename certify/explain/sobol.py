"""Sobol' indices of a tabular model's class score, through SALib (Herman & Usher, "SALib: An open-source Python
library for sensitivity analysis", JOSS 2017).

For the class score Y = f_c(X) (the logit, or the softmax probability with `score="probability"`) of a random
input X = (X_1, ..., X_D) with independent coordinates, the first-order and total indices of feature i are
(Sobol' 1993; Homma & Saltelli 1996)

    S_i = Var(E[Y | X_i]) / Var(Y),        S_Ti = E[Var(Y | X_~i)] / Var(Y) = 1 - Var(E[Y | X_~i]) / Var(Y),

estimated by Saltelli's pick-freeze design (Saltelli et al., "Variance based sensitivity analysis of model
output", Comput. Phys. Commun. 181, 2010, Table 2): two base matrices A, B of `samples` rows and, for each i, A
with column i taken from B; (D + 2) * samples model evaluations; S_i = mean(f(B) (f(A_B^i) - f(A))) / V and
S_Ti = mean((f(A) - f(A_B^i))^2) / (2 V) (Jansen's estimator), V the variance of f over A and B (SALib's
`analyze.sobol`, with bootstrap confidence half-widths from `resamples` resamples at level `confidence`).

The distribution of X is either
- `domain=(lo, hi)`: uniform on the box (a bounded `Dataset.domain`, or the data's range), A and B from a scrambled
  Sobol' sequence (SALib's `sample.sobol`, seeded; `samples` a power of two); or
- `sample` [M, D]: the rows of A and B drawn uniformly with replacement from the given data (seeded). The
  variance decomposition behind the indices needs independent coordinates. On dependent data A_B^i pairs the
  other coordinates of one row with coordinate i of another: S_Ti still measures the effect of replacing x_i by
  an independent draw, but S_i also picks up x_i's correlation with the other features, and S_i > S_Ti happens
  (it does on the correlated breast-cancer features).

A GLOBAL method: the indices explain how the model's class-c score varies over the whole distribution, not at
one input. Per example, `attribute(inputs, target)` returns the total indices S_T of the example's target class
(None: the class the model predicts for the example): two examples with the same target get the same row, and
the values of an example matter only through its target and its number of features. The model is evaluated once
per call on the design (in chunks of `batch_size` rows), and SALib analyses each distinct target class once.
Unlike the package's other explanations the attributions are UNSIGNED: indices lie in [0, 1] (Monte Carlo
estimates of S_i can fall slightly below 0, Jansen's S_Ti cannot); for independent inputs S_Ti >= S_i, and
sum_i S_i <= 1 with equality for additive functions.
Diagnostics per example: `first_order` [N, D], `total_conf` and `first_order_conf` [N, D], `score_variance` [N].
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certify.errors import InvalidInputError, UnsupportedError, UsageError
from certify.explain.base import Explainer, Explanation
from certify.explain.captum_adapter import import_extra
from certify.validation import positive_int

SCORES = ("logit", "probability")


class SobolIndices(Explainer):
    """`SobolIndices(model, domain=None, sample=None, samples=1024, score="logit", resamples=100, confidence=0.95,
    batch_size=4096, seed=0)`: exactly one of `domain` (a pair (lo, hi) of finite tensors [D] with lo < hi) and `sample`
    (a tensor [M, D], M >= 2) gives the input distribution. Errors: UsageError for bad parameters (both or neither
    distribution, samples not a power of two with `domain`, an empty or unbounded box, an unknown score, confidence outside
    (0, 1)); UnsupportedError for inputs that are not [N, D]; InvalidInputError when D does not match the
    distribution's, or the class score is not finite or constant on the design (indices 0/0)."""

    method_name = "sobol"

    def __init__(
        self,
        model: nn.Module,
        domain: tuple[Tensor, Tensor] | None = None,
        sample: Tensor | None = None,
        samples: int = 1024,
        score: str = "logit",
        resamples: int = 100,
        confidence: float = 0.95,
        batch_size: int = 4096,
        seed: int = 0,
    ) -> None:
        super().__init__(model)
        if (domain is None) == (sample is None):
            raise UsageError("give exactly one input distribution: domain=(lo, hi) or sample=[M, D] data")
        positive_int(samples, "samples", least=2)
        positive_int(resamples, "resamples", least=2)
        positive_int(batch_size, "batch_size")
        positive_int(seed, "seed", least=0)
        if score not in SCORES:
            raise UsageError(f"unknown score {score!r}; choose one of {SCORES}")
        if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0 < confidence < 1:
            raise UsageError(f"confidence must be a float in (0, 1), got {confidence!r}")
        if domain is not None:
            if samples & (samples - 1):
                raise UsageError(f"samples must be a power of two for the Sobol' sequence on a box, got {samples}")
            lo, hi = (torch.as_tensor(b, dtype=torch.float64).flatten() for b in domain)
            if lo.shape != hi.shape or not bool((lo < hi).all()):
                raise UsageError("domain must be a pair (lo, hi) of equal-length vectors with lo < hi in every feature")
            if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()):
                raise UsageError("domain must be a finite box (a side of infinite length has no uniform distribution); "
                                 "pass sample=data rows instead")
            self.box: tuple[Tensor, Tensor] | None = (lo, hi)
            self.sample: Tensor | None = None
        else:
            if not isinstance(sample, Tensor) or sample.dim() != 2 or sample.shape[0] < 2:
                raise UsageError("sample must be a tensor [M, D] of at least two data rows")
            self.box, self.sample = None, sample.detach()
        self.samples, self.score, self.resamples, self.confidence = samples, score, resamples, confidence
        self.batch_size, self.seed = batch_size, seed

    def params(self) -> dict[str, Any]:
        source = {"domain": [b.tolist() for b in self.box]} if self.box is not None else {"sample_rows": self.sample.shape[0]}
        return {**source, "samples": self.samples, "score": self.score, "resamples": self.resamples,
                "confidence": self.confidence, "batch_size": self.batch_size, "seed": self.seed}

    @property
    def num_features(self) -> int:
        return self.box[0].numel() if self.box is not None else self.sample.shape[1]

    def design(self) -> np.ndarray:
        """SALib's Saltelli design [(D + 2) * samples, D], float64: for each base row j, the rows A_j,
        A_B^1_j, ..., A_B^D_j, B_j."""
        d = self.num_features
        if self.box is not None:
            problem = {"num_vars": d, "names": [f"x{i}" for i in range(d)], "bounds": torch.stack(self.box, 1).tolist()}
            return import_extra("SALib.sample.sobol").sample(problem, self.samples, calc_second_order=False, seed=self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        rows = torch.randint(self.sample.shape[0], (2, self.samples), generator=generator)
        data = self.sample.detach().cpu().double()
        a, b = data[rows[0]], data[rows[1]]
        mixed = a.unsqueeze(1).repeat(1, d, 1)  # [samples, D, D]: row i is A with column i from B
        idx = torch.arange(d)
        mixed[:, idx, idx] = b
        return torch.cat([a.unsqueeze(1), mixed, b.unsqueeze(1)], dim=1).reshape(-1, d).numpy()

    def _explain(self, inputs: Tensor, target: Tensor) -> Explanation:
        if inputs.dim() != 2:
            raise UnsupportedError(f"Sobol indices are for tabular models with inputs [N, D]; got {tuple(inputs.shape)}")
        d = self.num_features
        if inputs.shape[1] != d:
            raise InvalidInputError(f"inputs have {inputs.shape[1]} features, the input distribution has {d}")
        analyze = import_extra("SALib.analyze.sobol").analyze
        points = torch.as_tensor(self.design()).to(inputs)
        with torch.no_grad():
            scores = torch.cat([self._scores(chunk) for chunk in points.split(self.batch_size)])
        problem = {"num_vars": d, "names": [f"x{i}" for i in range(d)], "bounds": [[0.0, 1.0]] * d}
        classes = torch.unique(target)
        table = []  # per distinct class: [5, D] = ST, S1, ST_conf, S1_conf, variance (broadcast)
        for c in classes.tolist():
            y = scores[:, c].double().cpu().numpy()
            if not np.isfinite(y).all():
                raise InvalidInputError(f"the model's class-{c} {self.score} is NaN or Inf on the design")
            if np.ptp(y) <= np.finfo(float).eps * max(1.0, float(np.abs(y).max())):
                raise InvalidInputError(f"the class-{c} {self.score} is constant on the design: its Sobol indices are 0/0")
            result = analyze(problem, y, calc_second_order=False, num_resamples=self.resamples,
                             conf_level=self.confidence, print_to_console=False, seed=self.seed)
            variance = np.full(d, np.var(np.r_[y[0 :: d + 2], y[d + 1 :: d + 2]]))
            table.append(np.stack([result["ST"], result["S1"], result["ST_conf"], result["S1_conf"], variance]))
        rows = torch.as_tensor(np.stack(table)).to(inputs)[torch.searchsorted(classes, target)]  # [N, 5, D]
        diagnostics = {"first_order": rows[:, 1], "total_conf": rows[:, 2], "first_order_conf": rows[:, 3],
                       "score_variance": rows[:, 4, 0]}
        return Explanation(rows[:, 0].clone(), target, self.method_name, self.params(), diagnostics)

    def _scores(self, points: Tensor) -> Tensor:
        logits = self.model(points)
        return logits.softmax(dim=1) if self.score == "probability" else logits
