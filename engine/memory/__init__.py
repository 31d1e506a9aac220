"""GPU memory, before and during a run: the estimate, its activation model, fixes, the GPU catalogue, the monitor.

`estimate` is the peak training memory from the config alone and `activations`
what autograd saves, op by op (pure arithmetic, no torch: the setup screen
recomputes it per keystroke); `advice` the fixes it can vouch for; `gpus` the
catalogue of cards (memory, peak FLOPs, bf16) and NVML detection; `monitor`
live sampling on a thread (torch only on CUDA devices, where it is loaded).
May import: engine.config and the top-level modules; never torch at import.
"""
