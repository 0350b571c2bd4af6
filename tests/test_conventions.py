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
# read_safetensors_header) and opera.data (source files: records; parquet of prepared data: prepared).
# Paths are relative to opera/.
READER_MODULES = {"io.py", "data/records.py", "data/prepared.py"}
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
    (
        "training/checkpoints.py",
        "json.loads",
    ): "log_lines drops a torn last line, which io.read_train_log refuses",
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
    for path in sorted((ROOT / "opera").rglob("*.py")):  # subpackages too
        name = path.relative_to(ROOT / "opera").as_posix()
        if name in READER_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in {"json", "yaml", "numpy", "pandas"}:
                names = {f"{node.module}.{alias.name}" for alias in node.names}
                found += [(name, call, node.lineno) for call in names if call in DIRECT_READS]
            if isinstance(node, ast.Call) and _dotted(node.func) in DIRECT_READS:
                found.append((name, _dotted(node.func), node.lineno))
    bad = [f"opera/{name}:{line}: {call}" for name, call, line in found if (name, call) not in READ_ALLOWLIST]
    assert not bad, "read files through opera.io (read_json, read_yaml, ...) or opera.data instead:\n" + "\n".join(bad)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports, at its top or inside a function (a lazy import counts:
    it runs whenever its function does)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found & modules


def test_the_package_imports_without_a_circle():
    """Every import of the package, lazy ones included, goes one way: a circle (config imports
    preflight imports config) hides in function-level imports until a refactor trips over it."""
    paths = {}
    for path in sorted((ROOT / "opera").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}
    assert len(graph) > 30 and sum(map(len, graph.values())) > 60  # the walk found the package
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                circle = trail[trail.index(target) :] + [target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


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


def test_no_module_is_over_500_lines():
    """A module past 500 lines holds more than one concern: split it along its seams (docs/design.md)."""
    long = {
        path.relative_to(ROOT).as_posix(): n
        for path in sorted((ROOT / "opera").rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert not long, long
