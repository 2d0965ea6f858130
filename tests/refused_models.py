"""Models whose function the translations must refuse to model (shared by the issuer-side and the
checker-side translation tests): imported by test modules through sys.path, not collected."""
import torch
from torch import nn


class Residual(nn.Sequential):
    """A residual block written the common way: the overridden forward adds the input."""

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + super().forward(x)


def residual_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Residual(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 3)).eval()
