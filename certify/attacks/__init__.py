"""Attack layer: interpretation attacks and random baselines that perturb an input to move its explanation
(`certify.attacks.interpretation`). It depends on the solver layer (`certify.explain`) only; the
minimal-perturbation solver behind the Lagrange-dual explainer lives there
(`certify.explain.minimal_perturbation`)."""
