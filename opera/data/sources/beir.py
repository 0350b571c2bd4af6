"""Sources on local disk in BEIR layout (``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``,
``qrels/<split>.tsv``): the datasets shipped in ``opera/datasets/`` (``shipped``) and a folder of
the user's (``beir``)."""

from __future__ import annotations

from pathlib import Path

from opera.data.records import (
    DataError,
    SourceTables,
    collect_docs,
    collect_qrels,
    collect_queries,
    display_path,
    find_jsonl,
    iter_jsonl,
    read_qrels_tsv,
)
from opera.data.sources.base import Source, splits_of

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "datasets"  # package data: NFCorpus and SciFact


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) if SHIPPED_DIR.is_dir() else []


def _beir_files(folder: Path, splits: list[str]) -> tuple[Path, Path, dict[str, Path]]:
    """The corpus, queries and per-split qrels files of a BEIR folder; DataError naming the first one missing."""
    if not folder.is_dir():
        raise DataError(f"{display_path(folder)}: BEIR dataset folder not found")
    qrels = {s: folder / "qrels" / f"{s}.tsv" for s in splits}
    missing = [s for s, path in qrels.items() if not path.is_file()]
    if missing:  # checked first: a missing split should not wait for the corpus to be read
        s = missing[0]
        raise DataError(f"{display_path(qrels[s])}: missing qrels file for required split {s!r}")
    return find_jsonl(folder, "corpus"), find_jsonl(folder, "queries"), qrels


def _load_beir(folder: Path, splits: list[str], options: dict) -> SourceTables:
    corpus_path, queries_path, _ = _beir_files(folder, splits)
    corpus, dropped = collect_docs(iter_jsonl(corpus_path), display_path(corpus_path), options["duplicate_documents"])
    queries = collect_queries(iter_jsonl(queries_path), display_path(queries_path))
    doc_ids, query_ids = set(corpus["doc_id"]), set(queries["query_id"])
    qrels, where = {}, {}
    for split in splits:
        path = folder / "qrels" / f"{split}.tsv"
        where[split] = display_path(path)
        qrels[split] = collect_qrels(read_qrels_tsv(path), where[split], doc_ids, query_ids)
    return SourceTables(corpus, queries, qrels, where, dropped)


def _check_folder(key: str, folder: Path, splits: list[str]) -> None:
    try:
        _beir_files(folder, splits)
    except DataError as exc:
        raise DataError(f"config key '{key}': {exc}") from None


class _BeirLayout(Source):
    """What both local kinds share once the folder is known; ``check`` checks the block itself first."""

    def read(self, name: str, spec: dict, splits: list[str], options: dict) -> SourceTables:
        self.check(name, spec)
        return _load_beir(self.beir_folder(name, spec), splits, options)

    def files(self, name: str, spec: dict) -> list[str]:
        corpus, queries, qrels = _beir_files(self.beir_folder(name, spec), splits_of(spec))
        return [str(path) for path in (corpus, queries, *qrels.values())]


class Shipped(_BeirLayout):
    """A dataset that ships with the package (``source.name``, default the dataset's own name)."""

    type = "shipped"
    fields = {"name": {"type": "string", "description": "shipped dataset name (opera/datasets/<name>)"}}

    def beir_folder(self, name: str, spec: dict) -> Path:
        return SHIPPED_DIR / spec["source"].get("name", name)

    def check(self, name: str, spec: dict) -> None:
        key, shipped = f"datasets.{name}.source.name", spec["source"].get("name", name)
        if shipped not in shipped_names():
            raise DataError(f"config key '{key}': no shipped dataset {shipped!r}; shipped datasets: {shipped_names()}")
        _check_folder(key, self.beir_folder(name, spec), splits_of(spec))


class BeirFolder(_BeirLayout):
    """A local BEIR folder (``source.path``)."""

    type = "beir"
    fields = {"path": {"type": "string", "description": "a local BEIR folder"}}

    def beir_folder(self, name: str, spec: dict) -> Path | None:
        path = spec["source"].get("path")
        return Path(path).expanduser() if path else None

    def check(self, name: str, spec: dict) -> None:
        folder = self.beir_folder(name, spec)
        if folder is None:
            raise DataError(f"config key 'datasets.{name}.source': source type 'beir' needs a 'path' to a BEIR folder")
        _check_folder(f"datasets.{name}.source.path", folder, splits_of(spec))
