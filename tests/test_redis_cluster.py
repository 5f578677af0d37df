"""On a Redis Cluster (``SSE_REDIS_CLUSTER = True``): every key and message of an app in one slot.

The app's keys share the hash tag ``{prefix}``, so one node holds them all,
its scripts run there atomically, and the sharded SPUBLISH/SSUBSCRIBE keep its
messages on that shard. ``SSE_REDIS_URL`` may name any node. The cluster here
is real: three masters with a replica each.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_cluster import RedisCluster
from tests.support.resuming import ResumingClient
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("cluster")))
    yield cluster
    cluster.stop()


def prefix_away_from(cluster: RedisCluster, name: str) -> str:
    """A prefix whose slot is not on the node of the URL the apps are given: they must find it."""
    for n in range(100):
        prefix = f"{name}{n}"
        if cluster.node_of(f"{{{prefix}}}") is not cluster.nodes[0]:
            return prefix
    raise LookupError("every prefix landed on the first node")


@pytest.mark.parametrize("subscribe", ["channels", "app"])
def test_streams_on_a_cluster_get_live_and_stored_events_sent_by_another_process(
    cluster, make_app, serve, client_for, subscribe
) -> None:
    prefix = prefix_away_from(cluster, f"live-{subscribe}-")
    config = dict(SSE_REDIS_URL=cluster.url, SSE_REDIS_CLUSTER=True, SSE_REDIS_PREFIX=prefix)
    config.update(SSE_REDIS_SUBSCRIBE=subscribe)
    app, sse = make_app(**config)
    other_app, sender = make_app(**config)
    try:
        port = serve(app).port
        stream = client_for(port, "/stream?channel=news&channel=sport")
        first = sender.send_new_event(data="goal", id=True, channel="sport")
        sender.send_new_event(data="not stored", channel="news")
        second = sender.send_new_event(data="rain", id=True, channel="news")
        got = [(m.id, m.data) for m in stream.events(3, timeout=10)]
        assert got == [(first, "goal"), (None, "not stored"), (second, "rain")]

        # Stored on the node of the app's slot, and only there.
        master = cluster.node_of(f"{{{prefix}}}")
        with master.client() as client:
            assert client.llen(f"{{{prefix}}}:store:news") == 1
        for node in cluster.nodes:
            if node is not master and node is not cluster.replica_of(master):
                with node.client() as client:
                    assert client.keys(f"{{{prefix}}}*") == [], f"keys of {prefix} on port {node.port}"

        resumed = client_for(port, "/stream?channel=news&channel=sport", {"Last-Event-ID": str(first)})
        assert [(m.id, m.data) for m in resumed.events(1, timeout=10)] == [(second, "rain")]
        assert [event.data for event in sse.history("news").values()] == ["rain"]
    finally:
        sse.close()
        sender.close()


def test_a_failover_of_the_apps_master_loses_no_event_and_gives_none_twice(cluster, make_app, serve) -> None:
    # The old master gives the slot away and drops the sharded subscriptions
    # with a SUNSUBSCRIBE nobody asked for: the listener subscribes again on
    # the new master and catches its streams up from the store.
    prefix = prefix_away_from(cluster, "failover-")
    config = dict(SSE_REDIS_URL=cluster.url, SSE_REDIS_CLUSTER=True, SSE_REDIS_PREFIX=prefix)
    app, sse = make_app(**config)
    other_app, sender = make_app(**config)
    accepted: list[int] = []
    stop = threading.Event()

    def send_all_along() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                accepted.append(sender.send_new_event(data=f"event {n}", id=True, channel="news"))
            except ConnectionError:
                pass  # refused while the slot moves: the caller knows it was not sent

    try:
        port = serve(app).port
        client = ResumingClient(port, "/stream?channel=news")
        sending = threading.Thread(target=send_all_along)
        sending.start()
        try:
            wait_until(lambda: len(accepted) >= 20, 10, "events sent before the failover")
            cluster.fail_over(cluster.node_of(f"{{{prefix}}}"))
            before = len(accepted)
            wait_until(lambda: len(accepted) >= before + 20, 30, "events sent after the failover")
        finally:
            stop.set()
            sending.join(10)
        try:
            items = client.read_until(lambda items: len(items) >= len(accepted) or "reset" in items, 30)
        finally:
            client.close()
        assert [item[0] for item in items if item != "reset"] == accepted
        assert "reset" not in items
    finally:
        sse.close()
        sender.close()
