"""The opera command line: the pipeline's stages for one dataset and model, without Snakemake.

Each subcommand is one entry of COMMANDS: a function that adds its parser to the subparsers, and a
run(args) -> int. Errors the user can fix (bad config, bad data, a missing checkpoint) print
"error: ..." and exit 2. Outputs go where the workflow puts them, under the config's results_dir
(results/<config file stem> by default), so the CLI and the workflow share prepared data and scores.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from opera import __version__
from opera.config import ConfigError, load_config
from opera.data import DataError, prepare, summary_lines

log = logging.getLogger("opera.cli")

DESCRIPTION = """\
OPERA: data-pruned finetuning of dense retrievers. The workflow (snakemake) runs the whole grid of
a config; these subcommands run its stages for one dataset and one model of a config.
"""

EPILOG = """\
examples:
  opera check    --config config/smoke.yaml
  opera prepare  --config config/smoke.yaml
  opera evaluate --config config/smoke.yaml --dataset scifact
  opera evaluate --config config/smoke.yaml \
      --checkpoint results/smoke/finetune/scifact/all-MiniLM-L6-v2/dp/seed42/budget4/step4
  opera score    --config config/smoke.yaml
  opera finetune --config config/smoke.yaml --method dp --seed 42

Outputs go under the config's results_dir (default results/<config file stem>), in the
workflow's layout: data/, score/, prune/, finetune/. Run "opera COMMAND --help" for a command's options.
"""


class UsageError(ValueError):
    """A command-line choice that does not fit the config (an unknown dataset, model or method)."""


# --- shared options and look-ups -----------------------------------------------------------------------


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config/config.yaml", type=Path, help="config file (default: %(default)s)")


def _add_dataset_model(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("--dataset", metavar="NAME", help="a dataset of the config (default: its only one)")
    parser.add_argument("--model", metavar="NAME", help="a model of the config (default: its only one)")


def _one_of(config: dict, key: str, chosen: str | None, option: str) -> str:
    names = list(config[key])
    if chosen is None:
        if len(names) != 1:
            raise UsageError(f"the config has {len(names)} {key} {names}: choose one with {option}")
        return names[0]
    if chosen not in names:
        raise UsageError(f"{option} {chosen!r} is not in the config's {key}: {names}")
    return chosen


def _results(config: dict) -> Path:
    return Path(config["results_dir"])


def _data(config: dict, dataset: str) -> Path:
    """The dataset's prepared tables: those already under results_dir/data, else prepared now."""
    out = _results(config) / "data" / dataset
    if (out / "summary.json").is_file():
        log.info("using the prepared data in %s (opera prepare rewrites it)", out)
    else:
        prepare(dataset, config["datasets"][dataset], config["data"], out)
    return out


def _score_dir(config: dict, dataset: str, model: str) -> Path:
    return _results(config) / "score" / dataset / model


def _score(config: dict, dataset: str, model: str) -> dict:
    from opera import pipeline
    from opera.pipeline.stage_params import arguments

    return pipeline.score(
        data_dir=_data(config, dataset),
        out_dir=_score_dir(config, dataset, model),
        **arguments("score", config, {"dataset": dataset, "model": model}),
    )


def _validation_pool(config: dict, dataset: str, model: str) -> Path | None:
    """The pool a finetune run of ``model`` validates on (the workflow's validation_pool rule),
    built now if it is not there; None when the model has no validate_every."""
    from opera import pipeline
    from opera.config import validation_of
    from opera.pipeline.stage_params import arguments
    from opera.retrieval import validation

    if validation_of(config, dataset, model) is None:
        return None
    out = _score_dir(config, dataset, model)
    if not (out / validation.POOL_REPORT).is_file():
        pipeline.validation_pool(
            data_dir=_data(config, dataset),
            corpus_path=out / "corpus_embeddings",
            out_dir=out,
            **arguments("validation_pool", config, {"dataset": dataset, "model": model}),
        )
    return out / validation.POOL_FILE


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}", flush=True)


# --- check ---------------------------------------------------------------------------------------------


def _add_check(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check",
        help="validate a config (sources, model paths, every key) and print what the workflow would run",
        description="Validate a config as the workflow does before any job, and print its grid.",
    )
    _add_config(parser)
    return parser


def _run_check(args: argparse.Namespace) -> int:
    from opera.config import grid, trained_methods

    config = load_config(args.config)
    runs = grid(config)
    trained = trained_methods(config)
    _print_table(
        [
            ("config", str(args.config)),
            ("results_dir", config["results_dir"]),
            ("datasets", ", ".join(config["datasets"])),
            ("models", ", ".join(config["models"])),
            ("methods", ", ".join(config["methods"])),
            ("seeds", ", ".join(map(str, config["seeds"]))),
            (
                "finetune runs",
                str(len(config["datasets"]) * len(config["models"]) * len(trained) * len(config["seeds"])),
            ),
            ("evaluated runs", str(len(runs))),
        ]
    )
    return 0


# --- prepare -------------------------------------------------------------------------------------------


def _add_prepare(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prepare",
        help="download/copy, validate and normalize datasets (the workflow's download stage)",
        description="Read each dataset's source, validate it and write normalized parquet tables.",
    )
    _add_config(parser)
    parser.add_argument(
        "--dataset",
        action="append",
        metavar="NAME",
        help="a dataset of the config to prepare (repeatable; default: all of them)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder; each dataset goes to OUT/NAME/ (default: RESULTS_DIR/data, as the workflow)",
    )
    return parser


def _run_prepare(args: argparse.Namespace) -> int:
    from opera.config import global_batches

    config = load_config(args.config)
    names = args.dataset or list(config["datasets"])
    unknown = [n for n in names if n not in config["datasets"]]
    if unknown:
        raise ConfigError(f"dataset(s) {unknown} are not in {args.config}; configured: {list(config['datasets'])}")
    out = args.out or _results(config) / "data"
    for name in names:
        summary = prepare(name, config["datasets"][name], config["data"], out / name, global_batches(config))
        print("\n".join(summary_lines(name, summary)), flush=True)
    return 0


# --- score ---------------------------------------------------------------------------------------------


def _add_score(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score",
        help="score every train pair with the base model and mine hard negatives (the workflow's score stage)",
        description="Encode the corpus and the train queries with the base model; write pair scores and hard "
        "negatives to RESULTS_DIR/score/DATASET/MODEL/.",
    )
    _add_dataset_model(parser)
    return parser


def _run_score(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    dataset = _one_of(config, "datasets", args.dataset, "--dataset")
    model = _one_of(config, "models", args.model, "--model")
    report = _score(config, dataset, model)
    rows = [("written to", str(_score_dir(config, dataset, model)))]
    rows += [(key, str(value)) for key, value in report.items()]
    _print_table(rows)
    return 0


# --- finetune ------------------------------------------------------------------------------------------


def _add_finetune(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune",
        help="finetune a model of the config with one method and seed (prune + finetune stages)",
        description="Prepare and score the data if needed, prune the pairs for METHOD, and finetune; "
        "checkpoints go to RESULTS_DIR/finetune/DATASET/MODEL/METHOD/seedSEED/budgetSTEPS/stepK/.",
    )
    _add_dataset_model(parser)
    from opera import methods  # the registry names the choices: a new method appears here by itself

    parser.add_argument("--method", help=f"required: a finetuning method ({', '.join(methods.trained())})")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's first seed)")
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # the workflow's torchrun workers
    return parser


def _run_finetune(args: argparse.Namespace) -> int:
    if args.job:
        return _run_finetune_job(args.job)
    from opera import methods, pipeline
    from opera.config import model_settings

    config = load_config(args.config)
    dataset = _one_of(config, "datasets", args.dataset, "--dataset")
    model = _one_of(config, "models", args.model, "--model")
    trained = methods.trained()
    if args.method is None:  # not argparse's required=: the workflow's torchrun workers pass only --job
        raise UsageError(f"--method is required: one of the finetuning methods {trained}")
    if args.method not in trained:
        raise UsageError(f"--method {args.method!r}: choose one of the finetuning methods {trained}")
    if "train" not in config["datasets"][dataset]["splits"]:
        raise UsageError(f"dataset {dataset!r} has no train split to finetune on")
    seed = config["seeds"][0] if args.seed is None else args.seed
    results, method = _results(config), args.method
    settings = model_settings(config, model)
    run = Path(dataset, model, method, f"seed{seed}", f"budget{settings.max_steps}")  # the workflow's layout
    out = results / "finetune" / run
    if out.exists():  # done already: say where, succeed (a rerun of the same command is not an error)
        print(f"{out}: this run is finished; its checkpoints are there (delete the folder to train it again)")
        return 0
    data, score = _data(config, dataset), _score_dir(config, dataset, model)
    if not (score / "score.json").is_file():
        _score(config, dataset, model)
    pipeline.prune_and_finetune(
        config,
        dataset,
        model,
        method,
        seed,
        data_dir=data,
        score_dir=score,
        out_dir=out,
        work_dir=results / "finetune_work" / run,
        prune_root=results / "prune",
        pool_path=_validation_pool(config, dataset, model),
    )
    steps = sorted(out.glob("step*"), key=lambda p: int(p.name[4:]))
    _print_table([("finetuned", str(out))] + [("checkpoint", str(step)) for step in steps])
    return 0


def _run_finetune_job(job_file: Path) -> int:
    """One finetuning job described by a JSON file (the workflow runs this under torchrun)."""
    from opera import io, pipeline
    from opera.settings import ModelSettings, Validation
    from opera.tracking import Tracking

    job = io.read_json(job_file)
    job["settings"] = ModelSettings.from_dict(job["settings"])
    if job.get("tracking_settings"):
        job["tracking_settings"] = Tracking.from_dict(job["tracking_settings"])
    if job.get("validation"):
        job["validation"] = Validation.from_dict(job["validation"])
    pipeline.finetune(**job)
    return 0


# --- evaluate ------------------------------------------------------------------------------------------


def _add_evaluate(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="retrieve with a model or checkpoint on a dataset of the config and print its metrics",
        description="Index the corpus with the model (or --checkpoint), retrieve for the evaluation split's "
        "queries and print NDCG, Recall and MRR. The model's settings (pooling, instructions, lengths) "
        "come from its entry in the config.",
    )
    _add_dataset_model(parser)
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="weights to evaluate: a finetune step folder, a local model folder or a hub id "
        "(default: the model's own path)",
    )
    parser.add_argument("--split", help="test or dev (default: the config's evaluation.split: test, else dev)")
    parser.add_argument("--out", type=Path, help="also keep run.trec, per_query.parquet and metrics.json here")
    return parser


def _run_evaluate(args: argparse.Namespace) -> int:
    from opera import pipeline
    from opera.config import eval_split, evaluation_of, model_settings
    from opera.pipeline.stage_params import arguments
    from opera.preflight import model_path_problem

    config = load_config(args.config)
    dataset = _one_of(config, "datasets", args.dataset, "--dataset")
    model = _one_of(config, "models", args.model, "--model")
    if args.checkpoint and (steps := sorted(Path(args.checkpoint).glob("step*/config.json"))):
        folders = ", ".join(str(step.parent) for step in steps)
        raise UsageError(f"--checkpoint {args.checkpoint} is a finetune run; give one of its step folders: {folders}")
    if args.checkpoint and (problem := model_path_problem(args.checkpoint)):
        raise UsageError(f"--checkpoint: {problem}")
    job = {"dataset": dataset, "model": model}
    split = eval_split(config["datasets"][dataset], args.split or evaluation_of(config).split)
    encoder = model_settings(config, model).encoder
    data = _data(config, dataset)
    weights = args.checkpoint or encoder.path
    with tempfile.TemporaryDirectory(prefix="opera-evaluate-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        pipeline.index(
            data_dir=data,
            checkpoint=weights,
            out_dir=Path(scratch) / "corpus_embeddings",
            out_queries=Path(scratch) / "query_embeddings.npy",
            published=pipeline.is_published_checkpoint(weights),  # a run's step folder: verified
            **arguments("index", config, job, split=split),
        )
        record = pipeline.evaluate(
            data_dir=data,
            index_path=Path(scratch) / "corpus_embeddings",
            out_run=out / "run.trec",
            out_per_query=out / "per_query.parquet",
            out_metrics=out / "metrics.json",
            checkpoint=weights,
            query_embeddings=Path(scratch) / "query_embeddings.npy",  # the index call's, as in the workflow
            **arguments(
                "evaluate",
                config,
                job,
                split=split,
                run_meta={"dataset": dataset, "model": model, "method": "cli", "checkpoint": args.checkpoint},
            ),
        )
    print(f"{dataset} {split}, {model} ({args.checkpoint or encoder.path}), {record['n_queries']} queries")
    _print_table([("metric", "value")] + [(name, f"{value:.4f}") for name, value in record["metrics"].items()])
    if args.out:
        print(f"run, per-query metrics and metrics.json in {args.out}")
    return 0


# --- plan ----------------------------------------------------------------------------------------------


def _add_plan(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan",
        help="what the config's grid costs before submission: jobs, passages encoded, disk and GPU-hours",
        description="Print the grid's cost per dataset x model: jobs, passages encoded, bytes of corpus "
        "embeddings and checkpoints, peak disk with and without keeping per-checkpoint embeddings, and "
        "GPU-hours, with the assumptions they rest on (opera/cost/; config key `cost`). Offline: counts "
        "come from the prepared data or ir_datasets' bundled metadata.",
    )
    _add_config(parser)
    parser.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table (default: the table, totals and assumptions), or the rows per dataset x model as csv or json",
    )
    return parser


def _run_plan(args: argparse.Namespace) -> int:
    import pandas as pd

    from opera.cost import format_plan, plan_rows

    config = load_config(args.config)
    if args.format == "table":
        print(format_plan(config), flush=True)
        return 0
    rows = pd.DataFrame(plan_rows(config))
    text = rows.to_csv(index=False) if args.format == "csv" else rows.to_json(orient="records", indent=1)
    print(text.rstrip("\n"), flush=True)
    return 0


# subcommand -> (add its parser, run it)
COMMANDS: dict[str, tuple[Callable, Callable[[argparse.Namespace], int]]] = {
    "check": (_add_check, _run_check),
    "plan": (_add_plan, _run_plan),
    "prepare": (_add_prepare, _run_prepare),
    "score": (_add_score, _run_score),
    "finetune": (_add_finetune, _run_finetune),
    "evaluate": (_add_evaluate, _run_evaluate),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opera",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"opera {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``opera`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command][1](args)
    except (ConfigError, DataError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
