from pathlib import Path

from opera import pipeline

pipeline.run_job(snakemake, lambda: pipeline.score(
    snakemake.input.data, snakemake.config["models"][snakemake.wildcards.model], snakemake.config,
    Path(snakemake.output.report).parent))
