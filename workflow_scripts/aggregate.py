from opera import job, pipeline

job.run(
    snakemake,
    lambda: pipeline.aggregate(
        metrics_paths=snakemake.input.metrics,
        tables_dir=snakemake.params.tables_dir,
        plots_dir=snakemake.params.plots_dir,
        train_logs={
            (dataset, model, method, int(seed), int(budget)): path
            for dataset, model, method, seed, budget, path in snakemake.params.train_logs
        },
        cards=snakemake.params.cards,
        ttq_tolerance=snakemake.params.ttq_tolerance,
        equivalence_margin=snakemake.params.equivalence_margin,
        global_batch=snakemake.params.global_batch,
        rank_pretrain=snakemake.params.rank_pretrain,
        display_names=snakemake.params.display_names,
        pool_reports={(dataset, model): path for dataset, model, path in snakemake.params.pool_reports},
    ),
)
