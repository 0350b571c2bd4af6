from opera import job, pipeline
from opera.embedding_store import StoreLayout
from opera.settings import EncoderSettings

job.run(
    snakemake,
    lambda: pipeline.index(
        data_dir=snakemake.input.data,
        encoder=EncoderSettings.from_dict(snakemake.params.encoder),
        checkpoint=snakemake.params.checkpoint,
        encode_batch_size=snakemake.params.encode_batch_size,
        title_join=snakemake.params.title_join,
        layout=StoreLayout(**snakemake.params.layout),
        split=snakemake.params.split,
        out_dir=snakemake.output.corpus,
        out_queries=snakemake.output.queries[0],
        devices=job.encode_devices(snakemake.resources.gpu),
    ),
)
