"""Corpus embeddings on disk in shards: written while the corpus is encoded, searched shard by shard.

A store is a folder of ``shard-NNNNN.npy`` files (each with its checksum sidecar) and a
checksummed ``manifest.json`` naming them in corpus order with their checksums and the identity
of the model that encoded them (``model_identity``), which evaluation checks. Encoding reads the
prepared corpus one shard of passages at a time and writes each shard when it is done; search
loads one shard, searches it with faiss and merges its top-k into the running top-k. Peak memory
is one shard of passages and their embeddings plus the queries' top-k, whatever the corpus size
(bench/scale.py measures it).

A corpus no larger than one shard is encoded and searched exactly as one array and one faiss index
would be, so small configs give the same bytes as before stores existed. Ties between equal scores
keep faiss's order within a shard and shard order across shards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opera import io
from opera.retrieval import index as faiss_index

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class StoreLayout:
    """How a store is cut and stored: passages per shard, and the dtype embeddings are kept in
    (float16 halves disk and memory; scores are then computed from rounded embeddings)."""

    shard_passages: int = 100_000
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.shard_passages < 1:
            raise ValueError(f"shard_passages must be at least 1, got {self.shard_passages}")
        if self.dtype not in DTYPES:
            raise ValueError(f"embedding dtype must be one of {DTYPES}, got {self.dtype!r}")


def layout_of(evaluation) -> StoreLayout:
    """The store layout a config's ``evaluation`` block (opera.settings.Evaluation) asks for."""
    return StoreLayout(shard_passages=evaluation.shard_passages, dtype=evaluation.embedding_dtype)


def _shard_name(number: int) -> str:
    return f"shard-{number:05d}.npy"


def encode_corpus(
    out_dir: str | Path,
    *,
    data_dir: str | Path,
    title_join: str,
    encoder,
    batch_size: int,
    layout: StoreLayout,
    checkpoint: str | Path | None = None,
    devices: Sequence[str | None] = (None,),
    loaded=None,
    **meta,
) -> dict:
    """Encode the prepared corpus of ``data_dir`` with ``encoder`` (or its weights at
    ``checkpoint``) into a store at ``out_dir``, one shard of passages at a time.

    ``loaded``: that model, already loaded on the one device by the caller, which goes on to
    encode queries with it (loading it again costs a job seconds).

    With several ``devices`` (the GPUs a job holds) one process per device encodes every n-th
    shard; each shard's bytes do not depend on which process encoded it. The store appears at
    ``out_dir`` only once complete."""
    from opera import data
    from opera.models import encoders, precision

    total = data.corpus_size(data_dir)
    if total == 0:
        raise faiss_index.IndexBuildError(f"{data_dir}: cannot index an empty corpus")
    shards = -(-total // layout.shard_passages)
    job = dict(
        data_dir=str(data_dir),
        title_join=title_join,
        encoder=encoder,
        batch_size=batch_size,
        layout=layout,
        checkpoint=None if checkpoint is None else str(checkpoint),
    )
    with io.atomic_dir(out_dir) as tmp:
        if len(devices) == 1:
            written = _encode_shards(tmp, 0, 1, devices[0], loaded=loaded, **job)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            import torch

            # each process runs with this process's thread count: CPU kernels may sum in another
            # order with other thread counts, and a shard's bytes must not depend on the process
            job["threads"] = torch.get_num_threads()
            log.info("encoding %d shards on %d devices: %s", shards, len(devices), ", ".join(map(str, devices)))
            with ProcessPoolExecutor(len(devices), mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = [
                    pool.submit(_encode_shards, tmp, worker, len(devices), device, **job)
                    for worker, device in enumerate(devices)
                ]
                written = {number: shape for part in parts for number, shape in part.result().items()}
        if sorted(written) != list(range(shards)):
            raise faiss_index.IndexBuildError(f"{out_dir}: encoded shards {sorted(written)}, expected {shards}")
        dims = {shape[1] for shape in written.values()}
        if len(dims) != 1:
            raise faiss_index.IndexBuildError(f"{out_dir}: shards of different dimensions {sorted(dims)}")
        names = [_shard_name(n) for n in range(shards)]
        meta["encode_precision"] = precision.resolve(encoder.encode_precision, devices[0] or encoders.default_device())
        return _write_manifest(tmp, names, [written[n][0] for n in range(shards)], dims.pop(), layout, meta)


def _encode_shards(
    folder: Path,
    worker: int,
    workers: int,
    device: str | None,
    *,
    data_dir,
    title_join,
    encoder,
    batch_size,
    layout,
    checkpoint,
    threads: int | None = None,
    loaded=None,
) -> dict[int, tuple[int, int]]:
    """Encode shards ``worker``, ``worker + workers``, ... of the corpus into ``folder``; return
    {shard number: shape}. Runs in the job's process or in one spawned process per device."""
    from opera import data
    from opera.models import encoders

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    model = loaded if loaded is not None else encoders.load(encoder, device=device, path=checkpoint)
    written = {}
    for number, texts in enumerate(data.passage_text_batches(data_dir, layout.shard_passages, title_join)):
        if number % workers != worker:
            continue
        block = encoders.encode_side(model, encoder, "passage", texts, batch_size, desc=f"corpus shard {number}")
        io.save_array(folder / _shard_name(number), block.astype(layout.dtype, copy=False))
        written[number] = block.shape
    return written


def _write_manifest(folder: Path, names, rows, dim, layout: StoreLayout, meta: dict) -> dict:
    """The manifest names each shard with its rows and the sha256 its sidecar recorded (a shard
    from another store, sidecar and all, does not match it), and is checksummed itself."""
    manifest = {
        "shards": [
            {"file": name, "rows": int(n), "sha256": io.recorded_digest(folder / name)}
            for name, n in zip(names, rows, strict=True)
        ],
        "rows": int(sum(rows)),
        "dim": int(dim),
        "dtype": layout.dtype,
        "shard_passages": layout.shard_passages,
        **meta,
    }
    io.write_checked(folder / MANIFEST, lambda tmp: io.write_json(tmp, manifest))
    return manifest


class EmbeddingStore:
    """A written store, read shard by shard; every shard is checked against its checksum and the
    manifest before use."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise io.CorruptArtifactError(
                f"{self.folder}: no {MANIFEST}; the store was not written by a completed stage. "
                "Delete it and rerun the workflow to recompute it."
            )
        if not Path(f"{path}.sha256").is_file():
            raise io.CorruptArtifactError(
                f"{path}: no checksum beside it: a store written by an older opera (before manifests were "
                f"checksummed) or by a job that did not finish. Delete {self.folder} and rerun the job that writes "
                "it (score for the base model, index for a checkpoint)."
            )
        io.verify(path)  # an edited manifest is refused
        self.manifest = io.read_json(path)
        self.rows = int(self.manifest["rows"])
        self.dim = int(self.manifest["dim"])
        counts = [s["rows"] for s in self.manifest["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if self._starts[-1] != self.rows:
            raise io.CorruptArtifactError(f"{path}: shard rows add up to {self._starts[-1]}, recorded {self.rows}")

    def __len__(self) -> int:
        return self.rows

    def check_encoded_by(self, identity: str, model: str) -> None:
        """The store was encoded by the model whose :func:`opera.models.checkpoints.model_identity` is
        ``identity`` (``model`` names it in the message), or CorruptArtifactError."""
        recorded = self.manifest.get("model_identity")
        if recorded != identity:
            raise io.CorruptArtifactError(
                f"{self.folder}: encoded by {self.manifest.get('model')!r} ({recorded or 'no identity recorded'}), "
                f"not by {model!r} ({identity}) that this evaluation reports. Delete the store and rerun the job "
                "that writes it (index for a checkpoint, score for the base model)."
            )

    def shard(self, number: int) -> np.ndarray:
        """Shard ``number`` as float32, verified."""
        entry = self.manifest["shards"][number]
        path = self.folder / entry["file"]
        if io.recorded_digest(path) != entry["sha256"]:
            raise io.CorruptArtifactError(
                f"{path}: not the shard this store's {MANIFEST} names (its checksum differs): a shard of another "
                "store was put here. Delete the store and rerun the job that wrote it."
            )
        block = io.load_array(path)
        if block.shape != (entry["rows"], self.dim):
            raise io.CorruptArtifactError(
                f"{self.folder / entry['file']}: shape {block.shape}, the manifest says ({entry['rows']}, {self.dim})"
            )
        return block.astype(np.float32, copy=False)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) per shard, in corpus order."""
        for number in range(len(self.manifest["shards"])):
            yield int(self._starts[number]), self.shard(number)

    def rows_at(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings of corpus rows ``rows`` (any order), reading only the shards they fall in."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.rows):
            raise IndexError(f"{self.folder}: row out of range 0..{self.rows - 1}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        owner = np.searchsorted(self._starts, rows, side="right") - 1
        for number in np.unique(owner):
            mine = np.flatnonzero(owner == number)
            out[mine] = self.shard(int(number))[rows[mine] - self._starts[number]]
        return out

    def search(self, queries: np.ndarray, k: int, factory: str = "Flat") -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, corpus rows) per query over every shard: each shard is indexed with
        ``factory`` (exact inner product for Flat) and its hits merged into the running top-k."""
        k = min(k, self.rows)
        best_scores = best_rows = None
        for start, block in self.blocks():
            scores, rows = faiss_index.search(faiss_index.build_index(block, factory), queries, k)
            rows = np.where(rows >= 0, rows + start, -1)
            if best_scores is None:
                best_scores, best_rows = scores, rows
                continue
            best_scores, best_rows = _merge_top_k(best_scores, best_rows, scores, rows, k)
        return best_scores, best_rows


def _merge_top_k(scores_a, rows_a, scores_b, rows_b, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of two top-k lists per query; a stable sort keeps earlier shards first on ties,
    and missing hits (row -1) last."""
    scores = np.concatenate([scores_a, scores_b], axis=1)
    rows = np.concatenate([rows_a, rows_b], axis=1)
    keyed = np.where(rows >= 0, -scores, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)
