"""STORM behind the shared fit/predict interface, on a tiny synthetic panel (smoke profile)."""

import numpy as np
import pandas as pd
import pytest

from storm_lib.models import MODEL_NAMES, make_model
from storm_lib.models.storm import StormModel
from storm_lib.panel import Protocol

from conftest import planted_panel

PROTO = Protocol("tiny", ("2015-03-02", "2015-12-31"), ("2016-01-01", "2016-03-31"), ("2016-04-01", "2016-06-30"))


def tiny_panel():
    return planted_panel(T=390, N=6, F=4)


@pytest.mark.parametrize("variant", ["storm", "wo_ts", "wo_cs"])
def test_fit_predict_factors_round_trip(variant, tmp_path):
    panel = tiny_panel()
    m = StormModel(variant, profile="smoke", seed=0, progress=False, run_dir=tmp_path / "run")
    m.fit(panel, PROTO)
    scores = m.predict(panel, split="test")
    assert scores.shape == (len(panel.split(PROTO, "test")), 6) and np.isfinite(scores.to_numpy()).all()
    assert {"loss", "val_RankIC", "kl", "nll"} <= set(m.history_.columns)
    assert (tmp_path / "run" / "history.csv").is_file()
    t = panel.split(PROTO, "test")[:5]
    f = m.factors(panel, t, stocks=[1, 3])
    assert list(f["dates"]) == list(panel.dates[t]) and f["tickers"] == ["S1", "S3"]
    if variant != "wo_ts":
        assert f["ts_tokens"].shape[:2] == (5, 2) and f["ts_codes"].dtype.kind == "i"
    if variant != "wo_cs":
        assert f["cs_tokens"].shape[:2] == (5, 16) and f["cs_codes"].shape == (5, 16)
    m.save(tmp_path / "m.pt")
    m2 = StormModel(variant, profile="smoke").load(tmp_path / "m.pt", panel)
    pd.testing.assert_frame_equal(scores, m2.predict(panel, split="test", protocol=PROTO))


def test_same_seed_same_scores_and_names():
    panel = tiny_panel()
    a = StormModel(profile="smoke", seed=3, progress=False).fit(panel, PROTO).predict(panel, split="test")
    b = make_model("storm", profile="smoke", seed=3, progress=False).fit(panel, PROTO).predict(panel, split="test")
    pd.testing.assert_frame_equal(a, b)
    assert make_model("storm_wo_cs", profile="smoke").name == "STORM-w/o-CS"
    assert set(MODEL_NAMES) >= {"storm", "storm_wo_ts", "storm_wo_cs", "lightgbm", "factorvae", "hirevae"}
    with pytest.raises(ValueError, match="unknown model"):
        make_model("gpt")
    with pytest.raises(ValueError, match="unknown STORM variant"):
        StormModel("wo_both")
