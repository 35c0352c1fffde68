"""A config-group option that does not exist, said in one line: the group, the value given, the allowed values.

Hydra's own message for `backend=flsh` is some twenty lines: the option list one per line, then the search path.
"""

from __future__ import annotations

from hydra.errors import MissingConfigException


def missing_option_line(error: MissingConfigException) -> str | None:
    """`backend='flsh' is not an option: expected one of cudnn, default, ...` for an option of a config group that
    no source holds; None for another missing config (the primary config, a file a defaults list names)."""
    path, options = error.missing_cfg_file, error.options
    if not path or not options or "/" not in path:
        return None
    group, _, option = path.rpartition("/")
    return f"{group}={option!r} is not an option: expected one of {', '.join(options)}"
