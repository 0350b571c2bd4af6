"""Stage calls with a validated config's settings, for tests that run stages outside Snakemake."""

from __future__ import annotations

from pathlib import Path


def run_score(config: dict, settings, data_dir: Path, out_dir: Path) -> dict:
    """The score stage on a prepared dataset, with the config's settings."""
    from opera import pipeline

    return pipeline.score(
        data_dir=data_dir,
        encoder=settings.encoder,
        mining=settings.mining,
        encode_batch_size=config["scoring"]["encode_batch_size"],
        title_join=config["data"]["title_join"],
        out_dir=out_dir,
    )


def run_download(config: dict, data_dir: Path) -> dict:
    from opera import pipeline

    name = next(iter(config["datasets"]))
    return pipeline.download(name=name, spec=config["datasets"][name], options=config["data"], out_dir=data_dir)
