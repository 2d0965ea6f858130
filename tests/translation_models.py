"""Models shared by the issuer-side (tests/bounds/test_network.py) and the checker-side
(tests/certificates/test_semantics.py) translation tests: a residual block written as an overridden forward
(both translations must see the add as an identity skip, and its Sequential body must fail conformance),
and one written with functional calls and method forms they must model. Imported through sys.path, not
collected."""
import torch
import torch.nn.functional as F
from torch import nn

from certify.models.builders import Normalize


class Residual(nn.Sequential):
    """A residual block written the common way: the overridden forward adds the input."""

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + super().forward(x)


def residual_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Residual(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), nn.ReLU(), nn.Linear(4, 3)).eval()


class Functional(nn.Module):
    """Functional and method forms (F.softplus with beta and threshold, .view / .reshape / torch.flatten,
    torch.relu) around Normalize, Conv2d, BatchNorm2d, AvgPool2d and an eval-mode Dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = Normalize([0.5], [2.0])
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.pool = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(12, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.softplus(self.bn(self.conv(self.norm(x))), beta=2.0, threshold=30.0)
        x = self.pool(x)
        x = x.view(x.size(0), -1)
        x = torch.relu(self.drop(self.fc(x.reshape(x.shape[0], 12))))
        return self.out(torch.flatten(x, 1))


def functional_model(seed: int) -> nn.Module:
    """A seeded `Functional` in eval mode with non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    model = Functional()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


class AugmentedAlias(nn.Module):
    """`y = z; y += 1.0` on a shared value, the augmented assignment written as such (Python falls back to
    __add__ on a plain fx Proxy): eager reads z + 1 twice, an out-of-place translation z and z + 1. Both
    translations must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(8, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        z = self.fc(x)
        y = z
        y += 1.0  # in place: z changes too
        return self.out(torch.cat([z, y], dim=1))
