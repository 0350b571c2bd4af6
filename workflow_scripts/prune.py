from opera import cost, job, pipeline

job.run(
    snakemake,
    lambda: pipeline.prune(
        pairs_path=snakemake.input.pairs,
        method=snakemake.params.method,
        params=snakemake.params.method_params,
        out_pairs=snakemake.output.pairs,
        out_report=snakemake.output.report,
        # read from the config, not a param (a batch size change must not rerun pruning and all after it)
        global_batch=cost.global_batch(snakemake.config, snakemake.wildcards.model),
        dataset=snakemake.wildcards.dataset,
        model=snakemake.wildcards.model,
    ),
)
