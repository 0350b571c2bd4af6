from pathlib import Path

from opera import pipeline

pipeline.job_setup(snakemake.log, snakemake.threads)
settings = {**snakemake.config["models"][snakemake.wildcards.model], **snakemake.params.encoding}
pipeline.score(snakemake.input.data, settings, snakemake.config, Path(snakemake.output.report).parent)
