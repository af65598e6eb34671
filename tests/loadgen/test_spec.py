"""LoadSpec validation, the --mix syntax, the unrolled mix and the request data."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from gateway_bench.spec import (
    LOAD_COMMANDS,
    LoadSpec,
    RequestSource,
    mix_table,
    parse_mix,
    request_data,
)


def test_parse_mix_reads_weights_and_bare_names() -> None:
    """ "A=3,B" is A weighing 3 and B weighing 1; a repeated name adds up."""
    assert parse_mix("CreditInSync=3,GetAccountByLogin") == {
        "CreditInSync": 3.0,
        "GetAccountByLogin": 1.0,
    }
    assert parse_mix(" BalanceIn = 0.5 , BalanceIn=1.5") == {"BalanceIn": 2.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Nope=1", "unknown command 'Nope'"),
        ("AddUser", "unknown command 'AddUser'"),
        ("CreditInSync=0", "must be a positive number"),
        ("CreditInSync=-2", "must be a positive number"),
        ("CreditInSync=nan", "must be a positive number"),
        ("CreditInSync=x", "not a number"),
        ("CreditInSync,", "empty command name"),
    ],
)
def test_parse_mix_refuses_bad_entries(text: str, message: str) -> None:
    """Unknown commands, non-positive or non-numeric weights and empty names are refused."""
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_mix_table_has_exact_proportions() -> None:
    """A 3:1 mix unrolls into 750 and 250 of 1000, spread evenly (never 4 of one in a row)."""
    table = mix_table({"CreditInSync": 3.0, "GetAccountByLogin": 1.0})
    assert Counter(table) == {"CreditInSync": 750, "GetAccountByLogin": 250}
    assert "GetAccountByLogin" in table[:4]


def test_every_login_gets_the_whole_mix() -> None:
    """In and Out alternating over two logins: each login gets as many of one as of the other
    (pairing both with the request number would send all In to one login, all Out to the
    other)."""
    source = RequestSource({"BalanceInSync": 1.0, "BalanceOutSync": 1.0}, range(10, 12))
    pairs = Counter(
        (command, data["login"]) for command, data in (source.next() for _ in range(400))
    )
    assert set(pairs.values()) == {100} and len(pairs) == 4


def test_request_data_has_cents_and_the_sign_of_the_command() -> None:
    """Finance amounts have at most 2 decimals (in their shortest repr, as the gateway reads
    them), positive for *In and negative for *Out; reads carry only the login; HealthCheck
    nothing."""
    for seq in range(1, 2000):
        amount = request_data("BalanceIn", 7, seq)["amount"]
        assert 1.0 <= amount <= 9.99 and Decimal(repr(amount)).as_tuple().exponent >= -2
    assert request_data("CreditOutSync", 7, 5)["amount"] < 0
    assert request_data("CreditIn", 7, 5) == {"login": 7, "amount": 2.85, "comment": "loadgen"}
    assert request_data("GetAccountByLogin", 7, 5) == {"login": 7}
    assert request_data("HealthCheck", 7, 5) == {}
    assert all(request_data(command, 1, 1) is not None for command in LOAD_COMMANDS)


def test_defaults_are_valid() -> None:
    """The default spec validates: 50 connections x 4 in flight for 10 s of CreditInSync."""
    spec = LoadSpec()
    spec.validate()
    assert spec.closed_loop and spec.mix == {"CreditInSync": 1.0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"connections": 0}, "connections"),
        ({"inflight": 0}, "inflight"),
        ({"rate": 0.0}, "rate"),
        ({"rate": -5.0}, "rate"),
        ({"duration_s": None, "requests": None}, "duration or a number of requests"),
        ({"duration_s": 0.0}, "duration"),
        ({"requests": 0}, "requests"),
        ({"warmup_s": -1.0}, "warmup"),
        ({"timeout_s": 0.0}, "timeout"),
        ({"accounts": 0}, "accounts"),
        ({"mix": {}}, "at least one command"),
        ({"mix": {"Bogus": 1.0}}, "unknown command"),
    ],
)
def test_validate_names_the_bad_setting(changes: dict[str, Any], message: str) -> None:
    """Each impossible setting is a ValueError that names it."""
    with pytest.raises(ValueError, match=message):
        LoadSpec(**changes).validate()


def test_public_settings_hide_the_token() -> None:
    """The settings written to a report say a token was set, never what it is."""
    public = LoadSpec(token="secret.jwt").public()
    assert public["token"] == "<set>" and "secret.jwt" not in repr(public)
    assert LoadSpec().public()["token"] is None
