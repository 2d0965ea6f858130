"""The VNN-COMP 2021 mnistfc benchmark in shared/data (three ONNX nets, 30 VNN-LIB properties): its folder
sits beside the repository clone (`<clone>/../shared/data/vnncomp2021-mnistfc`, in a session and in CI).
A test that needs it FAILS with the path when it is missing: these are the real inputs issue 12 is about,
and a silently skipped test would hide a broken set-up."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NETS = ("mnist-net_256x2.onnx", "mnist-net_256x4.onnx", "mnist-net_256x6.onnx")
IMAGES = 15


def data_dir() -> Path:
    folder = REPO_ROOT.parent / "shared" / "data" / "vnncomp2021-mnistfc"
    if not folder.is_dir():
        pytest.fail(
            f"the mnistfc benchmark is missing: expected {folder} (shared/data beside the repository clone, as in "
            "a session and in CI); these tests do not skip"
        )
    return folder


def instances() -> list[tuple[str, str, float]]:
    with open(data_dir() / "mnistfc_instances.csv") as handle:
        return [(net, prop, float(t)) for net, prop, t in csv.reader(handle) if net.strip()]


@lru_cache(maxsize=None)
def model(net: str):
    from certify.models.spec import load_model

    return load_model(str(data_dir() / net))[0]


@lru_cache(maxsize=None)
def prop(name: str):
    from certify.models.vnnlib import parse_vnnlib

    return parse_vnnlib(data_dir() / name)


def images():
    """(images [15, 784] float64 recovered as the centres of the eps = 0.03 boxes, labels [15])."""
    import numpy as np

    xs, ys = [], []
    for i in range(IMAGES):
        p = prop(f"prop_{i}_0.03.vnnlib")
        centre, _ = p.ball()
        xs.append(centre)
        ys.append(p.label)
    return np.stack(xs), np.array(ys)
