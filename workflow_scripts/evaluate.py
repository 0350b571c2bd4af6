from opera import pipeline

method, seed, step = snakemake.params.run
finetune_dir = snakemake.input.get("finetune")
pipeline.run_job(snakemake, lambda: pipeline.evaluate(
    snakemake.input.data,
    snakemake.config["models"][snakemake.wildcards.model],
    snakemake.config,
    snakemake.input.index,
    snakemake.params.split,
    snakemake.output.run,
    snakemake.output.per_query,
    snakemake.output.metrics,
    run_meta={"dataset": snakemake.wildcards.dataset, "model": snakemake.wildcards.model,
              "method": method, "seed": seed, "step": step or 0},
    checkpoint=f"{finetune_dir}/step{step}" if finetune_dir else None,
))
