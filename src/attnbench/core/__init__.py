"""A job measured: problem, masks, backends, models, timing, correctness, metrics, and the Record it ends in.

Nothing here knows Hydra, OmegaConf or MLflow (import-linter holds it to that: pyproject.toml).
"""
