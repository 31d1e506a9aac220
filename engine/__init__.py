"""The training engine of tui-lm, one package per concept; ARCHITECTURE.md maps them.

Never imports Textual: the dashboard and the headless CLI both drive it
through `engine.control.TrainingControl` and the events in `engine.events`.

At the top sit only the modules every package shares: `events` (what the
trainer publishes), `errors` (what the user can fix), `files` (atomic writes,
checksums, path checks: every writer of a run folder or token cache uses them)
and `control` (pause / stop, which data preparation and evaluation obey too).
They import no package of the engine, except `events` the torch-free schedule
it carries. The packages, from the bottom up (each may import those before it):
config, data, model, memory, speed, optim, runs, artifacts, train.
tests/engine/test_layout.py holds that order.
"""
