def evaluate_inputs(wildcards):
    inputs = index_inputs(wildcards)
    inputs.pop("embeddings", None)
    inputs["index"] = f"{R}/index/{wildcards.dataset}/{wildcards.model}/{wildcards.run}/index.faiss"
    return inputs


rule evaluate:
    """Retrieve the top k for the evaluation split; TREC run, per-query and mean metrics."""
    input:
        unpack(evaluate_inputs),
    output:
        run=f"{R}/evaluate/{{dataset}}/{{model}}/{{run}}/run.trec",
        per_query=f"{R}/evaluate/{{dataset}}/{{model}}/{{run}}/per_query.parquet",
        metrics=f"{R}/evaluate/{{dataset}}/{{model}}/{{run}}/metrics.json",
    params:
        encoding=encoding_settings,
        evaluation=config["evaluation"],
        split=eval_split,
        run=lambda wc: parse_run(wc.run),
    log:
        "logs/evaluate/{dataset}/{model}/{run}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{model}/{run}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for("encode"),
    script:
        "../workflow_scripts/evaluate.py"
