#!/usr/bin/env bash
# GPU check (under 8 minutes on one H100/H200-class GPU): pretrain + 300 steps of dp and basic of
# all-MiniLM-L6-v2 on NFCorpus through the real workflow; prints step time, encode throughput and
# metrics. Installs nothing: run it where the project's Python environment is already present.
#   bash bench/gpu_check.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WORK=${GPU_CHECK_DIR:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

"$PY" - <<'PY'
import torch, faiss
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}",
      f"({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
print(f"faiss {faiss.__version__}, GPUs visible to faiss: {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
PY

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
root = Path(sys.argv[1]) / "results"
score = json.loads(next(root.glob("score/*/*/score.json")).read_text())
print(f"encode: {score['documents']} passages in {score['corpus_encode_seconds']} s "
      f"= {score['documents'] / score['corpus_encode_seconds']:.0f} passages/s (bf16, length 256)")
for log_path in sorted(root.glob("finetune/*/*/*/seed*/train_log.jsonl")):
    log = [json.loads(line) for line in log_path.read_text().splitlines()]
    steps = [b["elapsed"] - a["elapsed"] for a, b in zip(log, log[1:])]
    print(f"{log_path.parts[-3]:>6}: {len(log)} steps, median {statistics.median(steps):.3f} s/step, "
          f"total {log[-1]['elapsed']:.1f} s, sampler {log[-1]['sampler_seconds']:.2f} s")
print((root / "tables" / "results.md").read_text())
print((root / "tables" / "time_to_quality.csv").read_text())
PY
