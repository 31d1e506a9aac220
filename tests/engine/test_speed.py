"""The time model (engine.speed): seconds per step from FLOPs, the peak and the measured MFU; evaluations; sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.loading import build_config
from engine.config.plan import DeviceInfo, plan_run
from engine.memory.estimate import estimate_memory
from engine.memory.gpus import find_gpu
from engine.speed.measured import Measurement, load_measurement, measurement_path, save_measurement
from engine.speed.model import SplitSizes, estimate_time, format_duration, modelled_throughput
from engine.speed.sizes import BYTES_PER_TOKEN, split_sizes
from engine.speed.table import OVERHEAD, ROWS, WIKITEXT2_BPE_VOCAB, compute_flops, nearest_row, peak_flops, row_mfu

SIZES = SplitSizes(train=2_224_629, valid=246_547, test=280_965, exact=True)


def _plan(preset: str, gpu: str | None, **train):
    cfg = build_config(preset, None, {"train": train} if train else None)
    device = DeviceInfo.gpu(find_gpu(gpu).name) if gpu else DeviceInfo("cpu")
    plan = plan_run(cfg, device=device, vocab_size=WIKITEXT2_BPE_VOCAB, train_tokens=SIZES.train)
    return plan, estimate_memory(cfg, plan=plan)


def test_a_measured_combination_gives_back_its_measured_speed() -> None:
    # The H200 row: medium, batch 16 x 1024, bf16, compiled: 436,096 tokens/s.
    plan, est = _plan("medium", "H200", batch_size=16)
    th = modelled_throughput(plan, est, find_gpu("H200"))
    assert th.tokens_per_s == pytest.approx(436_096)
    assert th.source.startswith("measured on NVIDIA H200")
    assert th.mfu == pytest.approx(0.372, abs=0.001)  # bench/README.md's MFU column
    assert th.compile_s == 26.8
    te = estimate_time(plan, est, th, SIZES)
    assert te.seconds_per_step == pytest.approx(16 * 1024 / 436_096)


def test_another_gpu_gets_the_rows_mfu_at_its_own_peak() -> None:
    plan, est = _plan("medium", "RTX 4090", batch_size=16)
    gpu = find_gpu("RTX 4090")
    te = estimate_time(plan, est, modelled_throughput(plan, est, gpu), SIZES)
    h200_row = next(r for r in ROWS if r.d_model == 768 and r.compile)
    # The row's MFU without its step's fixed overhead, at the 4090's peak, plus the overhead.
    mfu = compute_flops(h200_row) / peak_flops(find_gpu("H200"), "bf16")
    assert row_mfu(h200_row) < mfu < 1.3 * row_mfu(h200_row)
    expected = OVERHEAD["cuda"].seconds + 16 * 1024 * est.flops_per_token / (peak_flops(gpu, "bf16") * mfu)
    assert te.seconds_per_step == pytest.approx(expected)
    assert te.throughput.source.startswith("extrapolated from NVIDIA H200")
    # fp32 runs at the TF32 peak, half the bf16 one: twice the time at the same MFU.
    plan32, est32 = _plan("medium", "RTX 4090", batch_size=16, precision="fp32")
    te32 = estimate_time(plan32, est32, modelled_throughput(plan32, est32, gpu), SIZES)
    assert "differs in precision" in te32.throughput.source


def test_unmeasured_combinations_take_the_nearest_row_and_say_what_differs() -> None:
    row, differs, _ = nearest_row("cuda", ROWS[0].flops_per_token, 8 * 256, compile=False, arch="modern",
                                  optimizer="muon", precision="bf16")
    assert (row.arch, row.optimizer, row.micro_batch, differs) == ("modern", "muon", 8, [])
    plan, est = _plan("tiny", "H100", batch_size=8, optimizer="muon", compile="off")
    th = modelled_throughput(plan, est, find_gpu("H100"))
    assert "gpt2+muon" in th.source


def test_evaluations_and_compile_add_to_the_total() -> None:
    plan, est = _plan("tiny", "H200", batch_size=32, max_steps=1000, eval_interval=250, eval_batches=50)
    th = modelled_throughput(plan, est, find_gpu("H200"))
    te = estimate_time(plan, est, th, SIZES)
    assert te.periodic_evals == 3  # at 250, 500 and 750; the end is the final evaluation
    windows = lambda n: -(-(n - 1) // 256)  # noqa: E731
    # 50 x 32 windows ask for more than the valid split's 964: a periodic evaluation scores it whole
    scored = 3 * windows(SIZES.valid) * 256 + (windows(SIZES.valid) + windows(SIZES.test)) * 256
    assert te.eval_s == pytest.approx(scored / th.eval_tokens_per_s)
    assert th.eval_tokens_per_s == pytest.approx(3 * 743_545)  # eager row, forward-only: a third of the FLOPs
    assert te.total_s == pytest.approx(1000 * te.seconds_per_step + te.eval_s + 11.6)
    skipped, _ = _plan("tiny", "H200", batch_size=32, max_steps=1000, eval_interval=0, final_eval_batches=-1)
    te0 = estimate_time(skipped, est, modelled_throughput(skipped, est, find_gpu("H200")), SIZES)
    assert (te0.eval_s, te0.periodic_evals) == (0, 0)
    assert te0.epoch_s == pytest.approx(plan.steps_per_epoch * te.seconds_per_step)


def test_cpu_uses_the_achieved_flops_of_the_cpu_rows() -> None:
    plan, est = _plan("tiny", None, batch_size=8, compile="off")
    th = modelled_throughput(plan, est, None)
    row = next(r for r in ROWS if r.kind == "cpu" and r.d_model == 256)
    assert th.mfu is None and th.tokens_per_s == pytest.approx(row.tokens_per_s)
    assert "development CPU" in th.source


def test_split_sizes_exact_from_the_cache_else_estimated_from_bytes(corpus: Path) -> None:
    from engine.data.token_cache import prepare_data

    cfg = build_config("tiny", None, {"data": {"dataset": str(corpus), "vocab_size": 300}})
    guess = split_sizes(cfg.data)
    assert not guess.exact and "estimated from" in guess.how
    assert guess.train == round((corpus / "train.txt").stat().st_size / BYTES_PER_TOKEN)
    data = prepare_data(cfg.data)
    exact = split_sizes(cfg.data)
    assert exact.exact and (exact.train, exact.valid, exact.test) == (len(data.train.ids), len(data.valid.ids),
                                                                      len(data.test.ids))


def test_split_sizes_of_a_hub_dataset_from_published_word_counts(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path))
    monkeypatch.delenv("TUI_LM_DATA", raising=False)
    sizes = split_sizes(build_config("tiny", None, {"data": {"dataset": "wikitext-103"}}).data)
    assert not sizes.exact and 105e6 < sizes.train < 115e6 and "published" in sizes.how


def test_a_measurement_is_kept_per_config_and_replaces_the_model(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path))
    plan, est = _plan("tiny", None, batch_size=8, compile="off")
    other, _ = _plan("tiny", None, batch_size=4, compile="off")
    assert load_measurement(plan, "cpu") is None
    path = save_measurement(plan, "cpu", Measurement(500.0, 0.0, 5, "2026-12-04"))
    assert path.parent == tmp_path / "measured" and json.loads(path.read_text())["tokens_per_s"] == 500.0
    assert load_measurement(other, "cpu") is None and measurement_path(other, "cpu") != path
    th = load_measurement(plan, "cpu").throughput(modelled_throughput(plan, est, None))
    assert th.tokens_per_s == 500.0 and th.source == "measured here on 2026-12-04 (5 steps)"
    assert estimate_time(plan, est, th, SIZES).seconds_per_step == pytest.approx(8 * 256 / 500)
    path.write_text("{not json")
    assert load_measurement(plan, "cpu") is None


def test_format_duration() -> None:
    assert [format_duration(s) for s in (45, 600, 4 * 3600, 3 * 86400)] == ["45 s", "10 min", "4.0 h", "3.0 days"]


# ----------------------------------------------------------------------------- tui-lm estimate


def _estimate_json(capsys, *argv: str) -> dict:
    from tui_lm.commands.estimate import main

    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_says_how_long_on_the_cpu_and_the_dataset_size(capsys, corpus: Path) -> None:
    from engine.data.token_cache import prepare_data

    argv = ["--preset", "tiny", "--batch_size", "8", "--seq_len", "32", "--vocab_size", "300", "--device", "cpu",
            "--dataset", str(corpus), "--epochs", "3", "--eval_interval", "10"]
    before = _estimate_json(capsys, *argv)
    assert before["dataset"]["exact"] is False and "estimated from" in before["dataset"]["how"]
    cfg = build_config("tiny", None, {"data": {"dataset": str(corpus), "vocab_size": 300}})
    train_tokens = len(prepare_data(cfg.data).train.ids)
    out = _estimate_json(capsys, *argv)
    assert out["dataset"] == {**out["dataset"], "exact": True, "train_tokens": train_tokens}
    t = out["time"]
    steps_per_epoch = (train_tokens - 1) // 32 // 8
    assert t["steps"] == 3 * steps_per_epoch
    assert t["tokens_per_s"] == pytest.approx(8 * 32 / t["seconds_per_step"])
    assert t["epoch_s"] == pytest.approx(steps_per_epoch * t["seconds_per_step"])
    assert t["periodic_evals"] == (t["steps"] - 1) // 10
    assert t["total_s"] == pytest.approx(t["train_s"] + t["eval_s"] + t["compile_s"]) and t["eval_s"] > 0
    assert "development CPU" in t["source"] and t["measured_here"] is False
    assert all(g["time"] is None for g in out["gpus"])  # --device cpu: no GPU times


def test_estimate_times_each_gpu_that_fits(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path))
    out = _estimate_json(capsys, "--preset", "medium", "--batch_size", "16", "--max_steps", "1000")
    fitting = [g for g in out["gpus"] if g["verdict"] != "does not fit"]
    assert fitting and all(g["time"]["steps"] == 1000 for g in fitting)
    assert all(g["time"] is None for g in out["gpus"] if g["verdict"] == "does not fit")
    by_name = {g["name"]: g["time"] for g in fitting}
    # The same MFU at a 6x lower peak: 6x the time per step, less its fixed overhead.
    overhead = OVERHEAD["cuda"].seconds
    ratio = ((by_name["RTX 4090 24GB"]["seconds_per_step"] - overhead)
             / (by_name["H100 80GB"]["seconds_per_step"] - overhead))
    assert ratio == pytest.approx(989.4 / 165.2)
    assert out["time"] is None  # no --gpu, no --device cpu: no single target
    one = _estimate_json(capsys, "--preset", "medium", "--batch_size", "16", "--max_steps", "1000", "--gpu", "H100")
    assert one["time"] == by_name["H100 80GB"]


def test_estimate_prints_the_time(capsys, corpus: Path) -> None:
    from tui_lm.commands.estimate import main

    assert main(["--preset", "tiny", "--batch_size", "8", "--vocab_size", "300", "--device", "cpu",
                 "--dataset", str(corpus), "--seq_len", "32"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Time on this CPU:" in out and "per epoch" in out and "to the end of the schedule" in out
    assert "estimated from" in out and "throughput extrapolated from the development CPU" in out


def test_estimate_measure_trains_here_and_is_remembered(capsys, corpus: Path, monkeypatch) -> None:
    import datetime
    import re

    import engine.train.measure as measure_module
    from tui_lm.commands.estimate import main

    monkeypatch.setattr(measure_module, "MIN_TIMED_S", 1.0)  # at least 5 steps and 1 s of them (10 s by default)

    argv = ["--preset", "tiny", "--d_model", "32", "--num_heads", "2", "--num_layers", "2", "--d_ff", "64",
            "--seq_len", "16", "--vocab_size", "300", "--batch_size", "4", "--device", "cpu",
            "--dataset", str(corpus), "--max_steps", "100", "--json"]
    modelled = _estimate_json(capsys, *argv)["time"]
    assert main([*argv, "--measure"]) == 0
    captured = capsys.readouterr()
    measured = json.loads(captured.out)["time"]
    assert "measured here:" in captured.err
    today = datetime.date.today().isoformat()
    timed = re.fullmatch(rf"measured here on {today} \((\d+) steps\)", measured["source"])
    assert timed and int(timed[1]) >= 5 and measured["measured_here"]
    assert measured["seconds_per_step"] != modelled["seconds_per_step"]
    # Kept in the cache: the next estimate of the same config uses it, another batch size does not.
    assert _estimate_json(capsys, *argv)["time"] == measured
    assert len(list((corpus.parent / "cache" / "measured").glob("*.json"))) == 1
    other = _estimate_json(capsys, *argv, "--batch_size", "8")["time"]
    assert other["measured_here"] is False
    # A timed step is a real one: far more than nothing, far less than a minute here.
    assert 1e-3 < measured["seconds_per_step"] < 60


def test_estimate_measure_without_a_gpu_is_one_line_and_exit_2(capsys, corpus: Path) -> None:
    from tui_lm.commands.estimate import main

    assert main(["--preset", "tiny", "--dataset", str(corpus), "--vocab_size", "300", "--measure"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tui-lm estimate: error:") and "no CUDA GPU" in err and "\n" not in err


def test_a_gpu_measurement_is_kept_under_its_catalogue_name() -> None:
    from engine.train.measure import measured_device

    assert measured_device("cuda:0 (NVIDIA H200)", "NVIDIA H200") == "H200 141GB"
    assert measured_device("cuda:1 (NVIDIA H100 80GB HBM3)", "NVIDIA H100 80GB HBM3") == "H100 80GB"
    assert measured_device("cuda:0 (Radeon X)", "Radeon X") == "Radeon X"
    assert measured_device("cpu", "") == "cpu"


def test_a_tiny_shape_pays_the_steps_fixed_overhead() -> None:
    """Seconds per step = overhead + FLOPs / rate: a d_model 32 step is not microseconds (issue 21, item 7)."""
    cfg = build_config(None, None, {"model": {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64,
                                              "max_seq_len": 32}, "train": {"batch_size": 1}})
    for gpu, kind in ((find_gpu("H100"), "cuda"), (None, "cpu")):
        plan = plan_run(cfg, device=DeviceInfo.gpu(gpu.name) if gpu else DeviceInfo("cpu"),
                        vocab_size=WIKITEXT2_BPE_VOCAB)
        th = modelled_throughput(plan, estimate_memory(cfg, plan=plan), gpu)
        step_s = estimate_time(plan, estimate_memory(cfg, plan=plan), th, SIZES).seconds_per_step
        overhead = OVERHEAD[kind]
        assert overhead.seconds < step_s, kind
        if kind == "cuda":  # a d_model 32 step on an H100 is nearly all overhead
            assert step_s < 1.1 * overhead.seconds
        assert f"+ {overhead.seconds * 1e3:.3g} ms a step ({overhead.source})" in th.source


def test_measure_times_at_least_its_steps_and_its_seconds(corpus: Path, monkeypatch, tmp_path) -> None:
    """A few steps on a shared machine are noise: the measurement lasts at least MIN_TIMED_S of timed steps."""
    from engine.train.measure import measure

    monkeypatch.setenv("TUI_LM_CACHE", str(tmp_path))
    cfg = build_config(None, None, {"model": {"d_model": 16, "num_heads": 2, "num_layers": 1, "d_ff": 32,
                                              "max_seq_len": 16},
                                    "train": {"batch_size": 2, "device": "cpu"},
                                    "data": {"dataset": str(corpus), "vocab_size": 300}})
    lines: list[str] = []
    _, _, m = measure(cfg, steps=2, min_seconds=1.5, log=lines.append)
    timed = [float(line.split(": ")[1].split(" s")[0]) for line in lines if line.startswith("step ")][2:]
    assert m.steps == len(timed) >= 2
    assert m.steps * 2 * 16 / m.tokens_per_s >= 1.5  # the timed steps' own clock: at least min_seconds
