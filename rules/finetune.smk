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
        # the budget is the run's max_steps: every schedule ends there
        settings=lambda wc: {**opera_config.model_settings(config, wc.model).to_dict(), "max_steps": int(wc.budget)},
        method=lambda wc: wc.method,
        model_digest=model_digest,  # a rerun trigger: the base model's files, by content
        method_params=lambda wc: opera_config.method_params(config, wc.method, wc.model),
        seed=lambda wc: int(wc.seed),
        title_join=config["data"]["title_join"],
        work_dir=lambda wc: finetune_work_dir(wc.dataset, wc.model, wc.method, wc.seed, wc.budget),
    script:
        "../workflow_scripts/finetune.py"
