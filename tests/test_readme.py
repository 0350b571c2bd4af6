"""Every command of the README's ``bash`` blocks runs, on the smoke config, so that an example
cannot break unnoticed.

Each command is classified: ``opera`` commands run for real in a scratch folder (with the smoke
config); ``snakemake`` commands run as a dry run on the smoke config; ``make`` targets as
``make -n``; ``export`` sets the environment of the commands after it; ``hf download`` needs the
network, so only its program is checked. A command of any other kind fails this test until it is
classified here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_helpers import ENV, ROOT, SNAKEFILE

from opera.config import load_registry

pytestmark = pytest.mark.slow  # every test here trains, builds models or runs subprocesses

README = ROOT / "README.md"
SMOKE = "config/smoke.yaml"
BIN = Path(sys.executable).parent


def bash_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block: continuation lines joined, ``a && b`` split into two
    commands, comments and blanks dropped."""
    blocks = []
    for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", body)
        commands = []
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(" ".join(shlex.quote(word) for word in words[:cut]))
                words = words[cut + 1 :]
        blocks.append(commands)
    return blocks


def _on_smoke(words: list[str]) -> list[str]:
    """The command with every config it names replaced by the smoke config (each named config
    must exist in the checkout: a README path to a missing config fails here)."""
    out = []
    for word in words:
        flag, equals, value = word.partition("=")
        if equals and flag in ("--config", "--configfile"):
            out += [flag, value]
        else:
            out.append(word)
    for i, word in enumerate(out[:-1]):
        if word in ("--config", "--configfile") and out[i + 1].endswith((".yaml", ".yml")):
            assert (ROOT / out[i + 1]).is_file(), f"the README names a config that does not exist: {out[i + 1]}"
            out[i + 1] = SMOKE
    return out


def run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run one README command as this test classifies it (see the module docstring)."""
    words = shlex.split(command)
    program, args = words[0], words[1:]
    if program == "make":
        cmd = ["make", "-n", "-C", str(ROOT), *args]
    elif program == "opera":
        cmd = [str(BIN / "opera"), *_on_smoke(args)]
    elif program == "snakemake":
        cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *_on_smoke(args), "--dry-run"]
        if "--configfile" not in cmd:
            cmd += ["--configfile", SMOKE]
    elif program == "hf" and args[:1] == ["download"]:
        # needs the network: the ids must be models of the registry, and the program and verb exist
        hub_ids = {entry["path"] for entry in load_registry()["models"].values()}
        assert set(args[1:]) <= hub_ids, f"README downloads {set(args[1:]) - hub_ids}, not a registry model"
        cmd = [str(BIN / "hf"), "download", "--help"]
    else:
        raise AssertionError(f"README command not classified by tests/test_readme.py: {command}")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_readme_has_the_blocks_this_test_runs():
    text = README.read_text()
    other_shells = re.findall(r"^\s*```(sh|shell|console|zsh|bash\S+)\s*$", text, flags=re.M)
    assert not other_shells, f"shell blocks this test would not run: {other_shells}; write them as ```bash"
    blocks = bash_blocks(text)
    assert blocks[0] == ["make run", "make test"]  # the two commands a newcomer types
    assert any(command.startswith("opera evaluate") for block in blocks for command in block)
    assert sum(len(block) for block in blocks) >= 12


@pytest.mark.parametrize("number", range(len(bash_blocks(README.read_text()))))
def test_every_readme_command_block_runs(number, tmp_path):
    block = bash_blocks(README.read_text())[number]
    for folder in ("config", "profiles"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {**ENV, "PATH": f"{BIN}{os.pathsep}{ENV.get('PATH', '')}"}
    for command in block:
        if command.startswith("export "):
            for assignment in shlex.split(command)[1:]:
                name, _, value = assignment.partition("=")
                env[name] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), value)
            continue
        result = run(command, tmp_path, env)
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, f"README command failed: {command}\n{output}"
        if command.startswith("opera evaluate"):
            assert "NDCG@10" in result.stdout  # prints the metrics table, as the README shows
