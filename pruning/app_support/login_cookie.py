"""A login that survives a reload for a bounded time: a signed, expiring cookie, without Streamlit.

Streamlit keeps a login in its session, and a reload is a new session, so the team typed the password
again on every reload in a meeting. After a successful login the app now writes the cookie
:data:`COOKIE_NAME` = ``v1.<expiry>.<nonce>.<signature>`` (:func:`make_cookie`): ``expiry`` in Unix
seconds (now + :func:`login_hours`), a random nonce, and HMAC-SHA256 over both with a key derived from
the app's password and a server secret (:func:`server_secret`, a random file of 32 bytes kept in the cache
directory, mode 600). A new session opens without the form when :func:`cookie_is_valid`: the signature
matches, the expiry has not passed and is no further away than the configured lifetime.

What it protects against and what not (docs/security.md): a forged or edited cookie fails the signature;
an old one expires; a changed password or a deleted secret file revokes every cookie at once; Log out
removes this browser's cookie. Whoever holds a valid cookie is logged in until it expires — the cookie is
written by the page's script (Streamlit cannot set an HttpOnly cookie), so the app's own escaping of user
text (``plain``) is what keeps script off the page; serve the app over TLS so the cookie is sent only
encrypted (it is marked ``Secure`` on https) and ``SameSite=Strict``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

COOKIE_NAME = "pruning_lab_login"
HOURS_ENV = "PRUNING_LAB_LOGIN_HOURS"
#: how long a login lasts across reloads when PRUNING_LAB_LOGIN_HOURS is not set (a working day)
DEFAULT_HOURS = 12.0
#: the longest lifetime accepted (a week); 0 turns the cookie off (every reload asks again)
MAX_HOURS = 168.0
_VERSION = "v1"


def login_hours(environ: Mapping[str, str]) -> float:
    """The login cookie's lifetime in hours from ``PRUNING_LAB_LOGIN_HOURS`` (default 12; 0 = off).
    Raises ValueError naming the bad value and what is accepted."""
    text = environ.get(HOURS_ENV, "").strip()
    if not text:
        return DEFAULT_HOURS
    try:
        hours = float(text)
    except ValueError:
        raise ValueError(f"{HOURS_ENV}={text!r} is not a number; accepted: 0 (off) to {MAX_HOURS:g} hours") from None
    if not 0.0 <= hours <= MAX_HOURS:
        raise ValueError(f"{HOURS_ENV}={text!r} is out of range; accepted: 0 (off) to {MAX_HOURS:g} hours")
    return hours


def server_secret(path: Path) -> bytes:
    """32 random bytes kept in ``path`` (created with mode 600 on first use; deleting it revokes every
    login cookie). A file that is not 32 bytes is replaced."""
    try:
        data = path.read_bytes()
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return data


def _key(password: str, secret: bytes) -> bytes:
    return hmac.new(secret, b"pruning-lab-login:" + password.encode("utf-8"), hashlib.sha256).digest()


def _signature(key: bytes, expiry: int, nonce: str) -> str:
    return hmac.new(key, f"{_VERSION}.{expiry}.{nonce}".encode(), hashlib.sha256).hexdigest()


def make_cookie(password: str, secret: bytes, hours: float, now: float | None = None) -> str:
    """The cookie's value for a login at ``now`` (Unix seconds) lasting ``hours``."""
    expiry = int((time.time() if now is None else now) + hours * 3600)
    nonce = secrets.token_hex(8)
    return f"{_VERSION}.{expiry}.{nonce}.{_signature(_key(password, secret), expiry, nonce)}"


def cookie_is_valid(value: str | None, password: str, secret: bytes, hours: float, now: float | None = None) -> bool:
    """True when ``value`` was made by :func:`make_cookie` with this password and secret, has not
    expired at ``now`` and expires no later than ``hours`` from ``now`` (a lifetime shortened since
    shortens every cookie). Never raises on a malformed value."""
    if not value or hours <= 0:
        return False
    parts = str(value).split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit():
        return False
    expiry, nonce, signature = int(parts[1]), parts[2], parts[3]
    now = time.time() if now is None else now
    if not now < expiry <= now + hours * 3600 + 1:
        return False
    return hmac.compare_digest(signature, _signature(_key(password, secret), expiry, nonce))


def set_cookie_script(value: str, hours: float) -> str:
    """The script that stores the cookie in this browser (``SameSite=Strict``, ``Secure`` on https)."""
    max_age = int(hours * 3600)
    return ("<script>document.cookie = " + repr(f"{COOKIE_NAME}={value}; path=/; max-age={max_age}; SameSite=Strict")
            + " + (location.protocol === 'https:' ? '; Secure' : '');</script>")


def clear_cookie_script() -> str:
    """The script that removes the cookie from this browser (Log out)."""
    return f"<script>document.cookie = '{COOKIE_NAME}=; path=/; max-age=0; SameSite=Strict';</script>"
