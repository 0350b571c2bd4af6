"""Running Snakemake on a config in a scratch directory, and reading its plans."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def snakemake_cmd(workdir: Path, configfile: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]


def snakemake(
    workdir: Path, configfile: Path, *args: str, check: bool = True, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        snakemake_cmd(workdir, configfile, *args), capture_output=True, text=True, env=env or ENV, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def plan(workdir: Path, configfile: Path, *args: str, env: dict | None = None) -> Counter:
    """Jobs per rule that a dry run would execute (empty when there is nothing to do)."""
    result = snakemake(workdir, configfile, "-n", "--cores", "1", *args, env=env)
    text = result.stdout + result.stderr
    counts: Counter = Counter()
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-3000:]
        return counts
    table = text.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        match = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if not match:
            break
        if match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def results_dir(workdir: Path, configfile: Path) -> Path:
    """Where a config without ``results_dir`` writes in ``workdir``: results/<config file stem>."""
    return workdir / "results" / configfile.stem


def write_config(path: Path, base: Path, **changes) -> Path:
    """A copy of the YAML config ``base`` with top-level keys replaced or model fields updated.

    The copy writes where ``base`` does (its ``results_dir``, else results/<stem of base>), so a
    dry run of the copy plans against ``base``'s outputs; pass ``results_dir`` to change that.
    """
    config = yaml.safe_load(base.read_text())
    config.setdefault("results_dir", f"results/{base.stem}")
    for key, value in changes.items():
        if key == "model":
            for model in config["models"].values():
                model.update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``build(folder)`` fills, built once per test session whatever the number of
    pytest-xdist workers: the first worker that asks builds it under the session's shared temporary
    root while the others wait on a file lock, then every worker reads the same folder (tests copy
    it before changing it). A build that failed is tried again by the next worker that asks."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' temporary roots share this parent
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
