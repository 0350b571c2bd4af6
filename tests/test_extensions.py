"""Each way the pipeline is extended is one file or one registry entry (docs/design.md, "Extending").

Every test adds its extension to a copy of the project, as a newcomer would, and then plans it
with Snakemake or runs it with the copy's package; the stock package must not know it, so a test
that passed without its extension would fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from workflow_helpers import ENV, ROOT, SNAKEFILE, write_config

from opera.config import ConfigError, load_config
from opera.methods import sampling

pytestmark = pytest.mark.slow  # each plans a DAG or runs Python in a copy of the project

SMOKE = ROOT / "config" / "smoke.yaml"


def _copy(tmp_path: Path) -> Path:
    """The project as a newcomer edits it: the package beside its workflow."""
    copy = tmp_path / "src"
    for folder in ("opera", "config", "rules", "workflow_scripts", "report"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(SNAKEFILE, copy / "Snakefile")
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _python(root: Path, script: str) -> str:
    """Run ``script`` with the package of ``root`` (not the installed one); its stdout."""
    env = {**ENV, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=root, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _dry_run(root: Path, config: Path, workdir: Path) -> str:
    command = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--configfile", str(config), "-n"]
    env = {**ENV, "PYTHONPATH": str(root)}
    result = subprocess.run([*command, "--directory", str(workdir)], cwd=root, capture_output=True, text=True, env=env)
    return result.stdout + result.stderr


TOY_SOURCE = '''
"""A synthetic dataset: document i answers query i (the extension test's source)."""

import pandas as pd

from opera.data.records import SourceTables
from opera.data.sources.base import Source


class Toy(Source):
    type = "toy"
    fields = {"documents": {"type": "integer", "minimum": 8}}

    def read(self, name, spec, splits, options):
        n = spec["source"]["documents"]
        ids = range(n)
        corpus = pd.DataFrame({"doc_id": [f"d{i}" for i in ids], "title": "", "text": [f"fact {i}" for i in ids]})
        queries = pd.DataFrame({"query_id": [f"q{i}" for i in ids], "text": [f"which fact is {i}?" for i in ids]})
        half = {"train": range(0, n // 2), "test": range(n // 2, n)}
        qrels = {
            split: pd.DataFrame(
                {"query_id": [f"q{i}" for i in half[split]], "doc_id": [f"d{i}" for i in half[split]], "relevance": 1,
                 "line": range(1, len(half[split]) + 1)}
            )
            for split in splits
        }
        return SourceTables(corpus, queries, qrels, {split: f"toy[{split}]" for split in splits}, 0)
'''


def test_a_new_source_is_one_file(tmp_path):
    copy = _copy(tmp_path)
    (copy / "opera" / "data" / "sources" / "toy.py").write_text(TOY_SOURCE)
    datasets = {"toyset": {"source": {"type": "toy", "documents": 40}, "splits": ["train", "test"]}}
    config = write_config(tmp_path / "toy.yaml", SMOKE, datasets=datasets, results_dir=str(tmp_path / "results"))

    plan = _dry_run(copy, config, tmp_path / "work")
    assert re.search(r"^download\s+1$", plan, re.MULTILINE), plan
    assert "/finetune/toyset/all-MiniLM-L6-v2/basic/seed42/budget4" in plan, plan
    summary = _python(
        copy,
        f"""
        import json
        from opera.config import load_config
        from opera.data import prepare
        config = load_config({str(config)!r})
        print(json.dumps(prepare("toyset", config["datasets"]["toyset"], config["data"], {str(tmp_path / "toyset")!r})))
        """,
    )
    splits = json.loads(summary)["splits"]
    assert (splits["train"]["queries"], splits["test"]["queries"], splits["test"]["documents"]) == (20, 20, 40)
    with pytest.raises(ConfigError, match=r"datasets.toyset.source.type.*'toy' is not allowed.*'hf'"):
        load_config(config)  # the stock package does not know the source: it names the key and the kinds


TOY_SAMPLER = '''


class ToySampler(Sampler):
    """Uniform, with a temperature that falls over training: its schedule (the extension test's sampler)."""

    schedule_keys = ("temperature",)

    def extra_log(self) -> dict:
        return {"temperature": round(1.0 - self.step / self.max_steps, 6)}


SAMPLERS["toy"] = ToySampler
'''


def test_a_new_sampler_is_a_class_and_a_registry_entry_and_its_schedule_is_plotted(tmp_path):
    copy = _copy(tmp_path)
    module = copy / "opera" / "methods" / "sampling.py"
    module.write_text(module.read_text() + TOY_SAMPLER)
    _edit(
        copy / "opera" / "methods" / "registry.py",
        ")\n\nMETHODS",
        '    Method("toy", "uniform, with a toy schedule", sampler="toy"),\n)\n\nMETHODS',
    )
    config = write_config(tmp_path / "toy.yaml", SMOKE, methods=["pretrain", "basic", "toy"])

    plan = _dry_run(copy, config, tmp_path / "work")
    assert "/finetune/scifact/all-MiniLM-L6-v2/toy/seed42/budget4" in plan, plan
    assert "scifact__all-MiniLM-L6-v2__schedules.png" in plan, plan  # planned: the sampler has a schedule
    assert sampling.schedule_keys("basic") == ()  # alone, basic's uniform sampler would plan no such plot
    written = _python(
        copy,
        f"""
        import numpy as np, pandas as pd
        from opera.methods.sampling import PairIndex, make_sampler
        from opera.report.sampler_plots import schedules
        pairs = PairIndex(pd.DataFrame({{"query_id": [f"q{{i}}" for i in range(8)],
                                         "doc_id": [f"d{{i}}" for i in range(8)], "score": 0.5}}))
        sampler, entries = make_sampler("toy", pairs, 10, 0, {{}}), []
        for step in range(10):
            batch = sampler.next_batch(step, 4)
            sampler.update(batch, np.full(4, 0.5), np.ones(4))
            entries.append({{"step": step + 1, "sampler": sampler.log_state()}})
        print("\\n".join(map(str, schedules({{"toy": entries}}, {str(tmp_path / "plots" / "schedules")!r}))))
        """,
    )
    paths = [Path(line) for line in written.split()]
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)


TOY_MEASURE = '''


def hits_at_3(run, qrels):
    """1 when a relevant document is in the top 3 (the extension test's measure)."""
    return {
        query: float(any(docs.get(d, 0) > 0 for d, _ in _trec_order(run.get(query, {}))[:3]))
        for query, docs in qrels.items()
    }


MEASURES["Hits@3"] = Measure("Hits@3", hits_at_3)
'''


def test_a_new_metric_is_one_registry_entry_and_reaches_the_tables(tmp_path):
    copy = _copy(tmp_path)
    metrics = copy / "opera" / "retrieval" / "metrics.py"
    metrics.write_text(metrics.read_text() + TOY_MEASURE)
    out = tmp_path / "tables"
    _python(
        copy,
        f"""
        import json
        from pathlib import Path
        from opera.report.aggregate import collect, final_results
        from opera.report.tables import results_tables
        from opera.retrieval import metrics
        qrels = {{"q1": {{"a": 1}}, "q2": {{"b": 1}}}}
        basic = {{"q1": {{"a": 0.9, "x": 0.5}}, "q2": {{"x": 0.9, "y": 0.8, "z": 0.7, "b": 0.1}}}}
        for method, run in {{"basic": basic, "dp": {{"q1": {{"a": 0.9}}, "q2": {{"b": 0.9}}}}}}.items():
            per_query, summary = metrics.evaluate(run, qrels, (1, 10), measures=metrics.measures_on({{}}))
            folder = Path({str(tmp_path)!r}) / method
            folder.mkdir()
            record = {{"dataset": "d", "model": "m", "method": method, "seed": 1, "step": 4, "budget": 4,
                       "max_steps": 4, "split": "test", **summary}}
            (folder / "metrics.json").write_text(json.dumps(record))
            per_query.to_parquet(folder / "per_query.parquet")
        long = collect([Path({str(tmp_path)!r}) / m / "metrics.json" for m in ("basic", "dp")])
        results_tables(final_results(long), Path({str(out)!r}))
        """,
    )
    results = (out / "results.csv").read_text()
    assert "Hits@3_mean" in results.splitlines()[0]
    md = (out / "results.md").read_text()
    assert "Hits@3" in md and "0.5000" in md and "**1.0000**" in md  # basic hits one query of two, dp both


def test_a_new_model_family_is_a_registry_entry_and_a_pooling(tmp_path):
    """A family the pipeline has not seen (DistilBERT: no token types, another module layout) that
    pools by max: a model entry in the config, and one pooling entry; it plans and encodes."""
    copy = _copy(tmp_path)
    _edit(copy / "opera" / "settings.py", '"last": "lasttoken"}', '"last": "lasttoken", "max": "max"}')
    model = tmp_path / "tiny-distilbert"
    entry = {"path": str(model), "pooling": "max", "query_max_length": 32, "passage_max_length": 64}
    models = {"tiny-distilbert": {**yaml_model(SMOKE), **entry}}
    config = write_config(tmp_path / "family.yaml", SMOKE, models=models, results_dir=str(tmp_path / "results"))
    shape = _python(
        copy,
        f"""
        from pathlib import Path
        from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel
        from opera.config import load_config, model_settings
        from opera.models import encoders, tiny_models
        bert = tiny_models.build("bert", Path({str(tmp_path / "bert")!r}), layout="transformers")
        tokenizer = AutoTokenizer.from_pretrained(bert)
        family = DistilBertConfig(vocab_size=tokenizer.vocab_size, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                                  max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
        DistilBertModel(family).save_pretrained({str(model)!r})
        tokenizer.save_pretrained({str(model)!r})
        settings = model_settings(load_config({str(config)!r}), "tiny-distilbert")
        loaded = encoders.load(settings.encoder, device="cpu")
        pooling = loaded[1].get_config_dict()["pooling_mode"]
        texts = ["a query", "another one"]
        print(pooling, encoders.encode_side(loaded, settings.encoder, "query", texts, batch_size=2, desc="q").shape)
        """,
    )
    assert shape.split()[0] == "max" and "(2, 32)" in shape, shape
    plan = _dry_run(copy, config, tmp_path / "work")
    assert "/finetune/scifact/tiny-distilbert/basic/seed42/budget4" in plan, plan
    with pytest.raises(ConfigError, match=r"pooling.*allowed values: \['mean', 'cls', 'last'\]"):
        load_config(config)  # the stock package refuses the pooling, naming the key


def yaml_model(config: Path) -> dict:
    """The one model entry of a config file."""
    import yaml

    (entry,) = yaml.safe_load(config.read_text())["models"].values()
    return dict(entry)


def test_the_design_page_names_each_extensions_files():
    design = (ROOT / "docs" / "design.md").read_text()
    section = design[design.index("## Extending") :]
    for path in (
        "opera/data/sources/",
        "opera/methods/registry.py",
        "opera/methods/sampling.py",
        "opera/training/loss.py",
        "opera/retrieval/metrics.py",
        "opera/settings.py",
        "opera/registry.yaml",
        "opera/pipeline/",
        "opera/pipeline/stage_params.py",
    ):
        assert f"`{path}" in section, path
        assert (ROOT / path).exists(), path
