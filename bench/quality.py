"""Model quality at an equal budget: valid word perplexity per architecture and optimizer on WikiText-2.

Every row trains the tiny preset with the real `Trainer` for the same steps,
batch, sequence length, LR schedule and dropout on the same BPE token ids
(tokenized once into `$TUI_LM_CACHE`), then scores the whole validation split
(and the test split, printed too). A row is "arch+optimizer", optionally
"+untied" (separate output head); each is the mean of `--seeds` runs, with the
spread (max - min) beside it. tokens/s is the median logged window after the
first (warm-up) one; peak memory is `torch.cuda.max_memory_allocated` on a
GPU, the process's peak RSS on the CPU (including torch's own ~0.4 GiB).

    python bench/quality.py                          # full budget: 300 steps x 8 x 256, 2 seeds, 4 rows
    python bench/quality.py --device cuda --json q.json
    python bench/quality.py --steps 20 --seeds 1 --eval-batches 4   # a quick CPU smoke
    python bench/quality.py --rows modern+muon,modern+muon+untied --muon-lr 0.04
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from device_stats import read_peak, release, reset_peak  # noqa: E402

from engine import events as ev  # noqa: E402
from engine.config.costs import count_params  # noqa: E402
from engine.config.loading import build_config  # noqa: E402
from engine.config.plan import resolve_precision  # noqa: E402
from engine.config.run_config import ARCHS, OPTIMIZERS, RunConfig, TrainConfig  # noqa: E402
from engine.train.runtime import resolve_runtime  # noqa: E402
from engine.train.trainer import Trainer  # noqa: E402

_ROOT = Path(__file__).resolve().parents[1]
# The copy next to the repository, else the one gpu_check.sh carries, else $TUI_LM_DATA/wikitext-2 (or the hub).
_CANDIDATES = (_ROOT.parent / "shared" / "data" / "wikitext-2", _ROOT / ".gpu" / "data" / "wikitext-2")
DEFAULT_DATA = next((str(d) for d in _CANDIDATES if d.is_dir()), "wikitext-2")
DEFAULT_ROWS = "gpt2+adamw,gpt2+muon,modern+adamw,modern+muon"


@dataclass
class Run:
    seed: int
    valid_word_ppl: float
    valid_bpb: float
    test_word_ppl: float
    tokens_per_s: float
    peak_bytes: int
    wall_s: float


@dataclass
class Row:
    name: str
    params: int
    runs: list[Run] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return statistics.fmean(getattr(r, key) for r in self.runs)

    def spread(self, key: str) -> float:
        values = [getattr(r, key) for r in self.runs]
        return max(values) - min(values)


def _row_ok(name: str) -> bool:
    parts = name.split("+")
    return len(parts) in (2, 3) and parts[0] in ARCHS and parts[1] in OPTIMIZERS and parts[2:] in ([], ["untied"])


def row_config(name: str, a: argparse.Namespace, seed: int, out_dir: Path) -> RunConfig:
    """The run config of one row and seed: `arch+optimizer[+untied]` on the tiny preset."""
    parts = name.split("+")
    train = {"max_steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "warmup_steps": a.warmup,
             "min_lr_ratio": a.min_lr_ratio, "optimizer": parts[1], "seed": seed, "device": a.device,
             "precision": a.precision, "compile": a.compile, "log_interval": a.log_interval,
             "eval_interval": 0, "save_interval": 0, "sample_tokens": 0, "keep_checkpoints": 1,
             "final_eval_batches": a.eval_batches}  # 0: the whole splits; a smoke run bounds them
    if a.muon_lr:
        train["muon_lr"] = a.muon_lr
    return build_config("tiny", None, {
        "model": {"arch": parts[0], "tie_embeddings": parts[2:] != ["untied"], "dropout": a.dropout,
                  "max_seq_len": a.seq_len},
        "data": {"dataset": a.dataset},
        "train": train,
        "run": {"out_dir": str(out_dir), "run_name": f"{name}-s{seed}"},
    })


def train_once(cfg: RunConfig) -> Run:
    device = resolve_runtime(cfg.train).device
    metrics: list[ev.StepMetrics] = []
    evals: dict[str, ev.EvalResult] = {}

    def emit(e: ev.Event) -> None:
        if isinstance(e, ev.StepMetrics):
            metrics.append(e)
        elif isinstance(e, ev.EvalResult):
            evals[e.split] = e
        elif isinstance(e, ev.Failed):
            print(f"  failed: {e.message}", file=sys.stderr)

    release(device)
    reset_peak(device)
    start = time.perf_counter()
    result = Trainer(cfg, emit).run()
    wall = time.perf_counter() - start
    peak = read_peak(device)
    if not isinstance(result, ev.Finished) or "valid" not in evals:
        raise SystemExit(f"bench/quality.py: the run {cfg.run.run_name} did not finish: {result}")
    steady = metrics[1:] or metrics
    test = evals.get("test")
    return Run(cfg.train.seed, evals["valid"].word_perplexity, evals["valid"].bits_per_byte,
               test.word_perplexity if test else float("nan"),
               statistics.median(m.tokens_per_s for m in steady), peak, wall)


def run_rows(names: list[str], a: argparse.Namespace, seeds: list[int], done=lambda rows: None) -> list[Row]:
    """Train every row and seed; `done(rows)` after each run, so partial results survive a timeout."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tui-lm-quality-") as tmp:
        for name in names:
            row = Row(name, 0)
            rows.append(row)
            for seed in seeds:
                cfg = row_config(name, a, seed, Path(tmp))
                run = train_once(cfg)
                row.runs.append(run)
                print(f"  {name} seed {seed}: valid word ppl {run.valid_word_ppl:.1f}, "
                      f"{run.tokens_per_s:,.0f} tokens/s, {run.wall_s:.0f} s", file=sys.stderr, flush=True)
                # The parameter count needs the tokenizer's vocabulary, known after a run.
                row.params = count_params(_model_cfg(Path(tmp) / cfg.run.run_name))
                done(rows)
    return rows


def _model_cfg(run_dir: Path):
    """The model section of a finished run (vocabulary set from its tokenizer)."""
    return build_config(None, run_dir / "run.toml").model


def format_table(rows: list[Row]) -> str:
    base = rows[0]
    head = (f"| row | params | valid word ppl (spread) | vs {base.name} | bits/byte | test word ppl "
            f"| tokens/s | vs {base.name} | peak mem |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        ppl, tps = r.mean("valid_word_ppl"), r.mean("tokens_per_s")
        lines.append(
            f"| {r.name} | {r.params / 1e6:.1f}M | {ppl:.1f} ({r.spread('valid_word_ppl'):.1f}) "
            f"| {100 * (ppl / base.mean('valid_word_ppl') - 1):+.1f}% "
            f"| {r.mean('valid_bpb'):.3f} | {r.mean('test_word_ppl'):.1f} "
            f"| {tps:,.0f} ({r.spread('tokens_per_s'):,.0f}) | {100 * (tps / base.mean('tokens_per_s') - 1):+.1f}% "
            f"| {r.mean('peak_bytes') / 2**30:.2f} GiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    t = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma-separated ARCH+OPTIMIZER[+untied] (default {DEFAULT_ROWS}); "
                                                        "the first is the baseline of the percentages")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW's peak LR (every row)")
    p.add_argument("--muon-lr", type=float, default=0.0, help=f"Muon's peak LR (default train.muon_lr = {t.muon_lr})")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seeds", default="2", help="a count (2 = seeds 1,2) or a comma-separated list")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--compile", default="off", choices=("auto", "on", "off"),
                   help="torch.compile (default off: at this size compiling costs more than it saves)")
    p.add_argument("--log-interval", type=int, default=10, help="steps per tokens/s window")
    p.add_argument("--eval-batches", type=int, default=0,
                   help="score only this many batches of valid/test (smoke runs); 0 = the whole splits")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--dataset", default=DEFAULT_DATA)
    p.add_argument("--json", default="", metavar="PATH", help="also write the rows and settings as JSON here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    seeds = ([int(s) for s in a.seeds.split(",")] if "," in a.seeds else list(range(1, int(a.seeds) + 1)))
    names = [s.strip() for s in a.rows.split(",") if s.strip()]
    for name in names:  # a typo fails here, before any training
        if not _row_ok(name):
            p.error(f"row {name!r} must be ARCH+OPTIMIZER[+untied] with ARCH in {', '.join(ARCHS)} "
                    f"and OPTIMIZER in {', '.join(OPTIMIZERS)}")
    start = time.perf_counter()
    rt = resolve_runtime(TrainConfig(device=a.device, precision=a.precision))
    settings = {k: v for k, v in vars(a).items() if k != "json"}
    settings.update(seeds=seeds, muon_lr=a.muon_lr or t.muon_lr, torch=torch.__version__,
                    device_name=rt.describe(), precision=resolve_precision(a.precision, rt.info)[0])

    def save(rows: list[Row]) -> None:
        settings["wall_s"] = round(time.perf_counter() - start)
        if a.json:
            Path(a.json).write_text(json.dumps({"settings": settings, "rows": [as_json(r) for r in rows if r.runs]},
                                               indent=2) + "\n")

    rows = run_rows(names, a, seeds, save)
    save(rows)
    print(format_table(rows))
    print(f"\n{a.steps} steps x {a.batch_size} x {a.seq_len} tokens, lr {a.lr} (Muon {settings['muon_lr']}), "
          f"warmup {a.warmup}, cosine to {a.min_lr_ratio} x, dropout {a.dropout}, seeds {seeds}, "
          f"compile {a.compile}, {settings['precision']}, on {settings['device_name']}; {settings['wall_s']} s")


def as_json(r: Row) -> dict:
    return {"name": r.name, "params": r.params, "runs": [asdict(x) for x in r.runs],
            **{f"{k}_mean": r.mean(k) for k in ("valid_word_ppl", "valid_bpb", "test_word_ppl", "tokens_per_s",
                                                 "peak_bytes")},
            **{f"{k}_spread": r.spread(k) for k in ("valid_word_ppl", "tokens_per_s")}}


if __name__ == "__main__":
    main()
