"""The signed, expiring login cookie (issue 29: a reload asked for the password again): what it accepts
and what it refuses, on values where a plausible wrong check (no signature, no expiry, no bound on the
lifetime, a key without the password or the secret) would let a cookie through."""

from __future__ import annotations

import stat

import pytest

from pruning.app_support.login_cookie import (
    COOKIE_NAME, DEFAULT_HOURS, clear_cookie_script, cookie_is_valid, login_hours, make_cookie, server_secret,
    set_cookie_script,
)

SECRET = bytes(range(32))
NOW = 1_800_000_000.0


def test_a_fresh_cookie_is_valid_until_it_expires() -> None:
    value = make_cookie("pw", SECRET, hours=12, now=NOW)
    assert cookie_is_valid(value, "pw", SECRET, hours=12, now=NOW)
    assert cookie_is_valid(value, "pw", SECRET, hours=12, now=NOW + 11.9 * 3600)
    assert not cookie_is_valid(value, "pw", SECRET, hours=12, now=NOW + 12 * 3600)  # expired
    assert make_cookie("pw", SECRET, 12, NOW) != value  # a random nonce per login


def test_another_password_or_secret_revokes_every_cookie() -> None:
    value = make_cookie("pw", SECRET, hours=12, now=NOW)
    assert not cookie_is_valid(value, "new password", SECRET, hours=12, now=NOW)
    assert not cookie_is_valid(value, "pw", bytes(32), hours=12, now=NOW)


def test_an_edited_cookie_fails_its_signature() -> None:
    version, expiry, nonce, signature = make_cookie("pw", SECRET, hours=1, now=NOW).split(".")
    later = f"{version}.{int(expiry) + 3600}.{nonce}.{signature}"  # expiry pushed back by an hour
    assert not cookie_is_valid(later, "pw", SECRET, hours=12, now=NOW)
    flipped = f"{version}.{expiry}.{nonce}.{signature[:-1]}{'0' if signature[-1] != '0' else '1'}"
    assert not cookie_is_valid(flipped, "pw", SECRET, hours=12, now=NOW)


def test_a_shortened_lifetime_shortens_every_cookie_and_zero_turns_it_off() -> None:
    value = make_cookie("pw", SECRET, hours=48, now=NOW)
    assert cookie_is_valid(value, "pw", SECRET, hours=48, now=NOW)
    assert not cookie_is_valid(value, "pw", SECRET, hours=12, now=NOW)  # expires beyond the lifetime now set
    assert cookie_is_valid(value, "pw", SECRET, hours=12, now=NOW + 40 * 3600)  # within 12 h of its expiry
    assert not cookie_is_valid(make_cookie("pw", SECRET, 12, NOW), "pw", SECRET, hours=0, now=NOW)


@pytest.mark.parametrize("value", [None, "", "v1", "v1.x.y.z", "v2.1900000000.ab.cd", "v1.-5.ab.cd",
                                   "v1.1800000100.ab", "v1.1800000100.ab.cd.ef", f"{COOKIE_NAME}=v1"])
def test_malformed_values_are_refused_without_an_exception(value) -> None:
    assert not cookie_is_valid(value, "pw", SECRET, hours=12, now=NOW)


def test_lifetime_setting_names_a_bad_value() -> None:
    assert login_hours({}) == DEFAULT_HOURS == 12.0
    assert login_hours({"PRUNING_LAB_LOGIN_HOURS": "0"}) == 0.0
    assert login_hours({"PRUNING_LAB_LOGIN_HOURS": " 2.5 "}) == 2.5
    with pytest.raises(ValueError, match=r"PRUNING_LAB_LOGIN_HOURS='a day' is not a number; accepted: 0 \(off\) to 168"):
        login_hours({"PRUNING_LAB_LOGIN_HOURS": "a day"})
    with pytest.raises(ValueError, match="'-1' is out of range"):
        login_hours({"PRUNING_LAB_LOGIN_HOURS": "-1"})
    with pytest.raises(ValueError, match="'200' is out of range"):
        login_hours({"PRUNING_LAB_LOGIN_HOURS": "200"})


def test_the_server_secret_is_kept_private_and_stable(tmp_path) -> None:
    path = tmp_path / "cache" / "login-secret"
    first = server_secret(path)
    assert len(first) == 32 and server_secret(path) == first  # kept across restarts
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_bytes(b"short")  # damaged: replaced, which revokes every cookie
    assert server_secret(path) != first and len(path.read_bytes()) == 32


def test_scripts_set_a_strict_cookie_and_clear_it() -> None:
    script = set_cookie_script("v1.1.ab.cd", hours=12)
    assert f"{COOKIE_NAME}=v1.1.ab.cd; path=/; max-age=43200; SameSite=Strict" in script
    assert "location.protocol === 'https:' ? '; Secure'" in script
    assert f"{COOKIE_NAME}=; path=/; max-age=0" in clear_cookie_script()
