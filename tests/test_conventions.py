"""Snakemake conventions of the workflow: a report front page, a log and a benchmark per rule under
the config's results folder, and quiet job logs (no per-update progress lines, no faiss loader lines)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_workflow_report_and_every_rule_logs_and_benchmarks_under_the_results_dir():
    assert re.search(r'^report: "report/workflow.rst"$', (ROOT / "Snakefile").read_text(), re.MULTILINE)
    assert (ROOT / "report" / "workflow.rst").is_file()
    rules = 0
    for path in (ROOT / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:    .*\n|\n)+)", path.read_text(), re.MULTILINE):
            rules += 1
            assert re.search(r"^    log:\n        log_file\(", body, re.MULTILINE), (path.name, name)
            assert re.search(r"^    benchmark:\n        benchmark_file\(", body, re.MULTILINE), (path.name, name)
    assert rules >= 7


def test_job_logs_have_no_progress_updates_and_no_faiss_loader_lines(tmp_path):
    """A job's log (opera.job.setup): a progress bar writes its first and last state only, and
    importing faiss logs nothing, although tqdm was imported before the job was set up."""
    log = tmp_path / "job.log"
    script = textwrap.dedent(f"""
        import time
        from tqdm.auto import tqdm
        from opera import job
        job.setup([{str(log)!r}], 1)
        for _ in tqdm(range(40), desc="batches"):
            time.sleep(0.01)
        import faiss
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    text = log.read_text()
    assert text.count("batches:") == 2, text  # 0/40 and 40/40: no update every 0.1 s in between
    assert "faiss" not in text.lower(), text
