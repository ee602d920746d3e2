"""The core's refusals, named by codes: the core says what went wrong, each boundary says it.

A :class:`DomainError` carries a stable ``code`` (a word such as ``unknown_site`` or
``voucher_used``), the input it concerns (``field``, e.g. ``phone``) and any values a message
needs. It knows no language and no HTTP status: the splash page, the portal API, the dashboard
and the CLI each turn a code into their own answer through one table of their own
(``portal_web/i18n.py`` holds the customer's words for every code, in the gettext catalogue).
"""
from __future__ import annotations


class DomainError(Exception):
    """A request the core will not honour. ``str()`` is the code (for logs)."""

    def __init__(self, code: str, field: str | None = None, **values):
        super().__init__(code)
        self.code, self.field, self.values = code, field, values


class PortInUse(OSError):
    """A listening socket could not be bound: another program holds ``proto`` ``host:port``.
    ``setting`` says where the operator chooses another port (a config key and its environment
    variable); the composition root adds who holds the port, when the system tells."""

    def __init__(self, proto: str, host: str, port: int, what: str, setting: str):
        super().__init__(f"{what}: {proto.upper()} port {port} on {host or '*'} is already in use")
        self.proto, self.host, self.port, self.what, self.setting = proto, host, port, what, setting
