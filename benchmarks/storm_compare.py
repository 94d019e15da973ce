"""Side-by-side STORM step benchmark: a git revision against this working tree, in one process.

Used by ``python benchmarks/storm.py compare --rev REV``. The revision's ``storm_lib`` is extracted
with ``git archive`` into a temporary folder and imported as package ``storm_old`` (every import
inside the package is relative), so the two implementations run in the same process on the same
machine state. Both networks get identical weights (one state_dict) and the same batches; each
training step is forward, backward, gradient clipping (1.0) and AdamW, as in ``train.fit``.

Per (universe, thread count) it prints, for each configuration:

- FLOPs per training step (``torch.utils.flop_counter.FlopCounterMode``: matmuls, attention, convs),
- the median seconds per step over ``steps`` interleaved timed steps (after one warm-up step each),
  achieved GFLOP/s, the sgemm peak measured in this process (2048^3, same thread count) and the
  efficiency = achieved / peak,
- the step's peak memory: the highest resident size sampled every 2 ms during one step above the
  resident size just before it (after ``malloc_trim(0)``), and the mean minor page faults of the
  timed steps (memory returned to the OS and faulted back),
- training windows/s, prediction windows/s over the first ``predict_days`` validation window ends
  (``train.predict`` of each version, the profile's eval batch size, the versions interleaved in
  blocks of four eval batches so that a change of the machine's load hits all alike), and the
  old/new time ratios.

Configurations: ``old`` (REV, glibc defaults), ``new`` (this tree, glibc defaults), ``new+mem``
(this tree with ``train.keep_freed_memory``, what ``fit`` applies: the default), ``new+mem+nodrop``
(plus dropout 0, a numerics-changing lever), ``new+mem+ckpt`` (activation checkpointing of the TS
blocks, ``checkpoint_ts``: same numbers, less memory, more time); ``+v1`` runs this tree with
:data:`V1_SETTINGS` (model version 1, the maths of REV = 757ada5) on REV's own weights, so ``old`` vs
``new+mem+v1`` measures the code on the same computation, and the plain ``new*`` configurations run the
current default model (version 2: cosine codebooks, entropy term, MLP alignment pooling; other
parameters, same seed); ``+compile`` runs the training forward through ``train.compiled``
(``TrainConfig.compile``; the warm-up steps compile, prediction stays eager); ``+bf16`` runs the training
forward and prediction under bf16 autocast (``TrainConfig.autocast="bf16"``, the VQ distances in
float32), a numerics-changing lever that pays only where the CPU has AMX or avx512_bf16. glibc's defaults are
reinstated for the default-allocator configurations with ``mallopt`` at the steady state its dynamic
rule reaches (mmap threshold 32 MB, trim threshold 64 MB), since mallopt is process-wide.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from storm_lib import train as storm_train

ROOT = Path(__file__).resolve().parents[1]
_libc = ctypes.CDLL("libc.so.6")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


def glibc_defaults() -> None:
    _libc.mallopt(_M_MMAP_MAX, 65536)
    _libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    _libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def keep_memory() -> None:
    _libc.mallopt(_M_MMAP_MAX, 0)
    _libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def import_revision(rev: str, name: str = "storm_old"):
    """``storm_lib`` at git revision ``rev`` as package ``name`` (its models.storm and train modules)."""
    tmp = Path(tempfile.mkdtemp(prefix="storm_rev_"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "storm_lib"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    (tmp / "storm_lib").rename(tmp / name)
    sys.path.insert(0, str(tmp))
    pkg = importlib.import_module(name)
    return importlib.import_module(f"{name}.models.storm"), importlib.import_module(f"{name}.train"), pkg


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Highest resident size sampled every ``dt`` seconds in a background thread."""

    def __init__(self, dt: float = 0.002):
        self.dt, self.peak, self._stop = dt, 0, threading.Event()

    def __enter__(self):
        self.peak = rss_bytes()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.dt)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())


def sgemm_peak(n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n^3 float32 matmul at the current thread count (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


#: StormConfig settings of model version 1 (757ada5's defaults) that version 2 changed: with them this
#: tree's network has 757ada5's parameters and loss terms (plus a 0-weighted entropy term), so the two
#: can run on identical weights
V1_SETTINGS = dict(codebook_metric="euclid", contrastive_temperature=0.07, learn_temperature=True,
                   align_pool="mean", w_entropy=0.0, w_contrastive=1e-3, align_negatives="all")


class Runner:
    """One implementation's network + optimiser and its training step."""

    def __init__(self, name, storm_mod, train_mod, panel, profile, state, dropout=None, keep_mem=False, model=None,
                 compile=False, autocast=None):
        model = {**(model or {}), **({} if dropout is None else {"dropout": dropout})}
        self.name, self.train_mod, self.keep_mem = name, train_mod, keep_mem
        self.net = storm_mod.StormModel("storm", profile=profile, seed=0, progress=False, model=model).build_net(panel)
        self.net.load_state_dict(state)
        for m in self.net.modules():  # loading marks this tree's codebooks initialised: re-initialise from
            if hasattr(m, "initialised") and isinstance(m.initialised, bool):  # the warm-up batch as 757ada5
                m.initialised = False
        self.forward = train_mod.compiled(self.net) if compile else self.net  # as train.fit does
        self.autocast = autocast  # TrainConfig.autocast ("bf16" or None), as train.fit applies it
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))

    def predict(self, panel, t, batch_size):
        """``train.predict`` of this version; a bf16 configuration predicts under autocast, as ``fit``'s
        validation does."""
        extra = {} if self.autocast is None else {"autocast": self.autocast}
        return self.train_mod.predict(self.net, panel, t, batch_size, **extra)

    def allocator(self):
        keep_memory() if self.keep_mem else glibc_defaults()

    def step(self, x, mask, y, days=None, eager=False):
        """One training step; ``days`` (the window end days) go to networks that take them (train.fit)."""
        fwd = self.net if eager else self.forward
        with storm_train.autocast(torch.device("cpu"), self.autocast):  # this tree's helper: REV may lack it
            out = fwd(x, mask, y, days=days) if getattr(self.net, "takes_days", False) else fwd(x, mask, y)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        return float(out.loss.detach())


def compare(universes, profile, rev, threads, steps, configs, predict_days, out_path) -> int:
    from storm_lib import train as new_train
    from storm_lib.models import storm as new_storm
    from storm_lib.panel import Panel
    from storm_lib import data
    from storm_lib.profiles import get_profile

    old_storm, old_train, _ = import_revision(rev)
    configs = configs or ["old", "new", "new+mem", "new+mem+nodrop", "new+mem+ckpt"]
    prof = get_profile(profile)
    rows = []
    print(f"# compare {rev} (old) vs working tree (new); torch {torch.__version__}; "
          f"load average {os.getloadavg()}", flush=True)
    for universe in universes:
        panel = Panel.from_prices(data.load_prices(universe), window=prof.window, verbose=False)
        n = panel.shape[1]
        tcfg = prof.with_train(**(prof.large if n > prof.large_n else {})).train
        bs = tcfg.batch_size
        states = {}
        for key, mod, model in (("old", old_storm, {}), ("v1", new_storm, V1_SETTINGS), ("v2", new_storm, {})):
            torch.manual_seed(0)
            net = mod.StormModel("storm", profile=profile, seed=0, progress=False, model=model).build_net(panel)
            states[key] = {k: v.clone() for k, v in net.state_dict().items()}
        if set(states["old"]) - {k for k in states["old"] if k.endswith("initialised")} != set(states["v1"]):
            raise RuntimeError(f"{rev} and this tree with V1_SETTINGS have different parameters")
        train_t = new_train.trainable_days(panel, panel.split("clean", "train"))
        valid_t = new_train.trainable_days(panel, panel.split("clean", "valid"))
        pred_t = valid_t if predict_days <= 0 else valid_t[:predict_days]
        rng = np.random.default_rng(0)
        days = [np.sort(rng.choice(train_t, bs, replace=False)) for _ in range(steps + 2)]
        batches = [(*new_train.batch(panel, d, torch.device("cpu"), tcfg), torch.as_tensor(d)) for d in days]
        for nt in threads:
            torch.set_num_threads(nt)
            glibc_defaults()
            peak = sgemm_peak()
            runners = []
            for c in configs:
                mod = (old_storm, old_train) if c == "old" else (new_storm, new_train)
                parts = set(c.split("+"))
                model = {**(V1_SETTINGS if "v1" in parts else {}), **({"checkpoint_ts": True} if "ckpt" in parts else {})}
                state = states["old"] if c == "old" else states["v1" if "v1" in parts else "v2"]
                if c != "old":
                    state = {k: v for k, v in state.items() if not k.endswith("initialised")}
                runners.append(Runner(c, *mod, panel, profile, state, dropout=0.0 if "nodrop" in parts else None,
                                      keep_mem="mem" in parts, model=model, compile="compile" in parts,
                                      autocast="bf16" if "bf16" in parts else None))
            res = {r.name: {"times": []} for r in runners}
            # warm-up (codebook init) and FLOPs, then the memory step
            from torch.utils.flop_counter import FlopCounterMode
            for r in runners:
                torch.manual_seed(1)
                r.allocator()
                r.step(*batches[0])
                r.step(*batches[1])  # a compiled forward compiles in these two steps
                with FlopCounterMode(display=False) as fc:  # the eager graph's FLOPs (same maths)
                    r.step(*batches[1], eager=True)
                res[r.name]["flops"] = fc.get_total_flops()
            for r in runners:
                r.allocator()
                r.step(*batches[0])  # this allocator's steady state
                _libc.malloc_trim(0)
                base = rss_bytes()
                with PeakRSS() as m:
                    r.step(*batches[1])
                res[r.name]["peak_mem_gb"] = (m.peak - base) / 2**30
                res[r.name]["minor_faults"] = 0
            for i in range(steps):  # interleaved timing; page faults of the timed steps
                for r in runners:
                    r.allocator()
                    torch.manual_seed(100 + i)
                    flt = _minflt()
                    res[r.name]["times"].append(_timed(lambda: r.step(*batches[2 + i % (len(batches) - 2)])))
                    res[r.name]["minor_faults"] += (_minflt() - flt) / steps
            for r in runners:  # prediction: warm-up, then interleaved blocks of 4 eval batches
                r.allocator()
                r.predict(panel, pred_t[: tcfg.eval_batch_size], tcfg.eval_batch_size)
                res[r.name]["predict_s"] = 0.0
            block = 4 * tcfg.eval_batch_size
            for i in range(0, len(pred_t), block):
                for r in runners:
                    r.allocator()
                    res[r.name]["predict_s"] += _timed(
                        lambda: r.predict(panel, pred_t[i:i + block], tcfg.eval_batch_size))
            base = res[configs[0]]
            print(f"\n## {universe} (N={n}), profile {profile}, batch {bs}, {nt} thread(s): sgemm 2048^3 peak "
                  f"{peak:.1f} GFLOP/s; prediction over {len(pred_t)} validation days, eval batch "
                  f"{tcfg.eval_batch_size}; load average {os.getloadavg()[0]:.2f}", flush=True)
            print("| config | GFLOP/step | s/step (median) | GFLOP/s | efficiency | peak mem GB | minor faults "
                  "| train windows/s | predict windows/s | step speedup | predict speedup |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for c in configs:
                v = res[c]
                sec = float(np.median(v["times"]))
                gfs = v["flops"] / 1e9 / sec
                row = {"universe": universe, "threads": nt, "batch": bs, "config": c, "gflop": v["flops"] / 1e9,
                       "sec_per_step": sec, "steps_s": v["times"], "gflops": gfs, "sgemm_peak": peak,
                       "efficiency": gfs / peak, "peak_mem_gb": v["peak_mem_gb"], "minor_faults": v["minor_faults"],
                       "train_windows_s": bs / sec, "predict_windows_s": len(pred_t) / v["predict_s"],
                       "step_speedup": float(np.median(base["times"])) / sec,
                       "predict_speedup": base["predict_s"] / v["predict_s"]}
                rows.append(row)
                print(f"| {c} | {row['gflop']:.1f} | {sec:.3f} | {gfs:.1f} | {row['efficiency']:.1%} | "
                      f"{row['peak_mem_gb']:.2f} | {row['minor_faults']:,.0f} | {row['train_windows_s']:.2f} | "
                      f"{row['predict_windows_s']:.2f} | {row['step_speedup']:.2f} | {row['predict_speedup']:.2f} |",
                      flush=True)
            del runners
    if out_path:
        Path(out_path).write_text(json.dumps(rows, indent=1))
    return 0


def _minflt() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
