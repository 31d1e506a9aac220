"""From text to training batches: text sources, tokenizers, the on-disk token cache, the training loader.

`sources` finds and reads the text (a folder, a file, WikiText from the hub);
`tokenizers` trains or loads the BPE; `token_cache` tokenizes once into
memory-mapped arrays; `loader` yields batches with a resumable position.
Only `loader` needs torch. May import: engine.config and the top-level modules.
"""
