"""The training engine of tui-lm: config, data, model, loop, checkpoints, memory.

Never imports Textual: the dashboard and the headless CLI both drive it
through `engine.control.TrainingControl` and the events in `engine.events`.
"""
