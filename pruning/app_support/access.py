"""Who may use the app: the optional password and the bind-address warning, without Streamlit.

The password comes from the environment variable ``PRUNING_LAB_PASSWORD`` or, failing that, from
Streamlit secrets (``password = "..."`` in ``.streamlit/secrets.toml``); none set = no password.
``app.py`` shows only a password form until :func:`password_matches` accepts the typed text, and
keeps :func:`session_token` of the password in the session (a changed password logs every session
out). docs/security.md describes the threat model and the settings.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

PASSWORD_ENV = "PRUNING_LAB_PASSWORD"
SECRETS_KEY = "password"


def configured_password(environ: Mapping[str, str], secrets: Mapping[str, Any] | None = None) -> str | None:
    """The app's password: ``PRUNING_LAB_PASSWORD`` when set and not blank, else the secrets'
    ``password`` when it is a non-blank string, else None (the app is open to whoever reaches it)."""
    value = environ.get(PASSWORD_ENV, "")
    if value.strip():
        return value
    secret = (secrets or {}).get(SECRETS_KEY)
    if isinstance(secret, str) and secret.strip():
        return secret
    return None


def password_matches(typed: str | None, password: str) -> bool:
    """Constant-time comparison of the typed text with the password (``hmac.compare_digest``)."""
    return hmac.compare_digest((typed or "").encode("utf-8"), password.encode("utf-8"))


def session_token(password: str) -> str:
    """What a logged-in session keeps: a digest of the password it was let in with, never the
    password itself; when the configured password changes, the stored token no longer matches."""
    return hashlib.sha256(b"pruning-lab-session:" + password.encode("utf-8")).hexdigest()


def session_is_open(stored: Any, password: str | None) -> bool:
    """True when no password is configured, or ``stored`` is the token of the current one."""
    if password is None:
        return True
    return isinstance(stored, str) and hmac.compare_digest(stored, session_token(password))


def is_loopback(address: str | None) -> bool:
    """True when a server bound to ``address`` is reachable from this machine only: 127.0.0.0/8,
    ::1 or ``localhost``. An empty address (Streamlit's default: every interface), 0.0.0.0, ::
    or any other host name or address is not."""
    host = (address or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_server_warning(address: str | None, password: str | None) -> str | None:
    """The banner text for a server that anyone on the network can use (bound to a non-loopback
    address and no password), else None."""
    if password is not None or is_loopback(address):
        return None
    where = f"address {address!r}" if (address or "").strip() else "every network interface"
    return (
        f"This app listens on {where} without a password: anyone who reaches the port can launch, cancel "
        f"and retry jobs and annotate runs. Set `{PASSWORD_ENV}` (or `password` in Streamlit secrets), bind "
        "to 127.0.0.1, or put an authenticating proxy in front (docs/security.md)."
    )
