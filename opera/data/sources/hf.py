"""Hugging Face datasets in BEIR layout (``hf``), from the hub or a local copy.

A BEIR-style dataset on the hub (or a local copy): config "corpus" (_id, title, text), config
"queries" (_id, text) and the qrels (query-id, corpus-id, score) with one split per BEIR split.
mteb/<name> keeps the qrels in its "default" config (splits train, dev, test); BeIR/<name> keeps
them in the repo BeIR/<name>-qrels (files train.tsv, dev.tsv, test.tsv: splits train, validation,
test). A local folder is either such a repo's copy or corpus/, queries/ and qrels/ folders written
by ``save_to_disk`` (qrels/ a DatasetDict with one split per BEIR split).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opera.data.records import (
    DataError,
    SourceTables,
    collect_docs,
    collect_qrels,
    collect_queries,
    display_path,
    progress,
)
from opera.data.sources.base import Source

_HF_COLUMNS = {
    "corpus": {"_id": ("_id", "id", "doc_id", "corpus-id"), "title": ("title",), "text": ("text",)},
    "queries": {"_id": ("_id", "id", "query_id", "query-id"), "text": ("text", "query")},
    "qrels": {
        "query": ("query-id", "query_id", "qid"),
        "doc": ("corpus-id", "corpus_id", "doc_id", "doc-id", "docid"),
        "score": ("score", "relevance", "label"),
    },
}
_HF_SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val"), "test": ("test",)}
_HF_SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


def _hf_is_local(repo: str) -> bool:
    return repo.startswith((".", "/", "~")) or Path(repo).expanduser().exists()


def _hf_repos(source: dict) -> tuple[str, str]:
    """(repo, qrels repo) of an hf source: BeIR/<name> keeps its qrels in BeIR/<name>-qrels."""
    repo = source["repo"]
    default_qrels = f"{repo}-qrels" if repo.startswith("BeIR/") and not repo.endswith("-qrels") else repo
    return repo, source.get("qrels_repo") or default_qrels


def _hf_saved(folder: Path, part: str) -> bool:
    """Whether ``folder/part`` was written by ``save_to_disk``."""
    return any((folder / part / marker).is_file() for marker in _HF_SAVED_MARKERS)


def _datasets():
    import datasets  # heavy: only for this source

    return datasets


def _hf_load(repo: str, config: str | None, source: dict, part: str, manual: str | None):
    """The DatasetDict (or Dataset) of one part (corpus, queries, qrels) of an hf source."""
    datasets = _datasets()
    local = _hf_is_local(repo)
    folder = Path(repo).expanduser()
    what = f"hf:{repo}[{config or 'default'}]"
    try:
        if local and _hf_saved(folder, part):
            return datasets.load_from_disk(str(folder / part))
        revision = source.get("revision") if repo == source["repo"] and not local else None  # of `repo` only
        return datasets.load_dataset(str(folder) if local else repo, config, revision=revision)
    except Exception as exc:  # noqa: BLE001 - any failure to obtain the data: missing repo, config, network
        hint = f"\n{manual}" if manual else ""
        raise DataError(f"{what}: could not load {part} ({type(exc).__name__}: {exc}){hint}") from exc


def _hf_split(loaded: Any, wanted: tuple[str, ...], where: str, what: str, only_is_fine: bool = False):
    """The split of ``loaded`` named one of ``wanted`` (or its only split, if ``only_is_fine``) and its name."""
    if not hasattr(loaded, "keys"):  # a single Dataset (save_to_disk of one table)
        return loaded, wanted[0]
    names = list(loaded.keys())
    for name in wanted:
        if name in names:
            return loaded[name], name
    if len(names) == 1 and only_is_fine:
        return loaded[names[0]], names[0]
    raise DataError(f"{where}: no split for {what} (looked for {list(wanted)}; the dataset has {names})")


def _hf_rows(table: Any, where: str, part: str) -> Iterator[tuple[int, dict]]:
    """(row number from 1, record) with the columns renamed to ``_HF_COLUMNS[part]``'s keys."""
    columns = list(table.column_names)
    chosen = {}
    for key, candidates in _HF_COLUMNS[part].items():
        found = next((c for c in candidates if c in columns), None)
        if found is None and key != "title":
            raise DataError(f"{where}: no column for {key!r} (looked for {list(candidates)}; columns: {columns})")
        chosen[key] = found
    row = 0
    for batch in table.iter(batch_size=10_000):
        for i in range(len(batch[columns[0]])):
            row += 1
            yield row, {key: (batch[col][i] if col else None) for key, col in chosen.items()}


def _hf_relevance(score: Any) -> Any:
    """An integral float (mteb stores 1.0) as an int; anything else as it is, for the integer check."""
    if isinstance(score, float) and score.is_integer():
        return int(score)
    return str(score) if isinstance(score, float) else score


def _read(name: str, spec: dict, splits: list[str], options: dict) -> SourceTables:
    source, manual = spec["source"], spec.get("manual_download")
    repo, qrels_repo = _hf_repos(source)
    tables = {}
    for part in ("corpus", "queries"):
        label = f"hf:{repo}[{part}]"  # rows are numbered from 1 after it, as lines of a file
        table, _ = _hf_split(_hf_load(repo, part, source, part, manual), (part,), label, part, only_is_fine=True)
        tables[part] = (table, label)
    table, label = tables["corpus"]
    corpus, dropped = collect_docs(
        progress(_hf_rows(table, label, "corpus"), "corpus"), label, options["duplicate_documents"]
    )
    table, label = tables["queries"]
    queries = collect_queries(_hf_rows(table, label, "queries"), label)
    qrels_config = source.get("qrels_config")
    loaded = _hf_load(qrels_repo, qrels_config, source, "qrels", manual)
    base = f"hf:{qrels_repo}[{qrels_config or 'default'}]"
    doc_ids, query_ids = set(corpus["doc_id"]), set(queries["query_id"])
    qrels, where = {}, {}
    for split in splits:
        table, found = _hf_split(loaded, _HF_SPLIT_NAMES.get(split, (split,)), base, f"the {split!r} qrels")
        where[split] = f"{base}/{found}"
        rows = (
            (i, str(r["query"]), str(r["doc"]), _hf_relevance(r["score"]))
            for i, r in _hf_rows(table, where[split], "qrels")
        )
        qrels[split] = collect_qrels(rows, where[split], doc_ids, query_ids)
    return SourceTables(corpus, queries, qrels, where, dropped)


# --- checks before any job, and the files a local source reads -----------------------------------------


class HuggingFace(Source):
    type = "hf"
    fields = {
        "repo": {
            "type": "string",
            "description": "hf only: a Hugging Face dataset in BEIR layout (configs corpus, queries and the qrels "
            "config), as a hub id (mteb/nfcorpus, BeIR/nfcorpus) or a local folder (a copy of such a repo, or "
            "corpus/, queries/, qrels/ written by save_to_disk)",
        },
        "qrels_repo": {
            "type": "string",
            "description": "hf only: where the qrels are, if not in `repo` (default: `repo`, and "
            "BeIR/<name>-qrels for BeIR/<name>)",
        },
        "qrels_config": {"type": "string", "description": "hf only: the qrels config name (default: 'default')"},
        "revision": {"type": "string", "description": "hf only: a branch, tag or commit of `repo` on the hub"},
    }

    def read(self, name: str, spec: dict, splits: list[str], options: dict) -> SourceTables:
        return _read(name, spec, splits, options)

    def check(self, name: str, spec: dict) -> None:
        """``repo`` (and ``qrels_repo``) is an existing folder or looks like a hub id ``owner/name``
        (the hub is not contacted)."""
        source, key = spec["source"], f"datasets.{name}.source"
        if not source.get("repo"):
            raise DataError(
                f"config key '{key}': source type 'hf' needs a 'repo' (a hub id such as mteb/{name}, or a local folder)"
            )
        for field_name, value in zip(("repo", "qrels_repo"), _hf_repos(source), strict=True):
            folder = Path(value).expanduser()
            if _hf_is_local(value):
                if not folder.is_dir():
                    raise DataError(f"config key '{key}.{field_name}': {display_path(folder)}: folder not found")
            elif value.count("/") != 1:
                raise DataError(
                    f"config key '{key}.{field_name}': {value!r} is neither a folder nor a hub id 'owner/name'"
                )

    def files(self, name: str, spec: dict) -> list[str]:
        """Every file of a local copy but hidden ones; nothing for a hub id."""
        files: list[str] = []
        for repo in dict.fromkeys(_hf_repos(spec["source"])):
            if _hf_is_local(repo):
                root = Path(repo).expanduser()
                files += sorted(
                    str(path)
                    for path in root.rglob("*")
                    if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
                )
        return files
