"""Experiment tracking in MLflow: store resolution and params (store), the Hydra callback (callback)."""
