"""attnbench: which attention implementation to use on your hardware, with numbers you can trust."""

__version__ = "0.1.0"

import os as _os

# torch.profiler (used once per job to see which kernel ran) prints kineto's start/stop lines to stderr
# unless told otherwise; the user has nothing to do with them.
_os.environ.setdefault("KINETO_LOG_LEVEL", "5")
