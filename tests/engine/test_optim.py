"""Tests for engine.optim.groups: which weights Muon gets, per-group LRs under the schedule, and its state."""

from __future__ import annotations

import pytest
import torch

from engine.config.run_config import ModelConfig, TrainConfig
from engine.model.gpt import GPT
from engine.optim.groups import MuonAdamW, make_optimizer, set_lr
from engine.optim.muon import Muon


def model(arch: str = "modern", tied: bool = True) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(d_model=32, num_heads=2, num_layers=2, d_ff=64, max_seq_len=16, vocab_size=100,
                           dropout=0.0, arch=arch, tie_embeddings=tied))


@pytest.mark.parametrize("arch,tied", [("gpt2", True), ("modern", True), ("modern", False)])
def test_muon_gets_the_block_matrices_and_adamw_the_rest(arch, tied):
    m = model(arch, tied)
    opt = make_optimizer(m, TrainConfig(optimizer="muon"))
    assert isinstance(opt, MuonAdamW)
    names = {id(p): n for n, p in m.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert not muon & adamw and muon | adamw == set(names.values())  # every weight exactly once
    assert all(n.startswith("h.") and n.endswith("weight") and dict(m.named_parameters())[n].dim() == 2
               for n in muon)
    assert {"wte.weight"} <= adamw and ("lm_head.weight" in adamw) is (not tied)
    # per block: q, k, v, o + gate, up, down (modern); c_attn, c_proj, c_fc, c_proj (gpt2)
    assert len(muon) == 2 * (7 if arch == "modern" else 4)


def test_schedule_scales_both_groups_and_keeps_the_ratio():
    cfg = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02)
    opt = make_optimizer(model(), cfg)
    assert set_lr(opt, cfg, 0.25) == 2.5e-4  # AdamW's LR, what the step metrics report
    assert [g["lr"] for g in opt.adamw.param_groups] == pytest.approx([2.5e-4, 2.5e-4])
    assert [g["lr"] for g in opt.muon.param_groups] == pytest.approx([5e-3])
    # Muon's decoupled decay per step (lr x wd) equals AdamW's.
    assert opt.muon.param_groups[0]["weight_decay"] * 0.02 == pytest.approx(0.1 * 1e-3)


def test_state_round_trips_and_a_wrong_state_is_refused():
    m, cfg = model(), TrainConfig(optimizer="muon", lr=1e-3)
    opt = make_optimizer(m, cfg)
    x = torch.randint(0, 100, (2, 16))
    m(x, x)[1].backward()
    opt.step()
    state = opt.state_dict()
    assert len(state["muon"]["state"]) == sum(len(g["params"]) for g in opt.muon.param_groups)
    assert all(set(s) == {"momentum_buffer"} for s in state["muon"]["state"].values())  # one buffer, not two
    again = make_optimizer(m, cfg)
    again.load_state_dict(state)
    assert torch.equal(again.muon.state_dict()["state"][0]["momentum_buffer"], state["muon"]["state"][0]["momentum_buffer"])
    with pytest.raises(ValueError, match="train.optimizer"):
        again.load_state_dict(make_optimizer(m, TrainConfig()).state_dict())


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_batched_muon_steps_like_torch_muon(weight_decay):
    # Same matrices (square, wide and tall, shapes repeated) and gradients through both optimizers.
    torch.manual_seed(0)
    shapes = [(32, 32), (32, 32), (64, 32), (32, 64), (64, 32)]
    ours = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = Muon(ours, lr=0.02, weight_decay=weight_decay)
    b = torch.optim.Muon(theirs, lr=0.02, weight_decay=weight_decay, momentum=0.95, nesterov=True)
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        assert not torch.equal(p, torch.zeros_like(p))
        # Bit-identical on the development CPU; the tolerance (1% of one update element, ~lr / sqrt(cols))
        # leaves room for a bf16 batched matmul that rounds differently from the single one.
        torch.testing.assert_close(p, q, rtol=0, atol=3e-5)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])


SHARD_SHAPES = [(32, 32)] * 5 + [(64, 32)] * 2 + [(32, 64)]  # 5 matrices: shares of 3 and 2 (one padded)


def _shard_rank(rank: int, world: int, store: str, out: str) -> None:
    """One rank of test_sharded_muon_steps_like_one_process: the same gradients on every rank, as after DDP."""
    import torch.distributed as dist

    import engine.optim.muon as muon

    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    seen = []
    real = muon.newton_schulz
    muon.newton_schulz = lambda owned: seen.append(owned[0].shape[0]) or real(owned)
    params, opt = _muon_setup(shard=True)
    _muon_steps(params, opt)
    torch.save({"params": [p.detach() for p in params], "seen": seen,
                "state": opt.state_dict()}, f"{out}.{rank}")
    dist.destroy_process_group()


def _muon_setup(shard: bool):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in SHARD_SHAPES]
    return params, Muon(params, lr=0.02, weight_decay=0.05, shard=shard)


def _muon_steps(params, opt, steps: int = 3) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_sharded_muon_steps_like_one_process(tmp_path):
    """Under DDP each rank orthogonalises its share of every shape group and all-gathers the rest: the weights
    and the (whole, on every rank) momentum state equal one process's, which a resume on 1 rank loads."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_shard_rank, args=(2, str(tmp_path / "store"), out), nprocs=2)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    params, opt = _muon_setup(shard=False)
    _muon_steps(params, opt)
    for rank in ranks:
        for p, q in zip(params, rank["params"]):
            torch.testing.assert_close(q, p.detach(), rtol=0, atol=3e-5)
        for a, b in zip(opt.state_dict()["state"].values(), rank["state"]["state"].values()):
            assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    # Per step: the (32, 32) group split 3 + 2 (rank 1's share padded to 3), the others 1 + 1.
    assert ranks[0]["seen"] == ranks[1]["seen"] == [3, 1, 1] * 3
    # A 2-rank state resumes on one process and steps on like it.
    again, resumed = _muon_setup(shard=False)
    for p, q in zip(again, ranks[0]["params"]):
        p.data.copy_(q)
    resumed.load_state_dict(ranks[0]["state"])
    _muon_steps(again, resumed, steps=1)
    _muon_steps(params, opt, steps=1)
    for p, q in zip(params, again):
        torch.testing.assert_close(q, p, rtol=0, atol=3e-5)


def test_fp16_step_skips_on_the_device_without_asking_the_host(monkeypatch):
    """GradScaler hands Muon + (fused) AdamW its found_inf as a tensor: no .item() per step, and a step with
    an overflow changes no weight and no optimizer state, as GradScaler's own skip would."""
    m = model()
    opt = make_optimizer(m, TrainConfig(optimizer="muon", lr=1e-3), fused=True)  # fused: the CUDA path
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    items = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: items.append(self) or real_item(self))
    x = torch.randint(0, 100, (2, 16))

    def step(overflow: bool) -> None:
        scaler.scale(m(x, x)[1]).backward()
        if overflow:
            m.h[0].mlp.down_proj.weight.grad[0, 0] = float("inf")
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()

    step(False)
    weights = {n: p.detach().clone() for n, p in m.named_parameters()}
    state = {k: v.clone() for s in opt.state.values() for k, v in s.items() if torch.is_tensor(v)}
    step(True)
    assert items == []  # before: one found_inf.item() per step
    assert all(torch.equal(p, weights[n]) for n, p in m.named_parameters())
    after = {k: v for s in opt.state.values() for k, v in s.items() if torch.is_tensor(v)}
    assert all(torch.equal(v, after[k]) for k, v in state.items())
    assert scaler.get_scale() == 2.0**9  # backed off once
    step(False)
    assert not all(torch.equal(p, weights[n]) for n, p in m.named_parameters())


def test_newton_schulz_runs_in_fp16_on_cards_that_only_emulate_bf16(monkeypatch):
    """A T4's capability (7.5), read as the runtime reads it, gives a plan whose Muon iterates in fp16; fp16's
    finer mantissa orthogonalises closer to the fp32 iteration than bf16 does."""
    import engine.optim.muon as muon
    from engine.config.plan import DeviceInfo, plan_run
    from engine.config.loading import build_config
    from engine.train.runtime import DTYPES, device_info

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.version, "hip", None)
    cfg = build_config("tiny", None, {"train": {"optimizer": "muon"}})
    t4 = plan_run(cfg, device=device_info(torch.device("cuda", 0)), vocab_size=100)
    assert t4.precision == "fp16" and t4.muon_dtype == "fp16"
    assert plan_run(cfg, device=DeviceInfo("cuda", 0, "A100", (8, 0)), vocab_size=100).muon_dtype == "bf16"
    assert plan_run(cfg, device=DeviceInfo("cpu"), vocab_size=100).muon_dtype == "bf16"

    m = model()
    opt = make_optimizer(m, TrainConfig(optimizer="muon"), ns_dtype=DTYPES[t4.muon_dtype])
    seen = []
    real = muon.newton_schulz
    monkeypatch.setattr(muon, "newton_schulz", lambda owned: seen.append(owned[0].dtype) or real(owned))
    x = torch.randint(0, 100, (2, 16))
    m(x, x)[1].backward()
    opt.step()
    assert seen and set(seen) == {torch.float16}

    g = torch.randn(4, 64, 32, generator=torch.Generator().manual_seed(0))
    exact = real(g.clone())
    err = {dt: (real(g.to(dt)).float() - exact).abs().max().item() for dt in (torch.float16, torch.bfloat16)}
    assert err[torch.float16] < err[torch.bfloat16] / 4, err
