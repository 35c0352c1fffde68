"""What a refused command says: an option that does not exist in one line (the group, the value given, the allowed
values); another refusal in Hydra's own words.

Hydra's own message for `backend=flsh` is some twenty lines: the option list one per line, then the search path.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException


def not_an_option(group: str, option: str, options: list[str]) -> str:
    return f"{group}={option!r} is not an option: expected one of {', '.join(options)}"


def missing_option_line(error: MissingConfigException) -> str | None:
    """`backend='flsh' is not an option: expected one of cudnn, default, ...` for an option of a config group that
    no source holds; None for another missing config (the primary config, a file a defaults list names)."""
    path, options = error.missing_cfg_file, error.options
    if not path or not options or "/" not in path:
        return None
    group, _, option = path.rpartition("/")
    return not_an_option(group, option, options)


def refusal_text(error: Exception) -> str | None:
    """What the command prints for an exception Hydra raised instead of printing (run.py): a missing option's line;
    for another refusal (a CompactHydraException, which Hydra prints without a trace) its message, then
    OmegaConf's that caused it, as Hydra prints them; None for anything else, a bug, whose traceback says it."""
    if isinstance(error, MissingConfigException) and (line := missing_option_line(error)) is not None:
        return line
    if isinstance(error, CompactHydraException):
        cause = error.__cause__
        return f"{error}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(error)
    return None
