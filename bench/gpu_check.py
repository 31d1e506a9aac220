"""One GPU acceptance run: throughput, memory estimate, torchrun + NCCL, dashboard overhead, model quality.

    bash bench/gpu_check.sh [--sections throughput,torchrun,memory,dashboard,quality] [--budget 480] [--out DIR]

Sections, in the order they run (each is skipped, and says so, when the time
budget left is below what it needs, so a lease never ends with nothing):

- throughput: the engine's real Trainer on WikiText-2, tiny / small / medium,
  bf16, compile off and on, honest clock (read after the loop's host sync),
  tokens/s and MFU; plus medium at dropout 0 and batch 64, the configuration
  published 450K tok/s figures use, and medium with the chunked loss
  (train.loss_chunk 4096) beside the plain one. First the speed levers
  (engine.config.levers), each interleaved with the plain path in one run:
  medium at the preset's settings with the fused losses, the SDPA kernels and
  FP8 (beside bench/reference_gpt.py compiled in bf16, nanoGPT's loop at the
  same settings), small and tiny with the compile modes; a line per lever says
  whether its `auto` would switch (faster than plain, memory no higher).
  bench/throughput.py does the measuring.
- torchrun: a one-GPU `torchrun` run forced onto the distributed path
  (TUI_LM_FORCE_DDP=1: NCCL process group, DDP wrapper, compile on; one rank,
  so no gradient all-reduce between GPUs): trains, checkpoints, then `--resume`
  continues it; checks exit codes, the log's DistributedDataParallel/nccl line,
  the resumed start step and the final model on disk.
- memory: bench/memory_gpu.py's grid (preset x eager/compiled x checkpointing):
  estimate vs max_memory_allocated, max_memory_reserved and NVML used.
- dashboard: bench/dashboard.py on the GPU: dashboard-attached vs headless.
- quality: bench/quality.py's equal-budget table (architectures x optimizers).

Everything lands in DIR (default ./gpu_check_out): gpu_check.json, written
after every section, and gpu_check.txt, the printed tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import torch  # noqa: E402

SECTIONS = ("throughput", "torchrun", "memory", "dashboard", "quality")
NEEDS_S = {"throughput": 150, "torchrun": 60, "memory": 90, "dashboard": 60, "quality": 90}  # least worth starting
DATA_CANDIDATES = (ROOT.parent / "shared" / "data" / "wikitext-2", ROOT / ".gpu" / "data" / "wikitext-2")


class Check:
    """The run's results, saved after each section so a timeout still leaves them."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.results: dict = {"device": describe_device(), "sections": {}}
        self.text: list[str] = []
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.text.append(line)
        (self.out / "gpu_check.txt").write_text("\n".join(self.text) + "\n")

    def record(self, section: str, value) -> None:
        self.results["sections"][section] = value
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str))


def describe_device() -> dict:
    if not torch.cuda.is_available():
        return {"name": "no CUDA device", "torch": torch.__version__}
    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "memory_gib": round(p.total_memory / 1024**3, 1), "capability": f"{p.major}.{p.minor}",
            "torch": torch.__version__, "cuda": torch.version.cuda}


def log_to_stderr(message: str) -> None:
    print(f"  . {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- sections

PLAIN = {}
CHUNKED = {"loss_chunk": 4096}
MEDIUM_LEVERS = [PLAIN, {"fused_loss": "liger"}, {"fused_loss": "cce"}, {"attention_backend": "cudnn"},
                 {"attention_backend": "flash"}, {"fp8": "tensorwise"}, {"fp8": "rowwise"}, CHUNKED]
COMPILE_MODES = [PLAIN, {"compile_mode": "max-autotune-no-cudagraphs"}, {"compile_mode": "reduce-overhead"}]
# (preset, compile, batch or None for the bench's default, model overrides, variants interleaved with the plain
# path, presets with a reference row), most important first
THROUGHPUT_RUNS = (
    ("medium", "on", None, {}, MEDIUM_LEVERS, ["medium"]),  # the levers at the preset's settings, nanoGPT beside
    ("small", "on", None, {}, COMPILE_MODES, []),  # Python overhead: CUDA graphs or not
    ("tiny", "on", None, {}, COMPILE_MODES, []),
    ("medium", "on", 64, {"dropout": 0.0}, [PLAIN], ["medium"]),  # the published 450K tok/s figures' setting
    ("medium", "off", None, {}, [PLAIN, CHUNKED], []),
    ("small", "off", None, {}, [PLAIN], []),
    ("tiny", "off", None, {}, [PLAIN], []),
)


def throughput(check: Check, dataset: Path) -> None:
    import throughput as tp
    from throughput_report import format_table, ratios, variant_ratios

    rows = []
    for preset, mode, batch, overrides, variants, reference in THROUGHPUT_RUNS:
        if rows and check.left() < 45 * (len(variants) + len(reference)):
            check.say(f"(throughput: budget spent, {preset} compile={mode} not run)")
            continue  # a shorter run further down may still fit
        added = tp.run_bench([preset], device="cuda", steps=50, batch_size=batch, precision="bf16", compile=mode,
                             dataset=dataset, reference=reference, log=log_to_stderr, model_overrides=overrides,
                             variants=variants)
        for row in added if overrides else ():
            row.preset += ", " + ", ".join(f"{k} {v:g}" for k, v in overrides.items())
        rows += added
        check.record("throughput", [dataclasses.asdict(r) for r in rows])
    check.say("", "## throughput (bf16, 50 timed steps in windows of 10, clock read after the sync)",
              format_table(rows))
    for eng, ref, ratio, _ in ratios(rows):
        check.say(f"engine / reference ({ref.precision}, compile {'on' if ref.compile else 'off'}: nanoGPT's loop), "
                  f"{eng.preset}: tokens/s {ratio:.3f}x")
    for base, other, ratio, _ in variant_ratios(rows):
        memory = other.peak_bytes / max(1, base.peak_bytes)
        # A lever that fell back ("(ran off)": its library missing) was not measured; the chunked loss is no lever.
        lever = "(ran " not in other.variant and not other.variant.startswith("loss_chunk")
        verdict = (f"; auto would switch to it: {'yes' if ratio > 1.0 and memory <= 1.0 else 'no'}"
                   if lever else "")
        check.say(f"{other.variant} / plain, {base.preset} compile={'on' if base.compile else 'off'}: "
                  f"tokens/s {ratio:.3f}x, peak mem {memory:.2f}x{verdict}")


def torchrun(check: Check, dataset: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="gpu-check-torchrun-") as tmp:
        common = ["--no-ui", "--dataset", str(dataset), "--out", tmp, "--log-interval", "10",
                  "--eval-interval", "0", "--sample-tokens", "0", "--batch-size", "32", "--compile", "on"]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                    "-m", "tui_lm"]
        forced = {"TUI_LM_FORCE_DDP": "1"}  # world size 1 would otherwise skip the process group and DDP
        first = _run(launcher + common + ["--preset", "tiny", "--run-name", "ddp", "--max-steps", "30",
                                          "--save-interval", "10"], env=forced)
        run_dir = Path(tmp) / "ddp"
        second = _run(launcher + ["--no-ui", "--resume", str(run_dir), "--max-steps", "60"], env=forced)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                   if line.strip()] if (run_dir / "metrics.jsonl").exists() else []
        steps = [m["step"] for m in metrics if m.get("event") == "StepMetrics"]
        resumed_at_30 = "at step 30" in second.stdout + second.stderr
        nccl_ddp = all("DistributedDataParallel over 1 rank(s), nccl" in r.stdout for r in (first, second))
        ok = (first.returncode == 0 and second.returncode == 0 and resumed_at_30 and nccl_ddp
              and steps == [10, 20, 30, 40, 50, 60] and (run_dir / "models" / "model.safetensors").exists())
        result = {"ok": ok, "first_exit": first.returncode, "resume_exit": second.returncode, "nccl_ddp": nccl_ddp,
                  "resumed_at_30": resumed_at_30, "logged_steps": steps,
                  "tail": (first.stdout + first.stderr)[-1500:] + "\n---\n" + (second.stdout + second.stderr)[-1500:]}
    check.say("", "## torchrun --nproc_per_node 1, TUI_LM_FORCE_DDP=1 (NCCL group and DDP wrapper on one GPU, "
              "compile on; no all-reduce between GPUs)",
              f"{'PASS' if ok else 'FAIL'}: DDP/nccl in the log ({nccl_ddp}); "
              f"train 30 steps (checkpoints at 10/20/30), exit {first.returncode}; "
              f"--resume to 60 from step 30 ({resumed_at_30}), exit {second.returncode}; logged steps {steps}")
    if not ok:
        check.say(result["tail"])
    check.record("torchrun", result)


def memory(check: Check, dataset: Path) -> None:
    import memory_gpu

    from engine.train.runtime import configure_cuda_allocator

    configure_cuda_allocator()  # as the trainer runs: before this process's first CUDA allocation
    rows = memory_gpu.gpu_memory_rows(budget_s=max(30.0, check.left() - 40))
    check.say("", "## memory: estimate vs torch.cuda.max_memory_allocated / max_memory_reserved / NVML used",
              memory_gpu.format_gpu_rows(rows))
    check.record("memory", rows)


def dashboard(check: Check, dataset: Path) -> None:
    out = _run([sys.executable, str(BENCH / "dashboard.py"), "--device", "cuda"], timeout=max(30, check.left() - 5))
    check.say("", "## dashboard vs headless on the GPU (bench/dashboard.py --device cuda)",
              (out.stdout or "")[-3000:] or (out.stderr or "")[-2000:])
    check.record("dashboard", {"exit": out.returncode, "stdout": out.stdout[-4000:], "stderr": out.stderr[-2000:]})


def quality(check: Check, dataset: Path) -> None:
    if not (BENCH / "quality.py").exists():
        check.say("", "## quality: bench/quality.py not present: skipped")
        return
    json_path = check.out / "quality.json"
    out = _run([sys.executable, str(BENCH / "quality.py"), "--device", "cuda", "--dataset", str(dataset),
                "--json", str(json_path)],
               timeout=max(30, check.left() - 5))
    check.say("", "## quality (bench/quality.py --device cuda)", (out.stdout or "")[-3000:] or out.stderr[-2000:])
    check.record("quality", {"exit": out.returncode, "stdout": out.stdout[-4000:], "stderr": out.stderr[-2000:]})


RUNNERS: dict[str, Callable[[Check, Path], None]] = {
    "throughput": throughput, "torchrun": torchrun, "memory": memory, "dashboard": dashboard, "quality": quality,
}


def _run(cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    log_to_stderr(" ".join([f"{k}={v}" for k, v in (env or {}).items()] + cmd))
    try:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as e:
        def text(b) -> str:
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return subprocess.CompletedProcess(cmd, 124, text(e.stdout), text(e.stderr) + f"\n(timed out after {timeout:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, from {', '.join(SECTIONS)}")
    p.add_argument("--budget", type=float, default=480, help="seconds for the whole check (default 8 minutes)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for the results")
    p.add_argument("--dataset", default="", help="WikiText-2 folder (default: ../shared/data or .gpu/data)")
    a = p.parse_args(argv)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    dataset = Path(a.dataset) if a.dataset else next((d for d in DATA_CANDIDATES if d.is_dir()), None)
    if dataset is None or not dataset.is_dir():
        p.error("no WikiText-2 folder found; pass --dataset")
    if not torch.cuda.is_available():
        p.error("no CUDA device: this check is for a GPU machine")
    check = Check(Path(a.out), a.budget)
    check.say(f"# gpu_check on {check.results['device']}")
    for name in sections:
        if check.left() < NEEDS_S[name]:
            check.say("", f"## {name}: skipped, {check.left():.0f} s of the budget left (needs ~{NEEDS_S[name]} s)")
            continue
        start = time.monotonic()
        try:
            RUNNERS[name](check, dataset.resolve())
        except Exception as e:  # one broken section must not cost the others' results
            import traceback

            check.say("", f"## {name}: FAILED {type(e).__name__}: {e}", traceback.format_exc()[-2000:])
            check.record(name, {"error": f"{type(e).__name__}: {e}"})
        check.say(f"({name}: {time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
