from opera import config, job, pipeline, tracking
from opera.settings import ModelSettings

wc = snakemake.wildcards
job.run(
    snakemake,
    lambda: pipeline.finetune_job(
        data_dir=snakemake.input.data,
        pairs_path=snakemake.input.pairs,
        negatives_path=snakemake.input.negatives,
        kept_pairs_path=snakemake.input.kept_pairs,
        settings=ModelSettings.from_dict(snakemake.params.settings),
        method=snakemake.params.method,
        method_params=snakemake.params.method_params,
        seed=snakemake.params.seed,
        title_join=snakemake.params.title_join,
        out_dir=snakemake.output[0],
        work_dir=snakemake.params.work_dir,
        gpus=snakemake.resources.gpu,
        # not a param: what it holds is a param of the pool rule, whose rebuild reruns this job
        validation=config.validation_of(snakemake.config, wc.dataset, wc.model),
        pool_path=getattr(snakemake.input, "pool", None),
        # from the config, not a param: where curves go changes no result, so it reruns nothing
        tracking_settings=tracking.Tracking.for_run(
            snakemake.config, wc.dataset, wc.model, wc.method, int(wc.seed), int(wc.budget)
        ),
    ),
)
