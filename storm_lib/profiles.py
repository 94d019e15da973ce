"""Profiles: named bundles of sizes and budgets, in one place.

* ``smoke``: CI and tests, well under a minute on 2 CPU cores; proves the code runs, not that it learns.
* ``cpu``: the default on a 2-core machine (small widths, early stopping on validation RankIC).
* ``paper``: the official dimensions (official-code.md §2: width 256, codebook 512 x 256, 4-layer
  encoders, 2-layer decoders, 64-day windows, AdamW lr 1e-4, weight decay 0.05, betas (0.9, 0.95));
  for GPU users. The official 1,000 epochs with no early stopping become ``max_epochs`` 200 with
  early stopping here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every torch return model (see :mod:`storm_lib.train`)."""

    batch_size: int = 16
    max_epochs: int = 30
    patience: int = 5                 # epochs without a better validation score before stopping
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_frac: float = 0.05         # share of all steps with linear warm-up, then cosine decay to 0
    grad_clip: float = 1.0
    steps_per_epoch: int | None = None  # None: one pass over the training windows
    eval_batch_size: int = 32
    select_metric: str = "rankic"     # "rankic" (validation RankIC, higher is better) or "loss"
    label_norm: str = "cs_zscore"     # training target: per-day cross-sectional z-score of returns
    min_valid_stocks: int = 2
    keep_freed_memory: bool = True    # glibc: keep freed buffers in the process (train.keep_freed_memory);
                                      # exact, faster CPU steps, resident size stays near the step's peak
    # -- GPU (and AMX CPU) settings (storm_lib.train): bf16 autocast around the forward; VQ distances fp32 --
    autocast: str | None = None       # None (fp32) or "bf16": torch.autocast(device, torch.bfloat16)
    compile: bool = False             # torch.compile the training forward (inductor); not exact: fused
                                      # kernels round differently and dropout draws other masks
    # -- training budget (storm_lib.train.budget_plan; the study of storm_lib.budget) -------------------
    budget_windows: int | None = None  # training sees exactly this many windows: epochs of steps_per_epoch x
                                       # batch_size (the last one partial), LR schedule sized to it, no early stop


@dataclass(frozen=True)
class Profile:
    name: str
    window: int
    train: TrainConfig
    storm: dict = field(default_factory=dict)  # StormConfig overrides
    note: str = ""
    #: training overrides for large universes (more than ``large_n`` stocks, e.g. SP500), so a full run
    #: fits the profile's time budget; applied by ``TorchReturnModel`` unless the user overrides them
    large: dict = field(default_factory=dict)
    large_n: int = 100
    #: training budgets chosen from the budget study (issue 18, :func:`storm_lib.budget.profile_budgets`):
    #: universe name -> torch model name -> windows. A run of a listed (universe, model) without its own
    #: ``budget_windows`` option trains with that budget (:func:`budget_options`); not part of
    #: :func:`profile_identity`: the budget enters the identity of the runs it applies to.
    budgets: dict = field(default_factory=dict)
    #: universe name -> training options that every budget run on it takes, the study's (storm_lib.budget
    #: puts them in its specs) and those of ``budgets`` (:func:`budget_options`); e.g. a validation pass
    #: every 800 windows on SP500, where one costs about as much as 25 training steps. Not in the identity.
    budget_options: dict = field(default_factory=dict)

    def with_train(self, **kw) -> "Profile":
        return replace(self, train=replace(self.train, **kw))


def chosen_budgets(profile: str) -> dict:
    """The budgets chosen for ``profile`` from the budget study (``storm_lib/budgets.json``, written by
    ``python -m storm_lib.budget apply``): universe -> torch model -> windows; {} when none."""
    import json
    from importlib import resources

    text = resources.files("storm_lib").joinpath("budgets.json").read_text()
    return {u: {m: int(b) for m, b in models.items()} for u, models in json.loads(text).get(profile, {}).items()}


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke", window=16,
        train=TrainConfig(batch_size=8, max_epochs=2, patience=2, lr=1e-3, steps_per_epoch=8, eval_batch_size=64),
        storm=dict(d_model=16, n_heads=2, ts_layers=1, ts_dec_layers=1, cs_layers=1, cs_dec_layers=1,
                   codebook_size=32, stem_width=4),
        note="CI: a few steps to prove the code runs end to end",
    ),
    "cpu": Profile(
        "cpu", window=64,
        train=TrainConfig(batch_size=16, max_epochs=20, patience=4, lr=1e-3, steps_per_epoch=60),
        storm=dict(d_model=64, n_heads=4, ts_layers=2, ts_dec_layers=1, cs_layers=2, cs_dec_layers=1,
                   codebook_size=512, stem_width=16),
        note="default on a 2-core CPU: an 'epoch' is 60 random batches of 16 windows (960 of the ~2,770 "
             "training days), then a validation pass; at most 20 epochs, patience 4. SP500 (408 stocks): "
             "batches of 8, 25 per epoch, at most 10 epochs, patience 3, to stay within about an hour",
        large=dict(batch_size=8, steps_per_epoch=25, max_epochs=10, patience=3, eval_batch_size=16),
        # a validation pass on SP500 (prediction + STORM's diagnostics over 504 days) costs about as much as
        # 25 training steps (measured: 221 s of steps, 232 s of validation per epoch), so budget runs
        # there validate every 100 x 8 = 800 windows, near DJ30's 960
        budget_options={"sp500": {"steps_per_epoch": 100}},
        budgets=chosen_budgets("cpu"),
    ),
    "paper": Profile(
        "paper", window=64,
        train=TrainConfig(batch_size=32, max_epochs=200, patience=20, lr=1e-4, weight_decay=0.05,
                          warmup_frac=0.1, eval_batch_size=32),
        storm=dict(d_model=256, n_heads=4, ts_layers=4, ts_dec_layers=2, cs_layers=4, cs_dec_layers=2,
                   codebook_size=512, stem_width=32),
        note="official dimensions (official-code.md §2); for GPU users",
    ),
}


#: TrainConfig fields added after results were committed, with the default that leaves them out of run
#: and fit identities (so existing run directories keep their hash); any other value is hashed
IDENTITY_NEUTRAL = {"autocast": None, "keep_freed_memory": True,  # keep_freed_memory never changes numbers
                    "compile": False, "budget_windows": None}


def profile_identity(profile: str | Profile) -> dict:
    """The profile as hashed into run and fit identities: every field but ``note``, without the
    :data:`IDENTITY_NEUTRAL` training fields that are at their neutral default."""
    from dataclasses import asdict

    out = asdict(get_profile(profile))
    out.pop("note", None)
    out.pop("budgets", None)  # per run: storm_lib.run.code_identity adds the run's budget (budget_options)
    out.pop("budget_options", None)
    for k, v in IDENTITY_NEUTRAL.items():
        if k in out["train"] and out["train"][k] == v:
            del out["train"][k]
    return out


#: the option (a TrainConfig field) that sets a run's training budget in windows
BUDGET_OPTION = "budget_windows"


def budget_options(profile: str | Profile, universe: str, model: str, options: dict | None = None) -> dict | None:
    """The training options the profile gives a run of ``model`` on ``universe`` whose ``options`` do not
    set :data:`BUDGET_OPTION`: ``{budget_windows: profile.budgets[universe][model], **profile.budget_options
    [universe]}``; None when the profile chose no budget for it (early stopping as configured) or when
    ``options`` set a budget of their own (an explicit option always wins)."""
    if options and BUDGET_OPTION in options:
        return None
    p = get_profile(profile)
    value = p.budgets.get(str(universe), {}).get(str(model))
    if value is None:
        return None
    return {**p.budget_options.get(str(universe), {}), BUDGET_OPTION: int(value)}


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}") from None


#: what the authors' released code uses where a profile may differ (official-code.md §2, §4, §8)
OFFICIAL = {
    "window (days)": 64, "width (d_model)": 256, "TS / CS encoder layers": "4 / 4",
    "TS / CS decoder layers": "2 / 2", "codebook (codes)": 512, "batch (DJ30 / SP500)": "32 / 8",
    "learning rate": 1e-4, "epochs": "1,000, no early stopping (selection on the test period)",
    "steps per epoch": "one pass (~100 at batch 32)", "PPO environment steps": "100,000,000",
}


def compare_to_paper(profile: str | Profile, trading: bool = False):
    """The settings of ``profile`` beside the official code's, one row per setting that can differ
    (a pandas DataFrame with columns ``this profile``, ``official code``, ``same``). ``trading`` adds
    the RL budget of PPO (storm_lib.trading.agents.BUDGETS)."""
    import pandas as pd

    p = get_profile(profile)
    st, tr = p.storm, p.train
    big = {**{k: getattr(tr, k) for k in ("batch_size", "steps_per_epoch", "max_epochs", "patience")}, **p.large}
    ours = {
        "window (days)": p.window, "width (d_model)": st.get("d_model"),
        "TS / CS encoder layers": f"{st.get('ts_layers')} / {st.get('cs_layers')}",
        "TS / CS decoder layers": f"{st.get('ts_dec_layers')} / {st.get('cs_dec_layers')}",
        "codebook (codes)": st.get("codebook_size"),
        "batch (DJ30 / SP500)": f"{tr.batch_size} / {big['batch_size']}",
        "learning rate": tr.lr,
        "epochs": (f"at most {tr.max_epochs} (SP500 {big['max_epochs']}), early stopping on validation "
                   f"RankIC, patience {tr.patience}"),
        "steps per epoch": ("one pass" if tr.steps_per_epoch is None else
                            f"{tr.steps_per_epoch} (SP500 {big['steps_per_epoch']})"),
    }
    if trading:
        from .trading.agents import budget
        ours["PPO environment steps"] = f"{budget('ppo', p.name)['timesteps']:,}"
    rows = {k: (ours[k], OFFICIAL[k]) for k in ours}
    out = pd.DataFrame(rows, index=["this profile", "official code"]).T.rename_axis(f"profile {p.name!r}")
    out["same"] = [str(a) == str(b) for a, b in zip(out["this profile"], out["official code"])]
    return out
