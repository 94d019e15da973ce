"""Shared fixtures. Tests that need the real data read it from $STORM_DATA_DIR.

Locally they skip when it is unset; CI sets STORM_REQUIRE_DATA=1 so a missing data directory fails
instead of silently skipping.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("STORM_DATA_DIR")
    if value and Path(value).is_dir():
        return Path(value)
    if os.environ.get("STORM_REQUIRE_DATA") == "1":
        pytest.fail("STORM_REQUIRE_DATA=1 but $STORM_DATA_DIR is not a directory")
    pytest.skip("real data needed: set STORM_DATA_DIR (e.g. ../shared/data)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its caches into a temporary directory, never the user's cache, and fits its
    models afresh (runs share fitted models only in tests that turn it on)."""
    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("STORM_REUSE_FITS", "0")


def make_prices(n_days=120, tickers=("AAA", "BBB", "CCC"), seed=0, start="2020-01-01"):
    """A small synthetic long price frame in the schema (business days, random walks)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n_days)
    rows = []
    for k, t in enumerate(tickers):
        close = 50 * (1 + k) * np.exp(np.cumsum(rng.normal(0, 0.02, n_days)))
        open_ = close * np.exp(rng.normal(0, 0.005, n_days))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n_days))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n_days))
        factor = np.linspace(0.9, 1.0, n_days)  # dividend back-adjustment
        rows.append(pd.DataFrame({
            "date": dates, "ticker": t, "open": open_, "high": high, "low": low, "close": close,
            "adj_close": close * factor, "volume": rng.integers(1_000, 100_000, n_days).astype(float),
        }))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture
def prices():
    return make_prices()


def planted_panel(seed=0, T=520, N=10, F=5, window=16, late=None):
    """A synthetic panel with a planted signal: label_t = 0.01 x feature 0 on day t + noise of the
    same size (true RankIC about 0.6). ``late``: the last stock lists only from day ``late``."""
    from storm_lib.panel import Panel

    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(T, N, F)).astype(np.float32)
    labels = (0.01 * raw[:, :, 0] + 0.01 * rng.normal(size=(T, N))).astype(np.float32)
    labels[-1] = np.nan
    listed = np.ones((T, N), bool)
    if late is not None:
        listed[:late, -1] = False
    dates = pd.bdate_range("2015-01-01", periods=T)
    return Panel.from_arrays(raw, labels, listed, dates, [f"S{i}" for i in range(N)],
                             [f"F{j}" for j in range(F)], window=window, normalization="none")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks run fastest, and never thrash on a shared 2-core machine, with one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def interrupt_after_first_epoch(monkeypatch):
    """A function that makes every later torch fit stop (KeyboardInterrupt, as a killed run) right after
    writing its first epoch's checkpoint; it returns the function that restores normal fits."""
    from storm_lib import train

    save = train._save

    def save_then_interrupt(run_dir_, net, opt, sched, rng, epoch, *args):
        save(run_dir_, net, opt, sched, rng, epoch, *args)
        if epoch == 0:
            raise KeyboardInterrupt

    def start():
        monkeypatch.setattr(train, "_save", save_then_interrupt)
        return lambda: monkeypatch.setattr(train, "_save", save)

    return start
