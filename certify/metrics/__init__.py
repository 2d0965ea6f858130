"""Batched metrics on explanations [N, ...]: similarity under perturbation, sparsity, faithfulness
(deletion / insertion curves, infidelity), max-sensitivity, and the common corruptions of digit images."""
from certify.metrics.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from certify.metrics.faithfulness import Curve, deletion, infidelity, insertion
from certify.metrics.sensitivity import max_sensitivity
from certify.metrics.similarity import normalized_l2_distance, ssim, topk_count, topk_intersection, topk_mask
from certify.metrics.sparsity import gini_index, zero_fraction

__all__ = [
    "normalized_l2_distance",
    "topk_intersection",
    "topk_mask",
    "topk_count",
    "ssim",
    "gini_index",
    "zero_fraction",
    "Curve",
    "deletion",
    "insertion",
    "infidelity",
    "max_sensitivity",
    "CORRUPTIONS",
    "SEVERITIES",
    "corrupt",
]
