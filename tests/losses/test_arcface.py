"""ArcFace head: the additive angular margin formula, its fallback past pi, and prediction."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cfcd.losses import ArcFace


def test_target_logit_is_scaled_cosine_of_angle_plus_margin():
    g = torch.Generator().manual_seed(0)
    head = ArcFace(8, 5, scale=30.0, margin=0.4)
    x, labels = torch.randn(6, 8, generator=g), torch.tensor([0, 1, 2, 3, 4, 0])
    cos = F.normalize(x, dim=1) @ F.normalize(head.weight.detach(), dim=1).T
    z = head.logits(x, labels)
    theta = torch.acos(cos.gather(1, labels[:, None]))
    want_target = torch.where(theta + 0.4 <= math.pi, torch.cos(theta + 0.4), cos.gather(1, labels[:, None]) - 0.4 * math.sin(0.4))
    torch.testing.assert_close(z.gather(1, labels[:, None]), 30.0 * want_target, rtol=1e-5, atol=1e-5)
    others = torch.ones_like(z, dtype=torch.bool).scatter(1, labels[:, None], False)
    torch.testing.assert_close(z[others], 30.0 * cos[others])
    head.eval()  # no margin at evaluation
    torch.testing.assert_close(head.logits(x, labels), 30.0 * cos)


def test_fallback_past_pi_keeps_the_logit_decreasing():
    head = ArcFace(2, 2, scale=1.0, margin=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # angles to class 0 of 170 and 175 degrees: theta + m > pi, the fallback branch
    angles = torch.tensor([170.0, 175.0]) * math.pi / 180
    x = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    z = head.logits(x, torch.tensor([0, 0]))[:, 0]
    assert z[1] < z[0]
    torch.testing.assert_close(z, torch.cos(angles) - 0.5 * math.sin(0.5))


def test_predict_is_the_nearest_class_by_cosine():
    head = ArcFace(3, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3) * torch.tensor([[1.0], [5.0], [0.1]]))  # norms do not matter
    pred, score = head.predict(torch.tensor([[0.1, 0.2, 3.0], [2.0, 0.0, 0.0]]))
    assert pred.tolist() == [2, 0]
    torch.testing.assert_close(score, torch.tensor([3.0 / math.sqrt(9.05), 1.0]))
