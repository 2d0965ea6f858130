"""Shared by the property tests (tests/bounds/test_property.py, test_alpha_crown.py, test_bab.py and
tests/attacks/test_verify_property.py): tiny ReLU nets on 2-D boxes, classification properties, and the
values of a property's rows on a dense grid of its box (a sound lower bound never exceeds their minimum), and
the pre-activations of a checker's GraphNet at sampled points."""
import numpy as np
import torch
from torch import nn

from certify.models.vnnlib import Property


def tiny_net(seed: int, widths=(2, 8, 8, 3)):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def grid_values(model, prop: Property, n: int = 201) -> np.ndarray:
    """[G, R] values C y - d of every row on an n x n grid of the 2-D box (float64 model)."""
    xs = np.linspace(prop.lower[0], prop.upper[0], n)
    ys = np.linspace(prop.lower[1], prop.upper[1], n)
    pts = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2), dtype=torch.float64)
    with torch.no_grad():
        out = model.double()(pts).numpy()
    model.float()
    c = np.concatenate([c for c, _ in prop.disjuncts])
    d = np.concatenate([d for _, d in prop.disjuncts])
    return out @ c.T - d


def classification(centre, eps, label, classes=3) -> Property:
    """The box centre +- eps, counterexample: some class j != label scores at least as high as `label`."""
    lower, upper = np.asarray(centre) - eps, np.asarray(centre) + eps
    disjuncts = []
    for j in range(classes):
        if j != label:
            row = np.zeros((1, classes))
            row[0, label], row[0, j] = 1.0, -1.0  # y_label - y_j <= 0: a counterexample
            disjuncts.append((row, np.zeros(1)))
    return Property(lower, upper, classes, disjuncts)


def predicted(model, centre) -> int:
    with torch.no_grad():
        return int(model(torch.tensor(centre, dtype=torch.float32)[None]).argmax())


def pre_activations(net, points: np.ndarray) -> list[np.ndarray]:
    """z_k [M, n_k] of a GraphNet (certify.certificates.relu_graph) at float64 points [M, n_0], by the graph's own
    equations (affine layers, skip terms, ReLU / LeakyReLU), not by the checker's code."""
    hs, zs = [points], []
    for k in range(net.depth):
        z = hs[k] @ net.weights[k].T + net.biases[k]
        for j, s in net.skips.get(k, {}).items():
            z = z + hs[j] @ s.T
        zs.append(z)
        if k < net.depth - 1:
            hs.append(np.maximum(z, net.negative_slope(k) * z))
    return zs
