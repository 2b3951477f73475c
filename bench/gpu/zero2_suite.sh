#!/usr/bin/env bash
# Data-parallel scaling in one device call: the 1-GPU stage without DeepSpeed, ZeRO-2 on 1 and 2 GPUs, and
# DeepSpeed tunings, each under torchrun (the RANK / WORLD_SIZE / MASTER_ADDR a Ray Train worker also sets).
#   bench/gpu/zero2_suite.sh [OUT]          # results: OUT/zero2.json (default $OUT), a table last
# ZERO2_VARIANTS overrides the list: "label|gpus|zero|ds-json|batch;..." (ds-json merged into the stage's
# DeepSpeed config; batch: sequences of 1024 tokens per GPU, default 8).
set -uo pipefail
out=${1:-${OUT:-runs/bench-gpu}}
mkdir -p "$out"
# The final checkpoint and model (~20 GB for ZeRO) are written to memory, not to the disk, where there is room.
work=/tmp/alignd-zero2
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -1)" -gt 80000000 ]; then work=/dev/shm/alignd-zero2; fi
mkdir -p "$work/results"
steps=${ZERO2_STEPS:-10}
timeout_s=${ZERO2_TIMEOUT:-150}
# ZERO2_DEVICE=cpu: the tiny shape on the CPU (gloo), to try the script here before a device call.
device=${ZERO2_DEVICE:-cuda}
shape=llama-1b tiny=()
[ "$device" = cpu ] && shape=tiny tiny=(--tiny)
python3 -m bench.gpu.run --build "$shape" --work "$work" --device "$device" --result "$work/build.json" "${tiny[@]}" \
  >"$work/build.log" 2>&1 || { tail -20 "$work/build.log"; exit 1; }
echo "built $shape"
model=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['model_dir'])" "$work/build.json")
data=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['data']['sft'])" "$work/build.json")
b5e8='{"zero_optimization":{"reduce_bucket_size":500000000,"allgather_bucket_size":500000000}}'
default_variants="plain|1|0||8;cfg|1|2||8;cfg|2|2||8;b5e8|2|2|$b5e8|8;plain|1|0||16;cfg|2|2||16;ddp|2|0||8"
IFS=';' read -ra variants <<<"${ZERO2_VARIANTS:-$default_variants}"
port=29511
for variant in "${variants[@]}"; do
  IFS='|' read -r label gpus zero ds batch <<<"$variant"
  batch=${batch:-8}
  port=$((port + 1))
  name="$label-g$gpus-z$zero-b$batch"
  rm -rf "$work/runs"
  start=$(date +%s)
  timeout "$timeout_s" python3 -m torch.distributed.run --nproc_per_node="$gpus" --master_port="$port" -m bench.gpu.zero2 \
    --model "$model" --data "$data" --zero "$zero" --steps "$steps" --work "$work/runs" --label "$label-b$batch" \
    --batch "$batch" \
    --ds "$ds" --result "$work/results/$name.json" >"$work/$name.log" 2>&1
  code=$?
  echo "$name exit=$code wall=$(($(date +%s) - start))s"
  [ "$code" -eq 0 ] || tail -15 "$work/$name.log"
done
rm -rf "$work/runs"
for log in "$work"/*.log; do echo "===== $log"; grep -v '^\s*$' "$log" | tail -40; done >"$out/zero2-logs.txt"
python3 - "$work/results" "$out/zero2.json" <<'EOF'
import json, subprocess, sys
from pathlib import Path
rows = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*.json"), key=lambda p: p.stat().st_mtime)]
env = {"date": __import__("time").strftime("%Y-%m-%d"), "launcher": "torchrun"}
for name in ("torch", "transformers", "deepspeed", "trl"):
    try:
        env[name] = __import__(name).__version__
    except Exception as error:  # noqa: BLE001 - a missing package is a reading
        env[name] = f"missing ({type(error).__name__})"
def smi(*args):
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "no nvidia-smi"
env["gpus"] = smi("--query-gpu=name", "--format=csv,noheader").splitlines()
env["topology"] = smi("topo", "-m")
Path(sys.argv[2]).write_text(json.dumps({"environment": env, "results": rows}, indent=1))
# Strict scaling: against the 1-GPU stage without DeepSpeed at the same sequences per GPU.
plain = {r["tokens_per_step"]: r["tokens_s"] for r in rows if r["zero_stage"] == 0 and r["world_size"] == 1}
print(f"\n{env['gpus']} | {env}"[:300])
print(f"{'variant':28s} {'step_s':>7s} {'tok/s':>8s} {'MFU/GPU':>7s} {'peak':>6s} {'resv':>6s} {'vs plain':>8s}  losses")
def f(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else "-"
for r in rows:
    base = plain.get(r["tokens_per_step"] // r["world_size"])
    strict = r["tokens_s"] / (r["world_size"] * base) if base else None
    print(f"{r['impl']:28s} {f(r['step_s'], '7.3f')} {f(r['tokens_s'], '8.0f')} {f(r['mfu'], '7.1%')} "
          f"{f(r['peak_allocated_gib'], '6.1f')} {f(r['peak_reserved_gib'], '6.1f')} {f(strict, '8.1%')}  "
          f"{[round(x, 3) for x in r['losses'][:6]]}")
EOF
