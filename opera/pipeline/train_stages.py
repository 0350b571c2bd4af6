"""Stages 4 and 7: finetune (in this process, or under torchrun for several GPUs) and publish."""

from __future__ import annotations

import logging
from pathlib import Path

from opera import data as data_mod
from opera import io
from opera.errors import StageError
from opera.methods import pruning
from opera.pipeline.data_stages import mine, prune
from opera.retrieval import validation as validation_mod
from opera.settings import ModelSettings, Validation
from opera.tracking import Tracking

log = logging.getLogger(__name__)


def finetune(
    *,
    data_dir: str | Path,
    pairs_path: str | Path,
    negatives_path: str | Path,
    kept_pairs_path: str | Path,
    settings: ModelSettings,
    method: str,
    method_params: dict,
    seed: int,
    title_join: str,
    out_dir: str | Path,
    work_dir: str | Path,
    stop_after: int | None = None,
    tracking_settings: Tracking | None = None,
    validation: Validation | None = None,
    pool_path: str | Path | None = None,
) -> dict:
    """Reads the prepared data, the scored pairs, the mined negatives and the method's kept pairs; writes
    the finished run (checkpoints, train_log.jsonl, run.json) to ``out_dir``, resuming from
    ``work_dir`` if an earlier attempt left checkpoints there; its curves also go to
    ``tracking_settings`` (opera.tracking) while it trains. With ``validation`` (and the model's
    ``validate_every``) it scores the weights on the validation pool at ``pool_path`` as it trains."""
    from opera import training

    dataset = data_mod.read_prepared(data_dir)
    corpus_texts = dict(zip(dataset.corpus["doc_id"], data_mod.passage_texts(dataset.corpus, title_join), strict=True))
    train_data = training.TrainingData.build(
        kept_pairs=io.load_table(kept_pairs_path),
        all_pairs=io.load_table(pairs_path),
        negatives=io.load_table(negatives_path),
        queries=dataset.queries,
        corpus_texts=corpus_texts,
    )
    # a resumed run must have been trained on the same data: the files' checksums and the passage format
    inputs = {"pairs": pairs_path, "negatives": negatives_path, "kept_pairs": kept_pairs_path}
    inputs |= {name: Path(data_dir) / f"{name}.parquet" for name in ("corpus", "queries")}
    fingerprint = {name: io.recorded_digest(path) for name, path in inputs.items()} | {"title_join": title_join}
    if (validation is None) != (settings.validate_every is None) or (validation and pool_path is None):
        raise StageError(
            f"finetune: validate_every is {settings.validate_every}, but the job has "
            f"{'a' if validation else 'no'} validation and {'a' if pool_path else 'no'} pool; they come together"
        )
    validator = validation_mod.PoolValidator(validation, pool_path, data_dir, settings.encoder) if validation else None
    return training.finetune(
        train_data,
        settings,
        method,
        method_params,
        seed,
        out_dir,
        work_dir,
        stop_after=stop_after,
        data_fingerprint=fingerprint,
        tracking_settings=tracking_settings,
        validator=validator,
    )


def finetune_job(*, gpus: int = 0, **job) -> dict | None:
    """Run :func:`finetune` here, or under torchrun, one process per GPU, when the job holds several
    GPUs; without CUDA those are gloo CPU processes, so the global batch is ``batch_size x gpus`` either way."""
    if gpus > 1:
        import json
        import os
        import subprocess
        import sys

        job_file = Path(f"{job['work_dir']}.job.json")  # beside the work dir, which the trainer owns
        job_file.parent.mkdir(parents=True, exist_ok=True)
        serialized = {
            k: (
                v.to_dict()
                if isinstance(v, ModelSettings | Tracking | Validation)
                else str(v)
                if isinstance(v, Path)
                else v
            )
            for k, v in job.items()
        }
        job_file.write_text(json.dumps(serialized))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "opera.cli",
            "finetune",
            "--job",
            str(job_file),
        ]
        # the job's threads (opera.job sets OMP_NUM_THREADS) shared by its processes; torchrun's default is 1
        threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")) // gpus)
        log.info("launching %s", " ".join(command))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, stdout=sys.stderr, stderr=sys.stderr, env=env)
        return None
    return finetune(**job)


def publish(
    *,
    finetune_dir: str | Path,
    metrics_paths: list[str | Path],
    out_dir: str | Path,
    settings: ModelSettings,
    method_params: dict,
    tracking_settings: Tracking | None = None,
) -> list[Path]:
    """Reads a finished finetune run and its checkpoints' metrics.json; writes each evaluated
    checkpoint as a model folder with a model card into ``out_dir`` and the metrics to the run's
    tracking (opera.models.publish)."""
    from opera.models import publish as publish_mod

    io.verify_dir(finetune_dir)  # the run's log and run.json, as the finetune job recorded them
    return publish_mod.publish_run(
        finetune_dir=finetune_dir,
        metrics_paths=metrics_paths,
        out_dir=out_dir,
        settings=settings,
        method_params=method_params,
        tracking_settings=tracking_settings,
    )


def prune_and_finetune(
    config: dict,
    dataset: str,
    model: str,
    method: str,
    seed: int,
    *,
    data_dir: Path,
    score_dir: Path,
    out_dir: Path,
    work_dir: Path,
    prune_root: Path,
    pool_path: Path | None,
) -> None:
    """The prune, mine (for a method that mines after pruning) and finetune stages of one run, as the
    workflow chains them, from a resolved config and the score stage's folder (the CLI's finetune).
    Every argument that comes from the config is the workflow job's (opera.pipeline.stage_params)."""
    from opera.config import finetune_gpus, global_batch, method_params, model_settings, validation_of
    from opera.pipeline.stage_params import arguments  # the config's reader: not in every stage job

    max_steps, params = model_settings(config, model).max_steps, method_params(config, method, model)
    # a seeded pruner draws with the run's seed: its pair set is named by it (the prune job's subset)
    subset = pruning.run_subset(method, params, seed)
    run = {"dataset": dataset, "model": model, "method": method, "seed": seed, "budget": max_steps}
    prune_dir = prune_root / dataset / model / method / subset
    prune(
        pairs_path=score_dir / "pairs.parquet",
        out_pairs=prune_dir / "pairs.parquet",
        out_report=prune_dir / "report.json",
        global_batch=global_batch(config, model),
        dataset=dataset,
        model=model,
        **arguments("prune", config, run | {"subset": subset}),
    )
    pairs, negatives = score_dir / "pairs.parquet", score_dir / "negatives.parquet"
    if params.get("mine_after_prune"):  # as the workflow's mine rule
        mine(
            data_dir=data_dir,
            scored_pairs_path=pairs,
            kept_pairs_path=prune_dir / "pairs.parquet",
            corpus_embeddings_path=score_dir / "corpus_embeddings",
            query_embeddings_path=score_dir / "train_query_embeddings.npy",
            out_negatives=prune_dir / "negatives.parquet",
            **arguments("mine", config, run),
        )
        pairs, negatives = prune_dir / "pairs.parquet", prune_dir / "negatives.parquet"
    finetune_job(  # as the workflow: the model's gpus when resources.gpu, one process per GPU
        gpus=finetune_gpus(config, model),
        data_dir=data_dir,
        pairs_path=pairs,
        negatives_path=negatives,
        kept_pairs_path=prune_dir / "pairs.parquet",
        out_dir=out_dir,
        work_dir=work_dir,
        tracking_settings=Tracking.for_run(config, dataset, model, method, seed, max_steps),
        validation=validation_of(config, dataset, model),
        pool_path=pool_path,
        **arguments("finetune", config, run),
    )
