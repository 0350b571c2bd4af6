from pathlib import Path

from opera import pipeline

settings = {**snakemake.config["models"][snakemake.wildcards.model], **snakemake.params.encoding}
pipeline.run_job(snakemake, lambda: pipeline.score(
    snakemake.input.data, settings, snakemake.config, Path(snakemake.output.report).parent))
