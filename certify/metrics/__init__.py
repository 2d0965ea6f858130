"""Batched metrics on explanations [N, ...]: similarity under perturbation and sparsity."""
from certify.metrics.similarity import normalized_l2_distance, ssim, topk_count, topk_intersection, topk_mask
from certify.metrics.sparsity import gini_index, zero_fraction

__all__ = ["normalized_l2_distance", "topk_intersection", "topk_mask", "topk_count", "ssim", "gini_index", "zero_fraction"]
