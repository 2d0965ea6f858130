"""Issue 14's demo step: prox certificates of a learned proximal network and of a plain MLP denoiser, the
regulariser an LPN implies, and a plug-and-play study (written to inverse.json; certify.reports.inverse)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from certify.certificates.checker import verify_certificate


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
