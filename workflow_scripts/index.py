from opera import job, pipeline
from opera.settings import EncoderSettings

job.run(
    snakemake,
    lambda: pipeline.index(
        data_dir=snakemake.input.data,
        encoder=EncoderSettings.from_dict(snakemake.params.encoder),
        index_factory=snakemake.params.index_factory,
        encode_batch_size=snakemake.params.encode_batch_size,
        title_join=snakemake.params.title_join,
        out_index=snakemake.output[0],
        embeddings_path=snakemake.input.get("embeddings"),
        checkpoint=snakemake.params.checkpoint,
    ),
)
