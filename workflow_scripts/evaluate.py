from opera import pipeline

pipeline.job_setup(snakemake.log, snakemake.threads)
method, seed, step = snakemake.params.run
finetune_dir = snakemake.input.get("finetune")
pipeline.evaluate(
    snakemake.input.data,
    snakemake.config["models"][snakemake.wildcards.model],
    snakemake.config,
    snakemake.input.index,
    snakemake.params.split,
    snakemake.output.run,
    snakemake.output.per_query,
    snakemake.output.metrics,
    run_meta={
        "dataset": snakemake.wildcards.dataset,
        "model": snakemake.wildcards.model,
        "method": method,
        "seed": seed,
        "step": step or 0,
        "train_seconds": pipeline.train_seconds_at(f"{finetune_dir}/train_log.jsonl", step) if finetune_dir else 0.0,
    },
    checkpoint=f"{finetune_dir}/step{step}" if finetune_dir else None,
)
