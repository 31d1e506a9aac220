"""The optimizers: AdamW with weight-decay groups, or Muon for the blocks' matrices and AdamW for the rest.

`groups` builds the optimizer a TrainConfig asks for; `muon` is the batched
Muon update. May import: engine.config, engine.model and the top-level modules.
"""
