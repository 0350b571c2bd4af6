def evaluate_inputs(wildcards):
    inputs = index_inputs(wildcards)
    inputs.pop("embeddings", None)
    inputs["index"] = run_file("index", "index.faiss", wildcards.dataset, wildcards.model, wildcards.run)
    return inputs


def run_meta(wildcards):
    run = evaluated_run(wildcards)
    return {"dataset": run.dataset, "model": run.model, "method": run.method, "seed": run.seed, "step": run.step or 0}


rule evaluate:
    """Retrieve the top k for the evaluation split; TREC run, per-query and mean metrics."""
    input:
        unpack(evaluate_inputs),
    output:
        run=run_file("evaluate", "run.trec"),
        per_query=run_file("evaluate", "per_query.parquet"),
        metrics=run_file("evaluate", "metrics.json"),
    params:
        encoder=encoder_params,
        evaluation=config["evaluation"],
        split=lambda wc: opera_config.eval_split(config["datasets"][wc.dataset], config["evaluation"]["split"]),
        run_meta=run_meta,
        checkpoint=checkpoint_of,
    log:
        "logs/evaluate/{dataset}/{model}/{run}.log",
    benchmark:
        "benchmarks/evaluate/{dataset}/{model}/{run}.tsv"
    threads: RESOURCES["threads"]
    resources:
        mem_mb=RESOURCES["mem_mb"],
        runtime=RESOURCES["runtime"],
        gpu=gpus_for("encode"),
    script:
        "../workflow_scripts/evaluate.py"
