"""Exceptions that map to a job status (see attnbench.core.job)."""


class ConfigError(ValueError):
    """A value or a combination of values that no job can run; raised before any tensor exists."""

    def __init__(self, field: str, given: object, expected: str) -> None:
        super().__init__(f"{field}={given!r} is not valid: expected {expected}")
        self.field = field


class Unsupported(RuntimeError):
    """This machine or PyTorch build cannot run the requested combination. The sweep goes on."""


class Skipped(Exception):
    """The job would repeat another job of the same sweep (e.g. compile_mode without compile): nothing to do."""
