from opera import cost, job, pipeline

job.run(
    snakemake,
    lambda: pipeline.download(
        name=snakemake.params.name,
        spec=snakemake.params.spec,
        options=snakemake.params.options,
        out_dir=snakemake.output[0],
        # read from the config, not a param: a batch size change must not rerun the download
        global_batches=cost.global_batches(snakemake.config),
    ),
)
