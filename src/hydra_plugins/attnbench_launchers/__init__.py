"""attnbench's launcher plugins: the local worker pools of hydra/launcher=cpu_pool and gpus, and the Slurm job array of
slurm and slurm_cpu (Hydra finds plugins only under the hydra_plugins namespace package)."""
