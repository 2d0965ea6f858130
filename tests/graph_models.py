"""Graph models (residual adds, branches, pooling, the smooth activations, a softmax head) shared by the
issuer-side translation (tests/bounds/test_network.py), the checker-side translation
(tests/certificates/test_semantics.py) and the bound tests. Imported through sys.path, not collected.

GRAPH_MODELS maps a name to (builder(seed) -> eval-mode module, per-example input shape). Every model here
must be translated exactly (and pass conformance); REFUSED maps a name to (builder, input shape, the operator
the refusal must name)."""
import torch
import torch.nn.functional as F
from torch import nn


class Residual(nn.Module):
    """y = x + f(x), f a small block; the add is an fx `operator.add` node."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + self.block(x)


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn(conv(relu(bn(conv(x))))) + x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):  # type: ignore[no-untyped-def]
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class Branches(nn.Module):
    """Two branches on the same input, concatenated: cat(relu(A x), tanh(B x)) then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 6)
        self.b = nn.Linear(5, 4)
        self.head = nn.Linear(10, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], dim=1))


class SubScale(nn.Module):
    """Subtraction, scaling by constants, division, negation and a mean over the spatial dims."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.conv(x)
        h = 0.5 * F.silu(h) - h / 4.0
        h = -h.mean(dim=(2, 3))
        return self.fc(h)


class Sequence1d(nn.Module):
    """Input [length, channels] permuted to [channels, length]; Conv1d with circular padding, LeakyReLU,
    AdaptiveAvgPool1d, Flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1, padding_mode="circular")
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.AdaptiveAvgPool1d(2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.pool(self.act(self.conv(x.permute(0, 2, 1))))
        return self.fc(torch.flatten(h, 1))


class Product(nn.Module):
    """x * relu(x): a product of two values that depend on the input is not affine in either; refused."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(x * torch.relu(x))


def _bn_stats(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
    return model.eval()


def _seeded(build):  # type: ignore[no-untyped-def]
    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return _bn_stats(build())

    return make


def _mlp(act: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 3))


GRAPH_MODELS = {
    "residual-mlp": (_seeded(lambda: nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), Residual(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))), nn.ReLU(), nn.Linear(6, 3))), (5,)),
    "resnet-block": (_seeded(lambda: nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), BasicBlock(3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))), (2, 6, 6)),
    "maxpool-cnn": (_seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 4))), (1, 8, 8)),
    "maxpool-padded": (_seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(18, 3))), (1, 7, 7)),
    "sigmoid-mlp": (_seeded(lambda: _mlp(nn.Sigmoid())), (5,)),
    "tanh-mlp": (_seeded(lambda: _mlp(nn.Tanh())), (5,)),
    "gelu-mlp": (_seeded(lambda: _mlp(nn.GELU())), (5,)),
    "gelu-tanh-mlp": (_seeded(lambda: _mlp(nn.GELU(approximate="tanh"))), (5,)),
    "silu-mlp": (_seeded(lambda: _mlp(nn.SiLU())), (5,)),
    "leaky-relu-mlp": (_seeded(lambda: _mlp(nn.LeakyReLU(0.1))), (5,)),
    "branches": (_seeded(Branches), (5,)),
    "sub-scale": (_seeded(SubScale), (2, 6, 6)),
    "sequence-1d": (_seeded(Sequence1d), (10, 4)),
    "softmax-head": (_seeded(lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1))), (5,)),
    "log-softmax-head": (_seeded(lambda: nn.Sequential(nn.Linear(5, 8), nn.Softplus(), nn.Linear(8, 3), nn.LogSoftmax(dim=-1))), (5,)),
    "grouped-dilated-conv": (_seeded(lambda: nn.Sequential(
        nn.Conv2d(2, 4, 3, dilation=2, groups=2, padding=2, padding_mode="reflect"), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 3))), (2, 6, 6)),
}

REFUSED = {
    "product": (_seeded(Product), (5,), "mul"),
}
