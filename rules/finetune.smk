rule finetune:
    """Finetune one (dataset, model, method, seed) for a budget of steps; resumes from its last checkpoint if killed."""
    input:
        unpack(finetune_inputs),
    output:
        directory(finetune_dir()),
    log:
        log_file("finetune/{dataset}/{model}/{method}/seed{seed}/budget{budget}.log"),
    benchmark:
        benchmark_file("finetune/{dataset}/{model}/{method}/seed{seed}/budget{budget}.tsv")
    threads: RESOURCES["threads"]
    resources:
        mem_mb=job_resource("finetune", "mem_mb"),
        runtime=job_resource("finetune", "runtime"),
        gpu=job_resource("finetune", "gpu"),
    params:
        **stage_params("finetune"),
        work_dir=lambda wc: finetune_work_dir(wc.dataset, wc.model, wc.method, wc.seed, wc.budget),
    script:
        "../workflow_scripts/finetune.py"
