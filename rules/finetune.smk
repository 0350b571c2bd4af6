rule finetune:
    """Finetune one (dataset, model, method, seed); resumes from its last checkpoint if killed."""
    input:
        data=rules.download.output[0],
        score=rules.score.output.pairs,
        negatives=rules.score.output.negatives,
        pairs=rules.prune.output.pairs,
    output:
        directory(f"{R}/finetune/{{dataset}}/{{model}}/{{method}}/seed{{seed}}"),
    params:
        settings=model_settings,
        method_params=lambda wc: opera_config.method_params(config, wc.method),
        title_join=config["data"]["title_join"],
        # Not an output: Snakemake would delete it before a rerun, and with it the resume state.
        work_dir=lambda wc: f"{R}/finetune_work/{wc.dataset}/{wc.model}/{wc.method}/seed{wc.seed}",
    log:
        "logs/finetune/{dataset}/{model}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/finetune/{dataset}/{model}/{method}/seed{seed}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["finetune_mem_mb"],
        runtime=RES["finetune_runtime"],
        gpu=gpus_for("finetune"),
    script:
        "../workflow_scripts/finetune.py"
