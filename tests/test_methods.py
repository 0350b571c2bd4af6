"""The method registry (opera/methods/registry.py) is the one place a method is defined."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ENV, ROOT, SNAKEFILE, write_config

from opera import methods
from opera.config import _load_schema, method_params, validate_config
from opera.methods.pruning import PRUNERS
from opera.methods.sampling import SAMPLERS

SMOKE = ROOT / "config" / "smoke.yaml"


def test_every_entry_names_a_known_pruner_sampler_and_params_block():
    params = _load_schema()["properties"]["method_params"]["properties"]
    for name, method in methods.METHODS.items():
        assert method.pruner is None or method.pruner in PRUNERS, name
        if method.trains:
            assert method.sampler in SAMPLERS, name
        else:
            assert method.sampler is None, name
        assert method.params_key is None or method.params_key in params, name


def test_schema_enum_is_the_registry():
    assert _load_schema()["properties"]["methods"]["items"]["enum"] == methods.names()
    raw = yaml.safe_load((ROOT / "opera" / "schema.yaml").read_text())
    assert "enum" not in raw["properties"]["methods"]["items"]  # written once, in the registry


def test_method_params_follow_the_params_key():
    config = validate_config({"datasets": {"scifact": {}}, "models": {"all-MiniLM-L6-v2": {}}, "methods": ["dp_doc"]})
    assert method_params(config, "dp_doc") == config["method_params"]["dp"]
    assert method_params(config, "basic") == {}


def test_no_method_name_outside_the_registry():
    """A method's name appears in the registry, the schema, tests and docs only."""
    for folder in ("opera", "rules", "workflow_scripts", "bench"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".smk", ".yaml") and path.name != "registry.py":
                text = path.read_text()
                for name in ("dp_doc", "dp_query"):
                    assert f'"{name}"' not in text, (path, name)


@pytest.mark.slow
def test_a_new_method_is_one_registry_entry(tmp_path):
    """Add a method that reuses sp's pruner and params in a copy of the package: the DAG plans it."""
    copy = tmp_path / "src"  # the workflow beside its package: Snakemake imports from the Snakefile's folder
    for folder in ("opera", "config", "rules", "workflow_scripts", "report"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(SNAKEFILE, copy / "Snakefile")
    registry = copy / "opera" / "methods" / "registry.py"
    text = registry.read_text()
    entry = '    Method("sp_half", "sp at another kept_pct", pruner="top_score", params_key="sp"),\n)\n\nMETHODS'
    registry.write_text(text.replace(")\n\nMETHODS", entry, 1))
    config = write_config(tmp_path / "new.yaml", SMOKE, methods=["pretrain", "basic", "sp_half"])

    def dry_run(root: Path, workdir: Path) -> str:
        command = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "--configfile", str(config)]
        result = subprocess.run(
            [*command, "-n", "--directory", str(workdir)], cwd=root, capture_output=True, text=True, env=ENV
        )
        return result.stdout + result.stderr

    text = dry_run(copy, tmp_path / "work")
    # finetune basic and sp_half, and prune those two only (sp is not a method of the config: no card)
    assert re.search(r"^finetune\s+2$", text, re.MULTILINE) and re.search(r"^prune\s+2$", text, re.MULTILINE), text
    assert "/finetune/scifact/all-MiniLM-L6-v2/sp_half/seed42/budget4" in text
    assert "/evaluate/scifact/all-MiniLM-L6-v2/sp_half/seed42/budget4/step4/metrics.json" in text
    # the stock registry does not know it
    assert "'sp_half' is not allowed" in dry_run(ROOT, tmp_path / "w2")


def test_every_params_block_has_its_dataclass_with_the_schemas_keys():
    """Pruners and samplers read method params as frozen dataclasses (opera.methods.params): the
    schema's block and the dataclass name the same keys, and a block's defaults build it."""
    import dataclasses

    from opera.methods.params import PARAMS

    blocks = _load_schema()["properties"]["method_params"]["properties"]
    assert set(PARAMS) == set(blocks)
    for name, cls in PARAMS.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(blocks[name]["properties"]), name
        defaults = {key: spec.get("default") for key, spec in blocks[name]["properties"].items()}
        assert dataclasses.asdict(cls.of(defaults)) == defaults, name
