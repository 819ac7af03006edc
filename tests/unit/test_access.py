"""API keys and rate limits: parsing, constant-time identification, token buckets."""

from __future__ import annotations

import pytest

from services.gateway.access import Access, RateLimiter, parse_keys

pytestmark = pytest.mark.unit

KEYS = [
    "app:app-key-0123456789abcdef:search",
    "ops:ops-key-0123456789abcdef:admin",
    "cms:cms-key-0123456789abcd:ingest",
]


def test_keys_parse_and_scopes_apply() -> None:
    app, ops, cms = parse_keys(KEYS)
    assert app.allows("search") and not app.allows("ingest")
    assert ops.allows("search") and ops.allows("ingest") and ops.allows("admin")
    assert cms.allows("ingest") and not cms.allows("search")


@pytest.mark.parametrize(
    "entry",
    ["noscopes:key-0123456789abcdef:", "short:abc:search", "x:key-0123456789abcdef:delete", "a:b", "::search"],
)
def test_bad_key_entries_are_refused_without_echoing_the_key(entry: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_keys([entry])
    assert "key-0123456789abcdef" not in str(err.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_keys([KEYS[0], KEYS[0]])


def test_identify_matches_whole_keys_only() -> None:
    access = Access(parse_keys(KEYS), RateLimiter(0, 1))
    assert access.identify("app-key-0123456789abcdef") is not None
    for wrong in ("", "app-key-0123456789abcde", "app-key-0123456789abcdefX", "APP-KEY-0123456789ABCDEF"):
        assert access.identify(wrong) is None


def test_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.acquire("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("k", now=0.0) == pytest.approx(0.5)
    assert limiter.acquire("other", now=0.0) == 0.0  # buckets are per key
    assert limiter.acquire("k", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert RateLimiter(rate=0, burst=1).acquire("k") == 0.0  # rate 0: unlimited
