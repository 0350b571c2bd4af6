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


# Reading a file's content goes through one reader per format, which names the file, the line and the
# likely cause on a bad file: opera.io (read_json, read_yaml, read_train_log, load_table, load_array,
# read_safetensors_header) and opera.data (source files: jsonl, qrels, parquet of prepared data).
READER_MODULES = {"io.py", "data.py"}
DIRECT_READS = {
    "json.load",
    "json.loads",
    "yaml.safe_load",
    "yaml.load",
    "yaml.full_load",
    "pd.read_parquet",
    "pandas.read_parquet",
    "pq.read_table",
    "pyarrow.parquet.read_table",
    "np.load",
    "numpy.load",
}
# (module, call) -> why it may read directly, until it is changed
READ_ALLOWLIST = {
    ("training.py", "json.loads"): "_log_lines drops a torn last train-log line, which io.read_train_log refuses",
}


def _dotted(node) -> str:
    import ast

    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def test_modules_read_files_only_through_the_reader_modules():
    import ast

    found = []
    for path in sorted((ROOT / "opera").glob("*.py")):
        if path.name in READER_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in {"json", "yaml", "numpy", "pandas"}:
                names = {f"{node.module}.{alias.name}" for alias in node.names}
                found += [(path.name, name, node.lineno) for name in names if name in DIRECT_READS]
            if isinstance(node, ast.Call) and _dotted(node.func) in DIRECT_READS:
                found.append((path.name, _dotted(node.func), node.lineno))
    bad = [f"opera/{name}:{line}: {call}" for name, call, line in found if (name, call) not in READ_ALLOWLIST]
    assert not bad, "read files through opera.io (read_json, read_yaml, ...) or opera.data instead:\n" + "\n".join(bad)


def test_report_captions_render_metric_names_as_text():
    """docutils turns NDCG@10 into a mailto link unless the @ is escaped (NDCG\\@10)."""
    from docutils.core import publish_parts

    for caption in sorted((ROOT / "report").glob("*.rst")):
        html = publish_parts(caption.read_text(), writer="html")["body"]
        assert "mailto:" not in html, caption.name


def test_no_assert_is_a_conditional_expression():
    """`assert x == a if cond else b` reads as `assert (x == a) if cond else b`: on the else branch it
    asserts b, which is truthy, and passes whatever x is. Put the expected value in a name first."""
    import ast

    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Assert) and isinstance(node.test, ast.IfExp):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"asserts of a conditional expression (always true on one branch): {found}"
