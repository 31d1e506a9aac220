"""The training loop and what drives it: starting a run, building its parts, the runtime, evaluation.

`launch` turns flags and files into a config and the run to resume; `build`
makes every part a loop needs (data, plan, folder, model, optimizer, loader,
restore) once; `runtime` is the device, ranks, autocast and RNG; `evaluate`
the validation metrics; `trainer` the loop. The top of the engine: it may
import every other package, and none of them imports it.
"""
