from opera import job, pipeline
from opera.settings import EncoderSettings

job.run(
    snakemake,
    lambda: pipeline.evaluate(
        data_dir=snakemake.input.data,
        encoder=EncoderSettings.from_dict(snakemake.params.encoder),
        evaluation=snakemake.params.evaluation,
        index_path=snakemake.input.index,
        split=snakemake.params.split,
        out_run=snakemake.output.run,
        out_per_query=snakemake.output.per_query,
        out_metrics=snakemake.output.metrics,
        run_meta=snakemake.params.run_meta,
        checkpoint=snakemake.params.checkpoint,
        query_embeddings=getattr(snakemake.input, "queries", None),
    ),
)
