"""Batched metrics on explanations [N, ...]: similarity under perturbation and sparsity."""
from certify.metrics.similarity import normalized_l2_distance, ssim, topk_intersection
from certify.metrics.sparsity import gini_index, zero_fraction

__all__ = ["normalized_l2_distance", "topk_intersection", "ssim", "gini_index", "zero_fraction"]
