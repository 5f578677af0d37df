"""Per-channel state lives as long as the channel's stored events, plus SSE_TOMBSTONE_TTL.

With per-user or per-job channels, most channels are used for a while and
never again. Once a channel's store has expired (SSE_HISTORY_TTL), the
library keeps only a tombstone, the last id the store held, so that a client
resuming from before it is told it missed events (the reset event), for
SSE_TOMBSTONE_TTL seconds; then nothing of the channel is left, in the process
or in Redis, and a client resuming from an id that old gets the reset event.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer
from tests.support.streams import until_end
from tests.support.waiting import wait_until

CHANNELS = 20_000
TTL = 0.2


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def send_to_many_channels(sse, count: int) -> None:
    for n in range(count):
        sse.send_new_event(data="job done", id=True, channel=f"job-{n}")


@pytest.mark.parametrize("channels", [CHANNELS, 800], ids=["many alive at once", "a few hundred alive at once"])
def test_in_process_memory_returns_to_where_it_was_once_channels_expire(make_app, channels: int) -> None:
    # Channels expire while the sends go on (each send sweeps what has expired), so what is
    # alive at once depends on the machine's speed: the growth is taken at its peak. (A long
    # lifetime would keep 20,000 alive at once, and Python's dicts keep their peak size.)
    # A slow machine keeps only a few hundred alive at once: their dicts must shrink too.
    app, sse = make_app(SSE_HISTORY_TTL=TTL, SSE_TOMBSTONE_TTL=TTL)
    sse.send_new_event(data="warm up", id=True, channel="warm-up")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        send_to_many_channels(sse, channels)
        grown = tracemalloc.get_traced_memory()[1] - before
        assert grown > 150_000, "the test does not measure what it means to"

        def released() -> bool:
            sse.history("job-0")  # any send or read of the store sweeps what has expired
            gc.collect()
            return tracemalloc.get_traced_memory()[0] - before < 50_000

        wait_until(released, 10, "per-channel state released after the TTL and the tombstones' TTL")
    finally:
        tracemalloc.stop()
    sse.close()


def test_redis_keys_of_expired_channels_disappear(redis_server: RedisServer, make_app) -> None:
    prefix = "lifetime"
    app, sse = make_app(
        SSE_REDIS_URL=redis_server.url, SSE_REDIS_PREFIX=prefix, SSE_HISTORY_TTL=3.0, SSE_TOMBSTONE_TTL=1.0
    )
    try:
        with redis_server.client() as client:
            # Each channel's marks are there right after its event, set to expire with the store
            # and the tombstone (checked one by one: however slow the machine, none has expired yet).
            for n in range(2_000):
                sse.send_new_event(data="job done", id=True, channel=f"job-{n}")
                assert 0 < client.pttl(f"{{{prefix}}}:marks:job-{n}") <= 4_000

            def few_keys_left() -> bool:
                sse.send_new_event(data="still sending", id=True, channel="busy")
                return len(list(client.scan_iter(f"*{prefix}*"))) < 20

            wait_until(few_keys_left, 20, "the keys of expired channels gone")
    finally:
        sse.close()


@pytest.mark.parametrize("backend", ["in-process", "redis"])
def test_a_client_resuming_after_the_tombstone_expired_gets_the_reset_event(
    redis_server: RedisServer, make_app, serve, client_for, backend: str
) -> None:
    config = {"SSE_HISTORY_TTL": TTL, "SSE_TOMBSTONE_TTL": TTL}
    if backend == "redis":
        config.update(SSE_REDIS_URL=redis_server.url, SSE_REDIS_PREFIX="tombstones")
    app, sse = make_app(**config)
    try:
        port = serve(app).port
        first, last = (sse.send_new_event(data=data, id=True, channel="job") for data in ("first", "last"))
        wait_until(lambda: sse.history("job") == {}, 10, "the store of job expired")

        # The tombstone: from its last id nothing was missed, from before it something was.
        assert resets(client_for, port, sse, last) == 0
        assert resets(client_for, port, sse, first) == 1

        # Once the tombstone is gone too, the library no longer knows: a reset.
        def forgotten() -> bool:
            sse.send_new_event(data="elsewhere", id=True, channel="other")
            return resets(client_for, port, sse, last) == 1

        wait_until(forgotten, 10, "a reset for an id older than the tombstones")
    finally:
        sse.close()


def resets(client_for, port: int, sse, resume: int | None) -> int:
    """How many reset events a stream of ``job`` that resumes from ``resume`` receives.

    (The live-only end-of-test marker goes to a channel of its own: events of
    ``job`` itself, live-only ones too, keep its tombstone.)
    """
    client = client_for(port, "/stream?channel=job&channel=marker", {"Last-Event-ID": str(resume)})
    return sum(m.event == "sse-reset" for m in until_end(client, sse, "marker"))
