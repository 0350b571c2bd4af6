rule publish:
    """A finished run's evaluated checkpoints as sentence-transformers models with model cards (hard
    links, no copy of the weights), and their metrics beside its training curves in TensorBoard."""
    input:
        finetune=finetune_dir(),
        metrics=run_metrics,
    output:
        directory(models_dir()),
    log:
        log_file("publish/{dataset}/{model}/{method}/seed{seed}/budget{budget}.log"),
    benchmark:
        benchmark_file("publish/{dataset}/{model}/{method}/seed{seed}/budget{budget}.tsv")
    threads: 1
    resources:
        mem_mb=job_resource("publish", "mem_mb"),
        runtime=job_resource("publish", "runtime"),
    params:
        **stage_params("publish"),
    script:
        "../workflow_scripts/publish.py"
