from opera import job, pipeline

job.run(
    snakemake,
    lambda: pipeline.prune(
        pairs_path=snakemake.input.pairs,
        method=snakemake.params.method,
        params=snakemake.params.method_params,
        out_pairs=snakemake.output.pairs,
        out_report=snakemake.output.report,
        global_batch=snakemake.params.global_batch,
        dataset=snakemake.wildcards.dataset,
        model=snakemake.wildcards.model,
    ),
)
