"""The types every task shares: :class:`RunOutput`, :class:`RunCache`, :class:`RunContext` (see
:mod:`storm_lib.tasks`). A task module imports them from here, so the registry in ``__init__`` can import
the task modules without an import circle."""


from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd


@dataclass
class RunOutput:
    """What a task returns.

    ``metrics``: long frame, key columns (e.g. ``split``, ``convention``) then ``metric``, ``value``.
    ``tables``: name -> DataFrame, written as ``<name>.csv``; a name ending in ``.parquet``
    (e.g. ``"scores.parquet"``) is written as compressed parquet instead. ``info``: JSON-able facts
    for ``run.json`` (fit seconds, selected epoch, ...).
    """

    metrics: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


class RunCache:
    """Prices, indices and panels shared by the runs of one process, keyed by what built them.

    Small things (prices, index series, hashes) are kept; panels (about 1 GB for SP500) are kept
    least-recently-used, at most ``max_panels`` of them.
    """

    def __init__(self, max_panels: int = 2):
        self.max_panels = max_panels
        self._small: dict = {}
        self._panels: OrderedDict = OrderedDict()

    def get(self, key: tuple, build: Callable[[], object], heavy: bool = False):
        """The cached value of ``key``, built by ``build()`` on a miss."""
        if not heavy:
            if key not in self._small:
                self._small[key] = build()
            return self._small[key]
        if key in self._panels:
            self._panels.move_to_end(key)
            return self._panels[key]
        value = build()
        self._panels[key] = value
        while len(self._panels) > max(self.max_panels, 1):
            self._panels.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._small) + len(self._panels)


def _series_hash(s: pd.Series) -> str:
    h = hashlib.sha256(f"storm-series-v1|{s.name}|{len(s)}|".encode())
    h.update(np.ascontiguousarray(pd.DatetimeIndex(s.index).asi8).tobytes())
    h.update(np.ascontiguousarray(s.to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()


@dataclass
class RunContext:
    """What a task gets besides its spec: where the data is, the shared cache, the progress flag and
    ``scratch``, a directory of its own that survives an interruption of the run (checkpoints; a
    rerun of the same spec sees it again) and is deleted when the run finishes. ``fits``: a directory
    of fitted models shared by runs whose fit is the same (:func:`storm_lib.tasks.fits.fit_key`),
    or None for no sharing."""

    data_dir: str | os.PathLike | None = None
    cache: RunCache = field(default_factory=RunCache)
    progress: bool = True
    scratch: Path | None = None
    fits: Path | None = None

    def _dir_key(self) -> str:
        return str(self.data_dir) if self.data_dir is not None else os.environ.get("STORM_DATA_DIR", "")

    def prices(self, universe: str) -> pd.DataFrame:
        """:func:`storm_lib.data.load_prices` of ``universe``, cached."""
        from .. import data

        return self.cache.get(("prices", universe, self._dir_key()),
                              lambda: data.load_prices(universe, data_dir=self.data_dir))

    def prices_hash(self, universe: str) -> str:
        """:func:`storm_lib.features.data_hash` of :meth:`prices`, cached."""
        from ..features import data_hash

        return self.cache.get(("prices_hash", universe, self._dir_key()), lambda: data_hash(self.prices(universe)))

    def market_index(self, universe: str) -> pd.Series:
        """:func:`storm_lib.data.market_index` of ``universe`` (the benchmark price series), cached."""
        from .. import data

        return self.cache.get(("index", universe, self._dir_key()),
                              lambda: data.market_index(universe, data_dir=self.data_dir))

    def index_hash(self, universe: str) -> str:
        return self.cache.get(("index_hash", universe, self._dir_key()),
                              lambda: _series_hash(self.market_index(universe)))

    def panel(self, universe: str, window: int = 64, normalization: str = "cs_zscore",
              feature_set: str = "auto"):
        """:meth:`storm_lib.panel.Panel.from_prices` of ``universe``, cached (least recently used)."""
        from ..panel import Panel

        key = ("panel", universe, self._dir_key(), int(window), normalization, feature_set)
        return self.cache.get(
            key, lambda: Panel.from_prices(self.prices(universe), window=window, normalization=normalization,
                                           feature_set=feature_set, verbose=self.progress),
            heavy=True,
        )
