"""The schemas of attnbench's backend, mask and model options, and installed plugins' backends, as Hydra configs."""
