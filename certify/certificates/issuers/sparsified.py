"""Sparsified SmoothGrad's certified top-k (issue 16, item 2): the probabilistic `topk-smoothed` claim.

The stored map a must be an honest Monte Carlo estimate of the smoothed map of N (the certificate's function),
so the issuer recomputes it: the explainer's draws z_t (its seeded generator, [samples, batch, ...] sample-major,
in the inputs' dtype, on the CPU), the points x + sigma z_t formed in that dtype as the explainer formed them, the
exact gradient of N_c there (float64, `exact_gradient`), and the top-l0 indicator of |grad| (ties to the lower
index). The claim is issued only when this recomputation equals a (a float32 model's top-l0 choice can differ
from N's at a near tie: then it is refused, saying in how many draws); its value is c / k with c =
`certify.bounds.topk_smoothing.certified_topk(a, k, eps, sigma, samples, confidence)`. The checker
(`checker.check_topk_smoothed`) redoes both with its own code.
"""
from __future__ import annotations

import torch
from torch import Tensor

from certify.bounds.topk_smoothing import certified_topk
from certify.certificates.claims import issue, refuse
from certify.certificates.issuers.common import ClaimList, Issuing, exact_gradient, unit_row
from certify.metrics.similarity import topk_mask

CONFIDENCE = 0.999
METHOD = "randomized-smoothing-topk"
RESOLUTION = 2.0**-10  # the checker's bound on a point's rounding, as a fraction of sigma (checker.RESOLUTION)


def smoothed_draws(seed: int, samples: int, batch: int, position: int, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The explainer's standard-normal draws of example `position` in a batch of `batch`: [samples, *shape]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((samples, batch, *shape), generator=generator, dtype=dtype)[:, position]


def sparsified_claims(claims: ClaimList, state: Issuing, explainer, x: Tensor, a: Tensor, c: int, k: int, eps: float,
                      batch: int, position: int, refusal: str | None) -> None:
    """Add the `topk-smoothed` claim of example `position` (x [1, ...], its stored map a [...]) of a batch of
    `batch` explained together with `explainer` (a SparsifiedSmoothGrad)."""
    params = {"target": c, "k": k, "eps": eps, "sigma": float(explainer.sigma), "samples": int(explainer.samples),
              "l0": int(round(float(a.sum()))), "confidence": CONFIDENCE}
    if refusal is not None or x.device.type != "cpu":
        claims.add(refuse("topk-smoothed", "topk-smoothed", params, METHOD,
                          refusal or "the draws were made on another device than the CPU the checker redraws them on"))
        return
    shape = tuple(x.shape[1:])
    first = next(iter(explainer.model.parameters()), None)
    z = smoothed_draws(int(explainer.seed), params["samples"], batch, position, shape, x.dtype)
    resolution = float(torch.finfo(x.dtype).eps) * (float(x.abs().max()) + params["sigma"] * float(z.abs().max()))
    points = (x + params["sigma"] * z).reshape(params["samples"], -1).double()  # formed in the inputs' dtype
    why = ("the inputs' dtype is not the model's" if first is not None and first.dtype != x.dtype else
           f"the noise is not resolved in {x.dtype}: a point's rounding (up to {resolution:.3g}) exceeds 2^-10 sigma"
           if not resolution <= RESOLUTION * params["sigma"] else
           "a draw's point overflows the inputs' dtype" if not bool(torch.isfinite(points).all()) else None)
    if why is not None:
        claims.add(refuse("topk-smoothed", "topk-smoothed", params, METHOD, why))
        return
    grads, rounding = exact_gradient(state.net, unit_row(state.num_classes, c), points)
    if not (bool(torch.isfinite(grads).all()) and bool(torch.isfinite(rounding).all())):
        claims.add(refuse("topk-smoothed", "topk-smoothed", params, METHOD, "N's gradient is not finite at a draw"))
        return
    recomputed = topk_mask(grads, params["l0"]).double().mean(dim=0)
    stored = a.detach().reshape(-1).double().cpu()
    differ = int(((recomputed - stored).abs() * params["samples"]).round().sum().item()) // 2
    if differ:
        claims.add(refuse("topk-smoothed", "topk-smoothed", params, METHOD,
                          f"the stored map differs from its recomputation with N in {differ} top-{params['l0']} choices "
                          "(a near tie of gradient magnitudes, rounded otherwise in the model's dtype)"))
        return
    count = int(certified_topk(stored[None], k, eps, params["sigma"], params["samples"], CONFIDENCE)[0])
    claim = issue("topk-smoothed", "topk-smoothed", params, count / k, METHOD,
                  witness={"seed": int(explainer.seed), "batch": batch, "position": position,
                           "dtype": str(x.dtype).replace("torch.", "")}, kind="probabilistic", exact=True)
    claims.add(claim)
