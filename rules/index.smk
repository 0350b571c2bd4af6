def index_inputs(wildcards):
    """Pretrain reuses the corpus embeddings from `score`; a checkpoint needs its finetune run."""
    method, seed, step = parse_run(wildcards.run)
    inputs = {"data": f"{R}/data/{wildcards.dataset}"}
    if method == "pretrain":
        inputs["embeddings"] = f"{R}/score/{wildcards.dataset}/{wildcards.model}/corpus_embeddings.npy"
    else:
        inputs["finetune"] = f"{R}/finetune/{wildcards.dataset}/{wildcards.model}/{method}/seed{seed}"
    return inputs


rule index:
    """FAISS index of the corpus under the base model or one checkpoint."""
    input:
        unpack(index_inputs),
    output:
        f"{R}/index/{{dataset}}/{{model}}/{{run}}/index.faiss",
    params:
        encoding=encoding_settings,
        evaluation=config["evaluation"],
        title_join=config["data"]["title_join"],
        step=lambda wc: parse_run(wc.run)[2],
    log:
        "logs/index/{dataset}/{model}/{run}.log",
    benchmark:
        "benchmarks/index/{dataset}/{model}/{run}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=gpus_for("encode"),
    script:
        "../workflow_scripts/index.py"
