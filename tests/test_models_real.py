"""Every model of the paper's tables trains and predicts on real DJ30 data under both protocols.

Smoke profile (window 16, a few steps): this proves the whole path (real panel, splits, training,
early stopping on the protocol's validation split, score frame), not accuracy.
"""

import numpy as np
import pytest

from storm_lib import data
from storm_lib.models import MODEL_NAMES, make_model
from storm_lib.panel import Panel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dj30_panel(data_dir):
    return Panel.from_prices(data.load_prices("dj30", data_dir=data_dir), window=16, verbose=False)


@pytest.mark.parametrize("protocol", ["clean", "paper"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_trains_and_predicts_on_dj30(dj30_panel, name, protocol):
    kw = {} if name == "lightgbm" else {"device": "cpu"}
    model = make_model(name, profile="smoke", seed=0, progress=False, **kw).fit(dj30_panel, protocol)
    test = dj30_panel.split(protocol, "test")
    scores = model.predict(dj30_panel, split="test")
    assert list(scores.index) == list(dj30_panel.dates[test]) and list(scores.columns) == dj30_panel.tickers
    assert np.isfinite(scores.to_numpy()).all()
    assert scores.std(axis=1).gt(0).mean() > 0.99  # a real cross-sectional ranking, not a constant
    assert model.history_ is not None and len(model.history_) > 0
