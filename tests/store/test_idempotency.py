"""Idempotency records owned by the store package: their life cycle, and a store outage
raised as the package's own error."""

from __future__ import annotations

import pytest

from oddsfeed.core.errors import StoreError
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import IdempotencyRecord, IdempotencyStoreError, Store, record_key


async def test_record_claim_done_release(store: Store) -> None:
    """A record is claimed once, answers its stored result, and is free again on release."""
    rec = IdempotencyRecord(store, record_key("abc"), ttl_s=30)
    assert await rec.get() is None
    assert await rec.claim("d1") is True
    assert await rec.claim("d1") is False
    assert await rec.get() == {"state": "pending", "digest": "d1"}
    await rec.done("d1", 201, {"id": "m1"})
    assert await rec.get() == {"state": "done", "digest": "d1", "status": 201,
                               "body": {"id": "m1"}}
    await rec.release()
    assert await rec.get() is None
    assert await rec.claim("d2") is True


async def test_record_on_a_stopped_store_raises_its_store_error() -> None:
    """With the Valkey process stopped, a record call raises IdempotencyStoreError (a
    StoreError, so the API answers 503) instead of a redis exception."""
    server = EmbeddedValkey().start()
    store = await Store.connect(server.url)
    try:
        rec = IdempotencyRecord(store, record_key("gone"), ttl_s=30)
        assert await rec.claim("d") is True
        server.stop()
        with pytest.raises(IdempotencyStoreError) as info:
            await rec.get()
        assert isinstance(info.value, StoreError)
        assert "idempotency record" in str(info.value)
    finally:
        await store.close()
        server.stop()
