"""The run folder: its layout, owning and locking it, checkpoints, the recorder, reading and summarising it.

`layout` names every file of a run folder; `folder` creates, locks and fills
one; `checkpoints` saves, verifies and lists checkpoints (torch only inside
the functions that save or load tensors); `recorder` writes metrics.jsonl,
state.json and TensorBoard; `history` and `reader` are the one reader of
metrics.jsonl (a replayed step supersedes what an earlier session logged
from it on); `summary`, `listing` and `liveness` describe a run for browse,
compare and the resume picker; `requests` steers a trainer from outside.
May import: engine.config and the top-level modules; never the model; torch-free at import.
"""
