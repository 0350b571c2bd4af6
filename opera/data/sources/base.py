"""What a dataset source is: the one class each kind of source (``datasets.<name>.source.type``)
subclasses, in its own module of this folder (opera.data.sources finds it there by its ``type``).

A source reads its records into :class:`~opera.data.records.SourceTables`; everything after that
(thresholds, drops, subsampling, the overlap check, writing) is the same for every source
(opera.data.load). Everything but :meth:`Source.read` works offline and without reading the data:
the checks before any job, the files whose edits rerun the download, and the counts `opera plan`
prices a grid with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from opera.data.records import SPLIT_ORDER, SourceTables, count_records, judged_queries, judgments


@dataclass(frozen=True)
class SourceCounts:
    """What a source tells offline about one evaluation split (subsampling not applied)."""

    documents: int | None
    queries: int
    judgments: int | None
    where: str  # where the counts come from


class Source(ABC):
    """One kind of dataset source. A subclass sets ``type`` (the config's ``source.type``) and
    ``fields`` (the JSON schema of the other keys of its ``source`` block, merged into the config
    schema), and implements :meth:`read`; the others have defaults for a source with no local files."""

    type: ClassVar[str]
    fields: ClassVar[dict] = {}

    @abstractmethod
    def read(self, name: str, spec: dict, splits: list[str], options: dict) -> SourceTables:
        """Read and validate every record of dataset ``name`` (``spec`` is its resolved entry)."""

    def check(self, name: str, spec: dict) -> None:
        """Check offline, without reading records, what a dry run can know (files exist, ids are
        registered); a DataError names the config key (``datasets.<name>.source...``)."""
        return None  # by default nothing is knowable before the read

    def files(self, name: str, spec: dict) -> list[str]:
        """The local files :meth:`read` reads: an edit of one reruns the download."""
        return []

    def beir_folder(self, name: str, spec: dict) -> Path | None:
        """A local BEIR folder holding the data, if any: counts are read from its files."""
        return None

    def counts(self, name: str, spec: dict, split: str) -> SourceCounts | None:
        """Documents, queries and judgments of ``split``, offline; None when not knowable before a download."""
        folder = self.beir_folder(name, spec)
        if folder is None:
            return None
        qrels = folder / "qrels" / f"{split}.tsv"
        return SourceCounts(count_records(folder, "corpus"), judged_queries(qrels), judgments(qrels), str(folder))


def splits_of(spec: dict) -> list[str]:
    """The splits a dataset entry asks for (all three by default)."""
    return list(spec.get("splits") or SPLIT_ORDER)
