"""The tables. Timestamps are UTC epoch seconds (floats): cheap to index and compare,
the same on SQLite and PostgreSQL. Money is whole shillings (M-Pesa takes no cents).

Every model binds to :data:`database`, a proxy that :func:`hotspotd.storage.db.open_database`
points at the real SQLite or PostgreSQL database.
"""
from __future__ import annotations

import peewee as pw

database = pw.DatabaseProxy()
_PLACEHOLDERS: dict[str, str] = {}


def execute(sql: str, params: tuple = ()):
    """Run hand-written SQL (``?`` placeholders) on the bound database; returns the cursor.

    For the few statements every RADIUS request runs: building a peewee query costs ten times
    what SQLite takes to answer it. Write portable SQL (same tables and columns on SQLite and
    PostgreSQL); PostgreSQL's driver wants ``%s``, so the text is rewritten once and kept.
    """
    return database.obj.execute_sql(_portable(sql), params)


def _portable(sql: str) -> str:
    """``sql`` with the bound database's placeholder for ``?`` (rewritten once per text)."""
    param = database.obj.param
    if param == "?":
        return sql
    return _PLACEHOLDERS.get(sql) or _PLACEHOLDERS.setdefault(sql, sql.replace("?", param))


def chunks(items: list, size: int = 500):
    """``items`` in slices small enough for one statement's parameters on any database."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def marks(values) -> str:
    """``?, ?, ?`` for an ``IN (…)`` of ``values``."""
    return ", ".join("?" * len(values))


def execute_many(sql: str, rows: list[tuple]) -> None:
    """:func:`execute` once per row of ``rows`` in one driver call (bulk inserts: peewee's
    ``insert_many`` spends seconds building the SQL text for ten thousand rows)."""
    if not rows:
        return
    cursor = database.obj.cursor()
    try:
        cursor.executemany(_portable(sql), rows)
    finally:
        cursor.close()


#: the venue of a row made before sites existed, or by an install that declares none
DEFAULT_SITE = "default"


def _site_field(**kwargs) -> pw.CharField:
    """A venue id column (``[[sites]]`` id). The default is the database's too, so rows written by
    hand-written SQL and rows from before the column existed belong to the default venue."""
    return pw.CharField(max_length=32, default=DEFAULT_SITE, constraints=[pw.SQL(f"DEFAULT '{DEFAULT_SITE}'")],
                        **kwargs)


def _flag_field() -> pw.BooleanField:
    return pw.BooleanField(default=False, constraints=[pw.SQL("DEFAULT FALSE")])


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Setting(BaseModel):
    """Small key/value state of the install (schema version, callback token)."""
    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.TextField()

    @classmethod
    def put(cls, key: str, value: str) -> None:
        """Set ``key`` (an upsert both SQLite and PostgreSQL speak; ``replace`` is SQLite's only)."""
        cls.insert(key=key, value=value).on_conflict(conflict_target=[cls.key], update={cls.value: value}).execute()


class Package(BaseModel):
    name = pw.CharField(max_length=64)
    name_sw = pw.CharField(max_length=64, null=True)   # the name in Kiswahili; None: the name in both languages
    price = pw.IntegerField()                       # whole KES
    duration_seconds = pw.IntegerField()
    data_cap_bytes = pw.BigIntegerField(null=True)  # None: unlimited
    rate_limit = pw.CharField(max_length=32, null=True)  # "rx/tx" e.g. "2M/5M" (client upload/download)
    devices = pw.IntegerField(default=1)            # how many MACs one purchase may use
    active = pw.BooleanField(default=True)
    position = pw.IntegerField(default=0)
    created_at = pw.DoubleField()
    #: the venue that sells it; None: every venue
    site = pw.CharField(max_length=32, null=True, index=True)
    #: time bought with it works at every venue (else only where it was bought)
    roams = _flag_field()

    @classmethod
    def sold_at(cls, sites, every_venue: bool = True) -> pw.Expression:
        """The condition "sold at one of the venues ``sites`` (ids)": their own packages and,
        unless ``every_venue`` is False, those sold at every venue."""
        own = cls.site.in_(list(sites))
        return (cls.site.is_null() | own) if every_venue else own


class Payment(BaseModel):
    """One STK push and its fate. ``status``: created → pending → success | failed |
    cancelled | timeout | error. ``created`` means the push is being sent."""
    checkout_request_id = pw.CharField(max_length=64, null=True, unique=True)
    merchant_request_id = pw.CharField(max_length=64, null=True)
    phone = pw.CharField(max_length=12)
    amount = pw.IntegerField()
    package = pw.ForeignKeyField(Package, backref="payments", on_delete="RESTRICT")
    mac = pw.CharField(max_length=17, null=True, index=True)
    client_ip = pw.CharField(max_length=45, null=True)
    status = pw.CharField(max_length=16, default="created", index=True)
    result_code = pw.CharField(max_length=32, null=True)   # text: codes may be non-numeric
    result_desc = pw.TextField(null=True)
    receipt = pw.CharField(max_length=32, null=True, unique=True)
    transaction_date = pw.CharField(max_length=14, null=True)
    paid_phone = pw.CharField(max_length=12, null=True)    # the PhoneNumber in the callback
    resolved_by = pw.CharField(max_length=16, null=True)   # callback | query | timeout | push
    login_context = pw.TextField(null=True)               # JSON: router login variables from the splash page
    created_at = pw.DoubleField(index=True)
    pushed_at = pw.DoubleField(null=True)
    completed_at = pw.DoubleField(null=True)
    next_query_at = pw.DoubleField(null=True, index=True)
    query_attempts = pw.IntegerField(default=0)
    last_error = pw.TextField(null=True)
    site = _site_field(index=True)                          # the venue it was made at (its M-Pesa account)
    lang = pw.CharField(max_length=8, null=True)            # the page's language at payment: its SMS speak it

    class Meta:
        # the reconcile job's two questions each tick, answered from the few live payments: with
        # single-column indexes, SQLite (with statistics: nearly every row is "success") walked a
        # year of payments by date instead, every tick (70 % of a core at 1,000,000 payments)
        indexes = ((("status", "created_at"), False), (("status", "next_query_at"), False))


class Callback(BaseModel):
    """Every callback body as received, stored before anything else happens to it."""
    received_at = pw.DoubleField(index=True)
    source_ip = pw.CharField(max_length=45, null=True)
    path = pw.CharField(max_length=255)
    body = pw.TextField()
    checkout_request_id = pw.CharField(max_length=64, null=True, index=True)
    # received → applied | duplicate | unmatched | flagged | malformed | error (could not be processed)
    state = pw.CharField(max_length=16, default="received", index=True)
    note = pw.TextField(null=True)
    processed_at = pw.DoubleField(null=True)


class Entitlement(BaseModel):
    """Time (and data) bought by one payment or voucher, usable by up to ``devices`` MACs."""
    payment = pw.ForeignKeyField(Payment, null=True, unique=True, backref="entitlements", on_delete="RESTRICT")
    package = pw.ForeignKeyField(Package, backref="entitlements", on_delete="RESTRICT")
    phone = pw.CharField(max_length=12, null=True)
    started_at = pw.DoubleField()
    expires_at = pw.DoubleField(index=True)
    data_cap_bytes = pw.BigIntegerField(null=True)
    bytes_used = pw.BigIntegerField(default=0)
    rate_limit = pw.CharField(max_length=32, null=True)
    devices = pw.IntegerField(default=1)
    status = pw.CharField(max_length=16, default="active", index=True)  # active | expired | exhausted | revoked
    login_user = pw.CharField(max_length=64, null=True, unique=True)  # username/password logins (vouchers)
    login_password = pw.CharField(max_length=64, null=True)
    ended_at = pw.DoubleField(null=True)
    end_reason = pw.CharField(max_length=32, null=True)
    site = _site_field(index=True)                          # where it was bought: where it works…
    roams = _flag_field()                                   # …unless its package roams (copied at purchase)


class Device(BaseModel):
    """A MAC bound to an entitlement. ``active`` bindings are what RADIUS looks up."""
    mac = pw.CharField(max_length=17)
    entitlement = pw.ForeignKeyField(Entitlement, backref="bindings", on_delete="CASCADE")
    active = pw.BooleanField(default=True)
    bound_at = pw.DoubleField()
    unbound_at = pw.DoubleField(null=True)

    class Meta:
        # covers RADIUS's lookup (access.authorize): the entitlement ids come from the index alone
        indexes = ((("mac", "active", "entitlement"), False),)


class AcctSession(BaseModel):
    """One router session as RADIUS accounting reports it (Start → Interim-Update… → Stop)."""
    nas = pw.CharField(max_length=45)
    acct_session_id = pw.CharField(max_length=64)
    mac = pw.CharField(max_length=17, null=True, index=True)
    entitlement = pw.ForeignKeyField(Entitlement, null=True, backref="acct_sessions", on_delete="SET NULL")
    ip = pw.CharField(max_length=45, null=True)
    username = pw.CharField(max_length=64, null=True)
    started_at = pw.DoubleField()
    updated_at = pw.DoubleField()
    stopped_at = pw.DoubleField(null=True)
    input_octets = pw.BigIntegerField(default=0)    # from the client (upload)
    output_octets = pw.BigIntegerField(default=0)   # to the client (download)
    session_time = pw.IntegerField(default=0)
    online = pw.BooleanField(default=True, index=True)
    terminate_cause = pw.CharField(max_length=32, null=True)
    updates = pw.IntegerField(default=0)
    site = _site_field()                                    # the venue of the NAS that reported it

    class Meta:
        indexes = ((("nas", "acct_session_id"), True),)


class Event(BaseModel):
    """The timeline: one row per step of a payment or a session, for the owner and for audits."""
    at = pw.DoubleField(index=True)
    kind = pw.CharField(max_length=32, index=True)
    payment = pw.ForeignKeyField(Payment, null=True, backref="events", on_delete="SET NULL")
    entitlement = pw.ForeignKeyField(Entitlement, null=True, backref="events", on_delete="SET NULL")
    mac = pw.CharField(max_length=17, null=True)
    message = pw.TextField(default="")


class Disconnect(BaseModel):
    """One device to cut off at one router, kept until the router confirms it is gone.

    pending → done (verified gone) | failing (still retried; shown to the owner) | cancelled
    (the device got new time before the cut went through).
    """
    mac = pw.CharField(max_length=17)
    router = pw.CharField(max_length=64)
    entitlement = pw.ForeignKeyField(Entitlement, null=True, backref="disconnects", on_delete="SET NULL")
    reason = pw.CharField(max_length=32)
    status = pw.CharField(max_length=16, default="pending", index=True)
    created_at = pw.DoubleField()
    next_at = pw.DoubleField(index=True)
    attempts = pw.IntegerField(default=0)
    last_error = pw.TextField(null=True)
    done_at = pw.DoubleField(null=True)


class Voucher(BaseModel):
    """A code sold for cash that buys a package's time without M-Pesa; redeemed once."""
    code = pw.CharField(max_length=16, unique=True)     # stored without separators, upper case
    package = pw.ForeignKeyField(Package, backref="vouchers", on_delete="RESTRICT")
    batch = pw.CharField(max_length=32, index=True)
    created_at = pw.DoubleField()
    redeemed_at = pw.DoubleField(null=True)
    entitlement = pw.ForeignKeyField(Entitlement, null=True, backref="vouchers", on_delete="SET NULL")
    revoked = pw.BooleanField(default=False)


class AdminUser(BaseModel):
    """An owner's (or staff) account for /admin. Only ``hotspotd admin create`` makes one."""
    username = pw.CharField(max_length=64, unique=True)
    password_hash = pw.CharField(max_length=255)
    created_at = pw.DoubleField()
    failed_logins = pw.IntegerField(default=0)
    locked_until = pw.DoubleField(null=True)
    last_login_at = pw.DoubleField(null=True)
    #: the venues this account sees, comma-separated ids; None: every venue (the owner)
    sites = pw.TextField(null=True)

    @property
    def site_list(self) -> list[str] | None:
        """The venue ids this account is limited to, or None when it sees every venue."""
        return None if self.sites is None else [s for s in self.sites.split(",") if s]


class JobRun(BaseModel):
    """When each scheduled job may next run, shared by every process on one database
    (:func:`hotspotd.storage.db.claim_run`)."""
    name = pw.CharField(max_length=32, primary_key=True)
    next_at = pw.DoubleField()


class DarajaToken(BaseModel):
    """The Daraja access token of one consumer key, shared by every client and process on this
    database: Daraja may take a token back when it issues the next (:mod:`hotspotd.daraja.tokens`
    reads and writes it, in hand-written SQL)."""
    account = pw.CharField(max_length=64, primary_key=True)    # sha256 of base URL and consumer key
    token = pw.TextField(null=True)
    refresh_at = pw.DoubleField(default=0)                     # epoch seconds: renew from then on
    expires_at = pw.DoubleField(default=0)
    credentials = pw.CharField(max_length=64, default="")      # sha256 of the key and secret it came from
    renewing_until = pw.DoubleField(default=0)                 # a process is fetching a new one until then


class SmsMessage(BaseModel):
    """One SMS to a customer (:mod:`hotspotd.sms.outbox`): queued, then sent with retries.
    ``key`` names what it is about (``receipt:<payment id>``, ``reminder:<entitlement id>:<end>``,
    ``voucher:<code>``): the same SMS is never queued twice. Its text is written when it is sent
    (the receipt code may come after the payment), and kept. ``status``: pending → sent | failed
    | dropped (no longer true: a reminder of a session that ended or was extended)."""
    key = pw.CharField(max_length=80, unique=True)
    kind = pw.CharField(max_length=16)                     # receipt | reminder | voucher
    phone = pw.CharField(max_length=12)
    lang = pw.CharField(max_length=8, default="en")
    site = _site_field()
    payment = pw.ForeignKeyField(Payment, null=True, backref="sms", on_delete="SET NULL")
    entitlement = pw.ForeignKeyField(Entitlement, null=True, backref="sms", on_delete="SET NULL")
    voucher = pw.CharField(max_length=16, null=True)       # the code a voucher SMS carries
    status = pw.CharField(max_length=16, default="pending")
    created_at = pw.DoubleField()
    next_at = pw.DoubleField()
    give_up_at = pw.DoubleField()
    attempts = pw.IntegerField(default=0)
    text = pw.TextField(null=True)
    provider_id = pw.CharField(max_length=64, null=True)   # the gateway's message id
    last_error = pw.TextField(null=True)
    sent_at = pw.DoubleField(null=True)

    class Meta:
        indexes = ((("status", "next_at"), False),)


class ManualAccount(BaseModel):
    """A device's account code for paying from the M-Pesa menu (C2B Pay Bill's "Account no."):
    short, typed by hand, one per device and venue (:mod:`hotspotd.c2b`)."""
    code = pw.CharField(max_length=12, unique=True)
    mac = pw.CharField(max_length=17)
    site = _site_field()
    created_at = pw.DoubleField()

    class Meta:
        indexes = ((("mac", "site"), True),)


class C2BTransaction(BaseModel):
    """A payment made from the M-Pesa menu, as Safaricom's confirmation (C2B) reported it, raw body
    kept. ``state``: granted (a payment and its time were made for a device) | unmatched (no
    device yet: claimable with its receipt in "Already paid?") | claimed | refused (not for a
    package: the owner sees it)."""
    trans_id = pw.CharField(max_length=32, unique=True)      # the M-Pesa receipt
    trans_time = pw.CharField(max_length=14, null=True)      # YYYYMMDDHHMMSS, Nairobi
    amount = pw.IntegerField()
    shortcode = pw.CharField(max_length=16)
    bill_ref = pw.CharField(max_length=32, default="")
    msisdn = pw.CharField(max_length=80, default="")         # as sent: a SHA-256 (v1) or masked (v2)
    kind = pw.CharField(max_length=16, default="")           # Pay Bill | Buy Goods
    site = _site_field()
    body = pw.TextField()
    received_at = pw.DoubleField(index=True)
    state = pw.CharField(max_length=16, index=True)
    payment = pw.ForeignKeyField(Payment, null=True, backref="c2b", on_delete="SET NULL")
    note = pw.TextField(null=True)


class MpesaTransaction(BaseModel):
    """A line of the shortcode's M-Pesa statement (Pull Transactions), kept once per TransID with
    what hotspotd made of it (:mod:`hotspotd.statement`). ``state``: known (a payment has its
    receipt) | receipt_added (a payment the STK query settled got its receipt here) | settled (a
    payment nobody told us of, found here and granted) | c2b (a payment from the menu, passed to
    :mod:`hotspotd.c2b`) | unmatched."""
    trans_id = pw.CharField(max_length=32, unique=True)
    at = pw.DoubleField(index=True)                          # epoch seconds
    amount = pw.IntegerField()
    msisdn = pw.CharField(max_length=80, default="")
    kind = pw.CharField(max_length=32, default="")
    bill_ref = pw.CharField(max_length=32, default="")
    shortcode = pw.CharField(max_length=16)
    site = _site_field()
    payment = pw.ForeignKeyField(Payment, null=True, backref="statement", on_delete="SET NULL")
    state = pw.CharField(max_length=16, index=True)
    pulled_at = pw.DoubleField()
    note = pw.TextField(null=True)


class ReceiptLookup(BaseModel):
    """An M-Pesa code typed into "Already paid?" that hotspotd never saw, asked of M-Pesa's
    Transaction Status (:mod:`hotspotd.lookups`). ``state``: asking | granted | refused | timeout | error."""
    receipt = pw.CharField(max_length=32, index=True)
    phone = pw.CharField(max_length=12)
    mac = pw.CharField(max_length=17)
    site = _site_field()
    state = pw.CharField(max_length=16, default="asking")
    conversation_id = pw.CharField(max_length=64, null=True, index=True)
    originator_id = pw.CharField(max_length=64, null=True, index=True)
    created_at = pw.DoubleField()
    answered_at = pw.DoubleField(null=True)
    reason = pw.CharField(max_length=32, null=True)          # why refused: a code the portal words
    note = pw.TextField(null=True)
    payment = pw.ForeignKeyField(Payment, null=True, backref="lookups", on_delete="SET NULL")


V1_MODELS = [Setting, Package, Payment, Callback, Entitlement, Device, AcctSession, Event]
ALL_MODELS = V1_MODELS + [Disconnect, Voucher, AdminUser, JobRun, DarajaToken, SmsMessage, ManualAccount,
                          C2BTransaction, MpesaTransaction, ReceiptLookup]
