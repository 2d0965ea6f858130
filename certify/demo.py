"""`certify demo`: the main job on the embedded default (a softplus MLP trained on scikit-learn's digits).

Explains a handful of test digits with every method, writes a certificate per explanation and re-checks it
with the independent checker, draws the heatmaps, runs the quick theorem suite, and writes a Markdown/HTML
index (images embedded in the HTML) and a JSON summary.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import certify
from certify.certificates.builder import certify_explanations
from certify.certificates.checker import verify_certificate
from certify.certificates.document import decode_array
from certify.certificates.summary import vacuous_reasons
from certify.evaluation import ATTACKABLE, StudyConfig, run_study
from certify.explain.registry import PRESETS, make_preset
from certify.models import model_hash, zoo
from certify.models.training import accuracy
from certify.metrics import gini_index, zero_fraction
from certify.progress import progress_bar
from certify.reports.heatmaps import heatmap_grid
from certify.reports.report import claim_table_rows, write_report


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: method presets (`certify.explain.registry.PRESETS`) with parameter overrides,
    the stability radius of the certificates, and the robustness study's size."""

    model: str = zoo.DEFAULT_MODEL
    examples: int = 8
    methods: tuple[tuple[str, dict[str, Any]], ...] = (
        ("gradient", {}),
        ("integrated-gradients", {"n_steps": 64}),
        ("smoothgrad", {"samples": 256}),
        ("moreaugrad", {"tol": 1e-6}),
        ("sparse-moreaugrad", {"tol": 1e-6}),
        ("lagrange-dual", {}),
    )
    eps: float = 0.1
    study: StudyConfig = StudyConfig(n=32, eps=(0.1, 0.25, 0.5, 1.0), steps=20, restarts=2)
    theorem_checks_quick: bool = True
    inverse: bool = True  # issue 14's step: prox certificates, the learned regulariser, plug-and-play
    inverse_quick: bool = False  # ... with fewer images, one noise level, PGD only

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            examples=4,
            methods=tuple((label, {}) for label in PRESETS),
            study=StudyConfig(n=8, eps=(0.25, 1.0), steps=8, restarts=1),
            inverse_quick=True,
        )


def _params_text(params: dict[str, Any]) -> str:
    """The explainer's parameters for the report, with an input domain named by its box, not its values."""
    shown = dict(params)
    if isinstance(shown.get("domain"), dict):
        sides = [torch.as_tensor(shown["domain"][k] if shown["domain"][k] is not None else sign * float("inf"),
                                 dtype=torch.float64).flatten() for k, sign in (("lower", -1), ("upper", 1))]
        uniform = all(side.numel() > 0 and bool((side == side[0]).all()) for side in sides)
        shown["domain"] = f"[{float(sides[0][0]):g}, {float(sides[1][0]):g}] per feature" if uniform else "per-feature box"
    return json.dumps(shown)


PROX_MODELS = ("lpn-digits-0.1", "mlp-digits-0.1")
PNP_COLUMNS = ["data", "task", "sigma", "prior", "alg.", "step", "PSNR in", "PSNR", "SSIM in", "SSIM",
               "iterations mean/max", "fixed-point residual (max)", "convergence (certified when the theorem applies)"]


def _pnp_row(r: dict[str, Any]) -> list[Any]:
    cert = ("certified: the theorem applies, the iterates converge to a fixed point" if r["assumptions_hold"]
            else f"not certified (fails: {'; '.join(r['failed'])}): residual only")
    if r["converged"] < 1:
        cert += f"; {round((1 - r['converged']) * r['images'])} of {r['images']} images stopped at the iteration cap"
    return [r["dataset"], r["task"], r["sigma"], r["prior"], r["algorithm"], f"{r['parameter_name']} = {r['parameter']:.3g}",
            f"{r['psnr_input']:.2f}", f"{r['psnr']:.2f}",
            f"{r['ssim_input']:.3f}", f"{r['ssim']:.3f}", f"{r['iterations_mean']:.0f}/{r['iterations_max']}",
            f"{r['residual_max']:.2g}", cert]


def inverse_step(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Issue 14's demo step: prox certificates (written under certificates/ and re-checked), the regulariser of
    the proximal-matching Laplace LPN against |x| with its certified interval, and a plug-and-play study (digits;
    the real MNIST images too when shared/data is beside the package) with a reconstruction grid (pnp.png)."""
    from certify.certificates.issuers.prox import checked_prox_certificate
    from certify.errors import InvalidInputError
    from certify.inverse import zoo as inverse_zoo
    from certify.inverse.evidence import sample_points
    from certify.inverse.laplace import map_estimate, posterior_mean, posterior_median
    from certify.inverse.regulariser import regulariser
    from certify.inverse.study import digits_images, mnist_folder, pnp_study
    from certify.reports.inverse import reconstruction_grid

    prox = []
    clean = digits_images(64).flatten(1)
    for name in PROX_MODELS:
        model = inverse_zoo.load_lpn(name)
        cert, _ = checked_prox_certificate(model, sample_points(clean, 0.1, 16, seed=0), model_spec=name, data="digits")
        path = out_dir / "certificates" / f"prox-{name}.json"
        cert.write(path)
        verified = verify_certificate(cert, model, path.parent).valid
        prox.append({"model": name, "answer": cert.answer, "verified": verified, "file": f"certificates/{path.name}",
                     "claims": [{k: getattr(c, k) for k in ("id", "type", "kind", "relation", "value", "reason", "statement")}
                                for c in cert.claims]})

    pm_name = "lpn-laplace-pm" if quick else "lpn-laplace-pm-long"  # 30 s / 2.5 min of training, cached
    lpn = inverse_zoo.load_lpn(pm_name)
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    reg = regulariser(lpn, torch.cat([torch.zeros(1, 1, dtype=torch.float64), x[:, None]]))
    shift = float(reg.value[0])
    value, lower, upper = reg.value[1:] - shift, reg.lower[1:] - float(reg.upper[0]), reg.upper[1:] - float(reg.lower[0])
    regulariser_data = {
        "model": pm_name, "x": x.tolist(), "value": value.tolist(), "lower": lower.tolist(), "upper": upper.tolist(),
        "max_error": float((value - x.abs()).abs().max()), "max_width": float((upper - lower).max()),
        "note": ("R(x) = <y*, x> - x^2/2 - psi(y*), y* = argmin psi(y) - x y (a strongly convex solve), for the 1-D LPN "
                 "trained by proximal matching on x ~ Laplace(0, 1), y = x + v, v ~ N(0, 1): its MAP denoiser is soft "
                 "thresholding at 1, the prox of |x|. The band is the certified interval of R(x) - R(0) (from the "
                 "solver's point and psi's strong convexity, alpha = " f"{lpn.alpha:g}; at most "
                 f"{float((upper - lower).max()):.1g} wide, invisible at this scale); the learned R is within "
                 f"{float((value - x.abs()).abs().max()):.3f} of |x| on [-3, 3] (issue 14: within 0.2)."
                 + (" Quick run: the 30-second proximal-matching recipe; the full demo uses the slow one." if quick else "")),
    }
    references = {"pm": map_estimate(x), "l2": posterior_mean(x), "l1": posterior_median(x)}
    curves = {"y": x.tolist(), "map": references["pm"].tolist(), "mean": references["l2"].tolist(),
              "median": references["l1"].tolist(), "errors": {}}
    for key, name in (("pm", pm_name),) if quick else (("pm", pm_name), ("l2", "lpn-laplace-l2"), ("l1", "lpn-laplace-l1")):
        with torch.no_grad():
            values = inverse_zoo.load_lpn(name)(x[:, None].float()).reshape(-1).double()
        curves[key] = values.tolist()
        curves["errors"][key] = float((values - references[key]).abs().max())

    datasets = ("digits", "mnist") if mnist_folder().is_dir() else ("digits",)
    study = pnp_study(datasets=datasets, sigmas=(0.1,) if quick else (0.1, 0.2), algorithms=("pgd",) if quick else ("pgd", "admm"),
                      quick=quick, keep_reconstructions=True)
    kept = study.reconstructions
    grid = []
    for dataset in datasets:
        for task in ("denoising", "deblurring", "inpainting"):
            key = (dataset, task, 0.1)
            grid.append((f"{dataset} {task}", [kept[key + ("clean",)][0, 0].numpy(), kept[key + ("input",)][0, 0].numpy(),
                                               kept[key + ("lpn", "pgd")][0, 0].numpy(), kept[key + ("wavelet", "pgd")][0, 0].numpy()]))
    reconstruction_grid(grid, ["clean", "degraded", "LPN (PnP-PGD)", "wavelet (PnP-PGD)"], out_dir / "pnp.png")
    missing = "" if "mnist" in datasets else (" The MNIST images (shared/data/vnncomp2021-mnistfc beside the package) are "
                                              "not here: digits only.")
    return {
        "description": ("A learned proximal network (LPN; Fang, Buchanan & Sulam, ICLR 2024) is the gradient of an input-"
                        "convex network psi, so it is the proximal operator of some regulariser R (Gribonval & Nikolova "
                        "2020). certify proves that from the network's structure, refutes it for a plain MLP denoiser with "
                        "a cycle on which the denoiser is not cyclically monotone, recovers R, and uses the LPN as the "
                        "prior of plug-and-play reconstructions with a convergence certificate."),
        "prox": prox,
        "regulariser": regulariser_data,
        "denoisers_1d": curves,
        "pnp": {"headers": PNP_COLUMNS, "rows": [_pnp_row(r) for r in study.rows], "seconds": study.seconds,
                "note": ("y = A x + sigma v (seeded), A the identity, a circular Gaussian blur or a random pixel mask; "
                         "PnP proximal gradient x <- f(x - eta A^T(Ax - y))" + ("" if quick else " (and ADMM)") + " with the "
                         "LPN trained at that noise level, against soft-thresholding in an orthogonal Haar basis "
                         "(threshold fitted on training images). A certified run is one where the convergence theorem's "
                         "assumptions hold (LPN with 0 < alpha < 1, softplus, eta < 1/sigma_max(A)^2, each checked): the "
                         "iterates converge to a fixed point; the fixed-point residual of the returned iterate is "
                         "re-evaluated, and a run stopped at the iteration cap is not yet at that fixed point. The MNIST "
                         "LPNs are trained on digits upsampled to 28x28 (no MNIST training set offline): a domain shift, "
                         "and they can lose to the wavelet prior there." + (" Quick run: 4 images, noise 0.1, PGD only."
                                                                            if quick else "") + missing),
                "figure": "One image per task at noise 0.1: clean, degraded, LPN and wavelet reconstructions."},
    }


def run_demo(out_dir: Path, config: DemoConfig) -> dict[str, Any]:
    """Run the demo, write everything under `out_dir` (existing files of other names are kept), and
    return the JSON summary that is also written to `out_dir/summary.json`."""
    from proofs_checks.runner import run_checks, write_table

    out_dir.mkdir(parents=True, exist_ok=True)
    model, data = zoo.load(config.model)
    x, y = data.x_test[: config.examples], data.y_test[: config.examples]
    predicted = model(x).argmax(dim=1)

    attributions: dict[str, torch.Tensor] = {}
    method_rows, claim_rows, verified_counts = [], [], {}
    cert_dir = out_dir / "certificates"
    cert_dir.mkdir(exist_ok=True)
    for label, overrides in progress_bar(config.methods, desc="explaining and certifying", unit="method"):
        explainer = make_preset(label, model, domain=data.domain, **overrides)
        start = time.perf_counter()
        certificates = certify_explanations(explainer, x, eps=config.eps, model_spec=config.model)
        seconds = time.perf_counter() - start
        attributions[label] = torch.cat([torch.as_tensor(decode_array(c.explanation, label)) for c in certificates])
        verified, probabilistic, unchecked, vacuous = 0, 0, 0, 0
        for i, cert in enumerate(certificates):
            cert.write(cert_dir / f"{label}-{i}.json")
            report = verify_certificate(cert, model, cert_dir)
            verified += report.valid
            probabilistic += len(report.by_status("valid (probabilistic)"))
            unchecked += len(report.by_status("not re-checkable"))
            vacuous += sum(1 for why in vacuous_reasons(cert, cert_dir).values() if why)
        verified_counts[label] = f"{verified}/{len(certificates)} verified" + (
            f" ({probabilistic} probabilistic claims recomputed from seeds)" if probabilistic else "") + (
            f" ({unchecked} solver-reported claims not re-checkable)" if unchecked else "") + (
            f" ({vacuous} vacuous claims: true, but certify nothing)" if vacuous else "")
        function = certificates[0].function
        method_rows.append([
            label, _params_text(explainer.params()), f"{seconds:.3f}", verified_counts[label],
            f"{float(gini_index(attributions[label]).mean()):.3f}", f"{float(zero_fraction(attributions[label]).mean()):.3f}",
        ])
        claim_rows += claim_table_rows(label, certificates, cert_dir)
    titles = [f"label {int(a)} / pred {int(b)}" for a, b in zip(y, predicted)]
    heatmap_grid(x, attributions, titles, out_dir / "heatmaps.png")

    attackable = [label for label, _ in config.methods if label in ATTACKABLE]
    evaluation = run_study(model, data, config.model, attackable, config.study)
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=1))

    inverse = inverse_step(out_dir, quick=config.inverse_quick) if config.inverse else None
    if inverse is not None:
        (out_dir / "inverse.json").write_text(json.dumps(inverse, indent=1))

    results = run_checks(quick=config.theorem_checks_quick, progress=True)
    write_table(results, out_dir, quick=config.theorem_checks_quick)

    summary = {
        "model": config.model,
        "description": (
            f"Model `{config.model}` (weights sha256 {model_hash(model)[:16]}…), test accuracy "
            f"{accuracy(model, data.x_test, data.y_test):.4f} on {data.name}; {len(x)} test examples, explained for "
            "the predicted class. Every explanation has the sign of the gradient it generalises."
        ),
        "method_rows": method_rows,
        "certificate_note": (
            f"Claims per method over the {len(x)} examples (stability radius eps = {config.eps} in L2). Every claim "
            "is a typed statement about the network N (the model's traced graph with exact softplus; the distance "
            "between N and torch's thresholded implementation is its own claim, implementation-deviation), its text "
            "rendered from its parameters. "
            + (f"Conformance of N with the model: max deviation {function['conformance']['max_deviation']:.3g} "
               f"within tolerance {function['conformance']['tolerance']:.3g} on {function['conformance']['points']} "
               "points. " if "conformance" in function else f"No translation: {function.get('refused')}. ")
            + "Certified values are re-derived by the independent checker (`certify verify`) from the model, the "
            "input, the explanation and the parameters; probabilistic ones are recomputed from their stored seeds; "
            "solver-reported ones are not re-checkable; refused claims say why no number is guaranteed; vacuous "
            "values (a certified top-k of 0, a stability bound not smaller than the explanation's own norm) are "
            "true but certify nothing: counted apart, never in the value column."
        ),
        "claim_rows": claim_rows,
        "certificates": verified_counts,
        "robustness_verdict": evaluation["verdict"],
        "prox": {e["model"]: e["answer"] + ("" if e["verified"] else " (certificate INVALID)")
                 for e in (inverse or {}).get("prox", [])},
        "theorems": {r.id: r.verdict for r in results},
        "environment": {
            "certify": certify.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "device": "cpu", "torch threads": torch.get_num_threads(),
            **{f"seconds {row[0]}": row[2] for row in method_rows},
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    md, page, _ = write_report(out_dir)
    summary["files"] = {"markdown": str(md), "html": str(page)}
    return summary
