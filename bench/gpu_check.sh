#!/usr/bin/env bash
# GPU check (under 8 minutes on one H100/H200-class GPU): pretrain + 300 steps of dp and basic of
# all-MiniLM-L6-v2 on NFCorpus through the real workflow; prints step time, encode throughput and
# metrics. Then the paper's two model families without downloads: tiny random-weight stand-ins for
# bge-large-en-v1.5 (fp16) and Qwen3-Embedding-0.6B (bf16, gradient checkpointing), built in seconds
# by opera.models.tiny_models, encoded on the GPU in their precisions and finetuned through the workflow
# (config/smoke_families.yaml; 2 processes under torchrun when 2 GPUs are visible). Their metrics mean
# nothing (random weights). Installs nothing: run it where the project's Python environment is present.
#   bash bench/gpu_check.sh [python]
#   GPU_CHECK_PARTS=families bash bench/gpu_check.sh    # only the families (about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORK=${GPU_CHECK_DIR:-$(mktemp -d)}
PARTS=${GPU_CHECK_PARTS:-minilm families}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

"$PY" - <<'PY'
import torch, faiss
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}",
      f"({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
print(f"faiss {faiss.__version__}, GPUs visible to faiss: {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
PY

if [[ " $PARTS " == *" minilm "* ]]; then
cat > "$WORK/gpu_check.yaml" <<'YAML'
datasets:
  nfcorpus: {}
models:
  all-MiniLM-L6-v2:
    query_max_length: 64
    passage_max_length: 256
    precision: bf16
    encode_precision: bf16
    batch_size: 64
    max_steps: 300
    eval_every: 150
methods: [pretrain, basic, dp]
seeds: [42]
scoring: {encode_batch_size: 256}
evaluation: {encode_batch_size: 256}
resources: {threads: 8, gpu: true}
YAML

start=$(date +%s)
"$PY" -m snakemake -s Snakefile --directory "$WORK" --configfile "$WORK/gpu_check.yaml" \
    --cores 8 --resources gpu=1 --quiet rules
echo "workflow wall time: $(( $(date +%s) - start )) s"

"$PY" - "$WORK" <<'PY'
import json, statistics, sys
from pathlib import Path
root = Path(sys.argv[1]) / "results" / "gpu_check"  # results/<config file stem>
score = json.loads(next(root.glob("score/*/*/score.json")).read_text())
print(f"encode: {score['documents']} passages in {score['corpus_encode_seconds']} s "
      f"= {score['documents'] / score['corpus_encode_seconds']:.0f} passages/s (bf16, length 256)")
step_seconds = []
for log_path in sorted(root.glob("finetune/*/*/*/seed*/*/train_log.jsonl")):
    log = [json.loads(line) for line in log_path.read_text().splitlines()]
    steps = [b["elapsed"] - a["elapsed"] for a, b in zip(log, log[1:])]
    step_seconds += steps
    print(f"{log_path.parts[-4]:>6}: {len(log)} steps, median {statistics.median(steps):.3f} s/step, "
          f"total {log[-1]['elapsed']:.1f} s, sampler {log[-1]['sampler_seconds']:.2f} s")
# measured throughput for `opera plan` and the jobs' resource requests (this GPU, these lengths)
print("config cost.throughput for this GPU (all-MiniLM-L6-v2, lengths 64/256, batch 64, bf16):")
print(f"  all-MiniLM-L6-v2: {{passages_per_s: {score['documents'] / score['corpus_encode_seconds']:.0f}, "
      f"steps_per_s: {1 / statistics.median(step_seconds):.2f}}}")
print((root / "tables" / "results.md").read_text())
print((root / "tables" / "time_to_quality.csv").read_text())
PY
fi

# --- the paper's two model families, tiny and offline ------------------------------------------------
if [[ " $PARTS " == *" families "* ]]; then
FAM="$WORK/families"
mkdir -p "$FAM"
"$PY" -m opera.models.tiny_models "$FAM/tiny_models" 2>&1 | grep -v -e "Loading weights" -e "Writing model shards" || true
NGPU=$("$PY" -c "import torch; print(min(2, torch.cuda.device_count()))")
"$PY" - "$FAM" "$NGPU" <<'PY'
import sys
from pathlib import Path
import yaml
fam, ngpu = Path(sys.argv[1]), int(sys.argv[2])
config = yaml.safe_load(Path("config/smoke_families.yaml").read_text())
config["datasets"]["scifact"]["subsample"]["queries"]["train"] = 96  # sp keeps a quarter: 8 x 2 queries a step
for entry in config["models"].values():  # paths stay relative to the workflow directory
    entry.update(max_steps=20, eval_every=10, batch_size=8, gpus=max(1, ngpu))
config["resources"].update(threads=4, gpu=ngpu > 0)
(fam / "smoke_families.yaml").write_text(yaml.safe_dump(config))
PY
start=$(date +%s)
"$PY" -m snakemake -s Snakefile --directory "$FAM" --configfile "$FAM/smoke_families.yaml" \
    --cores 8 --resources gpu="$NGPU" --quiet rules
echo "families workflow wall time: $(( $(date +%s) - start )) s"

"$PY" - "$FAM" <<'PY'
import dataclasses, json, sys, time
from pathlib import Path
import numpy as np, torch, yaml
from sentence_transformers import SentenceTransformer
from opera.models import encoders, tiny_models
from opera.settings import EncoderSettings

fam = Path(sys.argv[1])
root = fam / "results" / "smoke_families"  # results/<config file stem>
device = encoders.default_device()
config = yaml.safe_load((fam / "smoke_families.yaml").read_text())
texts = tiny_models.training_texts(limit=2000)[:2048]
failures = []
for family, spec in tiny_models.FAMILIES.items():
    key = spec.registry_key
    overrides = {k: v for k, v in config["models"][key].items() if k != "path"}
    encoder = EncoderSettings.from_dict(tiny_models.registry_entry(family, fam / "tiny_models" / spec.name, **overrides))
    fp32 = dataclasses.replace(encoder, encode_precision="fp32")
    model = encoders.load(encoder, device=device)
    reference = encoders.encode_side(model, fp32, "passage", texts, 256, "fp32", show_progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    began = time.perf_counter()
    reduced = encoders.encode_side(model, encoder, "passage", texts, 256, "reduced", show_progress=False)
    seconds = time.perf_counter() - began
    cos = np.sum(reference * reduced, axis=1)
    queries = texts[:64]
    batched = encoders.encode_side(model, encoder, "query", queries, 64, "q", show_progress=False)
    alone = np.stack([encoders.encode_side(model, encoder, "query", [t], 1, "q", show_progress=False)[0] for t in queries])
    print(f"{key} ({spec.name}) on {device}: {len(texts)} passages in {encoder.encode_precision} "
          f"{len(texts) / seconds:.0f}/s; cosine to fp32 min {cos.min():.4f}; finite {np.isfinite(reduced).all()}; "
          f"ragged query batch vs alone min cosine {np.sum(batched * alone, axis=1).min():.4f}")
    if not (np.isfinite(reduced).all() and cos.min() > 0.99 and np.sum(batched * alone, axis=1).min() > 0.99):
        failures.append(f"{key}: {encoder.encode_precision} encoding")
    for run_file in sorted((root / "finetune" / "scifact" / key).rglob("run.json")):
        run_dir = run_file.parent
        method = run_dir.relative_to(root / "finetune" / "scifact" / key).parts[0]
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        run = json.loads(run_file.read_text())
        steps = [b["elapsed"] - a["elapsed"] for a, b in zip(log, log[1:])]
        job_log = "".join(p.read_text() for p in (root / "logs" / "finetune" / "scifact" / key / method).rglob("*.log"))
        print(f"  {method:>5}: {len(log)} steps ({run['world_size']} process(es)), median "
              f"{np.median(steps):.3f} s/step, losses {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}, "
              f"gradient checkpointing {'on' if 'gradient checkpointing on' in job_log else 'off'}")
        if not all(np.isfinite(entry["loss"]) for entry in log):
            failures.append(f"{key} {method}: non-finite loss")
    checkpoint = next((root / "finetune" / "scifact" / key / "dp").rglob("run.json")).parent / "step20"
    ours = encoders.encode_side(encoders.load(fp32, device=device, path=str(checkpoint)), fp32, "query", queries, 64, "q", show_progress=False)
    theirs = SentenceTransformer(str(checkpoint), device=device).encode_query(queries, normalize_embeddings=True)
    print(f"  SentenceTransformer(step20).encode_query vs pipeline: max abs diff {np.abs(ours - theirs).max():.2e}")
    if np.abs(ours - theirs).max() > 1e-3:
        failures.append(f"{key}: reloaded checkpoint differs")
print((root / "tables" / "results.md").read_text())
print("families:", "FAILED " + "; ".join(failures) if failures else "all checks passed")
sys.exit(1 if failures else 0)
PY
fi
