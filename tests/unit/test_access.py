"""Group masks, who sees which account, a session's token binding (docs/protocol.md section 3)."""

from __future__ import annotations

import pytest

from manager_gateway.protocol.errors import InvalidToken
from manager_gateway.session.access import Access, SessionType, compile_masks
from manager_gateway.session.session import BALANCE_EVENT, TRADE_EVENT, Session
from manager_gateway.session.tokens import TokenService

NOW = 1_800_000_000.0
EXP = int(NOW) + 100


def access(session_type: SessionType, *groups: str, subject: str = "42") -> Access:
    return Access(subject, session_type, groups, float(EXP))


# -- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "group", "matches"),
    [
        ("demo*", "demo", True),
        ("demo*", "demo-usd", True),
        ("demo*", "xdemo", False),
        ("demo*", "dem", False),
        ("*vip", "vip", True),
        ("*vip", "real-vip", True),
        ("*vip", "vip-real", False),
        ("real-*-usd", "real-a-usd", True),
        ("real-*-usd", "real--usd", True),
        ("real-*-usd", "real-eur-gbp-usd", True),
        ("real-*-usd", "real-usd", False),
        ("real-*-usd", "real-a-usdx", False),
        ("*", "", True),
        ("*", "anything at all", True),
        ("demo", "demo", True),
        ("demo", "demo2", False),
        ("demo", "Demo", False),
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "acb", False),
    ],
)
def test_wildcard_masks(mask: str, group: str, matches: bool) -> None:
    """`*` matches any run of characters (including none); the whole group name must match."""
    assert (compile_masks((mask,)).fullmatch(group) is not None) is matches


@pytest.mark.parametrize(
    ("mask", "group", "matches"),
    [
        ("demo.usd", "demo.usd", True),
        ("demo.usd", "demoXusd", False),
        ("vip+", "vip+", True),
        ("vip+", "vipp", False),
        ("[ab]", "[ab]", True),
        ("[ab]", "a", False),
        ("a|b", "a|b", True),
        ("a|b", "a", False),
        ("a|b", "b", False),
        ("(x)?", "(x)?", True),
        ("(x)?", "", False),
        ("^demo$", "^demo$", True),
        ("^demo$", "demo", False),
        ("back\\slash", "back\\slash", True),
        ("d.*", "d.anything", True),
        ("d.*", "dx", False),
    ],
)
def test_regex_metacharacters_are_literal(mask: str, group: str, matches: bool) -> None:
    """Only `*` is special in a mask; `.`, `+`, `[`, `|`, `(`, `?`, `^`, `$`, `\\` are literal."""
    assert (compile_masks((mask,)).fullmatch(group) is not None) is matches


def test_several_masks_any_matches() -> None:
    """With several masks a group is seen when any one of them matches it in full."""
    pattern = compile_masks(("demo*", "*vip", "real-*-usd"))
    assert [
        g
        for g in ("demo1", "gold-vip", "real-x-usd", "real-x-eur", "vip2", "xdemo")
        if pattern.fullmatch(g)
    ] == ["demo1", "gold-vip", "real-x-usd"]


def test_no_masks_match_nothing() -> None:
    """An empty mask list matches no group, not even the empty name."""
    pattern = compile_masks(())
    assert pattern.fullmatch("") is None
    assert pattern.fullmatch("demo") is None


# -- who sees what -------------------------------------------------------------------------


def test_admin_sees_all() -> None:
    """ADMIN sees every group and account whatever its masks say."""
    admin = access(SessionType.ADMIN, "nothing-matches-this")
    assert admin.sees_group("demo")
    assert admin.sees_group("real-vip")
    assert admin.sees_account(1, "demo")
    assert admin.sees_account(99999, "other")


def test_admin_without_groups_sees_all() -> None:
    """ADMIN sees all even with an empty mask list."""
    assert access(SessionType.ADMIN).sees_account(5, "demo")


@pytest.mark.parametrize("session_type", [SessionType.MANAGER, SessionType.DEALER])
def test_staff_see_only_matching_groups(session_type: SessionType) -> None:
    """MANAGER and DEALER see exactly the accounts whose group matches one of their masks."""
    staff = access(session_type, "demo*", "*vip")
    assert staff.sees_account(1, "demo")
    assert staff.sees_account(2, "demo-eur")
    assert staff.sees_account(3, "gold-vip")
    assert not staff.sees_account(4, "real")
    assert not staff.sees_account(5, "vip-real")
    assert staff.sees_group("demo-x")
    assert not staff.sees_group("real")


@pytest.mark.parametrize("session_type", [SessionType.MANAGER, SessionType.DEALER])
def test_staff_login_does_not_matter(session_type: SessionType) -> None:
    """For staff the account's login plays no part: their own login in another group is hidden."""
    staff = access(session_type, "demo", subject="7")
    assert not staff.sees_account(7, "real")
    assert staff.sees_account(8, "demo")


def test_user_sees_only_own_login() -> None:
    """A USER session sees its own login (the token's `sub`) and no other, whatever the group."""
    user = access(SessionType.USER, "*", subject="1001")
    assert user.own_login == 1001
    assert user.sees_account(1001, "demo")
    assert user.sees_account(1001, "any-group")
    assert not user.sees_account(1002, "demo")
    assert not user.sees_group("demo")


def test_user_with_non_numeric_subject_sees_nothing() -> None:
    """A USER whose `sub` is not a login sees no account at all."""
    user = access(SessionType.USER, "*", subject="alice")
    assert user.own_login is None
    assert not user.sees_account(0, "demo")
    assert not user.sees_account(1, "demo")


def test_mask_cache_is_per_access() -> None:
    """Repeated checks give the same answers (the group cache is per session)."""
    first = access(SessionType.MANAGER, "demo")
    second = access(SessionType.MANAGER, "real")
    for _ in range(2):
        assert first.sees_group("demo") and not first.sees_group("real")
        assert second.sees_group("real") and not second.sees_group("demo")


# -- session binding -----------------------------------------------------------------------


def issue(
    tokens: TokenService,
    session_type: SessionType = SessionType.MANAGER,
    subject: str = "42",
    exp: int = EXP,
) -> str:
    return tokens.issue(subject, session_type, ["demo*"], exp)


def test_presented_token_binds(tokens: TokenService) -> None:
    """A valid token authenticates and becomes the session's bound token."""
    session = Session()
    assert not session.ever_authenticated
    token = issue(tokens)
    granted = session.authenticate(token, tokens, NOW)
    assert granted.subject == "42" and granted.type is SessionType.MANAGER
    assert session.token == token
    assert session.access is granted
    assert session.ever_authenticated


def test_later_requests_may_omit_token(tokens: TokenService) -> None:
    """After binding, a request without a token gets the bound access."""
    session = Session()
    granted = session.authenticate(issue(tokens), tokens, NOW)
    assert session.authenticate(None, tokens, NOW + 1) is granted
    assert session.auth_failures == 0


def test_missing_token_on_unbound_session(tokens: TokenService) -> None:
    """A request without a token on a session that never bound one is InvalidToken."""
    session = Session()
    with pytest.raises(InvalidToken):
        session.authenticate(None, tokens, NOW)
    assert session.auth_failures == 1
    assert session.access is None and session.token is None


def test_last_valid_token_is_bound(tokens: TokenService) -> None:
    """A second valid token replaces the first; token-less requests then use the second."""
    session = Session()
    session.authenticate(issue(tokens, SessionType.MANAGER, "1"), tokens, NOW)
    second = issue(tokens, SessionType.ADMIN, "2")
    session.authenticate(second, tokens, NOW)
    bound = session.authenticate(None, tokens, NOW)
    assert (bound.subject, bound.type) == ("2", SessionType.ADMIN)
    assert session.token == second


@pytest.mark.parametrize(
    "bad",
    ["garbage", "", 123, "a.b.c"],
    ids=["garbage", "empty-string", "int", "three-parts"],
)
def test_invalid_presented_token_no_fallback(tokens: TokenService, bad: object) -> None:
    """An invalid presented token is refused although a valid one is bound; the binding stays."""
    session = Session()
    good = issue(tokens)
    granted = session.authenticate(good, tokens, NOW)
    with pytest.raises(InvalidToken):
        session.authenticate(bad, tokens, NOW)
    assert session.auth_failures == 1
    assert session.token == good
    assert session.authenticate(None, tokens, NOW) is granted


def test_expired_presented_token_no_fallback(tokens: TokenService) -> None:
    """An expired presented token is refused even though the bound token is still valid."""
    session = Session()
    session.authenticate(issue(tokens, exp=EXP + 1000), tokens, NOW)
    stale = issue(tokens, exp=int(NOW) - 1)
    with pytest.raises(InvalidToken):
        session.authenticate(stale, tokens, NOW)
    assert session.auth_failures == 1


def test_foreign_signed_token_no_fallback(tokens: TokenService) -> None:
    """A token signed with another secret is refused on a bound session."""
    session = Session()
    session.authenticate(issue(tokens), tokens, NOW)
    foreign = TokenService(b"another-secret-of-at-least-32-bytes!!")
    with pytest.raises(InvalidToken):
        session.authenticate(issue(foreign, SessionType.ADMIN), tokens, NOW)
    assert session.access is not None and session.access.type is SessionType.MANAGER


def test_failures_count_and_reset(tokens: TokenService) -> None:
    """Consecutive invalid tokens are counted; one success resets the count to zero."""
    session = Session()
    for expected in (1, 2, 3):
        with pytest.raises(InvalidToken):
            session.authenticate("bad", tokens, NOW)
        assert session.auth_failures == expected
    session.authenticate(issue(tokens), tokens, NOW)
    assert session.auth_failures == 0
    with pytest.raises(InvalidToken):
        session.authenticate("bad", tokens, NOW)
    assert session.auth_failures == 1
    session.authenticate(None, tokens, NOW)  # the bound token also counts as a success
    assert session.auth_failures == 0


def test_expiry_checked_on_every_use(tokens: TokenService) -> None:
    """The bound token stops working at `exp`, omitted or presented again, and counts failures."""
    session = Session()
    token = issue(tokens)
    session.authenticate(token, tokens, NOW)
    assert session.authenticate(None, tokens, EXP - 1).subject == "42"
    assert session.authenticate(token, tokens, EXP - 1).subject == "42"
    with pytest.raises(InvalidToken):
        session.authenticate(None, tokens, EXP)
    with pytest.raises(InvalidToken):
        session.authenticate(token, tokens, EXP)
    with pytest.raises(InvalidToken):
        session.authenticate(None, tokens, EXP + 3600)
    assert session.auth_failures == 3


def test_fresh_token_after_expiry(tokens: TokenService) -> None:
    """After the bound token expired, a fresh token binds and token-less requests work again."""
    session = Session()
    session.authenticate(issue(tokens), tokens, NOW)
    with pytest.raises(InvalidToken):
        session.authenticate(None, tokens, EXP)
    fresh = issue(tokens, subject="43", exp=EXP + 1000)
    session.authenticate(fresh, tokens, EXP)
    assert session.authenticate(None, tokens, EXP + 1).subject == "43"
    assert session.auth_failures == 0


def test_hears_event_channels_by_default(tokens: TokenService) -> None:
    """An authenticated session hears both event channels; an unauthenticated one hears none."""
    session = Session()
    assert not session.hears(TRADE_EVENT, NOW)
    assert not session.hears(BALANCE_EVENT, NOW)
    session.authenticate(issue(tokens), tokens, NOW)
    assert session.hears(TRADE_EVENT, NOW)
    assert session.hears(BALANCE_EVENT, NOW)
    assert not session.hears("EURUSD", NOW)


def test_hears_nothing_after_expiry(tokens: TokenService) -> None:
    """Once the bound token expires the session receives no events."""
    session = Session()
    session.authenticate(issue(tokens), tokens, NOW)
    assert session.hears(TRADE_EVENT, EXP - 1)
    assert not session.hears(TRADE_EVENT, EXP)
    assert not session.hears(BALANCE_EVENT, EXP)
    assert not session.hears(TRADE_EVENT, EXP + 1)


def test_hears_nothing_on_removed_channel(tokens: TokenService) -> None:
    """A removed event channel is not heard; the other one still is; re-adding restores it."""
    session = Session()
    session.authenticate(issue(tokens), tokens, NOW)
    session.event_channels.discard(TRADE_EVENT)
    assert not session.hears(TRADE_EVENT, NOW)
    assert session.hears(BALANCE_EVENT, NOW)
    session.event_channels.discard(BALANCE_EVENT)
    assert not session.hears(BALANCE_EVENT, NOW)
    session.event_channels.add(TRADE_EVENT)
    assert session.hears(TRADE_EVENT, NOW)


def test_session_counts_follow_the_bound_token_type(tokens: TokenService) -> None:
    """Shared counts by session type move as tokens bind, rebind to another type, and close."""
    counts = [0] * len(SessionType)
    first, second = Session(counts), Session(counts)
    first.authenticate(issue(tokens, SessionType.MANAGER, "1"), tokens, NOW)
    manager_token = first.token
    second.authenticate(issue(tokens, SessionType.ADMIN, "2"), tokens, NOW)
    assert counts == [0, 1, 0, 1, 0, 0]
    first.authenticate(manager_token, tokens, NOW)  # the bound token again: no change
    first.authenticate(None, tokens, NOW)
    with pytest.raises(InvalidToken):
        first.authenticate("not-a-token", tokens, NOW)  # refused: the bound token stays
    assert counts == [0, 1, 0, 1, 0, 0]
    first.authenticate(issue(tokens, SessionType.DEALER, "1"), tokens, NOW)
    assert counts == [0, 0, 1, 1, 0, 0]
    first.close()
    first.close()
    assert counts == [0, 0, 0, 1, 0, 0]
    unbound = Session(counts)
    unbound.close()
    second.close()
    assert counts == [0] * len(SessionType)
    assert first.closed and second.closed and unbound.closed
