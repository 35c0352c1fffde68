"""Credentials in a tracking URI (`http://alice:pw@host`) are used, never shown or stored.

A URI with credentials given on the command line is masked before Hydra reads the command line, so no config,
`.hydra` file, param or log line ever holds the secret; this process keeps the real URI to connect with.
Everything else printed or recorded goes through `mask` as well (a URI from $MLFLOW_TRACKING_URI, log records).
"""

from __future__ import annotations

import logging
import re

# scheme://userinfo@ : the userinfo is the secret (or, with a ':', the part after it).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"]+)@")
HIDDEN = "***"
_real: dict[str, str] = {}  # masked URI prefix → real one, for the URIs this process was given


def _masked_userinfo(match: re.Match) -> str:
    user, sep, _ = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{HIDDEN}@" if sep else f"{match['scheme']}{HIDDEN}@"


def mask(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by ***."""
    return _USERINFO.sub(_masked_userinfo, text) if "@" in text else text


def hide_in_arguments(arguments: list[str]) -> list[str]:
    """The command-line arguments with their URIs' credentials masked; the real URIs are kept for `real_uri`."""
    for argument in arguments:
        for match in _USERINFO.finditer(argument):
            _real[_masked_userinfo(match)] = match[0]
    return [mask(argument) for argument in arguments]


def real_uri(uri: str) -> str:
    """The URI to connect with: a masked URI this process was given, with its credentials back."""
    for masked, real in _real.items():
        uri = uri.replace(masked, real)
    return uri


def mask_log_records() -> None:
    """Mask credentials in every log record of this process, whichever handlers Hydra configures later."""
    make_record = logging.getLogRecordFactory()

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if mask(message) != message:
            record.msg, record.args = mask(message), None
        return record

    logging.setLogRecordFactory(masked_record)
