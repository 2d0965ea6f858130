"""Issue 15's demo step: which parts of the input does a prediction need? (written to importance.json and
importance.png; certify.reports.importance).

On the composite-digit task (2x2 mosaics of digits, "is a 0 present?", the true support known; zoo model
`composite-relu-cnn`):
* h-Shap (leaves of 4x4 pixels, the training mean image as the reference): support precision and recall at the
  tile level against the true tiles, model calls per image, and one h-Shap certificate re-checked;
* SHAP-XRT of each quadrant with C empty (the sampler: each quadrant from its own training image): rejection
  rates at alpha 0.05 for the quadrants holding the digit and for the others, and two importance-test
  certificates re-checked (every p-value recomputed from its seed).
SKIT (testing by betting) on the synthetic model of Teneggi & Sulam (Z2 null) and on semantic concepts of the zoo
model `digits-softplus-mlp` (a permuted control is the null). Certified sufficient subsets (VeriX-style greedy,
one CROWN call per step) on digits test images for three attribution orders, each subset's property certificate
re-checked.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from certify.attacks.sufficient import sufficient_subset
from certify.bounds.network import from_module
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.issuers.importance import importance_certificate
from certify.certificates.issuers.property import sufficient_subset_certificate
from certify.explain import Gradient
from certify.explain.concepts import class_probability, concept_directions, digit_predicates, hidden_representation
from certify.explain.hshap import HShap
from certify.explain.moreaugrad import MoreauGrad
from certify.explain.shap_xrt import MarginalSampler, region_labels
from certify.explain.skit import skit, synthetic_concepts
from certify.models import zoo
from certify.models.composite import tile_scores
from certify.reports.importance import importance_figure

ALPHA = 0.05
SUPPORT_DELTA = 0.1  # a tile is in h-Shap's support when its score exceeds this fraction of f(x) - f(ref)


def _hshap(model, data, positives: torch.Tensor, out_dir: Path) -> tuple[dict[str, Any], torch.Tensor]:
    x, truth = data.x_test[positives], data.support_test[positives]
    reference = data.x_train.mean(0, keepdim=True)
    explanation = HShap(model, min_size=4, reference=reference).explain(x, target=1)
    gap = explanation.diagnostics["f_x"] - explanation.diagnostics["f_ref"]
    found = tile_scores(explanation.attributions.float(), data.grid) > SUPPORT_DELTA * gap.view(-1, 1, 1)
    tp = float((found & truth).sum())
    (cert,) = certify_explanations(HShap(model, min_size=4, reference=reference), x[:1], target=1,
                                   model_spec="composite-relu-cnn")
    path = out_dir / "certificates" / "h-shap-composite-0.json"
    cert.write(path)
    report = verify_certificate(cert, model, path.parent)
    return {
        "images": int(x.shape[0]), "precision": tp / max(1.0, float(found.sum())), "recall": tp / float(truth.sum()),
        "calls_mean": float(explanation.diagnostics["calls"].double().mean()),
        "certificate": {"file": f"certificates/{path.name}", "verified": report.valid,
                        "claims": [[c.id, c.status, c.detail] for c in report.checks]},
    }, explanation.attributions


def _xrt(model, data, positives: torch.Tensor, out_dir: Path, k: int, m: int) -> dict[str, Any]:
    """One importance-test certificate per image (each quadrant tested with C empty), written and re-checked;
    the rejection rates are those of the certificates' decisions."""
    x = data.x_test[positives]
    labels = region_labels("quadrants", tuple(x.shape[1:]))
    sampler = MarginalSampler(data.x_train[:512], "product", labels)
    quadrants = [torch.nonzero(labels == r).flatten().tolist() for r in range(4)]
    truth = data.support_test[positives].flatten(1)
    p, verified = [], 0
    for i in range(x.shape[0]):
        path = out_dir / "certificates" / f"xrt-composite-{i}.json"
        cert = importance_certificate(
            model, x[i], quadrants, [[]] * 4, sampler=sampler, reference=("digits-composite", "train"),
            names=[f"quadrant-{r}" for r in range(4)], k=k, m=m, alpha=ALPHA, target=1, seed=i,
            model_spec="composite-relu-cnn", data=f"digits-composite test[{int(positives[i])}]", out=path)
        cert.write(path)
        verified += verify_certificate(cert, model, path.parent).valid  # every p recomputed by the checker
        p.append([c.value for c in cert.claims])
    rejected = torch.tensor(p) <= ALPHA
    return {
        "images": int(x.shape[0]), "K": k, "M": m, "alpha": ALPHA,
        "rate_target": float(rejected[truth].double().mean()), "rate_other": float(rejected[~truth].double().mean()),
        "target_tiles": int(truth.sum()), "other_tiles": int((~truth).sum()), "p": p, "truth": truth.tolist(),
        "certificates": {"files": "certificates/xrt-composite-*.json", "verified": verified, "written": int(x.shape[0])},
    }


def _skit(quick: bool) -> dict[str, Any]:
    reps, steps = (20, 200) if quick else (50, 400)
    y, z = synthetic_concepts(2 * steps, beta=(1.0, 0.0, 1.0), reps=reps, seed=11)
    res = skit(np.concatenate([y] * 3), np.concatenate([z[..., j] for j in range(3)]), ALPHA, tau_max=steps)
    rows = []
    for j in range(3):
        part = slice(j * reps, (j + 1) * reps)
        times = res.rejection_time[part][res.rejected[part]]
        rows.append(["synthetic", f"Z{j + 1}", "yes" if j == 1 else "no", float(res.rejected[part].mean()),
                     float(np.median(times)) if times.size else None])
    model, data = zoo.load("digits-softplus-mlp")
    images = torch.cat([data.x_train, data.x_test])
    h = hidden_representation(model, images)
    names = ["loop", "centre_column"]
    bank = concept_directions(h, digit_predicates(images, names), method="ridge")
    scores = bank.scores(h)
    yhat = class_probability(model, h, 0).numpy().astype(np.float64)
    rng = np.random.default_rng(1000)
    idx = rng.integers(0, images.shape[0], size=(reps, 2 * steps))
    other = rng.integers(0, images.shape[0], size=(reps, 2 * steps))
    tags = names + ["permuted control (loop)"]
    zs = [scores[idx, 0], scores[idx, 1], scores[other, 0]]
    res = skit(np.concatenate([yhat[idx]] * 3), np.concatenate(zs), ALPHA, tau_max=steps)
    for k, tag in enumerate(tags):
        part = slice(k * reps, (k + 1) * reps)
        times = res.rejection_time[part][res.rejected[part]]
        rows.append(["digits-softplus-mlp, P(class 0)", tag, "yes" if k == 2 else "?", float(res.rejected[part].mean()),
                     float(np.median(times)) if times.size else None])
    return {"reps": reps, "steps": steps, "alpha": ALPHA, "rows": rows}


def _sufficient(out_dir: Path, images: int) -> dict[str, Any]:
    model, data = zoo.load("digits-relu-mlp")
    x = data.x_test[:images]
    shape = tuple(data.input_shape)
    net = from_module(model, shape)
    target = model(x).argmax(dim=1)
    domain = (torch.zeros(x[0].numel(), dtype=torch.float64), torch.ones(x[0].numel(), dtype=torch.float64))
    orders = {
        "gradient": Gradient(model).attribute(x, target=target),
        "moreaugrad": MoreauGrad(model, rho=0.1, tol=1e-5).attribute(x, target=target),
        "random": torch.rand(x.shape[0], x[0].numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64),
    }
    rows = []
    for order, scores in orders.items():
        scores = scores.detach().flatten(1).abs()
        sizes, verified = [], 0
        for i in range(x.shape[0]):
            subset = sufficient_subset(net, x[i], int(target[i]), scores[i], 0.1, domain)
            sizes.append(subset.size)
            if subset.property is not None:
                path = out_dir / "certificates" / f"sufficient-{order}-{i}.json"
                cert, problems = sufficient_subset_certificate(model, subset, shape, "crown", "digits-relu-mlp", path)
                cert.write(path)
                verified += verify_certificate(cert, model, path.parent).valid and cert.answer == "holds" and not problems
        rows.append([order, statistics.median(sizes), f"{verified}/{x.shape[0]}"])
    return {"images": int(x.shape[0]), "eps": 0.1, "features": int(x[0].numel()), "rows": rows}


def importance_step(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Run the step (module docstring); certificates under out_dir/certificates, the figure importance.png."""
    (out_dir / "certificates").mkdir(parents=True, exist_ok=True)
    model, data = zoo.load("composite-relu-cnn")
    positives = torch.nonzero(data.y_test == 1).flatten()[: 8 if quick else 32]
    hshap, attributions = _hshap(model, data, positives, out_dir)
    tests = _xrt(model, data, positives, out_dir, k=49 if quick else 99, m=8 if quick else 16)
    shown = min(4, positives.numel())
    importance_figure(data.x_test[positives[:shown]].numpy(), data.support_test[positives[:shown]].numpy(),
                      attributions[:shown].numpy(), tests["p"][:shown], out_dir / "importance.png")
    return {
        "description": ("Which parts of an input does a prediction need? On 2x2 mosaics of handwritten digits labelled "
                        "'a 0 is present' (composite-relu-cnn), the true support is known: the tiles holding a 0. "
                        "h-Shap (Teneggi, Luster & Sulam, TPAMI 2022) explores the image as a hierarchical Shapley game; "
                        "SHAP-XRT (Teneggi et al., TMLR 2023) turns each quadrant's contribution into a randomisation "
                        "test with a p-value the checker recomputes; SKIT (Teneggi & Sulam, NeurIPS 2024) tests semantic "
                        "concepts by betting, anytime-valid; certified sufficient subsets (after VeriX) are sets of "
                        "pixels that, held at x, provably keep the decision."),
        "hshap": hshap,
        "xrt": tests,
        "skit": _skit(quick),
        "sufficient": _sufficient(out_dir, 2 if quick else 8),
        "figure": "importance.png",
        "quick": quick,
    }
