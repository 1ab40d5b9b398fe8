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
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

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


@dataclass
class LoginLimiter:
    """Failed logins, counted for the whole server process (every session together), not per session.

    Each check of a typed password holds one process-wide lock, and a wrong one keeps it for
    ``delay_s`` before answering: parallel sessions queue behind each other, so guessing is one try per
    ``delay_s`` for the server, not per browser tab (5 parallel sessions used to be answered in ~1.1 s
    each). After ``max_failures`` wrong passwords within ``window_s``, every login is refused for
    ``lockout_s`` (the right password too, so a guesser learns nothing during the lockout). Every
    failure is logged with its source (never the typed text)."""

    delay_s: float = 1.0
    max_failures: int = 10
    window_s: float = 600.0
    lockout_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _failures: deque = field(default_factory=deque)
    _locked_until: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def locked_for(self) -> float:
        """Seconds left of a lockout (0 when logins are accepted)."""
        return max(0.0, self._locked_until - self.clock())

    def attempt(self, typed: str | None, password: str, source: str = "unknown") -> tuple[bool, str | None]:
        """``(accepted, message)``: checks ``typed`` against ``password`` under the process-wide lock;
        the message says why a login was refused."""
        with self._lock:
            now = self.clock()
            if now < self._locked_until:
                log.warning("login refused during the lockout (source %s, %.0f s left)", source, self._locked_until - now)
                return False, f"Too many failed logins: try again in {self._locked_until - now:.0f} s."
            if password_matches(typed, password):
                return True, None
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()
            log.warning("failed login (source %s; %d failure(s) in the last %.0f s)", source, len(self._failures),
                        self.window_s)
            if len(self._failures) >= self.max_failures:
                self._locked_until = now + self.lockout_s
                self._failures.clear()
                log.warning("logins locked for %.0f s after %d failures", self.lockout_s, self.max_failures)
            self.sleep(self.delay_s)  # inside the lock: the next check waits for this one
            return False, "Wrong password."


#: the server's one limiter (Streamlit runs every session in one process)
LOGIN_LIMITER = LoginLimiter()
