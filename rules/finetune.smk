rule finetune:
    """Finetune one (dataset, model, method, seed); resumes from its last checkpoint if killed."""
    input:
        data=data_dir(),
        pairs=score_file("pairs.parquet"),
        negatives=score_file("negatives.parquet"),
        kept_pairs=prune_file("pairs.parquet"),
    output:
        directory(finetune_dir()),
    log:
        "logs/finetune/{dataset}/{model}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/finetune/{dataset}/{model}/{method}/seed{seed}.tsv"
    threads: RESOURCES["threads"]
    resources:
        mem_mb=RESOURCES["finetune_mem_mb"],
        runtime=RESOURCES["finetune_runtime"],
        gpu=gpus_for("finetune"),
    params:
        settings=lambda wc: config["models"][wc.model],
        method=lambda wc: wc.method,
        method_params=lambda wc: opera_config.method_params(config, wc.method),
        seed=lambda wc: int(wc.seed),
        title_join=config["data"]["title_join"],
        work_dir=lambda wc: finetune_work_dir(wc.dataset, wc.model, wc.method, wc.seed),
    script:
        "../workflow_scripts/finetune.py"
