from opera import job, pipeline

job.run(
    snakemake,
    lambda: pipeline.download(
        name=snakemake.params.name,
        spec=snakemake.params.spec,
        options=snakemake.params.options,
        out_dir=snakemake.output[0],
    ),
)
