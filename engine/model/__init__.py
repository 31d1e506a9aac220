"""The GPT and generating from it: both block architectures, attention, the chunked loss, sampling.

`gpt` holds the model (embeddings, blocks, head, loss); `modern` the rotary /
RMSNorm / SwiGLU block; `attention` the KV cache and the attention core
shared by both; `losses` the chunked linear + cross-entropy; `sampling`
autoregressive generation (used by the trainer's samples and `tui-lm sample`).
What a shape costs is torch-free in engine.config.costs, shared with the estimate.
May import: engine.config and the top-level modules.
"""
