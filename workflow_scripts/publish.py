from opera import job, pipeline, tracking
from opera.settings import ModelSettings

wildcards = snakemake.wildcards
job.run(
    snakemake,
    lambda: pipeline.publish(
        finetune_dir=snakemake.input.finetune,
        metrics_paths=snakemake.input.metrics,
        out_dir=snakemake.output[0],
        settings=ModelSettings.from_dict(snakemake.params.settings),
        method_params=snakemake.params.method_params,
        # from the config, not a param: where curves go changes no result, so it reruns nothing
        tracking_settings=tracking.Tracking.for_run(
            snakemake.config,
            wildcards.dataset,
            wildcards.model,
            wildcards.method,
            int(wildcards.seed),
            int(wildcards.budget),
        ),
    ),
)
