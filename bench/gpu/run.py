"""One entry point for the GPU benchmark: every case, alignd's path and its baseline, in one call.

    python -m bench.gpu.run                       # on the H100, results under $OUT
    python -m bench.gpu.run --tiny --device cpu   # the same code on a tiny model, to debug here

Each variant runs in its own process under its own timeout (a crash or OOM loses only that variant);
results are appended to $OUT/results.json as they come and a table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu.shapes import SHAPES
from bench.gpu.trl_cases import Case

CASES: dict[str, Case] = {
    "sft_full": Case("sft_full", "supervised", False, 8, 1024),
    "sft_lora": Case("sft_lora", "supervised", True, 8, 1024),
    "rm_lora": Case("rm_lora", "reward_model", True, 8, 512),
    "dpo_lora": Case("dpo_lora", "dpo", True, 8, 512),
    # The same optimizer step (32 sequences) from smaller or larger micro-batches: what the planner chooses.
    "sft_lora_ga4": Case("sft_lora_ga4", "supervised", True, 8, 1024, 4),
    "sft_lora_b16": Case("sft_lora_b16", "supervised", True, 16, 1024, 2),
    "sft_lora_b32": Case("sft_lora_b32", "supervised", True, 32, 1024, 1),
    # DPO at 16 pairs per optimizer step: TRL's default micro-batch 8 accumulated twice, alignd 16 at once.
    "dpo_lora_8x2": Case("dpo_lora_8x2", "dpo", True, 8, 512, 2),
    "dpo_lora_16x1": Case("dpo_lora_16x1", "dpo", True, 16, 512, 1),
    # Full fine-tuning at a micro-batch of 16 (the planner's estimate fits an 80 GB card twice over).
    "sft_full_b16": Case("sft_full_b16", "supervised", False, 16, 1024),
}
# Which implementations each case measures; the first is the baseline the others are compared with.
IMPLS: dict[str, tuple[str, ...]] = {
    "sft_full": ("trl", "alignd", "stage", "stage_compile"),
    "sft_full_b16": ("stage", "stage_compile"),
    "sft_lora": ("trl", "alignd", "alignd_compile", "stage"),
    "rm_lora": ("trl", "alignd", "stage"),
    "dpo_lora": ("trl", "alignd", "stage"),
    "sft_lora_ga4": ("stage",),
    "sft_lora_b16": ("stage",),
    "sft_lora_b32": ("stage", "stage_cast", "stage_profile"),
    "dpo_lora_8x2": ("trl", "stage"),
    "dpo_lora_16x1": ("stage",),
    "qlora_8b": (
        "plain_ckpt", "plain_nockpt", "alignd", "alignd_compile", "stage", "stage_eager", "stage_noexp",
        "stage_chunk64", "stage_fp32", "stage_profile",
    ),
    "graph_check": ("check",),
    "ppo_lora": ("trl112", "stage", "stage_m32", "stage_serve"),
}
SHAPE_OF = {"qlora_8b": "llama-8b", "ppo_lora": "llama-1b-v512"}
TINY_CASES = {
    name: Case(c.name, c.method, c.lora, 2, 64 if c.method == "supervised" else 48, c.accumulation)
    for name, c in CASES.items()
}


def run_variant(case_name: str, impl: str, ctx: dict) -> dict:
    """Runs in the worker process: one case, one implementation."""
    if case_name in CASES:
        case = (TINY_CASES if ctx["tiny"] else CASES)[case_name]
        from bench.gpu import trl_cases

        if impl == "stage":
            return trl_cases.run_stage(case, ctx)
        if impl == "stage_profile":
            return trl_cases.run_stage(case, {**ctx, "profile": True})
        if impl == "stage_compile":  # the stage with the trainer's torch_compile (whole model, default mode)
            import alignment_core.stages.training_arguments as training_arguments

            overrides = training_arguments.performance_overrides
            training_arguments.performance_overrides = lambda spec, device: {
                **overrides(spec, device),
                "torch_compile": True,
            }
            return trl_cases.run_stage(case, ctx)
        if impl == "stage_cast":  # the stage before ed67e09: peft casts each adapter input to fp32
            import alignment_core.stages.trainer_run as trainer_run

            trainer_run.keep_adapter_inputs_in_compute_dtype = lambda model, autocast_bf16: 0
            return trl_cases.run_stage(case, ctx)
        return trl_cases.run_trl(case, impl, ctx)
    if case_name == "qlora_8b":
        from bench.gpu import qlora

        return qlora.run(impl, ctx)
    if case_name == "graph_check":
        from bench.gpu import graph_check

        return graph_check.run(ctx)
    if case_name == "ppo_lora":
        from bench.gpu import ppo

        return ppo.run(impl, ctx)
    raise KeyError(f"unknown case {case_name!r}; known: {sorted(IMPLS)}")


def _environment() -> dict:
    import torch

    info = {"torch": torch.__version__, "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d")}
    for name in ("transformers", "trl", "peft", "bitsandbytes", "liger_kernel", "triton"):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001 - a missing package is a reading, not a failure
            info[name] = f"missing ({type(error).__name__})"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip() or os.environ.get("ALIGND_COMMIT", "unknown")
    except (OSError, subprocess.SubprocessError):
        info["commit"] = os.environ.get("ALIGND_COMMIT", "unknown")
    return info


def _build(shape_name: str, work: Path, device: str, tiny: bool) -> dict:
    """Build (once) the model folder and data for a shape; runs in a child process to free GPU memory."""
    from bench.gpu.shapes import build_model_dir, write_datasets

    model_dir = work / "models" / shape_name
    marker = model_dir / "bench_model.json"
    if not marker.exists():
        # TRL loads a path in the dtype the caller gives (fp32 by default); bf16 on disk halves the 8B write.
        dtype = "bfloat16" if shape_name == "llama-8b" else "float32"
        build_model_dir(SHAPES[shape_name], model_dir, device, dtype)
    info = json.loads(marker.read_text())
    rows = 48 if tiny else 160
    data = write_datasets(model_dir, work / "data" / shape_name, rows, 64 if tiny else 1024, 48 if tiny else 512)
    return {"model_dir": str(model_dir), "params": info["params"], "data": data}


def _child(args: list[str], timeout: float, log: Path, impl: str = "") -> tuple[int, float]:
    started = time.perf_counter()
    env = dict(os.environ)
    if impl == "trl112" and os.environ.get("ALIGND_TRL112_PATH"):
        # TRL 1.12 (the last with PPO) installed in a folder of its own, ahead of the newer TRL.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["ALIGND_TRL112_PATH"], env.get("PYTHONPATH")]))
    with log.open("w") as stream:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "bench.gpu.run", *args],
                stdout=stream,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=env,
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.perf_counter() - started


def _tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def orchestrate(options: argparse.Namespace) -> list[dict]:
    out = Path(options.out or os.environ.get("OUT") or "runs/bench-gpu")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(options.work)
    work.mkdir(parents=True, exist_ok=True)
    env = _environment()
    print(json.dumps(env), flush=True)
    # "case" runs every implementation of the case; "case:impl+impl" only those.
    wanted = [name.strip() for name in options.cases.split(",") if name.strip()]
    results: list[dict] = []
    built: dict[str, dict] = {}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    for wanted_case in wanted:
        case_name, _, only = wanted_case.partition(":")
        shape_name = "tiny" if options.tiny else SHAPE_OF.get(case_name, "llama-1b")
        if shape_name not in built:
            build_file = work / f"build-{shape_name}.json"
            code, seconds = _child(
                [
                    "--build",
                    shape_name,
                    "--work",
                    str(work),
                    "--device",
                    options.device,
                    "--result",
                    str(build_file),
                    *(["--tiny"] if options.tiny else []),
                ],
                options.build_timeout,
                logs / f"build-{shape_name}.log",
            )
            if code != 0:
                print(f"build {shape_name} failed ({code}):\n{_tail(logs / f'build-{shape_name}.log', 20)}", flush=True)
                built[shape_name] = {}
                continue
            built[shape_name] = json.loads(build_file.read_text())
            print(f"built {shape_name} in {seconds:.0f}s", flush=True)
        if not built[shape_name]:
            continue
        chosen = only.split("+") if only else (options.impls.split(",") if options.impls else IMPLS[case_name])
        impls = [impl for impl in chosen if impl in IMPLS[case_name]]
        for impl in impls:
            ctx = {
                **built[shape_name],
                "shape": SHAPES[shape_name].__dict__,
                "device": options.device,
                "tiny": options.tiny,
                "warmup": options.warmup,
                "steps": options.steps,
                "work": str(work / "runs"),
                "case": case_name,
                "impl": impl,
            }
            ctx_file = work / f"ctx-{case_name}-{impl}.json"
            ctx_file.write_text(json.dumps(ctx))
            result_file = work / f"result-{case_name}-{impl}.json"
            result_file.unlink(missing_ok=True)
            log = logs / f"{case_name}-{impl}.log"
            code, seconds = _child(
                ["--worker", f"{case_name}:{impl}", "--ctx", str(ctx_file), "--result", str(result_file)],
                options.timeout,
                log,
                impl,
            )
            row = {"case": case_name, "impl": impl, "exit": code, "wall_s": round(seconds, 1)}
            if result_file.exists():
                row.update(json.loads(result_file.read_text()))
            else:
                row["error"] = _tail(log)
            results.append(row)
            print(f"{case_name:10s} {impl:12s} exit={code} wall={seconds:.0f}s step={row.get('step_s')}", flush=True)
            if code != 0:
                print(_tail(log, 12), flush=True)
            (out / "results.json").write_text(json.dumps({"environment": env, "results": results}, indent=1))
    if options.keep_logs:
        with (out / "logs.txt").open("w") as stream:
            for log in sorted(logs.glob("*.log")):
                stream.write(f"===== {log.name}\n{_tail(log, 60)}\n")
    print_table(results, env)
    return results


def print_table(results: list[dict], env: dict) -> None:
    """Ours against the case's baseline (first implementation listed), one row per variant."""
    print(f"\n{env.get('gpu', 'cpu')} | torch {env['torch']} | trl {env.get('trl')} | commit {env.get('commit')}")
    header = (
        f"{'case':10s} {'impl':12s} {'step_s':>8s} {'tok/s':>9s} {'vs base':>7s} {'MFU':>6s} {'MFU6N':>6s} "
        f"{'peakGiB':>7s} {'loss0':>8s}"
    )
    print(header)
    base: dict[str, float] = {}
    for row in results:
        if row["case"] == "graph_check":
            for name, diff in row.items():
                if isinstance(diff, dict) and "max_loss_rel" in diff:
                    loss, grad = diff["max_loss_rel"], diff["max_grad_rel"]
                    print(f"graph_check {name}: loss rel {loss:.2e}, grad rel {grad:.2e}")
                elif name == "dropout_kernel":
                    print(f"graph_check dropout kernel: {diff}")
                elif isinstance(diff, dict) and "graph_replays" in diff:
                    error = (diff.get("graph_error") or "").strip().splitlines()[-1:] or ["-"]
                    print(f"graph_check {name}: replays {diff['graph_replays']}, error {error[0][:150]}")
            continue
        rate = row.get("tokens_s") or row.get("samples_s")
        if row["case"] not in base and rate:
            base[row["case"]] = rate
        ratio = rate / base[row["case"]] if rate and row["case"] in base else None

        def fmt(value, spec):
            return format(value, spec) if isinstance(value, (int, float)) else "-"

        losses = row.get("losses") or [None]
        print(
            f"{row['case']:10s} {row['impl']:12s} {fmt(row.get('step_s'), '8.3f')} {fmt(rate, '9.0f')} "
            f"{fmt(ratio, '7.2f')} {fmt(row.get('mfu'), '6.1%')} {fmt(row.get('mfu_dense'), '6.1%')} "
            f"{fmt(row.get('peak_allocated_gib'), '7.2f')} {fmt(losses[0], '8.4f')}"
            + ("" if row.get("exit") == 0 else f"  FAILED exit={row.get('exit')}")
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(IMPLS))
    parser.add_argument("--impls", default="", help="only these implementations (comma-separated)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and lengths (debugging on a CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=150, help="seconds per variant")
    parser.add_argument("--build-timeout", type=float, default=240)
    parser.add_argument("--work", default="/tmp/alignd-bench")
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.build:
        info = _build(options.build, Path(options.work), options.device, options.tiny)
        Path(options.result).write_text(json.dumps(info))
    elif options.worker:
        case_name, impl = options.worker.split(":")
        result = run_variant(case_name, impl, json.loads(Path(options.ctx).read_text()))
        Path(options.result).write_text(json.dumps(result, default=str))
    else:
        orchestrate(options)


if __name__ == "__main__":
    main()
