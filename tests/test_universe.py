"""Any universe, any period (issue 19): universes as files or names, user split dates, data-quality
reports, the equal-weight benchmark, and keyword checks of every model."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import make_prices, planted_panel
from storm_lib import data
from storm_lib.data import DataError, DataQualityWarning
from storm_lib.panel import Panel, Protocol, ProtocolNote, get_protocol, split_indices

SPLIT = "train=2000-04-03:2005-12-30,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28"


# --------------------------------------------------------------------------- split dates


def test_split_text_and_file_give_the_same_protocol(tmp_path):
    p = Protocol.parse(SPLIT)
    assert p.train == (pd.Timestamp("2000-04-03"), pd.Timestamp("2005-12-30"))
    assert p.test == (pd.Timestamp("2007-01-03"), pd.Timestamp("2008-03-28")) and not p.allow_short
    assert p.name == p.text() == SPLIT and Protocol.parse(p.text()) == p
    assert get_protocol(SPLIT) == p                               # a run spec's protocol may be split text
    (tmp_path / "split.txt").write_text(SPLIT.replace(",", "\n"))
    assert get_protocol(str(tmp_path / "split.txt")) == p
    obj = {"train": ["2000-04-03", "2005-12-30"], "valid": ["2006-01-03", "2006-12-29"],
           "test": ["2007-01-03", "2008-03-28"], "allow_short": True}
    (tmp_path / "split.json").write_text(json.dumps(obj))
    q = Protocol.parse(str(tmp_path / "split.json"))
    assert q.allow_short and q.text() == SPLIT + ",allow_short=true" and q.test == p.test


@pytest.mark.parametrize("text, message", [
    ("train=2000-04-03:2006-01-05,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28", "train .* must end before valid"),
    ("train=2000-04-03:2005-12-30,valid=2006-01-03:2007-02-01,test=2007-01-03:2008-03-28", "valid .* must end before test"),
    ("train=2000-04-03:2005-12-30,valid=2006-01-03:2006-12-29", "lacks test"),
    ("train=2005-04-03:2000-12-30,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28", "starts 2005-04-03, after it ends"),
    ("train=2000-04-03..2005-12-30,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28", "START:END"),
    ("train=2000-04-03:2005-12-30,valid=2006-01-03:2006-12-29,test=2007-01-03:2008-03-28,embargo=5", "unknown split key"),
])
def test_bad_split_dates_are_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Protocol.parse(text)


def test_the_official_protocol_shape_is_still_allowed():
    p = Protocol.parse("train=2000-04-03:2005-12-30,valid=2006-01-03:2008-03-28,test=2006-01-03:2008-03-28")
    assert p.valid_is_test


def test_warm_up_clip_and_a_test_span_cut_short_by_the_data():
    dates = pd.bdate_range("2000-01-03", "2008-03-07")  # the data end three weeks before the test end
    with pytest.raises(DataError, match="ends 2008-03-28, but the data end 2008-03-07.*cut short"):
        split_indices(dates, 64, SPLIT, "test")
    with pytest.warns(ProtocolNote, match="cut short"):
        t = split_indices(dates, 64, Protocol.parse(SPLIT, allow_short=True), "test")
    assert dates[t[-1]] == pd.Timestamp("2008-03-06")  # the last day with a realised label
    # a train start inside the 64-day warm-up is clipped, with a note naming the new start
    early = Protocol.parse(SPLIT.replace("2000-04-03", "2000-01-03"))
    with pytest.warns(ProtocolNote, match="clipped to 2000-03-30"):
        t = split_indices(dates, 64, early, "train")
    assert dates[t[0]] == dates[63] == pd.Timestamp("2000-03-30")
    # a holiday between the last session and the split end is not a cut (clean ends on a Sunday)
    short = pd.bdate_range("2021-01-04", "2024-03-28")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_indices(short, 64, "clean", "test")


# --------------------------------------------------------------------------- universes


def test_a_universe_is_a_file_or_a_name_in_the_data_directory(tmp_path, monkeypatch):
    prices = make_prices(n_days=80, tickers=("XA", "XB"))
    prices.to_csv(tmp_path / "mine.csv", index=False)
    prices.to_parquet(tmp_path / "other.parquet")
    kind, path = data.find_universe(str(tmp_path / "mine.csv"))
    assert kind == "file" and path == tmp_path / "mine.csv"
    monkeypatch.setenv("STORM_DATA_DIR", str(tmp_path))
    assert data.find_universe("other") == ("named", tmp_path / "other.parquet")
    assert data.find_universe("mine") == ("named", tmp_path / "mine.csv")
    loaded = data.load_prices("other")
    assert sorted(loaded["ticker"].unique()) == ["XA", "XB"] and len(loaded) == 160
    pd.testing.assert_frame_equal(data.load_prices(str(tmp_path / "mine.csv")), loaded)
    assert data.universe_label(str(tmp_path / "mine.csv")) == "mine" and data.universe_label("dj30") == "dj30"
    with pytest.raises(DataError, match="unknown universe 'ftse'.*<name>.parquet"):
        data.find_universe("ftse")
    with pytest.raises(DataError, match="does not exist"):
        data.find_universe(str(tmp_path / "missing.parquet"))
    assert data.has_paper_numbers("dj30") and not data.has_paper_numbers("other")


def test_quality_report_flags_stale_bars_and_extreme_returns_and_alters_nothing():
    prices = make_prices(n_days=60, tickers=("AAA", "BBB"))
    i = prices.index[(prices["ticker"] == "AAA")][30]
    prev = prices.loc[i - 1, "close"]
    prices.loc[i, ["open", "high", "low", "close", "volume"]] = [prev, prev, prev, prev, 0.0]
    j = prices.index[(prices["ticker"] == "BBB")][40]
    prices.loc[j:, "adj_close"] = prices.loc[j:, "adj_close"].where(prices.loc[j:, "ticker"] != "BBB",
                                                                     prices.loc[j:, "adj_close"] * 0.6)
    before = data.validate_prices(prices)
    rep = data.quality_report(before)
    stale = rep[rep["issue"] == "stale_bar"]
    wild = rep[rep["issue"] == "extreme_return"]
    assert list(stale["ticker"]) == ["AAA"] and stale["date"].iloc[0] == prices.loc[i, "date"]
    assert list(wild["ticker"]) == ["BBB"] and wild["date"].iloc[0] == prices.loc[j, "date"]
    assert wild["value"].iloc[0] < -0.35
    with pytest.warns(DataQualityWarning) as caught:
        loaded = data.load_prices(prices)
    text = " | ".join(str(w.message) for w in caught)
    assert "1 stale placeholder bar" in text and "AAA" in text and "beyond +-25%" in text and "BBB" in text
    pd.testing.assert_frame_equal(loaded, before)      # reported, never altered


def test_volume_features_stay_finite_on_zero_volume_bars():
    """Qlib's VMA/VSTD divide by V + 1e-12: on a zero-volume bar they are huge but finite, and the
    robust cross-sectional z-score clips them to +-3 (the choice documented in storm_lib.features)."""
    from storm_lib.features import build_features

    prices = make_prices(n_days=120, tickers=("AAA", "BBB", "CCC", "DDD"))
    k = prices.index[prices["ticker"] == "AAA"][100]
    prices.loc[k, "volume"] = 0.0
    feats = build_features(data.validate_prices(prices), cache=False, verbose=False)
    day = list(feats.dates).index(prices.loc[k, "date"])
    j = feats.names.index("VMA5")
    assert np.isfinite(feats.values[day, :, j]).all() and feats.values[day, 0, j] > 1e6
    panel = Panel.from_prices(data.validate_prices(prices), window=16, cache=False, verbose=False)
    assert np.isfinite(panel.values).all() and panel.info["feature_set"] == "alpha158"
    assert panel.info["feature_set_requested"] == "auto"


# --------------------------------------------------------------------------- model keywords


@pytest.mark.parametrize("name", ["storm", "storm_wo_ts", "storm_wo_cs", "lightgbm", "lstm", "transformer",
                                  "cafactor", "factorvae", "hirevae"])
def test_make_model_rejects_unknown_keywords(name):
    from storm_lib.models import make_model, option_keys

    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['codebok_size'\]; valid: .*seed"):
        make_model(name, profile="smoke", codebok_size=8)
    assert {"profile", "seed", "run_dir", "progress"} <= option_keys(name)
    make_model(name, profile="smoke", seed=1, progress=False)


def test_storm_network_sizes_are_checked_too():
    from storm_lib.models import make_model

    with pytest.raises(TypeError, match="unknown network size"):
        make_model("storm", profile="smoke", model={"codebok_size": 8})
    make_model("storm", profile="smoke", model={"codebook_size": 8})


def test_lightgbm_writes_its_run_dir(tmp_path):
    from storm_lib.models import make_model

    panel = planted_panel(T=300, N=8, F=4, window=16)
    proto = Protocol("tiny", ("2015-01-23", "2015-08-31"), ("2015-09-01", "2015-12-31"), ("2016-01-01", "2016-02-25"))
    model = make_model("lightgbm", profile="smoke", progress=False, run_dir=tmp_path / "lgb", learning_rate=0.1)
    assert "run_dir" not in model.params and model.params["learning_rate"] == 0.1
    model.fit(panel, proto)
    hist = pd.read_csv(tmp_path / "lgb" / "history.csv")
    assert len(hist) == len(model.history_) and hist["best"].sum() == 1
    again = make_model("lightgbm", profile="smoke", progress=False).load(tmp_path / "lgb" / "model.txt")
    t = panel.split(proto, "test")
    np.testing.assert_allclose(again.predict_array(panel, t), model.predict_array(panel, t), rtol=1e-6)


def test_relative_paths_are_read_as_typed_even_under_papermill_cwd_notebooks(tmp_path, monkeypatch):
    """papermill --cwd notebooks (make book) must not break a relative STORM_DATA_DIR or universe file."""
    from pathlib import Path

    from storm_lib import config

    repo = Path(config.__file__).resolve().parent.parent
    monkeypatch.chdir(repo / "notebooks")
    assert config.user_path("tools") == repo / "tools"              # not in notebooks/: from the root
    assert config.user_path("../tools") == repo / "tools"           # as typed from notebooks/
    assert config.user_path(tmp_path) == tmp_path
    monkeypatch.setenv("STORM_DATA_DIR", "tools")
    assert config.data_dir() == repo / "tools"
    monkeypatch.setenv("STORM_DATA_DIR", "no/such/dir")
    with pytest.raises(FileNotFoundError, match="working directory .*notebooks"):
        config.data_dir()
