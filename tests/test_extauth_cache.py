"""
The cache of the directory's answers (txxapi.extauth.cache) on a test
clock: entries expire after the TTL, the least recently used go past the
capacity, clearing drops everything and refuses answers asked for
before, and a TTL of 0 keeps nothing.  Its use by logins against a real
directory is in tests/test_extauth_ad.py.
"""

from twisted.internet.task import Clock

from txxapi.extauth.cache import DirectoryCache


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = DirectoryCache(clock, 10)
    cache.put("groups", "S-1", ["S-2"], cache.generation)
    clock.advance(9.9)
    assert cache.get("groups", "S-1") == ["S-2"]
    assert cache.get("information", "S-1") is None
    clock.advance(0.1)
    assert cache.get("groups", "S-1") is None
    assert len(cache) == 0


def test_least_recently_used_go_first():
    cache = DirectoryCache(Clock(), 10, capacity=2)
    for sid in ("S-1", "S-2"):
        cache.put("groups", sid, [sid], cache.generation)
    cache.get("groups", "S-1")
    cache.put("groups", "S-3", [], cache.generation)
    assert cache.get("groups", "S-2") is None
    assert cache.get("groups", "S-1") == ["S-1"]
    assert cache.get("groups", "S-3") == []


def test_clearing_refuses_older_answers():
    cache = DirectoryCache(Clock(), 10)
    cache.put("groups", "S-1", [], cache.generation)
    asked = cache.generation
    cache.clear()
    assert cache.get("groups", "S-1") is None
    cache.put("groups", "S-1", ["stale"], asked)
    assert cache.get("groups", "S-1") is None
    cache.put("groups", "S-1", ["fresh"], cache.generation)
    assert cache.get("groups", "S-1") == ["fresh"]


def test_no_ttl_keeps_nothing():
    cache = DirectoryCache(Clock(), 0)
    cache.put("groups", "S-1", [], cache.generation)
    assert cache.get("groups", "S-1") is None
