"""Alignment quality of a STORM DJ30 checkpoint on train / valid windows: random batches of 16 vs batches of 7
windows that share no day (issue 16). Usage: python benchmarks/storm_alignment_probe.py CHECKPOINT.pt
(a best.pt / last.pt of a run's scratch/checkpoints, cpu profile). Prints InfoNCE and top-1 retrieval."""
import sys, math, numpy as np, torch, torch.nn.functional as F
from storm_lib.tasks import RunContext
from storm_lib.models import make_model
from storm_lib import train as T
from storm_lib.models.storm_diagnostics import diagnose
ck = sys.argv[1]
ctx = RunContext(progress=False)
panel = ctx.panel("dj30", window=64, normalization="cs_zscore", feature_set="auto")
m = make_model("storm", profile="cpu", seed=0, progress=False)
net = m.build_net(panel); st = torch.load(ck, map_location="cpu", weights_only=False)
sd = st.get("net", st) if isinstance(st, dict) else st; net.load_state_dict(sd); net.eval()
print("ckpt", ck)
def align(ts_):
    x, mask, _ = T.batch(panel, np.sort(ts_), torch.device("cpu"), with_y=False)
    with torch.no_grad():
        r = net._represent(x, mask)
        lg = net.align.logits(r.ts.cls, mask.bool(), r.cs.cls)
    tg = torch.arange(len(ts_))
    loss = 0.5 * (F.cross_entropy(lg, tg) + F.cross_entropy(lg.t(), tg))
    top = 0.5 * ((lg.argmax(1) == tg).float().mean() + (lg.argmax(0) == tg).float().mean())
    return float(loss), float(top)
rng = np.random.default_rng(0)
for split in ("train", "valid"):
    t = panel.split("clean", split)
    # random batches of 16 (as diagnose) and batches of 7 windows spaced >= 64 days apart (no shared day)
    r16 = [align(rng.choice(t, 16, replace=False)) for _ in range(6)]
    sp = []
    for _ in range(6):
        start = rng.integers(0, 64); idx = t[start::70][:7]
        if len(idx) == 7: sp.append(align(idx))
    print(split, "B=16 random: loss %.3f (ln16 %.3f) top1 %.3f" % (np.mean([a for a, b in r16]), math.log(16), np.mean([b for a, b in r16])),
          "| B=7 disjoint: loss %.3f (ln7 %.3f) top1 %.3f (1/7 %.3f)" % (np.mean([a for a, b in sp]), math.log(7), np.mean([b for a, b in sp]), 1/7))
