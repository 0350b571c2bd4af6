from opera import cost, data, job, pipeline


def download():
    summary = pipeline.download(
        name=snakemake.params.name,
        spec=snakemake.params.spec,
        options=snakemake.params.options,
        out_dir=snakemake.output[0],
    )
    # Not a param (a batch size change must not rerun the download): a train split smaller than a
    # model's global batch fails here, before the score job encodes the corpus.
    data.check_train_queries(snakemake.params.name, summary, cost.global_batches(snakemake.config))
    return summary


job.run(snakemake, download)
