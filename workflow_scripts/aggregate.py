from opera import pipeline

pipeline.job_setup(snakemake.log, snakemake.threads)
cards = [
    {**card, "train_logs": {m: f"{path}/train_log.jsonl" for m, path in card["train_logs"].items()}}
    for card in snakemake.params.cards
]
pipeline.aggregate(snakemake.input.metrics, snakemake.params.tables_dir, snakemake.params.plots_dir, cards=cards)
