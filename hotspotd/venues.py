"""Which venue a request, a router or a session belongs to (``[[sites]]``, ``[[routers]]``).

The splash page and the API ask :meth:`Venues.site_for` which venue's packages to sell and which
M-Pesa account to use, :meth:`Venues.uamsecret_for` how to encode a CoovaChilli logon; the expiry
job and the owner's disconnect ask :attr:`Venues.router_sites` which routers serve a session;
payments from the M-Pesa menu and the statement ask :meth:`Venues.paid_numbers` and
:meth:`Venues.shortcodes` which venue a number paid to is.
"""
from __future__ import annotations

from collections.abc import Iterable

from .config import Config, Router, Site


class Venues:
    """The venues of ``config`` and the routers that serve them."""

    def __init__(self, config: Config, routers: Iterable[Router] = ()):
        self.config = config
        self.routers: tuple[Router, ...] = tuple(routers)
        #: router name → the venue it serves
        self.router_sites: dict[str, str] = {r.name: r.site for r in self.routers}
        #: addresses of routers whose customers' portal requests all come from the router itself
        #: (CoovaChilli's NAT): per-device checks there go by the router's ``mac`` variable
        self.nat_addresses: frozenset[str] = frozenset(r.address for r in self.routers if r.kind == "coova")

    def site_for(self, ctx: dict) -> Site | None:
        """The venue a splash page request comes from: the ``site`` its router's login page names
        (``hotspotd router-config`` writes it), else the venue of the router whose NAS-ID is
        ``nasid`` (CoovaChilli sends it), else the default venue. None: the page names a venue
        this install does not have (a typo at the router), where nothing may be sold."""
        if ctx.get("site"):
            return self.config.site(ctx["site"])
        router = next((r for r in self.routers if r.name == ctx.get("nasid")), None) if ctx.get("nasid") else None
        return self.config.site(router.site if router else None)

    def uamsecret_for(self, ctx: dict) -> str:
        """The uamsecret of the CoovaChilli the splash page's router variables ``ctx`` come from:
        the one named by ``nasid`` (``hotspotd router-config`` sets HS_NASID to the router's name),
        else the one at ``uamip``, else the only CoovaChilli configured; "" when none fits."""
        coova = [r for r in self.routers if r.kind == "coova"]
        match = next((r for r in coova if r.name == ctx.get("nasid")), None) if ctx.get("nasid") else None
        if match is None and ctx.get("uamip"):
            match = next((r for r in coova if r.address == ctx["uamip"]), None)
        if match is None and len(coova) == 1:
            match = coova[0]
        return match.uamsecret if match else ""

    def paid_numbers(self) -> dict[str, tuple[str, bool]]:
        """Which venue a payment from the M-Pesa menu is for, by the number it was paid to (its
        paybill, or its till and store number) → ``(site id, is a till)``; where venues share an
        M-Pesa account, the default venue (listed first)."""
        numbers: dict[str, tuple[str, bool]] = {}
        for site in self.config.sites.values():
            payee = self.config.payee(site.id)
            account = site.account or self.config.default_account
            for number in (payee.number, account.shortcode):
                numbers.setdefault(number, (site.id, payee.kind == "till"))
        return numbers

    def shortcodes(self) -> dict[str, str]:
        """Each M-Pesa account's shortcode → the venue whose Daraja client speaks for it."""
        accounts: dict[str, str] = {}
        for site in self.config.sites.values():
            accounts.setdefault((site.account or self.config.default_account).shortcode, site.id)
        return accounts

    def party_of(self, site: str) -> tuple[str, str]:
        """Whom M-Pesa is asked about a venue's transactions: ``(number, IdentifierType)``, its till
        (``"2"``) or its paybill shortcode (``"4"``; daraja.md, "Transaction Status")."""
        payee = self.config.payee(site)
        return (payee.number, "2") if payee.kind == "till" else (payee.number, "4")
