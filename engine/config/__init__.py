"""What a run is, in numbers, before anything runs: settings, presets, TOML, the plan and the LR schedule.

Torch-free and pure: the setup screen recomputes the plan and the estimate on
every keystroke. `schema` declares how a setting is declared; `run_config`
declares every setting once (CLI flags, the form, TOML and validation derive
from it); `plan` works out every derived number (micro-batch, accumulation,
precision, steps, tokens per step) once; `schedule` the learning rate per step;
`costs` what a model shape costs (parameters, FLOPs per token, SwiGLU width);
`model_label` what a run's model is called ("tiny", or "custom (from tiny)").
May import: engine.errors, engine.files.
"""
