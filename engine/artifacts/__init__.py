"""What a finished run gives users: the final model folder, loading a model to use it, and the Hugging Face export.

May import: engine.config, engine.model, engine.runs and the top-level modules.
"""
