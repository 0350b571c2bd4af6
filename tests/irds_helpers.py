"""Offline ir_datasets for tests: a throwaway IR_DATASETS_HOME, no network, real-class records.

Importing this module points IR_DATASETS_HOME at a new temporary folder *before* ir_datasets is
imported (ir_datasets fixes its per-dataset folders on import), so no test reads or writes
~/.ir_datasets. ``offline`` (a fixture in conftest.py) makes any socket connection
fail. :func:`feed` makes a registered dataset yield records built by the test from the dataset's
own record classes (``docs_cls()``, ``queries_cls()``, ``qrels_cls()``) instead of downloading.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import typing

HOME = tempfile.mkdtemp(prefix="opera-irds-home-")
os.environ["IR_DATASETS_HOME"] = HOME
atexit.register(shutil.rmtree, HOME, True)

import ir_datasets  # noqa: E402  (after IR_DATASETS_HOME)


def record(cls, **values):
    """A record of the ir_datasets class ``cls`` (a NamedTuple): ``values`` for the fields given;
    every other field is a string ``'<field> of <id>'``, or ``()`` for a tuple field (answers)."""
    hints = typing.get_type_hints(cls)
    key = values.get("doc_id", values.get("query_id", "?"))
    filled = {}
    for name in cls._fields:
        if name in values:
            filled[name] = values[name]
        elif hints.get(name) is tuple or typing.get_origin(hints.get(name)) is tuple:
            filled[name] = ()
        else:
            filled[name] = f"{name} of {key}"
    return cls(**filled)


def grades(dataset) -> list[int]:
    """The relevance grades ``dataset``'s qrels may hold, highest first: those of ``qrels_defs()``
    and those its bundled metadata counts (BEIR has no qrels_defs)."""
    counted = dataset.qrels_metadata().get("fields", {}).get("relevance", {}).get("counts_by_value", {})
    return sorted(set(dataset.qrels_defs()) | {int(g) for g in counted}, reverse=True)


def feed(monkeypatch, dataset_id: str, docs=None, queries=None, qrels=None):
    """Make the registered dataset ``dataset_id`` yield these records (undone after the test)."""
    dataset = ir_datasets.load(dataset_id)
    for method, records in (("docs_iter", docs), ("queries_iter", queries), ("qrels_iter", qrels)):
        if records is not None:
            # an instance attribute shadows the constituent's method (Dataset.__getattr__ finds it first)
            monkeypatch.setitem(vars(dataset), method, lambda records=list(records): iter(records))
    return dataset
