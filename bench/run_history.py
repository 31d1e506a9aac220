"""Benchmark: opening, drawing and following a run with a million logged steps.

    python bench/run_history.py [--lines 1000000] [--dir /tmp/tui-lm-history] [--repeats 3] [--no-naive]

Writes a synthetic run folder whose metrics.jsonl has `--lines` StepMetrics
records in the recorder's exact layout (plus an evaluation every 1,000 steps,
a sample and a checkpoint every 10,000, RunStarted and Finished), kept in
`--dir` for the next run. Then measures, median of `--repeats` (file in the
page cache):

- open: `open_history` (the tail read exactly, the rest sampled): the whole
  history can be drawn after this;
- browse screen: a real `BrowseScreen` in a headless app, from push to the
  loss curves drawn in a frame (what the user waits for);
- draw: downsampling the whole train curve to a 200-column plot (min and max per
  column), as on every resize; first call includes importing numpy;
- backfill: the exact read of everything before the tail (a worker thread's
  job; the screen stays usable meanwhile);
- follow: reading 1,000 appended lines (incremental, by byte offset) and an
  idle poll with nothing new;
- naive: `json.loads` of every line, for comparison (once; `--no-naive` skips).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import events as ev  # noqa: E402
from engine.runs.layout import METRICS  # noqa: E402
from engine.runs.reader import MetricsReader, backfill, downsample, open_history  # noqa: E402

T0 = 1_767_225_600.0
TOKENS = 8192


def step_record(step: int, total: int) -> str:
    loss = 2.0 + 8.0 * 0.99999 ** step + 0.05 * ((step * 7919) % 101) / 101
    e = ev.StepMetrics(step=step, total_steps=total, epoch=step // 1000, loss=loss, lr=3e-4 * min(1.0, step / 2000),
                       grad_norm=0.5 + (step % 13) / 13, tokens_per_s=81920.5, step_time_s=0.1, elapsed_s=step * 0.1,
                       tokens_seen=step * TOKENS)
    return json.dumps({"time": T0 + step * 0.1, **e.to_dict()})


def write_run(folder: Path, lines: int) -> Path:
    """The synthetic run folder (reused when it already has `lines` steps)."""
    run_dir = folder / f"run-{lines}"
    metrics = run_dir / METRICS
    marker = run_dir / "complete.json"
    if marker.is_file() and json.loads(marker.read_text()).get("lines") == lines:
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.toml").write_text('[run]\nrun_name = "synthetic"\npreset = "tiny"\n\n[train]\nlr = 0.0003\n')
    (run_dir / "state.json").write_text(json.dumps({"status": "finished", "step": lines, "total_steps": lines}))
    with open(metrics, "w") as f:
        f.write(json.dumps({"time": T0, **ev.RunStarted(run_dir=str(run_dir), num_params=16_000_000, total_steps=lines,
                                                         start_step=0, steps_per_epoch=1000, tokens_per_step=TOKENS,
                                                         device="cpu", precision="fp32").to_dict()}) + "\n")
        for step in range(1, lines + 1):
            f.write(step_record(step, lines) + "\n")
            if step % 1000 == 0:
                f.write(json.dumps({"time": T0, **ev.EvalResult(step=step, split="valid", loss=2.5, perplexity=12.2,
                                                                  word_perplexity=80.0, bits_per_byte=1.1, tokens=4096,
                                                                  partial=True).to_dict()}) + "\n")
            if step % 10_000 == 0:
                sample = ev.SampleGenerated(step=step, prompt="The", text="The cat")
                f.write(json.dumps({"time": T0, **sample.to_dict()}) + "\n")
                f.write(json.dumps({"time": T0, **ev.CheckpointSaved(step=step, path="x.pt", reason="interval")
                                    .to_dict()}) + "\n")
        finished = ev.Finished(step=lines, run_dir=str(run_dir), stopped=False)
        f.write(json.dumps({"time": T0, **finished.to_dict()}) + "\n")
    marker.write_text(json.dumps({"lines": lines}))
    return run_dir


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def browse_open_s(run_dir: Path) -> float:
    """Push a BrowseScreen in a headless app; seconds until the loss curves have been drawn for a frame."""
    from tui_lm.app import make_app
    from tui_lm.screens.browse import BrowseScreen
    from tui_lm.widgets.compare.curve_plot import CurvePlot

    drawn: list[float] = []
    real_render = CurvePlot.render

    def render(self: CurvePlot):  # noqa: ANN202
        out = real_render(self)
        if not drawn and self.id == "browse-loss" and any(s.xs for s in self.series.values()):
            drawn.append(time.perf_counter())
        return out

    async def flow() -> float:
        app = make_app(roots=[])
        async with app.run_test(size=(140, 45)) as pilot:
            await pilot.pause()
            start = time.perf_counter()
            app.push_screen(BrowseScreen(run_dir))
            while not drawn:
                await asyncio.sleep(0.002)
            app.exit()
            return drawn[0] - start

    CurvePlot.render = render  # type: ignore[method-assign]
    try:
        return asyncio.run(flow())
    finally:
        CurvePlot.render = real_render  # type: ignore[method-assign]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--dir", type=Path, default=Path("/tmp/tui-lm-history"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-naive", dest="naive", action="store_false")
    args = p.parse_args()

    start = time.perf_counter()
    run_dir = write_run(args.dir, args.lines)
    path = run_dir / METRICS
    size = path.stat().st_size
    print(f"{path}: {args.lines:,} steps, {size / 2**20:,.0f} MiB (ready in {time.perf_counter() - start:.1f} s)")
    path.read_bytes()  # into the page cache: every row below measures parsing, not the disk

    rows: list[tuple[str, str]] = []
    first_draw_start = time.perf_counter()
    history = open_history(MetricsReader(path))
    points = history.train_points()
    downsample(points.x, points.y, 400)
    rows.append(("open + first draw, cold (numpy imported)", f"{time.perf_counter() - first_draw_start:.3f} s"))
    t, history = timed(lambda: open_history(MetricsReader(path)), args.repeats)
    rows.append(("open (tail exact, rest sampled)", f"{t:.3f} s"))
    sampled = len(history.overview or [])
    rows.append(("  exact at open / sampled overview", f"{len(history.train):,} / {sampled:,} steps"))
    t = statistics.median(browse_open_s(run_dir) for _ in range(args.repeats))
    rows.append(("browse screen: push -> curves on screen", f"{t:.3f} s"))
    t, early = timed(lambda: backfill(path, *history.pending), 1) if history.pending else (0.0, None)
    rows.append(("backfill: exact history (worker thread)", f"{t:.2f} s"))
    if early is not None:
        history.merge_earlier(early)
    assert len(history.train) == args.lines, (len(history.train), args.lines)
    t, drawn = timed(lambda: downsample(history.train.x, history.train.y, 400), args.repeats)
    rows.append((f"draw: downsample {args.lines:,} points -> {len(drawn[0])}", f"{1000 * t:.1f} ms"))

    reader = MetricsReader(path)
    reader.start_at(size)
    extra = "".join(step_record(args.lines + i, args.lines + 1000) + "\n" for i in range(1, 1001))
    with open(path, "a") as f:
        f.write(extra)
    try:
        start = time.perf_counter()
        new, _ = reader.read()
        for offset, row in new:
            history.add(row, offset)
        rows.append(("follow: 1,000 appended lines", f"{1000 * (time.perf_counter() - start):.1f} ms"))
        t, _ = timed(reader.read, args.repeats)
        rows.append(("follow: idle poll (nothing new)", f"{1e6 * t:.0f} µs"))
    finally:
        with open(path, "r+b") as f:
            f.truncate(size)  # the file stays as generated for the next run
    if args.naive:
        start = time.perf_counter()
        with open(path, "rb") as f:
            for line in f:
                json.loads(line)
        rows.append(("naive: json.loads of every line (reference)", f"{time.perf_counter() - start:.2f} s"))

    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
