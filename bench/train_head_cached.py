"""Issue 22 lead: train MobileNetV2's last blocks and the whitening-initialised head on cached maps.

The maps entering ``features[14]`` of the ImageNet MobileNetV2 are computed once for every
instances-dev photo at the reference scales (cached in runs/bench-head-maps14.pt); ``--T``
names the first block that trains (19: the head alone). The head starts as the bench's
whitening row (``bench/train_cpu.py``), the classifier from the class means, MadaCos with
``--mk`` (0: the number of training classes) and floor ``--minscale``; P x K batches, one
random scale per photo, cosine LR. Scored as ``bench/train_cpu.py`` scores (identity folds or
leave-one-source-out); ``wise*`` rows interpolate the trained weights with the start.

    .venv/bin/python bench/train_head_cached.py --T 19 --mk 0 --minscale 1 --lr 1e-3 --steps 200
"""
import argparse, copy, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
sys.path.insert(0, str(Path(__file__).parent))
from train_cpu import read_manifest, DATA, START, score, pooled, WHITEN_POWER, WHITEN_SHRINKAGE
from cfcd import load_model
from cfcd.model.whitening import learn_whitening, descriptors_from_vectors
from cfcd.model.pooling import gem
from cfcd.losses.madacos import MadaCos
from cfcd.train.holdout import identity_folds, source_folds

p = argparse.ArgumentParser()
p.add_argument("--split", default="identities"); p.add_argument("--T", type=int, default=19)
p.add_argument("--lr", type=float, default=1e-3); p.add_argument("--blr", type=float, default=0.1)
p.add_argument("--steps", type=int, default=200); p.add_argument("--P", type=int, default=8); p.add_argument("--K", type=int, default=2)
p.add_argument("--loss", default="madacos"); p.add_argument("--mk", type=float, default=9_999_999)
p.add_argument("--minscale", type=float, default=32.0); p.add_argument("--alpha", type=float, default=0.02)
p.add_argument("--proto", type=int, default=1); p.add_argument("--l2sp", type=float, default=0.0)
p.add_argument("--crop", type=float, default=1.0); p.add_argument("--margin", type=float, default=0.7)
p.add_argument("--seed", type=int, default=0); p.add_argument("--fold", type=int, default=0)
p.add_argument("--wd", type=float, default=1e-4); p.add_argument("--every", type=int, default=0)
a = p.parse_args()
torch.set_num_threads(2); torch.manual_seed(a.seed); rng = np.random.default_rng(a.seed)
rows = read_manifest(DATA)
MAPS = Path("runs/bench-head-maps14.pt")
if not MAPS.is_file():
    from cfcd.extraction import prepare
    from cfcd.settings import REFERENCE_SETTINGS
    model = load_model(START).eval()
    with torch.inference_mode():
        cached = []
        for r in rows:
            per = []
            for x in prepare(r["path"], REFERENCE_SETTINGS.for_model(model)):
                h = model.normalize(x[None])
                for m in model.backbone.features[:14]:
                    h = m(h)
                per.append(h[0].half().clone())
            cached.append(per)
    MAPS.parent.mkdir(exist_ok=True)
    torch.save({"maps": cached, "paths": [r["path"] for r in rows]}, MAPS)
cache = torch.load(MAPS)
maps = [[m.float() for m in per] for per in cache["maps"]]
gemz = np.load("runs/bench-train-cpu-gem.npz"); glob, reg = gemz["glob"], gemz["reg"]
ids = [r["identity"] for r in rows]; srcs = [r["source"] for r in rows]
base_model = load_model(START).eval()
feats0 = base_model.backbone.features[14:]
if a.split == "sources":
    named = source_folds(ids, srcs)
else:
    named = [(f"fold {f}", *pr) for f, pr in enumerate(identity_folds(ids, 2, 0, srcs), 1)]

def run_net(net, fc, x):
    h = x
    for i, m in enumerate(net):
        h = m(h)
    g = gem(h, 3.0)
    return F.normalize(F.linear(g, fc[0], fc[1]), dim=-1)

@torch.no_grad()
def describe(net, fc, idx):
    out = []
    for n in idx:
        d = torch.stack([run_net(net, fc, m[None])[0] for m in maps[n]]).sum(0)
        out.append(F.normalize(d, dim=0))
    return torch.stack(out).double().numpy()

res = {"whiten": [], "trained": []}; curves = {}
for f, (label, tr_ids, te_ids) in enumerate(named, 1):
    if a.fold and f != a.fold: continue
    train = [n for n in range(len(rows)) if ids[n] in set(tr_ids)]
    test = [n for n in range(len(rows)) if ids[n] in set(te_ids)]
    base = list(range(len(rows))) if a.split == "sources" else test
    test_rows = [rows[n] for n in base]; queries = np.isin(base, test)
    c = glob.shape[-1]
    wh = learn_whitening(np.concatenate([glob[train].reshape(-1, c), reg[train].reshape(-1, c)]), 512, power=WHITEN_POWER, shrinkage=WHITEN_SHRINKAGE)
    W = wh.projection.float().clone(); b = -(wh.projection @ wh.mean).float()
    net = copy.deepcopy(feats0).eval()
    for i, m in enumerate(net):
        for q in m.parameters(): q.requires_grad = (14 + i) >= a.T
    fc = [torch.nn.Parameter(W.clone()), torch.nn.Parameter(b.clone())]
    init = [q.detach().clone() for q in net.parameters()] + [W.clone(), b.clone()]
    res["whiten"].append(score(descriptors_from_vectors(glob[base], wh), test_rows, queries))
    labels_all = sorted(set(ids[n] for n in train)); lab = {l: i for i, l in enumerate(labels_all)}
    by = {}
    for n in train: by.setdefault(lab[ids[n]], []).append(n)
    classes = [k for k, v in by.items() if len(v) >= 2]
    head = None
    if a.loss == "madacos":
        head = MadaCos(512, len(labels_all), alpha=a.alpha, k=(a.mk or len(labels_all)), min_scale=a.minscale)
        if a.proto:
            with torch.no_grad():
                d = torch.as_tensor(describe(net, fc, train)).float()
                for k, v in by.items():
                    head.weight[k] = F.normalize(d[[train.index(n) for n in v]].mean(0), dim=0)
    params = [{"params": [q for q in net.parameters() if q.requires_grad], "lr": a.lr * a.blr},
              {"params": fc, "lr": a.lr}] + ([{"params": head.parameters(), "lr": a.lr}] if head else [])
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, nesterov=True, weight_decay=a.wd if not a.l2sp else 0)
    tic = time.time()
    for step in range(a.steps):
        lr_now = 0.5 * (1 + np.cos(np.pi * step / a.steps))
        for g_, base_lr in zip(opt.param_groups, [a.lr * a.blr, a.lr, a.lr]): g_["lr"] = base_lr * lr_now
        chosen = rng.choice(classes, size=min(a.P, len(classes)), replace=False)
        batch, y = [], []
        for k in chosen:
            for n in rng.choice(by[k], size=min(a.K, len(by[k])), replace=False):
                m = maps[n][rng.integers(3)]
                if a.crop < 1:
                    s = rng.uniform(a.crop, 1.0); H, Wd = m.shape[1:]
                    h2, w2 = max(2, int(H * s)), max(2, int(Wd * s))
                    y0, x0 = rng.integers(0, H - h2 + 1), rng.integers(0, Wd - w2 + 1)
                    m = m[:, y0:y0 + h2, x0:x0 + w2]
                if rng.random() < 0.5: m = m.flip(-1)
                batch.append(m); y.append(k)
        emb = torch.cat([run_net(net, fc, m[None]) for m in batch]); y = torch.tensor(y)
        if a.loss == "madacos":
            loss = F.cross_entropy(head.logits(emb, y), y)
        else:  # contrastive (cirtorch-style): positives pulled, negatives pushed beyond margin
            sim = emb @ emb.T; same = (y[:, None] == y[None]) & ~torch.eye(len(y), dtype=bool)
            diff = y[:, None] != y[None]
            dist = (2 - 2 * sim).clamp_min(1e-9).sqrt()
            loss = 0.5 * (dist[same] ** 2).mean() + 0.5 * (F.relu(a.margin - dist[diff]) ** 2).sum() / max(1, same.sum())
        if a.l2sp:
            loss = loss + a.l2sp * sum(((q - q0) ** 2).sum() for q, q0 in zip(list(net.parameters()) + fc, init) if q.requires_grad)
        opt.zero_grad(); loss.backward(); opt.step()
        if a.every and (step + 1) % a.every == 0 and step + 1 < a.steps:
            r = score(describe(net, fc, base), test_rows, queries); curves.setdefault(step + 1, []).append(r)
    res["trained"].append(score(describe(net, fc, base), test_rows, queries))
    final = [q.detach().clone() for q in list(net.parameters()) + fc]
    for al in (0.25, 0.5, 0.75):
        with torch.no_grad():
            for q, q0, q1 in zip(list(net.parameters()) + fc, init, final): q.copy_(q0 + al * (q1 - q0))
        res.setdefault(f"wise{al}", []).append(score(describe(net, fc, base), test_rows, queries))
    print(f"{label}: whiten {100*res['whiten'][-1].summary()['mAP']:.2f} trained {100*res['trained'][-1].summary()['mAP']:.2f} ({time.time()-tic:.0f}s, last loss {loss.item():.3f})", flush=True)
tw, tt = pooled(res["whiten"]), pooled(res["trained"])
print("ARGS", vars(a))
print(f"POOLED whiten {100*tw.summary()['mAP']:.2f} trained {100*tt.summary()['mAP']:.2f}")
for s, v in tw.per_source().items():
    t = tt.per_source()[s]
    if v["mAP"] < 0.999 or t["mAP"] < 0.999: print(f"  {s}: {100*v['mAP']:.2f} -> {100*t['mAP']:.2f}")
for k in ("wise0.25", "wise0.5", "wise0.75"):
    t = pooled(res[k]); print(f"  {k}: {100*t.summary()['mAP']:.2f} | " + ", ".join(f"{s[:12]} {100*v['mAP']:.1f}" for s, v in t.per_source().items() if tw.per_source()[s]["mAP"] < 0.999))
for st, rr in sorted(curves.items()):
    if len(rr) == len(res["trained"]): print(f"  step {st}: {100*pooled(rr).summary()['mAP']:.2f}")
