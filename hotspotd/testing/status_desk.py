"""The Daraja simulator's Transaction Status, as ../shared/reference/daraja.md ("C2B, Pull
Transactions, Transaction Status, Reversal in detail") describes it.

``POST /mpesa/transactionstatus/v1/query`` (bearer token) answers at once ``{OriginatorConversationID,
ConversationID, ResponseCode: "0", ResponseDescription}`` and ``delay`` seconds later POSTs the
result to the ResultURL: ``{"Result": {ResultType, ResultCode, ResultDesc, OriginatorConversationID,
ConversationID, TransactionID, ResultParameters: {ResultParameter: [{Key, Value}]}}}`` with
DebitPartyName ("2547XXXXXXXX - JOHN DOE"), CreditPartyName ("<shortcode> - <name>"), Amount,
TransactionStatus ("Completed"), ReceiptNo, InitiatedTime, FinalisedTime. As real fixtures do, one
key is spelled with spaces (``"Originator Conversation ID"`` in the Result) and one parameter has no
Value. The SecurityCredential must decrypt, with the simulator's own key (its certificate is
:attr:`StatusDesk.certificate_pem`, the stand-in for Safaricom's), to the initiator's password;
otherwise, or for another initiator, ResultCode 2001 ("outside STK 2001 is never wrong PIN"). A
receipt the ledger does not have: ResultCode R000002 (a choice: the reference names that code for
Reversal only). :meth:`StatusDesk.time_out_next` posts the next answer to the QueueTimeOutURL instead.
"""
from __future__ import annotations

import base64
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ..daraja.client import NAIROBI


class StatusDesk:
    def __init__(self, delay: float = 0.3):
        self.delay = delay
        self.initiator_name = "testapi"
        self.initiator_password = "Safaricom999!*!"
        self._lock = threading.Lock()
        self._key = None
        self._cert_pem: bytes | None = None
        self._time_out = 0
        self.results: list[tuple[str, dict]] = []      # (url, body) posted

    @property
    def certificate_pem(self) -> bytes:
        """The certificate whose key the simulator decrypts SecurityCredentials with (made once)."""
        with self._lock:
            if self._cert_pem is None:
                self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hotspotd simulator (Daraja stand-in)")])
                now = datetime.now(timezone.utc)
                cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                        .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
                        .sign(self._key, hashes.SHA256()))
                self._cert_pem = cert.public_bytes(serialization.Encoding.PEM)
            return self._cert_pem

    def time_out_next(self, n: int = 1) -> None:
        with self._lock:
            self._time_out += n

    def _credential_ok(self, body: dict) -> bool:
        self.certificate_pem                      # the key exists
        try:
            plain = self._key.decrypt(base64.b64decode(str(body.get("SecurityCredential") or ""), validate=True),
                                      padding.PKCS1v15())
        except ValueError:
            return False
        return body.get("Initiator") == self.initiator_name and secrets.compare_digest(
            plain, self.initiator_password.encode())

    def query(self, body: dict, rows) -> tuple[int, dict]:
        for name in ("ResultURL", "QueueTimeOutURL", "TransactionID", "PartyA"):
            if not str(body.get(name) or "").strip():
                return 400, {"requestId": "", "errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {name}"}
        originator, conversation = f"{secrets.randbelow(10**5)}-{secrets.randbelow(10**8)}-1", \
            f"AG_{datetime.now(NAIROBI).strftime('%Y%m%d')}_{secrets.token_hex(10)}"
        threading.Thread(target=self._answer, args=(dict(body), rows, originator, conversation), daemon=True,
                         name="status-answer").start()
        return 200, {"OriginatorConversationID": originator, "ConversationID": conversation, "ResponseCode": "0",
                     "ResponseDescription": "Accept the service request successfully."}

    def _answer(self, body: dict, rows, originator: str, conversation: str) -> None:
        time.sleep(self.delay)
        receipt = str(body["TransactionID"]).strip().upper()
        party = str(body["PartyA"]).strip()
        result = {"ResultType": 0, "Originator Conversation ID": originator, "ConversationID": conversation,
                  "TransactionID": secrets.token_hex(5).upper()}
        row = next((r for r in rows if r.transaction_id == receipt and r.shortcode == party), None)
        if not self._credential_ok(body):
            result.update(ResultCode=2001, ResultDesc="The initiator information is invalid.")
        elif row is None:
            result.update(ResultCode="R000002", ResultDesc="The OriginalTransactionID is invalid.")
        else:
            when = datetime.fromtimestamp(row.at, NAIROBI).strftime("%Y%m%d%H%M%S")
            result.update(ResultCode=0, ResultDesc="The service request is processed successfully.",
                          ResultParameters={"ResultParameter": [
                              {"Key": "DebitPartyName", "Value": f"{row.phone} - JOHN DOE"},
                              {"Key": "CreditPartyName", "Value": f"{row.shortcode} - {row.organization}"},
                              {"Key": "OriginatorConversationID", "Value": originator},
                              {"Key": "InitiatedTime", "Value": int(when)},
                              {"Key": "DebitAccountType", "Value": "MMF Account For Customer"},
                              {"Key": "DebitPartyCharges"},
                              {"Key": "TransactionReason"},
                              {"Key": "ReasonType", "Value": "Pay Bill Online" if row.kind.endswith("Online")
                               else row.kind},
                              {"Key": "TransactionStatus", "Value": "Completed"},
                              {"Key": "FinalisedTime", "Value": int(when)},
                              {"Key": "Amount", "Value": float(row.amount)},
                              {"Key": "ConversationID", "Value": conversation},
                              {"Key": "ReceiptNo", "Value": row.transaction_id}]})
        with self._lock:
            timed_out = self._time_out > 0
            self._time_out -= 1 if timed_out else 0
        url = str(body["QueueTimeOutURL"] if timed_out else body["ResultURL"])
        payload = {"Result": result}
        with self._lock:
            self.results.append((url, payload))
        try:
            requests.post(url, json=payload, timeout=(3.0, 10.0))
        except requests.RequestException:
            pass
