"""Bad paths and damaged run files: each is one line on stderr, exit status 2, no traceback, nothing damaged.

The commands run in this process through their real `main`, so an uncaught
exception fails the test with its traceback. Read-only folders are made
with `chattr +i` (an immutable folder stops root too, and these tests run as
root, where chmod would not); where chattr is not available they are
skipped, never faked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from engine import events as ev
from engine.control import TrainingControl
from engine.runs.checkpoints import checkpoint_path
from engine.train.trainer import Trainer
from tests.conftest import make_corpus, tiny_config
from tui_lm.cli import main
from tui_lm.commands import export as export_cmd
from tui_lm.commands import sample as sample_cmd


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run and a stopped one (checkpoints only), trained once for the module."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUI_LM_CACHE", str(base / "cache"))
        corpus = make_corpus(base / "corpus")
        done = Trainer(tiny_config(corpus, base / "finished", save_interval=4)).run()
        assert isinstance(done, ev.Finished) and not done.stopped
        control = TrainingControl()

        def stop_at_6(e: ev.Event) -> None:
            if isinstance(e, ev.StepMetrics) and e.step == 6:
                control.stop()

        stopped = Trainer(tiny_config(corpus, base / "stopped", save_interval=2), stop_at_6, control).run()
        assert isinstance(stopped, ev.Finished) and stopped.stopped
    return base


@pytest.fixture
def finished(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / "finished" / "r", tmp_path / "finished"))


@pytest.fixture
def stopped(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / "stopped" / "r", tmp_path / "stopped"))


@pytest.fixture
def immutable(tmp_path: Path):
    """A folder even root cannot write into (chattr +i), removed again afterwards."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("chattr +i is not available here; a read-only folder cannot be made for root")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


# ----------------------------------------------------------------------------- --config and names

@pytest.mark.parametrize("kind, message", [
    ("folder", "is a folder, not a TOML file"),
    ("binary", "is not UTF-8 text"),
    ("latin-1", "is not UTF-8 text"),
])
def test_config_that_is_not_a_utf8_toml_file(tmp_path: Path, capsys, kind: str, message: str) -> None:
    path = tmp_path / "run.toml"
    if kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    else:
        path.write_bytes('[data]\ndataset = "café"\n'.encode("latin-1"))
    assert main(["--no-ui", "--config", str(path)]) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--run-name", "r\udcff"], "is not valid UTF-8 text"),  # what Python makes of a name with byte 0xff
    (["--run-name", "a" * 300], "File name too long"),
    (["--out", "r\udcfe"], "is not valid UTF-8 text"),
])
def test_undecodable_or_overlong_names_stop_before_anything_is_written(corpus: Path, tmp_path: Path, capsys,
                                                                       flags: list[str], message: str) -> None:
    tiny = ["--no-ui", "--dataset", str(corpus), "--d_model", "32", "--num_heads", "2", "--num_layers", "1",
            "--d_ff", "64", "--max_seq_len", "16", "--batch_size", "4", "--max_steps", "2", "--vocab_size", "300",
            "--device", "cpu", "--out", str(tmp_path / "runs")]
    assert main(tiny + flags) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_nul_byte_in_a_name_from_a_toml_file(corpus: Path, tmp_path: Path, capsys) -> None:
    from engine.config.loading import write_toml

    cfg = tiny_config(corpus, tmp_path / "runs")
    cfg.run.run_name = "a\0b"
    write_toml(cfg, tmp_path / "p.toml")
    assert main(["--no-ui", "--config", str(tmp_path / "p.toml")]) == 2
    assert "NUL" in error_line(capsys)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_out_that_is_a_file(corpus: Path, tmp_path: Path, capsys) -> None:
    from engine.config.loading import write_toml

    (tmp_path / "file").write_text("not a folder")
    write_toml(tiny_config(corpus, tmp_path / "file"), tmp_path / "p.toml")
    assert main(["--no-ui", "--config", str(tmp_path / "p.toml")]) == 2
    assert "it is a file, not a folder" in error_line(capsys)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_out_that_is_read_only(corpus: Path, tmp_path: Path, capsys, immutable: Path) -> None:
    from engine.config.loading import write_toml

    write_toml(tiny_config(corpus, immutable), tmp_path / "p.toml")
    assert main(["--no-ui", "--config", str(tmp_path / "p.toml")]) == 2
    assert "Operation not permitted" in error_line(capsys)


def test_garbage_run_toml_on_resume(stopped: Path, capsys) -> None:
    (stopped / "run.toml").write_bytes(b"\x00\x9f\x92\x96 garbage \xff")
    before = snapshot(stopped)
    assert main(["--no-ui", "--resume", str(stopped)]) == 2
    assert "run.toml" in error_line(capsys)
    assert snapshot(stopped) == before


# ----------------------------------------------------------------------------- sample and export

@pytest.mark.parametrize("flags, message", [
    (["--temperature", "nan"], "--temperature must be 0 (greedy) or a positive number, got nan"),
    (["--temperature", "inf"], "--temperature"),
    (["--seed", str(2**70)], "--seed must be between 0 and 2**64 - 1"),
    (["--seed", "-1"], "--seed must be between"),
])
def test_sample_values(finished: Path, capsys, flags: list[str], message: str) -> None:
    assert sample_cmd.main([str(finished), "--device", "cpu", *flags]) == 2
    assert message in error_line(capsys)


def test_sample_with_malformed_tokenizer(finished: Path, capsys) -> None:
    (finished / "models" / "tokenizer.json").write_text('{"version": "1.0", "model": [')
    assert sample_cmd.main([str(finished), "--device", "cpu"]) == 2
    assert "tokenizer" in error_line(capsys)


@pytest.mark.parametrize("edit", ["d_model = 1000000", "num_layers = 100000"])
def test_sample_with_absurd_config_is_refused_before_allocating(finished: Path, capsys, edit: str) -> None:
    path = finished / "models" / "config.toml"
    key = edit.split(" = ")[0]
    lines = [edit if line.startswith(f"{key} = ") else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")
    (finished / "models" / "checksums.json").unlink()  # an edit by hand, not damage: only the shape can tell
    assert sample_cmd.main([str(finished), "--device", "cpu"]) == 2
    assert "does not describe the weights" in error_line(capsys)


def test_edited_config_fails_its_checksum(finished: Path, capsys) -> None:
    path = finished / "models" / "config.toml"
    path.write_text(path.read_text().replace("dropout = 0.1", "dropout = 0.2"))
    assert sample_cmd.main([str(finished), "--device", "cpu"]) == 2
    assert "config.toml is corrupt" in error_line(capsys)


def test_sample_with_another_runs_checkpoint(finished: Path, tmp_path: Path, capsys) -> None:
    other = checkpoint_path(finished, 8)
    foreign = tmp_path / "foreign.pt"
    state = torch.load(other, weights_only=True)
    state["model"]["wte.weight"] = torch.zeros(47616, state["model"]["wte.weight"].shape[1])
    state["config"]["model"]["vocab_size"] = 47610
    torch.save(state, foreign)
    assert sample_cmd.main([str(finished), "--checkpoint", str(foreign), "--device", "cpu"]) == 2
    line = error_line(capsys)
    assert "47,610-token vocabulary" in line and "another run" in line


def test_sample_says_which_newer_checkpoint_it_skipped(stopped: Path, capsys) -> None:
    bad = checkpoint_path(stopped, 6)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    assert sample_cmd.main([str(stopped), "--device", "cpu", "--max-new-tokens", "3", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert "warning: checkpoint" in captured.err and "step_0000006.pt is corrupt" in captured.err
    assert "sampling from checkpoint snapshots/step_0000004.pt" in captured.err
    assert "weights_only" not in captured.err and captured.out.strip()


def test_export_into_a_read_only_folder(finished: Path, capsys, immutable: Path) -> None:
    assert export_cmd.main([str(finished), "--format", "hf", str(immutable / "hf")]) == 2
    assert "Operation not permitted" in error_line(capsys)
    assert not any(immutable.iterdir())


def test_export_below_a_file(finished: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert export_cmd.main([str(finished), "--format", "hf", str(tmp_path / "file" / "hf")]) == 2
    assert "file" in error_line(capsys)
    assert (tmp_path / "file").read_text() == "x"
