from opera import pipeline

step = snakemake.params.step
pipeline.run_job(snakemake, lambda: pipeline.index(
    snakemake.input.data,
    snakemake.config["models"][snakemake.wildcards.model],
    snakemake.config,
    snakemake.output[0],
    embeddings_path=snakemake.input.get("embeddings"),
    checkpoint=None if step is None else f"{snakemake.input.finetune}/step{step}",
))
