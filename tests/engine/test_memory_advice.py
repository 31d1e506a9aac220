"""engine.memory.estimate's verdicts and largest batch, engine.memory.advice, the GPU catalogue and `tui-lm estimate`.

All of it is arithmetic on the estimate (no torch); test_memory.py holds the
estimate itself to what PyTorch really allocates.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.memory.advice import oom_advice
from engine.memory.estimate import GiB, estimate_memory, format_bytes, max_batch_size, verdict
from engine.memory.gpus import GPU_CATALOGUE, find_gpu
from tests.engine.test_memory import cfg_with
from tui_lm.commands.estimate import main as estimate_main

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- verdicts and advice


def test_verdict_bands():
    assert verdict(50, 100) == "fits"
    assert verdict(90, 100) == "tight"
    assert verdict(100, 100) == "tight"
    assert verdict(101, 100) == "does not fit"


@pytest.mark.parametrize("preset,accum,ckpt", [("tiny", 1, False), ("small", 2, False), ("medium", 1, True),
                                               ("medium", 4, False)])
def test_max_batch_size_is_the_boundary(preset, accum, ckpt):
    cfg = cfg_with(preset, train={"grad_accum_steps": accum, "batch_size": 4 * accum},
                   model={"grad_checkpointing": ckpt})
    gpu = 16 * GiB
    best = max_batch_size(cfg, gpu)
    assert best > 0 and best % accum == 0

    def total(batch):
        return estimate_memory(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch)))

    assert verdict(total(best).total_bytes, gpu) != "does not fit"
    assert verdict(total(best + accum).total_bytes, gpu) == "does not fit"
    sizes = [total(b * accum).total_bytes for b in range(1, 40)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_max_batch_size_zero_when_nothing_fits():
    assert max_batch_size(cfg_with("medium"), 1 * GiB) == 0


def test_oom_advice_names_a_batch_size_that_fits():
    cfg = cfg_with("medium", train={"batch_size": 64})
    advice = oom_advice(cfg, "NVIDIA GeForce RTX 4080", 16 * GiB)
    assert "RTX 4080" in advice and "16.00 GiB" in advice
    n = int(re.search(r"batch_size (\d+) fits", advice).group(1))
    fitted = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=n))
    assert 0 < n < 64 and estimate_memory(fitted).total_bytes <= 16 * GiB
    assert "grad checkpointing" in advice
    chunked = int(re.search(r"train.loss_chunk = 4096; up to batch_size (\d+) then fits", advice).group(1))
    fitted = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=chunked, loss_chunk=4096))
    assert chunked > n and estimate_memory(fitted).total_bytes <= 16 * GiB


def test_oom_advice_when_even_one_sequence_is_too_much():
    advice = oom_advice(cfg_with("medium", train={"batch_size": 8}, model={"grad_checkpointing": True}),
                        "tiny card", 1 * GiB)
    assert "does not fit" in advice and "max_seq_len" in advice


def test_format_bytes():
    assert format_bytes(1.23 * GiB) == "1.23 GiB"
    assert format_bytes(5 * 2**20) == "5.00 MiB"
    assert format_bytes(12) == "12 B"


def test_importing_memory_and_gpus_does_not_import_torch():
    code = "import sys, engine.memory.estimate, engine.memory.gpus, tui_lm.commands.estimate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- GPUs


@pytest.mark.parametrize("query,expected", [
    ("4080", "RTX 4080 16GB"), ("rtx 4080", "RTX 4080 16GB"), ("NVIDIA GeForce RTX 4090", "RTX 4090 24GB"),
    ("NVIDIA H100 80GB HBM3", "H100 80GB"), ("NVIDIA H100 PCIe", "H100 PCIe 80GB"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB"), ("a100 40gb", "A100 40GB"), ("Tesla T4", "T4 16GB"),
    ("NVIDIA L4", "L4 24GB"), ("NVIDIA RTX A4000", "RTX A4000 16GB"), ("rtx3060 12gb", "RTX 3060 12GB"),
    ("NVIDIA H200", "H200 141GB"),
])
def test_find_gpu_is_tolerant(query, expected):
    assert find_gpu(query).name == expected


def test_find_gpu_uses_the_reported_memory_and_rejects_unknown_cards():
    assert find_gpu("NVIDIA GeForce RTX 3060", memory_bytes=12 * GiB - 300 * 2**20).name == "RTX 3060 12GB"
    with pytest.raises(ConfigError, match="RTX 4080 16GB"):
        find_gpu("Radeon RX 7900")
    names = [g.name for g in GPU_CATALOGUE]
    assert len(names) == len(set(names)) >= 14
    assert all(g.peak_bf16_tflops > g.peak_fp32_tflops > 0 for g in GPU_CATALOGUE)


# ----------------------------------------------------------------------------- tui-lm estimate


def test_estimate_prints_breakdown_and_gpu_table(capsys):
    assert estimate_main(["--preset", "small", "--batch_size", "32"]) == 0
    out = capsys.readouterr().out
    assert "activations" in out and "logits + cross-entropy" in out and "RTX 4080" in out and "H100" in out
    assert "44,933,120" in out  # parameters


def test_estimate_json_and_spellings(capsys):
    argv = ["--preset", "small", "--batch-size", "16", "--grad-checkpointing", "--attention", "math",
            "--grad-accum", "2", "--seq-len", "256", "--vocab-size", "32000", "--gpu", "RTX 4080", "--json"]
    assert estimate_main(argv) == 0
    hyphen = json.loads(capsys.readouterr().out)
    underscore = ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in argv]
    assert estimate_main(underscore) == 0
    assert json.loads(capsys.readouterr().out) == hyphen
    assert hyphen["seq_len"] == 256 and hyphen["micro_batch"] == 8 and hyphen["model"]["vocab_size"] == 32000
    assert hyphen["grad_checkpointing"] is True and hyphen["model"]["attention"] == "math"
    assert [g["name"] for g in hyphen["gpus"]] == ["RTX 4080 16GB"]
    # ~2 GiB on a 16 GiB card: the verdict the table prints follows from the two numbers.
    assert hyphen["gpus"][0]["total_bytes"] < 0.85 * hyphen["gpus"][0]["memory_bytes"]
    assert hyphen["gpus"][0]["verdict"] == "fits"
    assert sum(hyphen["rows"].values()) == hyphen["total_bytes"]
    # --loss-chunk: the same run with the chunked loss holds less, and evaluates more sequences at once.
    assert estimate_main(argv + ["--loss-chunk", "1024"]) == 0
    chunked = json.loads(capsys.readouterr().out)
    assert chunked["loss_chunk"] == 1024 and hyphen["loss_chunk"] == 0
    assert chunked["total_bytes"] < hyphen["total_bytes"] and chunked["eval_multiple"] >= hyphen["eval_multiple"]


@pytest.mark.parametrize("argv,field", [
    (["--batch_size", "0"], "train.batch_size"),
    (["--precision", "fp8"], "train.precision"),
    (["--d_model", "100", "--num_heads", "3"], "model.d_model"),
    (["--gpu", "Voodoo 5"], "unknown GPU"),
])
def test_estimate_bad_values_exit_2_naming_the_field(capsys, argv, field):
    assert estimate_main(["--preset", "tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tui-lm estimate: error:") and field in err


def test_estimate_never_says_fits_for_a_run_the_card_cannot_start(capsys, tmp_path):
    """bf16 asked of cards without it (T4, V100) is judged as the fp16 run they can start; another error
    (flash attention before compute capability 8.0) is "does not run". Before, both said "fits"."""
    assert estimate_main(["--preset", "small", "--batch_size", "16", "--precision", "bf16", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["gpus"]}
    t4, a100 = rows["T4 16GB"], rows["A100 40GB"]
    assert t4["verdict"] == "no bf16: fp16 fits" and t4["precision"] == "fp16" and not t4["precision_supported"]
    fp16 = estimate_memory(cfg_with("small", train={"batch_size": 16, "precision": "fp16"}), bf16_supported=False)
    assert t4["total_bytes"] == fp16.total_bytes and t4["time"] is not None
    assert a100["verdict"] == "fits" and a100["precision"] == "bf16"
    assert all(r["verdict"].startswith("no bf16: fp16 ") for r in rows.values() if not r["precision_supported"])
    # The table says so too.
    assert estimate_main(["--preset", "small", "--batch_size", "16", "--precision", "bf16", "--gpu", "T4"]) == 0
    assert "no bf16: fp16 fits" in capsys.readouterr().out
    toml = tmp_path / "flash.toml"
    toml.write_text('[train]\nattention_backend = "flash"\nprecision = "bf16"\n')
    assert estimate_main(["--config", str(toml), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["gpus"]}
    assert rows["T4 16GB"]["verdict"] == "does not run" and rows["T4 16GB"]["max_batch_size"] == 0
    assert rows["T4 16GB"]["time"] is None  # fp16 would not run flash attention either
    assert rows["A100 40GB"]["verdict"] == "fits"


def test_estimate_on_the_cpu_gives_the_ram_verdict_first(capsys, monkeypatch):
    """--device cpu: the verdict against this machine's RAM comes first, and no GPU table (a CPU plan
    judged against GPU cards) follows."""
    import tui_lm.commands.estimate as estimate_command

    monkeypatch.setattr(estimate_command, "machine_ram", lambda: 4 * GiB)
    assert estimate_main(["--preset", "tiny", "--batch_size", "32", "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpus"] == [] and out["ram"]["memory_bytes"] == 4 * GiB
    assert out["ram"]["verdict"] == "does not fit" and out["total_bytes"] > 4 * GiB  # 7.8 GiB
    assert 0 < out["ram"]["max_batch_size"] < 32
    assert estimate_main(["--preset", "tiny", "--batch_size", "8", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "RTX" not in text and "H100" not in text
    first = text.index("On this machine's RAM (4.00 GiB): fits")
    assert first < text.index("parameters ") and first < text.index("activations")
