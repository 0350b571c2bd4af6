rule prune:
    """The pairs a method may train on: sp / random prune statically, the others keep all."""
    input:
        pairs=rules.score.output.pairs,
    output:
        pairs=f"{R}/prune/{{dataset}}/{{model}}/{{method}}/pairs.parquet",
        report=f"{R}/prune/{{dataset}}/{{model}}/{{method}}/report.json",
    params:
        method_params=lambda wc: opera_config.method_params(config, wc.method) if wc.method in ("sp", "random") else {},
    log:
        "logs/prune/{dataset}/{model}/{method}.log",
    threads: 1
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
    script:
        "../workflow_scripts/prune.py"
