from opera import pipeline

train_logs = {(d, m, method, int(seed)): f"{path}/train_log.jsonl" for d, m, method, seed, path in snakemake.params.finetune_runs}
pipeline.run_job(snakemake, lambda: pipeline.aggregate(
    snakemake.input.metrics, snakemake.params.tables_dir, snakemake.params.plots_dir, train_logs,
    cards=snakemake.params.cards))
