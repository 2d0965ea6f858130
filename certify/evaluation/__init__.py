"""`certify evaluate`: the robustness study (`study`: explanations under random and adversarial perturbations
next to their certificates), the quality metrics and accuracy under attack (`quality`), the verdicts on the
papers' claims (`claims`), the parameter sweep (`sweep`) and the confidence intervals they use (`statistics`)."""
from certify.evaluation.study import ATTACKABLE, STUDIED, StudyConfig, run_study
from certify.evaluation.sweep import SweepConfig, run_sweep

__all__ = ["ATTACKABLE", "STUDIED", "StudyConfig", "run_study", "SweepConfig", "run_sweep"]
