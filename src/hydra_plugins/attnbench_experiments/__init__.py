"""attnbench's experiment files as Hydra's `experiment` config group, each file checked before Hydra reads it."""
