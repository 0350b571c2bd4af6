"""Artifact I/O: atomic writes and checksummed caches.

Every artifact a stage owns is written to a temporary file beside its final path and renamed into
place, so a killed job never leaves a half-written file a rerun would trust. Large cached arrays,
indexes and tables get a sidecar ``<file>.sha256`` recording their digest, size and (for arrays) shape;
readers verify it and refuse a file that does not match.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _umask() -> int:
    """The process's current umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


class CorruptArtifactError(RuntimeError):
    """A cached artifact does not match the checksum recorded when it was written."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts should be group-readable
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def readable_by_group(folder: str | os.PathLike) -> None:
    """Give every file under ``folder`` the mode the umask allows (0644 under umask 022): libraries
    that write through a private temporary file (safetensors) leave 0600, which colleagues on a
    shared file system cannot read."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_train_log(path: str | os.PathLike) -> list[dict]:
    """The entries of a ``train_log.jsonl`` (one JSON object per line; blank lines skipped). A line
    that is not JSON raises :class:`FileFormatError` naming the file, line and column."""
    text = read_text(path, "JSON lines")
    entries = []
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            cause = (
                "a torn last line: the run was killed while writing it (rerun the finetune job)"
                if number == len(lines)
                else "the file was edited or two writers mixed their lines"
            )
            raise FileFormatError(
                f"{path}:{number}:{exc.colno}: not valid JSON ({exc.msg}); likely cause: {cause}"
            ) from None
    return entries


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


class FileFormatError(ValueError):
    """A file cannot be read as its format; the message names the file, the line and column where
    there is one, and the likely cause."""


def _missing(path: str | os.PathLike) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path}: no such file (never written, moved or deleted; a pipeline file is written by its stage)"
    )


def read_text(path: str | os.PathLike, what: str = "text") -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark dropped). A missing file raises
    FileNotFoundError, a byte that is not UTF-8 :class:`FileFormatError`, each naming the file
    (and the line and column of the byte)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _missing(path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise FileFormatError(
            f"{path}:{line}:{column}: not UTF-8 text (byte {raw[exc.start]:#04x}); likely cause: not a {what} "
            "file (a binary or another encoding: save it as UTF-8) or a damaged copy"
        ) from None


def _json_error(path: str | os.PathLike, text: str, exc: json.JSONDecodeError) -> FileFormatError:
    if not text.strip():
        cause = "the file is empty (a write that never finished, or a placeholder)"
    elif exc.pos >= len(text.rstrip()):
        cause = "the text ends early: truncated (a killed write or a partial copy)"
    elif exc.msg.startswith("Extra data"):
        cause = "more than one JSON value: JSON lines where one document is expected, or two writes mixed"
    else:
        cause = "not JSON, or edited by hand (check quotes, commas and brackets there)"
    return FileFormatError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); likely cause: {cause}")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value. A missing file, a byte that is not UTF-8 or text that is not JSON raises
    (FileNotFoundError, :class:`FileFormatError`) naming the file, line and column, and the likely cause."""
    text = read_text(path, "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, text, exc) from None


def read_json_if_exists(path: str | os.PathLike) -> Any:
    """:func:`read_json`, or None when ``path`` is not a file (optional files, e.g. of a checkpoint)."""
    return read_json(path) if Path(path).is_file() else None


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's value (None when empty), read with ``yaml.safe_load``. A missing file, a byte
    that is not UTF-8 or text that is not YAML raises naming the file, line and column, and the likely cause."""
    import yaml  # not every reader of artifacts needs it

    text = read_text(path, "YAML")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        if "\\t" in problem:  # yaml shows a tab as '\\t'
            cause = "a tab in the indentation (YAML indents with spaces)"
        elif any(end in str(exc) for end in ("end of stream", "end of the stream", "<stream end>")):
            cause = "the text ends early (truncated) or a quote or bracket is not closed"
        else:
            cause = "wrong indentation, a missing ':' or space after it, or an unclosed quote or bracket near there"
        raise FileFormatError(f"{where}: not valid YAML ({problem}); likely cause: {cause}") from None


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a ``.safetensors`` file (tensor names, dtypes, shapes), without the tensors."""
    import struct

    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
            total = os.fstat(handle.fileno()).st_size
            if size is None or size > total - 8:
                raise FileFormatError(
                    f"{path}: not a safetensors file (its header length {size} does not fit the file's "
                    f"{total} bytes); likely cause: truncated (an interrupted download or copy) or another format"
                )
            raw = handle.read(size)
    except FileNotFoundError:
        raise _missing(path) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(
            f"{path}: its safetensors header is not UTF-8 JSON ({exc}); likely cause: damaged or another format"
        ) from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# --- checksummed artifacts -------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checked(path: str | os.PathLike, writer: Callable[[Path], None], **meta: Any) -> None:
    """Write ``path`` atomically through ``writer(tmp_path)`` and record its checksum beside it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        writer(tmp)
        record = file_record(tmp) | meta
        # The sidecar is written first: a file without a matching sidecar is never trusted.
        write_json(_sidecar(path), record)


def verify(path: str | os.PathLike) -> dict:
    """Check ``path`` against its sidecar; return the recorded metadata or raise CorruptArtifactError."""
    path = Path(path)
    side = _sidecar(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing artifact")
    if not side.exists():
        raise CorruptArtifactError(
            f"{path}: no checksum file {side.name}; it was not written by a completed stage. "
            "Delete it and rerun the workflow (snakemake --rerun-incomplete) to recompute it."
        )
    record = read_json(side)
    _check_file(path, record, side.name)
    return record


def _check_file(path: Path, record: dict, recorded_in: str) -> None:
    """``path`` has the size and sha256 of ``record``, or CorruptArtifactError names it."""
    size = path.stat().st_size
    if size != record["bytes"] or sha256_of(path) != record["sha256"]:
        raise CorruptArtifactError(
            f"{path}: content does not match {recorded_in} (size {size}, expected {record['bytes']}); "
            "the file is truncated or corrupted, or was changed after it was written. "
            "Delete it and rerun the workflow to recompute it."
        )


def recorded_digest(path: str | os.PathLike) -> str:
    """The sha256 recorded beside ``path`` when it was written (readers verify it when they load it)."""
    side = _sidecar(Path(path))
    if not side.exists():
        raise CorruptArtifactError(f"{path}: no checksum file {side.name}; it was not written by a completed stage")
    return read_json(side)["sha256"]


def save_array(path: str | os.PathLike, array: np.ndarray, **meta: Any) -> None:
    """An .npy file and its sidecar (checksum, shape, dtype and ``meta``, which :func:`verify` returns)."""
    array = np.ascontiguousarray(array)
    write_checked(
        path,
        lambda tmp: _save_npy(tmp, array),
        shape=list(array.shape),
        dtype=str(array.dtype),
        **meta,
    )


def _save_npy(tmp: Path, array: np.ndarray) -> None:
    with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temp name
        np.save(handle, array, allow_pickle=False)


def load_array(path: str | os.PathLike) -> np.ndarray:
    record = verify(path)
    array = np.load(path, allow_pickle=False)
    if list(array.shape) != record["shape"]:
        raise CorruptArtifactError(f"{path}: shape {array.shape} differs from recorded {record['shape']}")
    return array


def save_table(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    write_checked(path, lambda tmp: frame.to_parquet(tmp, index=False), rows=len(frame))


def load_table(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    record = verify(path)
    frame = pd.read_parquet(path, columns=columns)
    if len(frame) != record["rows"]:
        raise CorruptArtifactError(f"{path}: {len(frame)} rows, recorded {record['rows']}")
    return frame


# --- checksummed folders (checkpoints) --------------------------------------------------------------

DIR_CHECKSUMS = "checksums.json"


def write_dir_checksums(folder: str | os.PathLike, records: dict | None = None) -> dict:
    """Record the sha256 and size of every file in ``folder`` (or the given ``records``) in its
    checksums.json, written last: a folder without one was not completed."""
    folder = Path(folder)
    if records is None:
        records = {
            str(path.relative_to(folder)): file_record(path)
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != DIR_CHECKSUMS
        }
    write_json(folder / DIR_CHECKSUMS, records)
    return records


def file_record(path: str | os.PathLike) -> dict:
    """What a checksums.json records of one file."""
    return {"sha256": sha256_of(path), "bytes": Path(path).stat().st_size}


def verify_dir(folder: str | os.PathLike) -> dict:
    """Check every file recorded in ``folder``'s checksums.json; return the records or raise
    CorruptArtifactError naming the file that is missing, truncated or changed."""
    folder = Path(folder)
    manifest = folder / DIR_CHECKSUMS
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: missing folder")
    if not manifest.exists():
        raise CorruptArtifactError(
            f"{folder}: no {DIR_CHECKSUMS}; the folder was not written by a completed stage (or by an "
            "older version without checksums). Delete it and rerun the workflow to recompute it."
        )
    records = read_json(manifest)
    for name, record in records.items():
        path = folder / name
        if not path.is_file():
            raise CorruptArtifactError(f"{path}: missing, but recorded in {manifest}")
        _check_file(path, record, str(manifest))
    return records


# --- a full disk ------------------------------------------------------------------------------------

# What libraries say when a write comes up short: torch's zip writer ("unexpected pos", "file write
# failed") and safetensors report no errno, only text.
_SHORT_WRITE_TEXT = ("no space left on device", "disk quota exceeded", "unexpected pos", "file write failed")


class DiskFullError(RuntimeError):
    """A write failed because the file system is full (or a quota is reached); says what was kept."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a write that failed for lack of space."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(exc).lower() for text in _SHORT_WRITE_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# --- one writer per output --------------------------------------------------------------------------


def lock_file_for(path: str | os.PathLike) -> Path:
    """The lock file of ``path`` (a job's log or a work folder): a hidden file beside it that no
    rule declares, so Snakemake never deletes it (a new file at the same path would be a new lock)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` while the block runs; wait for another holder first.

    The lock is the kernel's (flock), so it ends with its process, even one killed by SIGKILL,
    and on NFS it is seen by every node. While waiting, the log names the holder (pid, host, since
    when): on a cluster that is a job whose Snakemake was killed and which still runs. A file
    system without locks is said in the log and the block runs unlocked.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            log.warning("%s: waiting for %s, which holds %s, to finish", what, holder, lock_path)
            began = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("%s: lock acquired after waiting %.0f s", what, time.monotonic() - began)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning(
                "%s: %s cannot be locked (%s): a second job of this output would not be stopped", what, lock_path, exc
            )
        holder = f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
