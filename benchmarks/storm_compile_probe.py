"""torch.compile against eager for one STORM training step (issue 17; a script that prints figures).

    python benchmarks/storm_compile_probe.py dj30 [dropout]

cpu profile, 1 thread, the universe's batch size; one process: the eager network and a
``torch.compile`` of a copy (same weights, codebooks initialised by one eager step), the first compiled
step timed (compilation), loss and worst relative gradient difference of one step (dropout on, the
compiled graph draws other masks, so these are not an exactness check unless ``dropout`` is 0), then
the median of 6 interleaved forward+backward steps of each.
"""
import sys, time, copy, torch, numpy as np
torch.set_num_threads(1)
from storm_lib import data, train
from storm_lib.panel import Panel
from storm_lib.models.storm import StormModel
from storm_lib.profiles import get_profile
u = sys.argv[1]; drop = float(sys.argv[2]) if len(sys.argv) > 2 else None
prof = get_profile("cpu")
panel = Panel.from_prices(data.load_prices(u), window=prof.window, verbose=False)
n = panel.shape[1]
tcfg = prof.with_train(**(prof.large if n > prof.large_n else {})).train
torch.manual_seed(0)
model = {} if drop is None else {"dropout": drop}
net = StormModel("storm", profile="cpu", seed=0, progress=False, model=model).build_net(panel)
train_t = train.trainable_days(panel, panel.split("clean", "train"))
rng = np.random.default_rng(0)
batches = [train.batch(panel, np.sort(rng.choice(train_t, tcfg.batch_size, replace=False)), torch.device("cpu"), tcfg) for _ in range(8)]
torch.manual_seed(1); net(*batches[0])  # init codebooks
ref = copy.deepcopy(net)
comp = train.compiled(net)  # what fit runs with TrainConfig.compile
def step(m, b):
    out = m(*b); out.loss.backward(); return out
t0 = time.perf_counter(); torch.manual_seed(2); oc = step(comp, batches[1]); print("first compiled step (compile)", time.perf_counter() - t0, flush=True)
torch.manual_seed(2); oe = step(ref, batches[1])
print("loss eager", float(oe.loss), "compiled", float(oc.loss), "rel", abs(float(oe.loss - oc.loss)) / abs(float(oe.loss)))
rel = max(((p.grad - q.grad).norm() / q.grad.norm().clamp_min(1e-12)).item() for p, q in zip(net.parameters(), ref.parameters()) if q.grad is not None)
print("max grad rel diff", rel)
for m in (net, ref): m.zero_grad(set_to_none=True)
te, tc = [], []
for i in range(2, 8):
    for m, ts, name in ((ref, te, "e"), (comp, tc, "c")):
        t0 = time.perf_counter(); step(m, batches[i]); ts.append(time.perf_counter() - t0)
        m.zero_grad(set_to_none=True) if m is ref else net.zero_grad(set_to_none=True)
print("eager median", np.median(te), "compiled median", np.median(tc), "ratio", np.median(te) / np.median(tc))
