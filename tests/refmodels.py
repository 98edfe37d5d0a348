"""An independent re-implementation of the official CFCD / pycls ResNet with its exact
parameter names, used to build synthetic checkpoints and reference outputs in tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BGR_MEAN = (0.406, 0.456, 0.485)
BGR_STD = (0.225, 0.224, 0.229)


class Transform(nn.Module):
    def __init__(self, w_in, w_b, w_out, stride):
        super().__init__()
        self.a = nn.Conv2d(w_in, w_b, 1, bias=False)
        self.a_bn = nn.BatchNorm2d(w_b)
        self.b = nn.Conv2d(w_b, w_b, 3, stride=stride, padding=1, bias=False)  # STRIDE_1X1: False
        self.b_bn = nn.BatchNorm2d(w_b)
        self.c = nn.Conv2d(w_b, w_out, 1, bias=False)
        self.c_bn = nn.BatchNorm2d(w_out)

    def forward(self, x):
        x = F.relu(self.a_bn(self.a(x)))
        x = F.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class Block(nn.Module):
    def __init__(self, w_in, w_b, w_out, stride):
        super().__init__()
        self.has_proj = w_in != w_out or stride != 1
        if self.has_proj:
            self.proj = nn.Conv2d(w_in, w_out, 1, stride=stride, bias=False)
            self.bn = nn.BatchNorm2d(w_out)
        self.f = Transform(w_in, w_b, w_out, stride)

    def forward(self, x):
        skip = self.bn(self.proj(x)) if self.has_proj else x
        return F.relu(skip + self.f(x))


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(64)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 3, 2, 1)


class PyclsResNet(nn.Module):
    def __init__(self, depth=50):
        super().__init__()
        self.stem = Stem()
        w_in = 64
        for s, (d, w_b, w_out, stride) in enumerate(zip(STAGE_DEPTHS[depth], (64, 128, 256, 512), (256, 512, 1024, 2048), (1, 2, 2, 2)), 1):
            stage = nn.Module()
            for b in range(d):
                stage.add_module(f"b{b + 1}", Block(w_in if b == 0 else w_out, w_b, w_out, stride if b == 0 else 1))
            self.add_module(f"s{s}", stage)
            w_in = w_out

    def forward(self, x):
        x = self.stem(x)
        for s in (self.s1, self.s2, self.s3, self.s4):
            for block in s.children():
                x = block(x)
        return x


class OfficialCFCD(nn.Module):
    """The official deploy/stage-1/stage-2 model: globalmodel -> GeM(3) -> fc -> bn -> L2."""

    def __init__(self, depth=50, dim=512, num_classes=0):
        super().__init__()
        self.globalmodel = PyclsResNet(depth)
        self.fc = nn.Linear(2048, dim)
        self.bn = nn.BatchNorm1d(dim)
        if num_classes:
            self.desc_cls = nn.Module()
            self.desc_cls.weight = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, x_bgr):
        f4 = self.globalmodel(x_bgr)
        g = f4.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        return F.normalize(self.bn(self.fc(g)), dim=-1)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine and running statistics, so a test notices a BN wired wrongly."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)
    return model.eval()


def bgr_input(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> the official network input: BGR, reversed ImageNet stats."""
    x = rgb_uint8.flip(-1).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(BGR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(BGR_STD).view(1, 3, 1, 1)
    return (x - mean) / std
