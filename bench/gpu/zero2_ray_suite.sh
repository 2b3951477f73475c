#!/usr/bin/env bash
# ZeRO-2 scaling through Ray Train in one device call: the 1-GPU stage without DeepSpeed, then ZeRO-2 on 2 GPUs
# as TorchTrainer workers (bench/gpu/zero2_ray.py), at each micro-batch of ZERO2_BATCHES (default "16 8").
#   bench/gpu/zero2_ray_suite.sh [OUT]       # results: OUT/zero2-ray.json, logs OUT/zero2-ray-logs.txt, a table last
set -uo pipefail
out=${1:-${OUT:-runs/bench-gpu}}
mkdir -p "$out"
work=/tmp/alignd-zero2-ray
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -1)" -gt 80000000 ]; then work=/dev/shm/alignd-zero2-ray; fi
mkdir -p "$work/results"
steps=${ZERO2_STEPS:-10}
python3 -m bench.gpu.run --build llama-1b --work "$work" --device cuda --result "$work/build.json" >"$work/build.log" 2>&1 \
  || { tail -20 "$work/build.log"; exit 1; }
model=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['model_dir'])" "$work/build.json")
data=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['data']['sft'])" "$work/build.json")
common=(--model "$model" --data "$data" --steps "$steps" --work "$work/runs")
for batch in ${ZERO2_BATCHES:-16 8}; do
  rm -rf "$work/runs"
  start=$(date +%s)
  CUDA_VISIBLE_DEVICES=0 timeout 170 python3 -m bench.gpu.zero2 "${common[@]}" --zero 0 --batch "$batch" \
    --label "plain-b$batch" --result "$work/results/plain-b$batch.json" >"$work/plain-b$batch.log" 2>&1
  echo "plain 1 GPU, $batch x 1024: exit=$? wall=$(($(date +%s) - start))s"
  rm -rf "$work/runs"
  start=$(date +%s)
  timeout 270 python3 -m bench.gpu.zero2_ray --workers 2 --storage "$work/ray" -- "${common[@]}" --zero 2 \
    --batch "$batch" --label "ray-b$batch" --result "$work/results/ray-b$batch.json" >"$work/ray-b$batch.log" 2>&1
  echo "ZeRO-2 2 GPUs through Ray Train, $batch x 1024 per GPU: exit=$? wall=$(($(date +%s) - start))s"
done
rm -rf "$work/runs"
for log in "$work"/*.log; do echo "===== $log"; grep -v '^\s*$' "$log" | tail -40; done >"$out/zero2-ray-logs.txt"
python3 - "$work/results" "$out/zero2-ray.json" <<'EOF'
import json, sys, time
from pathlib import Path
rows = {p.stem: json.loads(p.read_text()) for p in Path(sys.argv[1]).glob("*.json")}
env = {"date": time.strftime("%Y-%m-%d"), "launcher": "ray train TorchTrainer (2 GPUs), plain python (1 GPU)"}
for name in ("torch", "transformers", "deepspeed", "trl", "ray"):
    try:
        env[name] = __import__(name).__version__
    except Exception as error:  # noqa: BLE001 - a missing package is a reading
        env[name] = f"missing ({type(error).__name__})"
Path(sys.argv[2]).write_text(json.dumps({"environment": env, "results": rows}, indent=1))
print(f"{'variant':12s} {'step_s':>7s} {'tok/s':>8s} {'MFU':>6s} {'peakGiB':>7s} {'strict scaling':>14s}  losses")
for name, row in sorted(rows.items()):
    batch = name.split("-b")[-1]
    plain = rows.get(f"plain-b{batch}", {})
    scaling = (row["tokens_s"] / (2 * plain["tokens_s"])) if row.get("world_size") == 2 and plain.get("tokens_s") else None
    print(f"{name:12s} {row['step_s'] or 0:7.3f} {row['tokens_s'] or 0:8.0f} {row['mfu'] or 0:6.1%} "
          f"{row.get('peak_allocated_gib') or 0:7.2f} {'' if scaling is None else format(scaling, '.1%'):>14s}  "
          f"{[round(x, 3) for x in row.get('losses', [])[:5]]}")
EOF
