import pytest

from storm_lib.cli import main


def test_demo_on_the_embedded_sample_runs_offline(capsys, monkeypatch):
    monkeypatch.delenv("STORM_DATA_DIR", raising=False)
    with pytest.warns(UserWarning, match="close-only"):
        assert main(["demo", "--source", "sample", "--conventions", "standard"]) == 0
    out = capsys.readouterr().out
    assert "protocol='sample'" in out and "close only" in out
    assert "Market Index (SP500)" in out and "TopK-Drop on momentum20" in out and "RankIC" in out


def test_missing_data_is_a_clear_error(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("STORM_DATA_DIR", raising=False)
    monkeypatch.setenv("STORM_CACHE_DIR", str(tmp_path))
    assert main(["demo", "--source", "dj30"]) == 2
    err = capsys.readouterr().err
    assert "STORM_DATA_DIR" in err and "sample" in err


def test_info(capsys):
    assert main(["info"]) == 0
    assert "protocols: clean, paper, sample" in capsys.readouterr().out


def test_unknown_signal():
    with pytest.raises(SystemExit, match="unknown signal"):
        main(["demo", "--signals", "nope"])
