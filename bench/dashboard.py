"""Benchmark: training throughput with the dashboard attached vs headless, and key latency.

    python bench/dashboard.py [--model micro|mini] [--steps 2000] [--repeats 3] [--threads 1]

Trains the same small CPU config (`--model micro`: a d_model=32 GPT whose
steps take about a millisecond, the worst case for UI overhead; `mini`: a
d_model=128 one with steps of tens of milliseconds) on a generated corpus
alternately headless (`Trainer(cfg, emit).run()` in the main thread, as
`tui-lm --no-ui` does) and inside the app (`make_app(...).run_test()`,
headless terminal, Start pressed, the full dashboard live). Throughput is the
median `tokens_per_s` of the StepMetrics events each run wrote to its
metrics.jsonl (first window skipped: it holds the warm-up). Runs alternate so
that load from other processes hits both sides alike; the table gives the
median of the per-run medians.

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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual import events  # noqa: E402

from engine.config import RunConfig, apply_overrides, write_toml  # noqa: E402

WORDS = ("the cat dog sat on a mat , . and of history river king was is in to a an "
         "city war music film game team season album").split()


def write_corpus(folder: Path) -> Path:
    """train/valid/test.txt of random sentences: the bench's own data (benches never import tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name, n in (("train", 400), ("valid", 60), ("test", 60)):
        lines = [" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for _ in range(n)]
        (folder / f"{name}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder

TARGET = 0.97


# "micro" steps in about a millisecond, so Python and GIL overhead dominate: the
# dashboard's worst case. "mini" steps in tens of milliseconds, closer to real use.
MODELS = {
    "micro": ({"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "max_seq_len": 32}, 4),
    "mini": ({"d_model": 128, "num_heads": 4, "num_layers": 2, "d_ff": 512, "max_seq_len": 128}, 8),
}


def bench_config(corpus: Path, out: Path, name: str, steps: int, model: str = "micro") -> RunConfig:
    shape, batch = MODELS[model]
    cfg = RunConfig()
    apply_overrides(cfg, {
        "model": {**shape, "dropout": 0.0},
        "train": {"batch_size": batch, "max_steps": steps, "eval_interval": 0, "save_interval": 0, "sample_tokens": 0,
                  "log_interval": 10, "warmup_steps": 10, "device": "cpu"},
        "data": {"dataset": str(corpus), "vocab_size": 300},
        "run": {"preset": "", "out_dir": str(out), "run_name": name},
    }, "bench")
    return cfg


def throughput(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in rows if r.get("event") == "StepMetrics"][1:]
    return statistics.median(tps)


def run_headless(cfg: RunConfig, in_thread: bool = False) -> float:
    """`tui-lm --no-ui` trains in the main thread; `in_thread` uses a plain thread like the dashboard's worker."""
    import threading

    from engine.trainer import Trainer

    results = []

    def train() -> None:
        results.append(Trainer(cfg, emit=lambda e: None).run())

    if in_thread:
        thread = threading.Thread(target=train)
        thread.start()
        thread.join()
    else:
        train()
    assert type(results[0]).__name__ == "Finished", results[0]
    return throughput(Path(cfg.run.out_dir) / cfg.run.run_name)


async def wait(condition, timeout: float = 300.0, poll: float = 0.002) -> float:
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per throughput run")
    p.add_argument("--repeats", type=int, default=3, help="runs of each kind, alternated")
    p.add_argument("--presses", type=int, default=5, help="pause/resume cycles for the latency")
    p.add_argument("--model", choices=sorted(MODELS), default="micro",
                   help="micro: overhead-bound worst case; mini: a model whose steps take tens of ms")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads for every run (0 = torch's default)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tui-lm-bench-"))
    os.environ["TUI_LM_CACHE"] = str(work / "cache")
    os.environ["TUI_LM_PROFILES"] = str(work / "profiles")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # threads started later inherit it
    ui_shares: list[float] = []
    results: dict[str, list[float]] = {"headless, main thread": [], "headless, worker thread": [], "dashboard": []}
    try:
        corpus = write_corpus(work / "corpus")
        run_headless(bench_config(corpus, work / "warm", "warmup", 20))  # tokenizer cache, imports
        for i in range(args.repeats):
            cfg = lambda name: bench_config(corpus, work / "runs", f"{name}-{i}", args.steps, args.model)  # noqa: E731
            results["headless, main thread"].append(run_headless(cfg("main")))
            results["headless, worker thread"].append(run_headless(cfg("thread"), in_thread=True))
            profile = work / f"dash-{i}.toml"
            write_toml(cfg("dashboard"), profile)
            tps, share = asyncio.run(run_dashboard(profile))
            results["dashboard"].append(tps)
            ui_shares.append(share)
            print(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items()) + " tokens/s",
                  flush=True)
        profile = work / "latency.toml"
        write_toml(bench_config(corpus, work / "runs", "latency", 100_000), profile)
        _, pausing, paused = asyncio.run(run_dashboard_latency(profile, args.presses))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import torch

    med = {k: statistics.median(v) for k, v in results.items()}
    d = med["dashboard"]
    print()
    print(f"{args.model} CPU config {MODELS[args.model]}, {args.steps} steps, {args.repeats} alternated runs each, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'measure':<46}{'value':>18}")
    print("-" * 64)
    for name, value in med.items():
        print(f"{name + ' tokens/s (median)':<46}{value:>18,.0f}")
    for name in ("headless, main thread", "headless, worker thread"):
        ratio = d / med[name]
        verdict = "OK" if ratio >= TARGET else "BELOW"
        print(f"{'dashboard / ' + name:<46}{ratio:>13.1%} {verdict:>4}")
    print(f"{'UI thread CPU while training (median)':<46}{statistics.median(ui_shares):>13.1%} of a core")
    print(f"{'key p -> PAUSING on screen (median / max)':<46}{_ms(pausing):>18}")
    print(f"{'key p -> PAUSED on screen (median / max)':<46}{_ms(paused):>18}")
    print(f"(target: dashboard >= {TARGET:.0%} of headless; PAUSED includes finishing the step and "
          f"writing + fsyncing the checkpoint)")
    return 0


async def run_dashboard_latency(profile: Path, presses: int) -> tuple[float, list[float], list[float]]:
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
    return 0.0, pausing, paused


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{1000 * statistics.median(values):.0f} / {1000 * max(values):.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
