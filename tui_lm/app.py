"""The Textual app: setup screen, training dashboard, resume picker.

`make_app()` is the one factory the CLI and the tests use. Importing this
module must stay fast: no torch, no datasets, no engine.train.trainer (the trainer is
imported inside the training worker, run folders are scanned in a worker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from engine.config.loading import build_config
from engine.config.run_config import RunConfig
from engine.errors import ConfigError, UserError
from engine.runs.layout import RUN_CONFIG, is_run_folder, named_folder
from engine.runs.listing import default_roots
from engine.train.launch import picker_roots, resume_request
from tui_lm.messages import BrowseRuns, OpenResumePicker, ResumeRun, StartTraining, WatchRun
from tui_lm.profiles import profiles_dir
from tui_lm.screens.dashboard import DashboardScreen
from tui_lm.screens.help import HelpScreen
from tui_lm.screens.quit_confirm import QuitConfirm
from tui_lm.screens.resume import ResumeScreen
from tui_lm.screens.setup import SetupScreen


def unique_paths(paths: list[Path]) -> list[Path]:
    """`paths` in order without repeats (the same folder spelt relative and absolute counts once)."""
    out, seen = [], set()
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


class TuiLmApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "tui-lm"
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="quit (asks first; an active run is checkpointed and stopped)"),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="the keys of this screen, and notes"),
        Binding("f1", "help", "Help", show=False),
    ]

    def __init__(self, cfg: RunConfig, *, source: str | None, resume_picker: bool, roots: list[Path],
                 startup_error: str = "", subtitle: str = "", named_run: Path | None = None,
                 watch: Path | None = None, browse: list[Path] | None = None) -> None:
        super().__init__()
        self.watch_dir = watch
        self.browse_dirs = list(browse or [])
        self.initial_config = cfg
        self.source = source
        self.resume_picker = resume_picker
        self.roots = roots  # folders named by the user (--resume); ./lm_* is rescanned each time
        self.named_run = named_run  # `--resume RUN_FOLDER`: preselected in the picker
        self.run_parents: list[Path] = []  # where this session's runs went (a custom --out)
        self.startup_error = startup_error
        self.sub_title = subtitle

    def get_default_screen(self) -> Screen:
        return SetupScreen(self.initial_config, self.source)

    def on_mount(self) -> None:
        if self.startup_error:
            self.notify(self.startup_error, title="cannot load profile", severity="error", timeout=10)
        if self.resume_picker:
            self.open_resume_picker()
        if self.watch_dir is not None:
            self.watch_run(self.watch_dir)
        if len(self.browse_dirs) == 1:
            self.browse_run(self.browse_dirs[0])
        elif self.browse_dirs:
            self.compare_runs(self.browse_dirs)

    # ------------------------------------------------------------------ navigation

    def picker_roots(self, out_dir: str = "") -> list[Path]:
        """Where runs can be, computed anew at each open and reload of the picker.

        The folders given with --resume, the output folder typed on the setup
        screen and the one the app started with, the parents of runs trained
        in this session, and every ./lm_* folder as it is now (a first run
        creates its lm_<dataset> folder after the app started).
        """
        typed = [Path(d) for d in (out_dir, self.initial_config.run.out_dir) if d]
        return unique_paths([*self.roots, *typed, *self.run_parents, *default_roots()])

    def open_resume_picker(self, out_dir: str = "") -> None:
        named, self.named_run = self.named_run, None  # preselected the first time only
        self.push_screen(ResumeScreen(lambda: self.picker_roots(out_dir), named=named))

    def remember_run(self, run_dir: Path) -> None:
        """A dashboard reports where its run lives, so the picker looks there later."""
        if run_dir.parent not in self.run_parents:
            self.run_parents.append(run_dir.parent)

    def start_training(self, cfg: RunConfig) -> None:
        self.push_screen(DashboardScreen(cfg))

    def resume_run(self, run_dir: Path, screen: Screen | None = None) -> None:
        try:
            cfg = resume_request(run_dir).config
        except UserError as e:  # a fixed setting changed; another process trains the run (RunLocked)
            self.notify(str(e), title="cannot resume", severity="error")
            return
        dashboard = DashboardScreen(cfg, run_dir=run_dir, resume=True)
        if screen is not None and screen is self.screen:
            self.switch_screen(dashboard)  # the picker is done; stop/escape then lands on setup
        else:
            self.push_screen(dashboard)

    def watch_run(self, run_dir: Path) -> None:
        """The dashboard attached to a run another process trains (or trained)."""
        from tui_lm.screens.watch import WatchScreen

        try:
            cfg = build_config(None, run_dir / RUN_CONFIG)
        except ConfigError as e:
            self.notify(str(e), title="cannot watch", severity="error")
            return
        self.push_screen(WatchScreen(cfg, run_dir))

    def browse_run(self, run_dir: Path) -> None:
        from tui_lm.screens.browse import BrowseScreen

        self.push_screen(BrowseScreen(run_dir))

    def compare_runs(self, run_dirs: list[Path]) -> None:
        from tui_lm.screens.compare import CompareScreen

        self.push_screen(CompareScreen(run_dirs))

    # Screens ask for navigation with messages (tui_lm.messages); the app owns the screen stack.

    def on_start_training(self, message: StartTraining) -> None:
        self.start_training(message.config)

    def on_open_resume_picker(self, message: OpenResumePicker) -> None:
        self.open_resume_picker(message.out_dir)

    def on_resume_run(self, message: ResumeRun) -> None:
        self.resume_run(message.run_dir, screen=message.picker)

    def on_watch_run(self, message: WatchRun) -> None:
        self.watch_run(message.run_dir)

    def on_browse_runs(self, message: BrowseRuns) -> None:
        if len(message.run_dirs) == 1:
            self.browse_run(message.run_dirs[0])
        else:
            self.compare_runs(message.run_dirs)

    @property
    def dashboard(self) -> DashboardScreen | None:
        """The dashboard training in this process (an attached one owns no trainer)."""
        return next((s for s in self.screen_stack
                     if isinstance(s, DashboardScreen) and not getattr(s, "attached", False)), None)

    # ------------------------------------------------------------------ app keys

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))  # the keys of the screen it is opened over

    async def action_quit(self) -> None:
        if isinstance(self.screen, QuitConfirm):
            return
        dashboard = self.dashboard
        active = dashboard is not None and dashboard.state not in ("finished", "stopped", "failed")
        warning = dashboard.quit_warning() if active and dashboard is not None else ""

        def answered(quit_: bool | None) -> None:
            if not quit_:
                return
            if active and dashboard is not None:
                dashboard.stop_and_exit()  # exits once the checkpoint is written
                self.notify("stopping the run first…", title="quitting", timeout=3)
            else:
                self.exit(0)

        self.push_screen(QuitConfirm(warning), answered)

    def on_unmount(self) -> None:
        # However the app ends, never leave a training thread running behind it.
        dashboard = self.dashboard
        if dashboard is not None:
            dashboard.runner.stop()


def make_app(profile: Path | None = None, resume_picker: bool = False, roots: list[Path] | None = None,
             out_dir: str | None = None, overrides: dict[str, dict[str, Any]] | None = None,
             watch: Path | None = None, browse: list[Path] | None = None, resume: Path | None = None) -> TuiLmApp:
    """The app for the CLI and the tests.

    profile: a run.toml / profile to open on the setup screen (else the tiny preset);
    overrides: settings from flags, on top of it (the same merge as headless);
    resume_picker: open the resume picker on top of setup; roots: more folders
    the picker lists runs from (besides `out_dir` and ./lm_*, rescanned at
    each open); out_dir: parent folder for new runs; watch: a run folder to
    open attached (`tui-lm watch`); browse: run folders to open read-only, one
    browsed or several compared (`tui-lm browse`); resume: the folder given
    with `--resume`: a run folder (listed with its siblings and preselected)
    or a folder of runs.
    """
    error, source, subtitle = "", None, ""
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if out_dir:
        overrides.setdefault("run", {})["out_dir"] = out_dir
    out_dir = overrides.get("run", {}).get("out_dir") or None
    cfg = build_config(None, None, overrides, check=False)
    if profile is not None:
        profile = Path(profile)
        try:
            cfg = build_config(None, profile, overrides, check=False)
            subtitle = profile.name
            in_folder = profile.resolve().parent == profiles_dir().resolve()
            source = f"profile:{profiles_dir() / profile.name}" if in_folder else None
        except ConfigError as e:
            error = str(e)
    if source is None and not subtitle:
        source = f"preset:{cfg.run.preset or 'tiny'}"
    roots = list(roots or [])
    named_run = None
    if resume is not None:
        resume = named_folder(resume)
        roots = picker_roots(str(resume)) + roots
        named_run = resume if is_run_folder(resume) else None
    return TuiLmApp(cfg, source=source, resume_picker=resume_picker or resume is not None, roots=roots,
                    startup_error=error, subtitle=subtitle, named_run=named_run, watch=watch, browse=browse)
