"""Inverse problems (issue 14): learned proximal networks, the regulariser they imply, prox evidence for any
denoiser, and plug-and-play reconstruction with convergence certificates. A layer beside certify.explain:
it imports models, bounds and below, never explain."""
