"""`tui-lm pause|resume|stop RUN_FOLDER`: steer a run another process is training, from any shell.

    tui-lm pause RUN  [--wait] [--timeout SECONDS]
    tui-lm resume RUN [--wait] [--timeout SECONDS]
    tui-lm stop RUN   [--wait] [--timeout SECONDS]

Writes a request into the run folder (engine.runs.requests); the trainer takes it
at its next logging step: pause = checkpoint, then wait; resume = go on;
stop = checkpoint, then exit (resume later with `tui-lm --no-ui --resume RUN`).
Under torchrun rank 0 reads it and every rank follows. `--wait` returns once
the trainer has done it (exit 1 if it is gone first or the timeout passes).
A run that has no live trainer is refused: one line, exit status 2.
Torch-free: it answers at once.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.errors import UserError
from engine.runs.liveness import ACTIVE, read_state, trainer_gone
from engine.runs.requests import ACTIONS, pending_request, write_request
from tui_lm.commands.common import run_folder, run_main
from tui_lm.flags import Parser

POLL_S = 0.2
# Status the trainer reports once it has carried out each request.
DONE = {"pause": ("paused",), "resume": ("running",), "stop": ("stopped", "finished", "crashed")}


def build_parser(action: str) -> Parser:
    p = Parser(prog=f"tui-lm {action}", description={
        "pause": "Pause a running run: it writes a checkpoint at its next logging step, then waits.",
        "resume": "Resume a run paused by tui-lm pause or by its dashboard.",
        "stop": "Stop a run: it writes a checkpoint at its next logging step, then exits.",
    }[action])
    p.add_argument("run", metavar="RUN_FOLDER", help="the run folder (holds run.toml and state.json)")
    p.add_argument("--wait", action="store_true", help="return once the trainer has done it")
    p.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="with --wait: give up after this long (default: wait as long as it takes)")
    return p


def check_run(run_dir: Path) -> tuple[Path, dict]:
    """(folder, state) of a run a trainer is working on now; a UserError naming what is wrong otherwise."""
    run_dir = run_folder(str(run_dir))
    state = read_state(run_dir)
    status = state.get("status", "unknown")
    again = f"; resume it with: tui-lm --no-ui --resume {run_dir}"
    if status not in ACTIVE:
        more = again if status in ("stopped", "crashed") else ""
        raise UserError(f"{run_dir} is not being trained (state: {status}){more}")
    gone = trainer_gone(state)
    if gone:
        raise UserError(f"{run_dir}: {gone}{again}")
    return run_dir, state


def steer(action: str, run_dir: Path, *, wait: bool = False, timeout: float = 0.0,
          say=print) -> int:
    run_dir, state = check_run(run_dir)
    pending = pending_request(run_dir)
    if pending is None and state["status"] in DONE[action]:
        say(f"{run_dir} is already {state['status']} (step {state.get('step', '?')})")
        return 0
    request = write_request(run_dir, action)
    where = f"pid {state.get('pid')} on {state.get('host')}"
    say(f"{action} requested; the trainer ({where}) acts on it at its next logging step")
    if not wait:
        return 0
    deadline = request["time"] + timeout if timeout > 0 else float("inf")
    while time.time() < deadline:
        time.sleep(POLL_S)
        state = read_state(run_dir)
        if state.get("status") in DONE[action] and pending_request(run_dir) is None:
            checkpoint = state.get("last_checkpoint")
            saved = f"; checkpoint {checkpoint}" if action != "resume" and checkpoint else ""
            say(f"{state['status']} at step {state.get('step', '?')}{saved}")
            return 0
        gone = trainer_gone(state)
        if gone:
            print(f"tui-lm {action}: {gone} before it acted on the request", file=sys.stderr)
            return 1
    print(f"tui-lm {action}: timed out after {timeout:g} s; the request stays in {run_dir}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """`argv` starts with the action: ["pause", "RUN", ...]."""
    argv = list(sys.argv[1:] if argv is None else argv)
    action = argv[0] if argv else ""
    if action not in ACTIONS:
        print(f"tui-lm: error: expected one of {', '.join(ACTIONS)}, got {action!r}", file=sys.stderr)
        return 2

    def run(args: list[str]) -> int:
        parsed = build_parser(action).parse_args(args)
        if parsed.timeout < 0:
            raise UserError(f"--timeout must be 0 (no limit) or positive, got {parsed.timeout:g}")
        return steer(action, Path(parsed.run), wait=parsed.wait, timeout=parsed.timeout)

    return run_main(run, argv[1:], f"tui-lm {action}")


if __name__ == "__main__":
    sys.exit(main())
