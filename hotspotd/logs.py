"""Where the log goes and how a line looks: stderr, read by the journal under systemd.

``[logging] format = "text"``: ``LEVEL logger: message``, one line each. Under systemd (stderr is
the journal, as ``JOURNAL_STREAM`` says) the journal adds the time and each line starts with a
``<N>`` syslog priority the journal strips, so ``journalctl -p warning`` works; elsewhere the
line starts with the time.

``format = "json"``: one object a line, ``{"ts", "level", "logger", "msg"}`` plus the fields a
call passes with ``extra=`` (``checkout_request_id``, ``payment_id``, ``entitlement_id``…) and
``exc`` for a traceback. The messages themselves are the same: they never hold a secret and mask
phone numbers (:func:`hotspotd.identifiers.mask_phone`).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import TextIO

#: what every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
#: their DEBUG lines carry SQL parameters, URLs and API words: phone numbers, tokens, passwords
NOISY_DEBUG = ("peewee", "urllib3", "librouteros")
#: syslog priorities of the logging levels (sd-daemon(3) prefixes)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def extra_fields(record: logging.LogRecord) -> dict:
    """The fields a log call passed with ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
               .replace("+00:00", "Z"),
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for key, value in extra_fields(record).items():
            if value is not None:
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class _Priority(logging.Formatter):
    """Prefix each line with its syslog priority, for the journal to read and strip."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        # a traceback's lines stay in the same journal entry only if the whole text is one write;
        # each line gets the prefix so none is logged at the default priority
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def to_journal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (stderr) is the systemd journal: ``JOURNAL_STREAM`` names its device
    and inode (an inherited variable with stderr redirected elsewhere does not count)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def formatter(fmt: str = "text", journal: bool = False) -> logging.Formatter:
    """The formatter of ``[logging] format``; ``journal``: the journal adds the time and reads priorities."""
    if fmt == "json":
        inner: logging.Formatter = JsonFormatter()
    elif journal:
        inner = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    else:
        inner = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _Priority(inner) if journal else inner


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (as logging's last resort does)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None,
              force: bool = False) -> logging.Handler | None:
    """Send the log to ``stream`` (default: stderr) at ``level`` in ``fmt`` (text | json).

    Replaces the handler an earlier call installed. Like :func:`logging.basicConfig`, it leaves
    a root logger that already has someone else's handlers (a test runner's) alone unless
    ``force``. Returns the handler installed, or None."""
    # one line per job run every few seconds would drown what matters; failures still show
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    for noisy in NOISY_DEBUG:
        logging.getLogger(noisy).setLevel(logging.INFO)
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_hotspotd", False)]
    if not force and len(ours) < len(root.handlers):
        return None
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(formatter(fmt, to_journal(stream or sys.stderr)))
    handler._hotspotd = True          # marks ours, for the next configure()
    for old in ours:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    return handler
