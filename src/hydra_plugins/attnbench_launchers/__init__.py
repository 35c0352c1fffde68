"""attnbench's launcher plugin: the local worker pools of hydra/launcher=cpu_pool and gpus (Hydra finds plugins only
under the hydra_plugins namespace package)."""
