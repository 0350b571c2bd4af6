"""The ``opera`` command line: ``opera <subcommand> ...``.

Each subcommand is one entry of ``COMMANDS``: a function that adds its parser to the subparsers,
and a ``run(args) -> int``. Errors the user can fix (bad config, bad data) print ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from opera.config import ConfigError, load_config
from opera.data import DataError, prepare, summary_lines


def _add_prepare(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare", help="download/copy, validate and normalize datasets (the workflow's download stage)"
    )
    parser.add_argument("--config", default="config/config.yaml", type=Path, help="config file (default: %(default)s)")
    parser.add_argument(
        "--dataset",
        action="append",
        metavar="NAME",
        help="a dataset of the config to prepare (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--out",
        default="results/data",
        type=Path,
        help="output folder; each dataset goes to OUT/NAME/ (default: %(default)s)",
    )
    return parser


def _run_prepare(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = args.dataset or list(config["datasets"])
    unknown = [n for n in names if n not in config["datasets"]]
    if unknown:
        raise ConfigError(f"dataset(s) {unknown} are not in {args.config}; configured: {list(config['datasets'])}")
    for name in names:
        summary = prepare(name, config["datasets"][name], config["data"], args.out / name)
        print("\n".join(summary_lines(name, summary)), flush=True)
    return 0


def _add_finetune(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help="run one finetuning job described by a job file (used under torchrun by the workflow)"
    )
    parser.add_argument("--job", required=True, type=Path, help="JSON with the arguments of opera.pipeline.finetune")
    return parser


def _run_finetune(args: argparse.Namespace) -> int:
    import json

    from opera import pipeline
    from opera.settings import ModelSettings

    job = json.loads(args.job.read_text(encoding="utf-8"))
    job["settings"] = ModelSettings.from_dict(job["settings"])
    pipeline.finetune(**job)
    return 0


# subcommand -> (add its parser, run it)
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "prepare": (_add_prepare, _run_prepare),
    "finetune": (_add_finetune, _run_finetune),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opera", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``opera`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command][1](args)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
