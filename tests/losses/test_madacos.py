import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cfcd.losses import MadaCos
from cfcd.losses.madacos import madacos_logits, madacos_margin, madacos_scale

ALPHA = 0.02
LN_K_ODDS = 20.009915849068943  # ln(9,999,999 * 0.98 / 0.02), the paper's K and alpha


def separable_batch(n=12, classes=6, dim=8, noise=0.3, seed=0):
    """Embeddings near orthogonal class weights: high target cosines, so the margin is positive."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.eye(classes, dim)
    labels = torch.arange(n) % classes
    return weight, weight[labels] + noise * torch.randn(n, dim, generator=g), labels


def head_with(weight, **kwargs):
    head = MadaCos(weight.shape[1], weight.shape[0], **kwargs)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def cosines(x, weight):
    return F.normalize(x, dim=1) @ F.normalize(weight, dim=1).T


def test_scale_formula_and_floor():
    assert madacos_scale(0.5) == pytest.approx(LN_K_ODDS / 0.5, rel=1e-12)
    assert madacos_scale(0.9) == pytest.approx(LN_K_ODDS / 0.1, rel=1e-12)
    assert madacos_scale(0.0) == 32.0  # 20.01 is below the floor
    assert madacos_scale(0.0, min_scale=16.0) == pytest.approx(LN_K_ODDS, rel=1e-12)
    assert math.isfinite(madacos_scale(1.0)) and madacos_scale(1.0 + 1e-7) > 1e6


def test_margin_formula_and_floor():
    # m = c~ - (log B~ + ln(alpha / (1 - alpha))) / s
    assert madacos_margin(0.8, 5.0, 100.0) == pytest.approx(0.8 - (5.0 + math.log(ALPHA / (1 - ALPHA))) / 100.0)
    assert madacos_margin(0.1, 50.0, 32.0) == 0.0


def test_median_sample_gets_target_probability_alpha():
    weight, x, labels = separable_batch()
    head = head_with(weight)
    logits = head(x, labels)
    assert head.last_margin > 0.05  # the property below only holds when m is not floored
    target = cosines(x, weight).gather(1, labels[:, None]).squeeze(1)
    median, i = target.median(dim=0)
    assert head.last_median == pytest.approx(median.item(), abs=1e-6)
    assert head.last_scale == pytest.approx(LN_K_ODDS / (1 - median.item()), rel=1e-5)
    p = logits.softmax(dim=1)[i, labels[i]]
    assert p.item() == pytest.approx(ALPHA, rel=1e-4)


def test_k_classes_uses_the_number_of_classes():
    weight, x, labels = separable_batch(classes=6)
    head = head_with(weight, k="classes", min_scale=1.0)
    head(x, labels)
    assert head.k == 6
    assert head.last_scale == pytest.approx(math.log(6 * 0.98 / 0.02) / (1 - head.last_median), rel=1e-6)
    # the paper's K on the same batch: a scale about 3.5 times larger
    paper = head_with(weight)
    paper(x, labels)
    assert paper.last_scale > 3 * head.last_scale


@pytest.mark.parametrize("settings, named", [({"k": "many"}, "'many'"), ({"k": 0}, "0"),
                                             ({"min_scale": 0.0}, "min_scale")])
def test_bad_k_or_floor_is_a_config_error_naming_the_value(settings, named):
    from cfcd.errors import ConfigError
    with pytest.raises(ConfigError, match=named):
        MadaCos(8, 6, **settings)


def test_margin_floor_gives_plain_scaled_cosines():
    # Random embeddings among many classes: low target cosines, large B, so m < 0 -> 0.
    g = torch.Generator().manual_seed(1)
    weight, x, labels = torch.randn(200, 8, generator=g), torch.randn(16, 8, generator=g), torch.arange(16)
    head = head_with(weight)
    logits = head(x, labels)
    assert head.last_margin == 0.0
    assert head.last_scale == 32.0
    torch.testing.assert_close(logits, 32.0 * cosines(x, weight))


def test_eval_mode_has_no_margin():
    weight, x, labels = separable_batch()
    head = head_with(weight)
    head(x, labels)
    train_scale = head.last_scale
    assert head.last_margin > 0
    logits = head.eval()(x, labels)
    assert head.last_margin == 0.0 and head.last_scale == train_scale
    torch.testing.assert_close(logits, train_scale * cosines(x, weight))


def test_gradient_is_scale_times_upstream():
    g = torch.Generator().manual_seed(2)
    cos = torch.rand(4, 5, generator=g).requires_grad_()
    upstream = torch.randn(4, 5, generator=g)
    (madacos_logits(cos, torch.tensor([0, 1, 2, 3]), 123.0, 0.25) * upstream).sum().backward()
    torch.testing.assert_close(cos.grad, 123.0 * upstream)


def test_scale_and_margin_are_constants_for_autograd():
    weight, x, labels = separable_batch()
    head = head_with(weight)
    x = x.clone().requires_grad_()
    upstream = torch.randn(x.shape[0], weight.shape[0], generator=torch.Generator().manual_seed(3))
    (head(x, labels) * upstream).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    onehot = F.one_hot(labels, weight.shape[0])
    ref = head.last_scale * (cosines(x_ref, weight) - head.last_margin * onehot)
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_cosines_near_one_with_huge_scale_stay_finite():
    # Class weights all within ~3 degrees of each other, embeddings within ~2 degrees of their class:
    # s cos reaches ~1e4 for every class, where a plain float32 exp overflows.
    g = torch.Generator().manual_seed(4)
    weight = torch.zeros(6, 16)
    weight[:, 0] = 1.0
    weight[torch.arange(6), torch.arange(1, 7)] = 0.05
    labels = torch.arange(12) % 6
    x = weight[labels] + 0.016 * torch.randn(12, 16, generator=g)
    head = head_with(weight)
    x.requires_grad_()
    logits = head(x, labels)
    cos = cosines(x.detach(), weight)
    assert head.last_scale > 5e3 and cos.min() > 0.98
    assert torch.isinf(torch.exp(head.last_scale * cos)).all()  # the case the log space is for
    # An overflowing B would give log B = inf and floor m to 0; here m still gives the median sample
    # probability alpha (loosely: float32 logits of ~1e4 carry ~1e-3 of rounding).
    assert head.last_margin > 0
    i = cos.gather(1, labels[:, None]).squeeze(1).median(dim=0).indices
    assert logits.softmax(dim=1)[i, labels[i]].item() == pytest.approx(ALPHA, rel=5e-3)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss) and torch.isfinite(x.grad).all()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world_size, port, weight, x, labels, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        head = head_with(weight)
        part = slice(rank * x.shape[0] // world_size, (rank + 1) * x.shape[0] // world_size)
        logits = head(x[part], labels[part])
        torch.save(
            {"scale": head.last_scale, "margin": head.last_margin, "median": head.last_median, "logits": logits},
            f"{out_dir}/{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_whole_batch(tmp_path):
    weight, x, labels = separable_batch(n=8, classes=4, noise=0.5)
    # Put the median sample in the second half, so its log B must come from the other process.
    median_index = cosines(x, weight).gather(1, labels[:, None]).squeeze(1).median(dim=0).indices.item()
    order = list(range(8))
    order[median_index], order[6] = order[6], order[median_index]
    x, labels = x[order], labels[order]

    whole = head_with(weight)
    logits = whole(x, labels)
    assert whole.last_margin > 0
    half = head_with(weight)
    half(x[:4], labels[:4])
    assert half.last_scale != pytest.approx(whole.last_scale)  # the gather is what makes them agree

    mp.spawn(_rank_worker, args=(2, _free_port(), weight, x, labels, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    for r in ranks:
        assert r["median"] == pytest.approx(whole.last_median, rel=1e-12)
        assert r["scale"] == pytest.approx(whole.last_scale, rel=1e-12)
        assert r["margin"] == pytest.approx(whole.last_margin, rel=1e-12)
    torch.testing.assert_close(torch.cat([r["logits"] for r in ranks]), logits)
