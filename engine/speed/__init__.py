"""How long a run takes, before it starts: the time model, its measured rows, the dataset's size, measurements kept.

`model` is the formula (seconds per step from FLOPs per step, the peak for the
precision and the expected MFU; evaluations; compile time), `table` the
measured throughput rows it reads and the rule for combinations nobody
measured, `sizes` the splits' token counts (exact from the token cache, else
estimated), `measured` this machine's own measurements kept in the user's
cache, `quality` what the run can be expected to learn (tokens per
parameter, epochs, published references). Pure arithmetic and files: the setup screen recomputes it per keystroke.
May import: engine.config, engine.data, engine.memory and the top-level modules; never torch.
"""
