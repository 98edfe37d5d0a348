"""Who may talk to the service: the API key (header or HttpOnly session cookie, never a URL),
the Host header check against DNS rebinding, and access logs without query strings.

A browser cannot put a header on an ``<img src>``; instead of the key in the URL (where
access logs, proxies and browser history keep it) the page trades the key once, in a header,
for a cookie that scripts cannot read (HttpOnly), that other sites cannot make the browser
send (SameSite=Strict), and that is worth nothing after the server restarts (an HMAC of the
key with a per-process secret).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class KeyCheck:
    """Validates the API key sent in a header, or the session cookie the page got for it."""

    def __init__(self, key: str | None):
        self.key = key.encode() if key else None
        self._session = hmac.new(secrets.token_bytes(32), self.key, hashlib.sha256).hexdigest() if key else None

    @property
    def required(self) -> bool:
        return self.key is not None

    def valid_key(self, given: str | None) -> bool:
        # Constant time, on bytes: compare_digest refuses non-ASCII str (a 500 otherwise).
        return given is not None and self.key is not None and secrets.compare_digest(given.encode("utf-8", "replace"), self.key)

    def session_token(self) -> str:
        return self._session

    def allows(self, header: str | None, cookie: str | None) -> bool:
        if self.key is None:
            return True
        if header is not None:
            return self.valid_key(header)
        return cookie is not None and secrets.compare_digest(cookie.encode("utf-8", "replace"), self._session.encode())


def default_allowed_hosts(bind: str) -> set[str]:
    """The bind address and the loopback names; on a wildcard bind also this machine's names."""
    hosts = {bind.strip("[]").lower(), *LOOPBACK_NAMES}
    if bind in WILDCARD_HOSTS:
        hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return hosts


def host_name(header: str) -> str:
    """The host part of a Host header: ``example.org:8000`` -> ``example.org``, ``[::1]:80`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class AllowedHosts:
    """Refuses requests whose Host header names no allowed host: a page on another site whose
    name an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own name as Host."""

    def __init__(self, hosts, bind: str):
        names = set(hosts) if hosts else default_allowed_hosts(bind)
        self.any = "*" in names
        self.hosts = {host_name(h) for h in names if h != "*"}

    def allows(self, header: str | None) -> bool:
        return self.any or (header is not None and host_name(header) in self.hosts)


class RedactQuery(logging.Filter):
    """Drops the query string from uvicorn's access log lines: whatever a client puts in a URL
    (a key, a token) is not written to the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True
