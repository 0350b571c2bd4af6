"""opera.cli: the `prepare` subcommand."""

from __future__ import annotations

import yaml

from opera.cli import main
from opera.data import read_prepared


def _config(tmp_path, datasets: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets, "models": {"all-MiniLM-L6-v2": {}}, "methods": ["pretrain"]}))
    return path


def test_prepare_writes_tables_and_prints_summary(tmp_path, capsys):
    sub = {"docs": 100, "queries": {"train": 10, "test": 5}, "seed": 0}
    config = _config(tmp_path, {"scifact": {"subsample": sub}})
    out = tmp_path / "data"
    assert main(["prepare", "--config", str(config), "--dataset", "scifact", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "scifact/train: 100 documents, 10 queries, " + lines[0].split("queries, ")[1],
        "scifact/test: 100 documents, 5 queries, " + lines[1].split("queries, ")[1],
    ]
    data = read_prepared(out / "scifact")
    assert len(data.corpus) == 100 and set(data.qrels) == {"train", "test"}


def test_prepare_errors_exit_2(tmp_path, capsys):
    config = _config(
        tmp_path, {"mine": {"source": {"type": "beir", "path": str(tmp_path / "missing")}, "splits": ["test"]}}
    )
    assert main(["prepare", "--config", str(config), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "missing: BEIR dataset folder not found" in err
    assert not (tmp_path / "data" / "mine").exists()

    config = _config(tmp_path, {"scifact": {}})
    assert main(["prepare", "--config", str(config), "--dataset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "'nope'" in err

    assert main(["prepare", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: config file not found" in capsys.readouterr().err
