"""The run plan: every derived number of a run, worked out once from the config and the device."""

from __future__ import annotations

import copy

import pytest

from engine.config.loading import build_config
from engine.config.plan import DeviceInfo, plan_run
from engine.errors import DataError


def cfg(**train):
    return build_config("tiny", None, {"train": train, "data": {"vocab_size": 1000}})


@pytest.mark.parametrize("device, requested, expected", [
    (DeviceInfo("cuda", 0, "NVIDIA H100 80GB HBM3", (9, 0)), "auto", "bf16"),
    (DeviceInfo("cuda", 0, "NVIDIA A100-SXM4-80GB", (8, 0)), "auto", "bf16"),
    (DeviceInfo("cuda", 0, "Tesla T4", (7, 5)), "auto", "fp16"),
    (DeviceInfo("cuda", 0, "Tesla V100", (7, 0)), "auto", "fp16"),
    (DeviceInfo("cpu"), "auto", "fp32"),
    (DeviceInfo("mps"), "auto", "fp32"),
    (DeviceInfo("cuda", 0, "Tesla T4", (7, 5)), "fp32", "fp32"),
])
def test_precision_follows_the_compute_capability(device: DeviceInfo, requested: str, expected: str) -> None:
    plan = plan_run(cfg(precision=requested), device=device)
    assert plan.precision == expected and not plan.errors


def test_bf16_on_a_card_that_emulates_it_is_an_error_and_on_the_cpu_a_warning() -> None:
    t4 = plan_run(cfg(precision="bf16"), device=DeviceInfo("cuda", 0, "Tesla T4", (7, 5)))
    assert t4.errors == ("train.precision bf16 is only emulated on Tesla T4 (compute capability 7.5, bf16 needs "
                         "8.0); use fp16 or auto",)
    cpu = plan_run(cfg(precision="bf16"), device=DeviceInfo("cpu"))
    assert not cpu.errors and "emulates it" in cpu.warnings[0]


def test_compile_is_on_for_cuda_only_when_auto() -> None:
    assert plan_run(cfg(), device=DeviceInfo.gpu()).compile
    assert not plan_run(cfg(), device=DeviceInfo("cpu")).compile
    assert plan_run(cfg(compile="on"), device=DeviceInfo("cpu")).compile
    assert not plan_run(cfg(compile="off"), device=DeviceInfo.gpu()).compile


def test_batch_split_and_step_counts() -> None:
    c = cfg(batch_size=32, grad_accum_steps=2, epochs=3, warmup_steps=10)
    plan = plan_run(c, world_size=4, train_tokens=256 * 1000 + 1, vocab_size=777)
    assert (plan.micro_batch, plan.grad_accum_steps, plan.world_size) == (4, 2, 4)
    assert plan.tokens_per_step == 32 * 256
    assert plan.steps_per_epoch == 1000 // 32 and plan.total_steps == 3 * (1000 // 32)
    assert plan.vocab_size == plan.model.vocab_size == 777
    assert plan.schedule.total_steps == plan.total_steps and plan.schedule.at(9) == pytest.approx(c.train.lr)
    assert plan_run(cfg(max_steps=50), train_tokens=10**6).total_steps == 50  # max_steps wins over epochs


def test_a_batch_that_does_not_split_over_the_ranks_is_an_error() -> None:
    plan = plan_run(cfg(batch_size=32), world_size=3)
    assert plan.errors == ("train.batch_size (32) must be divisible by grad_accum_steps × ranks (1 × 3)",)
    assert plan.micro_batch == 11  # rounded up: an estimate of it errs on the safe side


def test_data_too_small_for_the_plan() -> None:
    with pytest.raises(DataError, match="fewer than one window"):
        plan_run(cfg(), train_tokens=100)
    plan = plan_run(cfg(batch_size=32), train_tokens=256 * 10 + 1)
    assert plan.errors == ("train.batch_size (32) is larger than the 10 windows of 256 tokens in the training split",)


def test_warmup_longer_than_the_run_is_a_warning() -> None:
    assert "never leaves the warmup" in plan_run(cfg(max_steps=60)).warnings[0]  # default warmup 1000
    assert plan_run(cfg(max_steps=60, warmup_steps=10)).warnings == ()


def test_vocabulary_defaults_to_the_data_section_and_the_config_is_not_modified() -> None:
    c = cfg()
    before = copy.deepcopy(c)
    assert plan_run(c).vocab_size == 1000  # data.vocab_size, not model.vocab_size
    gpt2 = build_config("tiny", None, {"data": {"tokenizer": "gpt2", "vocab_size": 1000}})
    assert plan_run(gpt2).vocab_size == 50257
    plan_run(c, vocab_size=321)
    assert c == before
