"""Alert webhooks: target URLs checked against internal addresses, bodies signed with HMAC.

A webhook URL must be http(s) and its host must resolve only to public addresses: loopback,
link-local (169.254/16 with the cloud metadata service, fe80::/10), private (10/8, 172.16/12,
192.168/16, fc00::/7), unspecified, multicast and reserved addresses are refused (ADVERSARIAL
D12, the same rules as B22) unless the caller passes ``allow_private=True``. The API never
does; only tests and a trusted operator script may.

Delivery is best effort: a short timeout, failures logged and counted in
``konan_alert_webhook_failures_total``, never raised, so one dead receiver cannot stop the
evaluation of other rules.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx2
import orjson
from prometheus_client import Counter

from konan.core.errors import InvalidInput
from konan.monitoring.metrics import _get_or_create

log = logging.getLogger("konan.monitoring.webhooks")

TIMEOUT_SECONDS = 5.0
SIGNATURE_HEADER = "X-Konan-Signature"
TIMESTAMP_HEADER = "X-Konan-Timestamp"
MAX_URL_LENGTH = 1000

WEBHOOK_FAILURES = _get_or_create(
    Counter,
    "konan_alert_webhook_failures",
    "Alert webhooks that could not be delivered (connection error, timeout or non-2xx answer).",
)
WEBHOOK_SENT = _get_or_create(
    Counter, "konan_alert_webhooks_sent", "Alert webhooks delivered with a 2xx answer."
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public target, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _refusal(address.ipv4_mapped)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInput(f"webhook_url host {host!r} does not resolve ({exc})") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def validate_webhook_url(url: str, *, allow_private: bool = False) -> str:
    """The URL unchanged when it may receive alerts; InvalidInput (422) naming why not."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"webhook_url is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidInput("webhook_url must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(
            f"webhook_url scheme {parts.scheme or '(none)'!r} is not allowed; use http or https"
        )
    host = parts.hostname
    if not host:
        raise InvalidInput("webhook_url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("webhook_url must not carry credentials; sign with the HMAC header")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("webhook_url has an invalid port") from None
    if allow_private:
        return url
    for address in _resolve(host, port):
        reason = _refusal(address)
        if reason is not None:
            raise InvalidInput(
                f"webhook_url host {host!r} resolves to a {reason} address ({address}); "
                "alerts may only be sent to public addresses"
            )
    return url


def signing_secret(jwt_secret: str, rule_id: int) -> bytes:
    """The per-rule webhook key, derived from the server secret: no column to store or leak."""
    return hmac.new(
        jwt_secret.encode(), f"konan-alert-webhook:{rule_id}".encode(), hashlib.sha256
    ).digest()


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def deliver(
    url: str,
    payload: dict[str, Any],
    secret: bytes,
    *,
    allow_private: bool = False,
    timeout: float = TIMEOUT_SECONDS,
    transport: httpx2.BaseTransport | None = None,
) -> bool:
    """POST ``payload`` signed; True on a 2xx answer. Never raises."""
    body = orjson.dumps(payload)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        TIMESTAMP_HEADER: str(int(time.time())),
        "User-Agent": "konan-alerts",
    }
    try:
        # Checked again at send time: a DNS answer can change after the rule was saved.
        validate_webhook_url(url, allow_private=allow_private)
        with httpx2.Client(
            timeout=timeout, follow_redirects=False, transport=transport, trust_env=False
        ) as client:
            response = client.post(url, content=body, headers=headers)
        if 200 <= response.status_code < 300:
            WEBHOOK_SENT.inc()
            return True
        log.warning("alert webhook answered %s", response.status_code)
    except Exception as exc:  # a receiver's failure must never stop the evaluation
        log.warning("alert webhook failed: %s: %s", type(exc).__name__, exc)
    WEBHOOK_FAILURES.inc()
    return False
