"""The speed levers: what each setting resolves to on a device, and the model and trainer applying the choice.

Selection is checked with devices described by capability (the plan is pure);
the CPU runs what it can for real: SDPA's math and flash kernels against the
default, the fallbacks, torch.compile receiving the mode (a wrapped
torch.compile on the aot_eager backend), refused choices through the CLI.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from engine import events as ev
from engine.config.levers import Levers, resolve_levers
from engine.config.loading import build_config
from engine.config.plan import DeviceInfo, plan_run
from engine.config.run_config import ModelConfig
from engine.model.gpt import GPT
from engine.model.kernels import attention_kernel, compile_options, fp8_filter
from engine.train.trainer import Trainer
from tests.conftest import stopped_run, tiny_config
from tui_lm.cli import main

CPU = DeviceInfo("cpu", kernels=frozenset())
MPS = DeviceInfo("mps", kernels=frozenset())
ALL = frozenset({"liger", "cce", "fp8"})
T4 = DeviceInfo("cuda", 0, "Tesla T4", (7, 5), ALL)
A100 = DeviceInfo("cuda", 0, "NVIDIA A100-SXM4-80GB", (8, 0), ALL)
L4 = DeviceInfo("cuda", 0, "NVIDIA L4", (8, 9), ALL)
H100 = DeviceInfo("cuda", 0, "NVIDIA H100 80GB HBM3", (9, 0), ALL)
BARE_H100 = DeviceInfo("cuda", 0, "NVIDIA H100 80GB HBM3", (9, 0), frozenset())


def plan_of(device: DeviceInfo, **train):
    return plan_run(build_config("tiny", None, {"train": train}), device=device)


@pytest.mark.parametrize("device", [CPU, MPS, T4, A100, L4, H100, BARE_H100, DeviceInfo.gpu()],
                         ids=lambda d: d.name or d.type)
def test_auto_is_todays_path_on_every_device(device: DeviceInfo) -> None:
    plan = plan_of(device)
    assert plan.levers == Levers("off", "default", "off", "", "default")
    assert not plan.errors and not plan.warnings


@pytest.mark.parametrize("device, train, resolved", [
    (H100, {"fused_loss": "liger"}, {"fused_loss": "liger"}),
    (A100, {"fused_loss": "cce"}, {"fused_loss": "cce"}),
    (H100, {"attention_backend": "cudnn"}, {"attention_backend": "cudnn"}),
    (T4, {"attention_backend": "efficient"}, {"attention_backend": "efficient"}),
    (CPU, {"attention_backend": "math"}, {"attention_backend": "math"}),
    (CPU, {"attention_backend": "flash"}, {"attention_backend": "flash"}),
    (L4, {"fp8": "rowwise"}, {"fp8": "rowwise", "fp8_modules": "mlp+head"}),
    (H100, {"fp8": "tensorwise", "fp8_modules": "mlp"}, {"fp8": "tensorwise", "fp8_modules": "mlp"}),
    (H100, {"compile_mode": "reduce-overhead"}, {"compile_mode": "reduce-overhead"}),
    (H100, {"compile_mode": "max-autotune-no-cudagraphs"}, {"compile_mode": "max-autotune-no-cudagraphs"}),
])
def test_explicit_choices_run_where_the_device_can(device: DeviceInfo, train: dict, resolved: dict) -> None:
    plan = plan_of(device, **train)
    assert not plan.errors and not plan.warnings
    assert plan.levers == Levers(**resolved)


@pytest.mark.parametrize("device, train, message", [
    (CPU, {"fused_loss": "liger"}, "train.fused_loss liger needs a CUDA GPU (its kernels are Triton); on the CPU"),
    (MPS, {"fused_loss": "cce"}, "train.fused_loss cce needs a CUDA GPU"),
    (A100, {"fp8": "rowwise"}, "train.fp8 rowwise needs a GPU of compute capability 8.9 or newer (Ada, Hopper); "
                               "NVIDIA A100-SXM4-80GB (compute capability 8.0) has no FP8 tensor cores"),
    (CPU, {"fp8": "tensorwise"}, "train.fp8 tensorwise needs a GPU of compute capability 8.9 or newer"),
    (T4, {"attention_backend": "flash"}, "train.attention_backend flash needs compute capability 8.0, Tesla T4 has "
                                         "7.5; use auto"),
    (CPU, {"attention_backend": "cudnn"}, "train.attention_backend cudnn has no kernel on the CPU; use auto, flash, "
                                          "math"),
    (MPS, {"attention_backend": "flash"}, "train.attention_backend flash has no kernel on the MPS; use auto, math"),
])
def test_a_choice_the_device_cannot_run_is_one_error(device: DeviceInfo, train: dict, message: str) -> None:
    plan = plan_of(device, **train)
    assert len(plan.errors) == 1 and plan.errors[0].startswith(message), plan.errors


def test_attention_backend_needs_sdpa() -> None:
    cfg = build_config("tiny", None, {"model": {"attention": "math"}, "train": {"attention_backend": "flash"}})
    assert "model.attention math does not use one" in plan_run(cfg, device=H100).errors[0]


@pytest.mark.parametrize("train, warning", [
    ({"fused_loss": "liger"}, 'train.fused_loss liger: liger-kernel is not installed (pip install -e ".[gpu]"), '
                              'so it is off for this run'),
    ({"fused_loss": "cce"}, "cut-cross-entropy is not installed"),
    ({"fp8": "rowwise"}, 'train.fp8 rowwise: torchao is not installed (pip install -e ".[gpu]")'),
])
def test_a_missing_library_is_one_warning_and_todays_path(train: dict, warning: str) -> None:
    plan = plan_of(BARE_H100, **train)
    assert not plan.errors and len(plan.warnings) == 1 and warning in plan.warnings[0]
    assert plan.levers == Levers()


def test_the_fused_loss_replaces_the_chunked_one_and_keeps_the_head_out_of_fp8() -> None:
    plan = plan_of(H100, fused_loss="liger", loss_chunk=4096, fp8="rowwise")
    assert plan.levers == Levers("liger", "default", "rowwise", "mlp", "default")
    assert [w.split(":")[0] for w in plan.warnings] == ["train.loss_chunk (4096) is unused", "train.fp8_modules mlp+head"]
    head_only = plan_of(H100, loss_chunk=4096, fp8="tensorwise", fp8_modules="head")
    assert head_only.levers.fp8 == "off" and "the chunked loss does its own matmul" in head_only.warnings[0]
    # On the CPU the chunked loss stays: the fused one does not resolve there.
    assert plan_of(CPU, loss_chunk=4096).levers.fused_loss == "off"


def test_compile_mode_without_compile_is_said() -> None:
    plan = plan_of(CPU, compile_mode="reduce-overhead")
    assert plan.warnings == ("train.compile_mode reduce-overhead has no effect: this run is not compiled "
                             "(train.compile)",)


def test_the_plan_does_not_change_the_callers_config() -> None:
    cfg = build_config("tiny", None, {"train": {"fused_loss": "liger", "fp8": "rowwise"}})
    resolve_levers(cfg, BARE_H100, True)
    assert (cfg.train.fused_loss, cfg.train.fp8) == ("liger", "rowwise")


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("arch", ["gpt2", "modern"])
@pytest.mark.parametrize("backend", ["math", "flash"])
def test_an_sdpa_kernel_choice_gives_the_default_outputs(arch: str, backend: str) -> None:
    cfg = ModelConfig(d_model=32, num_heads=2, num_layers=2, d_ff=64, max_seq_len=16, vocab_size=128, dropout=0.0,
                      arch=arch)
    torch.manual_seed(0)
    plain = GPT(cfg)
    chosen = GPT(cfg, levers=Levers(attention_backend=backend))
    chosen.load_state_dict(plain.state_dict())
    x = torch.randint(0, 128, (2, 16))
    (a, la), (b, lb) = plain(x, x), chosen(x, x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(la, lb)


def test_the_kernel_context_reaches_sdpa() -> None:
    """Only the chosen kernel may run inside the context: the CPU has no efficient kernel, so SDPA refuses."""
    q = torch.randn(1, 2, 8, 16)
    with attention_kernel("efficient"), pytest.raises(RuntimeError, match="No viable backend"):
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    with attention_kernel("default"):  # today's path: torch's own order
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)


def test_compile_options() -> None:
    assert compile_options("default") == {}
    assert compile_options("reduce-overhead") == {"mode": "reduce-overhead"}


def test_fp8_filter_picks_the_mlp_and_the_head_of_fp8_sized_layers() -> None:
    model = GPT(ModelConfig(d_model=32, num_heads=2, num_layers=2, d_ff=72, max_seq_len=16, vocab_size=128))
    names = {m: [n for n, mod in model.named_modules() if fp8_filter(m)(mod, n)] for m in ("mlp+head", "mlp", "head")}
    assert names["head"] == ["lm_head"]
    assert names["mlp"] == []  # d_ff 72 is not a multiple of 16: FP8 matmuls cannot take those layers
    sized = GPT(ModelConfig(d_model=32, num_heads=2, num_layers=1, d_ff=64, max_seq_len=16, vocab_size=128))
    assert [n for n, mod in sized.named_modules() if fp8_filter("mlp+head")(mod, n)] == \
        ["h.0.mlp.c_fc", "h.0.mlp.c_proj", "lm_head"]


# ----------------------------------------------------------------------------- runs

def test_a_run_reports_its_levers_and_compiles_with_the_mode(corpus: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[dict] = []

    def compile_(model, **kwargs):
        modes.append({k: v for k, v in kwargs.items() if k != "backend"})
        return torch_compile(model, **{**kwargs, "mode": None}, backend="aot_eager")  # inductor is not the point

    torch_compile = torch.compile
    monkeypatch.setattr(torch, "compile", compile_)
    torch._dynamo.reset()
    seen: list[ev.Event] = []
    cfg = tiny_config(corpus, tmp_path, max_steps=4, compile="on", compile_mode="max-autotune-no-cudagraphs",
                      attention_backend="math")
    result = Trainer(cfg, seen.append).run()
    assert isinstance(result, ev.Finished)
    assert modes == [{"dynamic": False, "mode": "max-autotune-no-cudagraphs"}]
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.levers == {"fused_loss": "off", "attention_backend": "math", "fp8": "off", "fp8_modules": "",
                              "compile_mode": "max-autotune-no-cudagraphs"}
    assert any(isinstance(e, ev.Log) and e.message == "speed levers: fused loss off, attention math, fp8 off, "
               "compile mode max-autotune-no-cudagraphs" for e in seen)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if r["event"] == "RunStarted")["levers"]["attention_backend"] == "math"
    assert 'attention_backend = "math"' in (tmp_path / "r" / "run.toml").read_text()


def test_the_sdpa_kernel_context_compiles_into_one_graph(corpus: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_config(corpus, tmp_path, max_steps=3, compile="on", attention_backend="math", eval_interval=0,
                      final_eval_batches=-1)
    assert isinstance(Trainer(cfg, lambda e: None).run(), ev.Finished)
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]


@pytest.mark.parametrize("flag, value, message", [
    ("--fused_loss", "liger", "train.fused_loss liger needs a CUDA GPU"),
    ("--fp8", "rowwise", "train.fp8 rowwise needs a GPU of compute capability 8.9 or newer"),
    ("--attention_backend", "cudnn", "train.attention_backend cudnn has no kernel on the CPU"),
])
def test_the_cli_refuses_a_choice_the_cpu_cannot_run(corpus: Path, tmp_path: Path, capsys, flag: str, value: str,
                                                      message: str) -> None:
    code = main(["--no-ui", "--dataset", str(corpus), "--vocab_size", "300", "--d_model", "32", "--num_heads", "2",
                 "--num_layers", "2", "--d_ff", "64", "--seq_len", "16", "--batch_size", "4", "--max_steps", "2",
                 "--device", "cpu", "--out", str(tmp_path / "runs"), flag, value])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # no run folder


# ----------------------------------------------------------------------------- resume across a lever change

def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder but its lock, which records the last process that opened it (the refused one)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and "tensorboard" not in p.parts and p.name != ".lock"}


def test_every_lever_may_change_on_resume() -> None:
    """Same weights, same state-dict names whichever the kernels: each lever is declared safe to change."""
    from engine.config.run_config import SETTINGS

    for name in ("fused_loss", "attention_backend", "fp8", "fp8_modules", "compile_mode"):
        assert SETTINGS[f"train.{name}"].resume == "safe"


def test_a_lever_changed_on_resume_is_applied_and_said(corpus: Path, tmp_path: Path, capsys) -> None:
    run = stopped_run(corpus, tmp_path, at=4)
    capsys.readouterr()
    assert main(["--no-ui", "--resume", str(run), "--attention_backend", "math"]) == 0
    out = capsys.readouterr().out
    assert "resumed with changed settings from step 4: train.attention_backend auto -> math" in out
    assert "speed levers: fused loss off, attention math" in out
    assert build_config(None, run / "run.toml").train.attention_backend == "math"


def test_fp8_on_resume_where_the_gpu_has_none_is_refused_and_the_run_untouched(corpus: Path, tmp_path: Path,
                                                                               capsys) -> None:
    run = stopped_run(corpus, tmp_path, at=4)
    before = folder_bytes(run)
    capsys.readouterr()
    assert main(["--no-ui", "--resume", str(run), "--fp8", "rowwise"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.fp8 rowwise needs a GPU of compute capability 8.9" in err
    assert folder_bytes(run) == before


def test_a_bf16_checkpoint_trains_on_in_fp8_and_back(corpus: Path, tmp_path: Path) -> None:
    """The checkpoint of a plain run loads into the FP8 model (torchao's emulated matmuls: FP8 needs a GPU),
    trains a step there, and its weights load back into the plain model: resuming either way is a load."""
    pytest.importorskip("torchao")
    from engine.model.kernels import convert_to_fp8
    from engine.runs.checkpoints import load_latest_checkpoint

    run = stopped_run(corpus, tmp_path, at=4)
    _, state = load_latest_checkpoint(run, map_location="cpu")
    cfg = build_config(None, run / "run.toml").model
    fp8 = convert_to_fp8(GPT(cfg), "rowwise", "mlp+head", emulate=True)
    fp8.load_state_dict(state["model"])
    assert type(fp8.h[0].mlp.c_fc).__name__ == "Float8Linear" and fp8.lm_head.weight is fp8.wte.weight
    x = torch.randint(0, cfg.vocab_size, (2, cfg.max_seq_len))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = fp8(x, x)
    loss.backward()
    torch.optim.SGD(fp8.parameters(), lr=0.1).step()
    plain = GPT(cfg)
    plain.load_state_dict(fp8.state_dict())
    moved = plain.h[0].mlp.c_fc.weight - state["model"]["h.0.mlp.c_fc.weight"]
    assert torch.isfinite(loss) and moved.abs().max() > 0


# ----------------------------------------------------------------------------- the memory estimate

def medium(**train):
    return build_config("medium", None, {"data": {"tokenizer": "gpt2"}, "model": {"max_seq_len": 1024},
                                         "train": {"batch_size": 16, "precision": "bf16", **train}})


def test_liger_chunk_follows_its_source() -> None:
    from engine.memory.fused_loss import liger_chunk

    assert liger_chunk(4096 * 4, 32000, 4096) == 2048  # the worked example in liger's fused_linear_cross_entropy.py
    assert liger_chunk(16 * 1024, 47616, 768) == 512  # ceil(V / C) = 62 chunks' worth, rounded up to 2^k
    assert liger_chunk(100, 128, 256) == 100  # never more than the tokens there are


@pytest.mark.parametrize("backend", ["liger", "cce"])
def test_the_fused_loss_estimate_has_no_logits(backend: str) -> None:
    """Its loss row grows with the tokens by less than one bf16 logit a token, and is far below the chunked one's."""
    from engine.memory.estimate import estimate_memory

    def at(**train):
        cfg = medium(**train)
        return estimate_memory(cfg, plan=plan_run(cfg, device=H100, vocab_size=50257))

    small, large = at(fused_loss=backend), at(fused_loss=backend, batch_size=32)
    grown = large.rows["logits + cross-entropy"] - small.rows["logits + cross-entropy"]
    assert 0 < grown < 16 * 1024 * 47616 * 2  # 16 more sequences of 1024 tokens: under their bf16 logits
    chunked, plain = at(loss_chunk=4096), at()
    assert small.rows["logits + cross-entropy"] < chunked.rows["logits + cross-entropy"] / 2
    assert small.total_bytes < chunked.total_bytes < plain.total_bytes


def test_estimate_shows_the_resolved_levers(capsys) -> None:
    from tui_lm.commands.estimate import main as estimate

    assert estimate(["--preset", "medium", "--fused_loss", "liger", "--gpu", "H100 80GB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["levers"] == {"fused_loss": "liger", "attention_backend": "default", "fp8": "off", "fp8_modules": "",
                             "compile_mode": "default"}
    assert estimate(["--preset", "tiny", "--gpu", "H100 80GB"]) == 0
    assert "speed levers: fused loss off, attention default, fp8 off, compile mode default" in capsys.readouterr().out
    assert estimate(["--preset", "tiny", "--device", "cpu", "--fused_loss", "cce"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("tui-lm estimate: error: train.fused_loss cce needs a CUDA GPU (its kernels are Triton); on the "
                   "CPU use off or auto (the plain loss, or train.loss_chunk)")
