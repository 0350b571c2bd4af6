"""opera.io's readers: a bad file names itself, the line and column, and the likely cause."""

from __future__ import annotations

import pytest

from opera import io
from opera.config import ConfigError, load_config
from opera.retrieval import metrics


def test_a_bad_json_file_names_the_file_line_and_cause(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{\n  "splits": {"train": 1,\n')  # cut short
    with pytest.raises(io.FileFormatError, match=r"summary.json:3:1: not valid JSON .*likely cause: .*truncated"):
        io.read_json(path)
    path.write_text('{"a": 1}\n{"a": 2}\n')
    with pytest.raises(io.FileFormatError, match=r"summary.json:2:1: .*more than one JSON value"):
        io.read_json(path)
    path.write_text("")
    with pytest.raises(io.FileFormatError, match=r"summary.json:1:1: .*the file is empty"):
        io.read_json(path)
    path.write_bytes(b'{"a":\n "\xff"}')
    with pytest.raises(io.FileFormatError, match=r"summary.json:2:3: not UTF-8 text \(byte 0xff\)"):
        io.read_json(path)
    with pytest.raises(FileNotFoundError, match=r"nope.json: no such file"):
        io.read_json(tmp_path / "nope.json")
    assert io.read_json_if_exists(tmp_path / "nope.json") is None
    path.write_text('{"a": [1, 2]}')
    assert io.read_json(path) == {"a": [1, 2]}


def test_a_bad_yaml_file_names_the_file_line_and_cause(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("models:\n\tall-MiniLM-L6-v2: {}\n")
    with pytest.raises(io.FileFormatError, match=r"my.yaml:2:1: not valid YAML .*cause: a tab in the indentation"):
        io.read_yaml(path)
    path.write_text("methods: [pretrain, basic\nseeds: [1]\n")
    with pytest.raises(io.FileFormatError, match=r"my.yaml:2:\d+: not valid YAML"):
        io.read_yaml(path)
    with pytest.raises(ConfigError, match=r"my.yaml:2:\d+: not valid YAML"):  # the config loader says the same
        load_config(path)
    path.write_text("")
    assert io.read_yaml(path) is None


def test_a_bad_train_log_or_trec_run_names_the_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    with pytest.raises(io.FileFormatError, match=r"train_log.jsonl:2:\d+: not valid JSON .*a torn last line"):
        io.read_train_log(log)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n")
    with pytest.raises(io.FileFormatError, match=r"run.trec:2: score 'high'"):
        metrics.read_trec_run(run)


def test_a_truncated_safetensors_file_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b'{"w": ')
    with pytest.raises(io.FileFormatError, match=r"model.safetensors: not a safetensors file .*truncated"):
        io.read_safetensors_header(path)
    header = b'{"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(24))
    assert io.read_safetensors_header(path)["w"]["shape"] == [2, 3]
