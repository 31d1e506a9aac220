"""Benchmark: training throughput with the dashboard attached vs a default headless run, and key latency.

    python bench/dashboard.py                       # CPU, the overhead-bound micro model (a few minutes)
    python bench/dashboard.py --model mini          # CPU, steps of tens of milliseconds
    python bench/dashboard.py --device cuda         # GPU: the tiny preset's shape, unattended, about a minute

Both sides train the same config on a generated corpus with torch's default
threads, as `tui-lm --no-ui` and `tui-lm` do (nothing pins threads on either
side). Every run is a process of its own, as a user starts one: OpenMP keeps
one thread team per thread that ran torch ops, and with two teams alive in
one process (a headless run's on the main thread, the dashboard's on its
worker) libgomp throttles its spin-waiting and every op pays a futex wake-up
(the dashboard ran at 45% of headless measured in one process, at 100% in its
own). Headless is `Trainer(cfg, Printer()).run()` in the main thread, the
sink `tui-lm --no-ui` uses (its lines go to /dev/null); the dashboard is
`make_app(...).run_test()` (headless terminal, Start pressed, every widget
live). Throughput is the median `tokens_per_s` of the StepMetrics a run wrote
to its metrics.jsonl, its first window skipped (warm-up, compilation).

Other processes share a development machine's CPU, so absolute rates drift;
the runs are therefore alternated in pairs (headless, dashboard, then
dashboard, headless: ABBA) and the verdict uses the median of the per-pair
ratios, which load that changes slowly hits on both sides alike. Target:
dashboard >= 97% of headless.

Latency: during a longer dashboard run, `p` is sent as a real key event and
the clock stops when the dashboard shows PAUSED (the step finished, the
checkpoint was written and fsynced, the Paused event reached the screen);
"pausing" is the time until the key's own feedback is on screen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from engine.config.loading import apply_overrides, write_toml  # noqa: E402
from engine.config.run_config import RunConfig  # noqa: E402


TARGET = 0.97
WORDS = ("the cat dog sat on a mat , . and of history river king was is in to a an city war music film game "
         "team season album north south old new great small first second year people world").split()

# (model shape, batch, default steps). "micro" steps in about a millisecond on a CPU, so Python and
# GIL overhead dominate: the dashboard's worst case. "mini" steps in tens of milliseconds. "gpu" is
# the tiny preset's shape at batch 32: steps of milliseconds on a GPU, where the UI thread competes
# with the training loop's Python for the GIL.
MODELS = {
    "micro": ({"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "max_seq_len": 32}, 4, 2000),
    "mini": ({"d_model": 128, "num_heads": 4, "num_layers": 2, "d_ff": 512, "max_seq_len": 128}, 8, 300),
    "gpu": ({"d_model": 256, "num_heads": 4, "num_layers": 4, "d_ff": 1024, "max_seq_len": 256}, 32, 400),
}


def write_corpus(folder: Path, lines: int) -> Path:
    """train/valid/test.txt of random sentences: enough tokens that an epoch spans many steps."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name, n in (("train", lines), ("valid", max(50, lines // 20)), ("test", max(50, lines // 20))):
        rows = [" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]
        (folder / f"{name}.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return folder


def bench_config(corpus: Path, out: Path, name: str, steps: int, model: str, device: str, compile_: str) -> RunConfig:
    shape, batch, _ = MODELS[model]
    cfg = RunConfig()
    apply_overrides(cfg, {
        "model": {**shape, "dropout": 0.0},
        "train": {"batch_size": batch, "max_steps": steps, "eval_interval": 0, "save_interval": 0,
                  "sample_tokens": 0, "log_interval": 10, "warmup_steps": 10, "device": device,
                  "compile": compile_, "final_eval_batches": 2},
        "data": {"dataset": str(corpus), "vocab_size": 1000},
        "run": {"preset": "", "out_dir": str(out), "run_name": name},
    }, "bench")
    return cfg


def throughput(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    tps = [r["tokens_per_s"] for r in rows if r.get("event") == "StepMetrics"][1:]
    return statistics.median(tps)


def run_headless(cfg: RunConfig) -> float:
    """What `tui-lm --no-ui` does: the trainer in the main thread, its events printed."""
    from rich.console import Console

    from engine.train.trainer import Trainer
    from tui_lm.headless import Printer

    with open(os.devnull, "w") as sink:
        result = Trainer(cfg, Printer(Console(file=sink))).run()
    assert type(result).__name__ == "Finished", result
    return throughput(Path(cfg.run.out_dir) / cfg.run.run_name)


async def wait(condition, timeout: float = 600.0, poll: float = 0.002) -> float:
    """Poll without the pilot's wait-for-idle (which would add up to 1 s per call).

    Latency checks poll every 2 ms; throughput runs pass a long `poll` so the
    benchmark's own wake-ups do not count as dashboard cost.
    """
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark run did not reach the expected state")
        await asyncio.sleep(poll)
    return time.perf_counter() - start


def send_key(app, key: str) -> None:
    app._driver.send_message(events.Key(key, key if len(key) == 1 else None))


async def start_training(app, pilot):
    """Press ctrl+t on the setup screen; the dashboard once its trainer is running."""
    from tui_lm.screens.dashboard import DashboardScreen

    await pilot.pause()
    await pilot.press("ctrl+t")
    await wait(lambda: isinstance(app.screen, DashboardScreen))
    dash = app.screen
    await wait(lambda: dash.state != "starting")
    return dash


async def run_dashboard(profile: Path) -> tuple[float, float]:
    """(tokens/s, share of one core the UI thread used while training)."""
    from tui_lm.app import make_app

    app = make_app(profile=profile)
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await start_training(app, pilot)
        # The event loop (every widget update and repaint) runs in this thread,
        # so its CPU time is what the dashboard costs while training runs.
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        await wait(lambda: dash.state in ("finished", "failed"), poll=0.25)
        ui_share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
        assert dash.state == "finished", dash.query_one("#error-panel").content
        run_dir = dash.run_dir
    return throughput(run_dir), ui_share


async def run_dashboard_latency(profile: Path, presses: int) -> tuple[list[float], list[float]]:
    """A long run paused `presses` times, then stopped (it is not meant to finish)."""
    from tui_lm.app import make_app

    app = make_app(profile=profile)
    pausing: list[float] = []
    paused: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        dash = await start_training(app, pilot)
        for _ in range(presses):
            await asyncio.sleep(0.5)
            t0 = time.perf_counter()
            send_key(app, "p")
            await wait(lambda: dash.state == "pausing")
            pausing.append(time.perf_counter() - t0)
            await wait(lambda: dash.state == "paused")
            paused.append(time.perf_counter() - t0)
            send_key(app, "r")
            await wait(lambda: dash.state == "running")
        send_key(app, "s")
        await wait(lambda: not dash.is_attached or dash.state == "stopped")
    return pausing, paused


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{1000 * statistics.median(values):.0f} / {1000 * max(values):.0f} ms"


def child(kind: str, profile: Path, presses: int) -> int:
    """One run in this process; its results as one JSON line on stdout."""
    import torch

    from engine.config.loading import build_config

    if kind == "headless":
        result = {"tokens_per_s": run_headless(build_config(file=profile))}
    elif kind == "dashboard":
        tps, share = asyncio.run(run_dashboard(profile))
        result = {"tokens_per_s": tps, "ui_share": share}
    else:
        pausing, paused = asyncio.run(run_dashboard_latency(profile, presses))
        result = {"pausing_s": pausing, "paused_s": paused}
    print(json.dumps({**result, "threads": torch.get_num_threads()}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: the gpu model unless --model says otherwise)")
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="micro (CPU default): overhead-bound worst case; mini: steps of tens of ms; gpu (CUDA default)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps per throughput run (default per model)")
    p.add_argument("--pairs", type=int, default=3, help="ABBA pairs of (headless, dashboard) runs")
    p.add_argument("--presses", type=int, default=3, help="pause/resume cycles for the latency (0 = skip)")
    p.add_argument("--compile", dest="compile_", default="off", choices=("auto", "on", "off"),
                   help="torch.compile for every run (default off: compilation is not what is measured)")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    p.add_argument("--child", choices=("headless", "dashboard", "latency"), help=argparse.SUPPRESS)
    p.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.profile, args.presses)
    model = args.model or ("gpu" if args.device.startswith("cuda") else "micro")
    steps = args.steps or MODELS[model][2]
    work = Path(tempfile.mkdtemp(prefix="tui-lm-bench-"))
    env = {**os.environ, "TUI_LM_CACHE": str(work / "cache"), "TUI_LM_PROFILES": str(work / "profiles")}
    headless: list[float] = []
    dashboard: list[float] = []
    ratios: list[float] = []
    ui_shares: list[float] = []
    pausing: list[float] = []
    paused: list[float] = []
    threads = 0
    started = time.perf_counter()
    try:
        corpus = write_corpus(work / "corpus", 4000 if model == "gpu" else 1000)

        def run(kind: str, name: str, n: int = steps) -> dict:
            """One run in a fresh process (in `work`: no lm_* of the checkout in the picture)."""
            nonlocal threads
            profile = work / f"{name}.toml"
            write_toml(bench_config(corpus, work / "runs", name, n, model, args.device, args.compile_), profile)
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--profile", str(profile),
                                  "--presses", str(args.presses)],
                                 cwd=work, env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{kind} run failed:\n{out.stdout[-2000:]}{out.stderr[-4000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            threads = result["threads"]
            return result

        run("headless", "warmup", 20)  # the token cache, shared by every later run

        def one_dashboard(name: str) -> float:
            result = run("dashboard", name)
            ui_shares.append(result["ui_share"])
            return result["tokens_per_s"]

        for i in range(args.pairs):
            # ABBA: a drift in the machine's load over a pair hits both sides alike.
            if i % 2 == 0:
                h, d = run("headless", f"headless-{i}")["tokens_per_s"], one_dashboard(f"dashboard-{i}")
            else:
                d, h = one_dashboard(f"dashboard-{i}"), run("headless", f"headless-{i}")["tokens_per_s"]
            headless.append(h)
            dashboard.append(d)
            ratios.append(d / h)
            print(f"pair {i + 1}: headless {h:,.0f}, dashboard {d:,.0f} tokens/s ({d / h:.1%})", flush=True)
        if args.presses:
            latency = run("latency", "latency", 1_000_000)
            pausing, paused = latency["pausing_s"], latency["paused_s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import torch

    ratio = statistics.median(ratios)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    shape, batch, _ = MODELS[model]
    print()
    print(f"{model} model {shape} batch {batch}, {steps} steps, {args.pairs} ABBA pairs, compile {args.compile_}; "
          f"{where}; torch {torch.__version__}, {threads} threads "
          f"({'OMP_NUM_THREADS=' + os.environ['OMP_NUM_THREADS'] if 'OMP_NUM_THREADS' in os.environ else 'default'}, "
          f"both sides, a process per run); "
          f"load {os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s")
    print(f"{'measure':<46}{'value':>20}")
    print("-" * 66)
    print(f"{'headless tokens/s (median)':<46}{statistics.median(headless):>20,.0f}")
    print(f"{'dashboard tokens/s (median)':<46}{statistics.median(dashboard):>20,.0f}")
    verdict = "OK" if ratio >= TARGET else "BELOW"
    print(f"{'dashboard / headless (median of pair ratios)':<46}{ratio:>15.1%} {verdict:>4}")
    print(f"{'pair ratios':<46}{', '.join(f'{r:.1%}' for r in ratios):>20}")
    print(f"{'UI thread CPU while training (median)':<46}{statistics.median(ui_shares):>10.1%} of a core")
    print(f"{'key p -> PAUSING on screen (median / max)':<46}{_ms(pausing):>20}")
    print(f"{'key p -> PAUSED on screen (median / max)':<46}{_ms(paused):>20}")
    print(f"(target: dashboard >= {TARGET:.0%} of headless; PAUSED includes finishing the step and "
          f"writing + fsyncing the checkpoint)")
    if args.json:
        print(json.dumps({"model": model, "device": where, "steps": steps, "headless": headless,
                          "dashboard": dashboard, "ratios": ratios, "ratio": ratio, "ui_share": ui_shares,
                          "pausing_s": pausing, "paused_s": paused}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
