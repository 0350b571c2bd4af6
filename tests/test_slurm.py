"""The smoke config through profiles/slurm on a real one-node SLURM (tools/local_slurm.sh): every
job goes through sbatch, its status comes from squeue (the cluster has no accounting database, as
many have not), and the metrics equal those of a local run byte for byte.

Needs root and Debian's munge/slurm packages (`.ci/run` installs them); skipped where they are
missing. Takes a few minutes: a local smoke run, then the same run on the cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from workflow_helpers import ENV, ROOT, snakemake, snakemake_cmd

pytestmark = pytest.mark.slurm
SMOKE = ROOT / "config" / "smoke.yaml"
PROFILE = ROOT / "profiles" / "slurm"
SCRIPT = ROOT / "tools" / "local_slurm.sh"
RUN_FILES = ("metrics.json", "per_query.parquet", "run.trec")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
SLURM_TOOLS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
# rules that must run on compute nodes (GPU work on a real cluster); the Snakefile may make the
# short ones (download, prune, aggregate) local rules
COMPUTE_RULES = {"score", "finetune", "index", "evaluate"}


def _skip_reason() -> str | None:
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool, path=SBIN_PATH) is None]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing); "
            "`apt-get install munge slurmctld slurmd slurm-client` (as .ci/run does) enables this test"
        )
    if os.geteuid() != 0:
        return "a local SLURM needs root (slurmd starts the jobs)"
    if DEFAULT_CONF.exists() and not DEFAULT_CONF.is_symlink():
        return (
            f"{DEFAULT_CONF} is a real file (this machine belongs to a cluster): the srun inside "
            "each job would talk to that cluster, not to the test cluster"
        )
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:  # all bound at once, so the ports differ
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _log_tails(directory: Path) -> str:
    tails = []
    for log in sorted((directory / "log").glob("*.log")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(tails)


@pytest.fixture(scope="module")
def cluster():
    """A running one-node cluster; yields the environment its clients need. Stopped at the end."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # a short path: the munge socket lives in it (unix socket paths are limited to 108 bytes)
    directory = Path(tempfile.mkdtemp(prefix="opera-slurm-", dir="/tmp"))
    ctld_port, d_port = _free_ports(2)  # a SLURM already on this machine keeps its ports
    env = {
        **os.environ,
        "PATH": SBIN_PATH,
        "OPERA_SLURM_NO_INSTALL": "1",
        "OPERA_SLURM_CTLD_PORT": str(ctld_port),
        "OPERA_SLURM_D_PORT": str(d_port),
    }
    try:
        started = subprocess.run(
            [str(SCRIPT), "start", str(directory)], env=env, capture_output=True, text=True, timeout=300
        )
        # installed but not starting is a failure, not a reason to skip
        assert started.returncode == 0, f"local SLURM did not start:\n{started.stderr}\n{_log_tails(directory)}"
        yield {**ENV, "PATH": SBIN_PATH, "SLURM_CONF": str(directory / "slurm.conf")}
    finally:
        stopped = subprocess.run(
            [str(SCRIPT), "stop", str(directory)], env=env, capture_output=True, text=True, timeout=180
        )
        print(stopped.stdout + stopped.stderr)
        shutil.rmtree(directory, ignore_errors=True)


def _squeue(env: dict) -> dict[str, str]:
    """State of every job the cluster still knows (finished ones for MinJobAge seconds)."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T"], env=env, capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        return {}
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


class _StateRecorder(threading.Thread):
    """Polls squeue every second and keeps every (job id, state) pair it sees."""

    def __init__(self, env: dict):
        super().__init__(daemon=True)
        self.env, self.seen, self.done = env, {}, threading.Event()

    def run(self):
        while not self.done.is_set():
            for job, state in _squeue(self.env).items():
                states = self.seen.setdefault(job, [])
                if not states or states[-1] != state:
                    states.append(state)
            self.done.wait(1.0)


def _run_files(results: Path) -> list[Path]:
    return sorted(path.relative_to(results) for path in results.rglob("*") if path.name in RUN_FILES)


def test_smoke_config_on_slurm_matches_a_local_run(cluster, tmp_path):
    local = tmp_path / "local"
    snakemake(local, SMOKE, "--cores", "2")

    workdir = tmp_path / "slurm"
    recorder = _StateRecorder(cluster)
    recorder.start()
    started = time.monotonic()
    # the profile as a user runs it; only the first status check comes sooner than its 40 s default
    # (the smoke jobs take seconds): that changes timing, not what is checked
    command = snakemake_cmd(
        workdir, SMOKE, "--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "10"
    )
    process = subprocess.Popen(
        command,
        env=cluster,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # Snakemake cancels its SLURM jobs on SIGTERM
        output, _ = process.communicate(timeout=120)
        pytest.fail(f"the SLURM run did not finish in 30 minutes (waiting on a job status?):\n{output[-6000:]}")
    finally:
        wall = time.monotonic() - started
        recorder.done.set()
        recorder.join()
    final = _squeue(cluster)
    assert process.returncode == 0, output[-6000:]

    # the cluster profile alone decided the settings: no workflow profile (profiles/default) on top
    assert "workflow specific profile" not in output, output[:2000]
    assert "Falling back to 'sacct'" not in output  # status came from squeue, as the profile says
    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", output))
    assert submitted, output[-4000:]
    rules = sorted(set(submitted.values()))
    assert COMPUTE_RULES <= set(rules), rules
    # every job SLURM ran for this workflow completed, and squeue still shows it (MinJobAge)
    assert {job: final.get(job) for job in submitted} == {job: "COMPLETED" for job in submitted}

    ours, theirs = local / "results" / "smoke" / "evaluate", workdir / "results" / "smoke" / "evaluate"
    files = _run_files(ours)
    assert [f for f in files if f.name == "metrics.json"] and files == _run_files(theirs)
    different = [str(f) for f in files if (ours / f).read_bytes() != (theirs / f).read_bytes()]
    assert not different, different

    summary = {
        "jobs_submitted": len(submitted),
        "jobs_per_rule": {rule: list(submitted.values()).count(rule) for rule in rules},
        "states_seen": sorted({state for states in recorder.seen.values() for state in states}),
        "state_sequences": sorted({" > ".join(recorder.seen.get(job, [])) for job in submitted}),
        "wall_s": round(wall),
        "files_compared": len(files),
        "byte_identical": True,
    }
    print("SLURM smoke run:", json.dumps(summary, indent=1))
