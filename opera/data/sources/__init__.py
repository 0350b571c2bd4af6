"""Dataset sources, one module per kind (shipped and BEIR folders, ir_datasets, Hugging Face), each a
:class:`~opera.data.sources.base.Source` registered by its ``type``.

Adding a source is one file here: a module with a ``Source`` subclass. It is found when the package is
imported, and its ``type`` becomes a valid ``datasets.<name>.source.type`` with its ``fields`` in the
config schema.
"""

from __future__ import annotations

import importlib
import pkgutil

from opera.data.records import DataError
from opera.data.sources.base import Source, SourceCounts


def _discover() -> dict[str, Source]:
    found: dict[str, Source] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Source) and "type" in vars(value):
                if value.type in found:
                    raise TypeError(f"two dataset sources have type {value.type!r}: {module.__name__} and another")
                found[value.type] = value()
    return found


SOURCES: dict[str, Source] = _discover()


def types() -> list[str]:
    return sorted(SOURCES)


def source_of(name: str, spec: dict) -> Source:
    """The source of dataset ``name`` (its resolved entry ``spec``); DataError naming the key if unknown."""
    kind = (spec.get("source") or {}).get("type")
    if kind not in SOURCES:
        raise DataError(f"config key 'datasets.{name}.source.type': unknown source type {kind!r} (known: {types()})")
    return SOURCES[kind]


def check_source(name: str, spec: dict) -> None:
    """Check a dataset's source offline (:meth:`Source.check`): before any job, naming the config key."""
    source_of(name, spec).check(name, spec)


def source_files(name: str, spec: dict) -> list[str]:
    """The local files a dataset's source reads (the download rule's inputs: an edit reruns it).
    Call it on a checked source (:func:`check_source`)."""
    return source_of(name, spec).files(name, spec)


__all__ = ["SOURCES", "Source", "SourceCounts", "check_source", "source_files", "source_of", "types"]
