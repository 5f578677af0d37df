"""Prometheus metrics: read from the counters in one process, added up across four real gunicorn workers."""

from __future__ import annotations

import os
import signal
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ProcessServer, free_port
from tests.support.waiting import wait_until

P = "flask_sse_stream_"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(registry).decode())


def value(found: dict, name: str, **labels: str) -> float:
    return found[(P + name, tuple(sorted(labels.items())))]


def test_metrics_are_the_counters_of_sse_stats(make_app, serve, client_for) -> None:
    registry = CollectorRegistry()
    app, sse = make_app(SSE_METRICS=registry, SSE_MAX_HISTORY=2, SSE_MAX_CONNECTIONS=3)
    sse.authorize(lambda channel: channel != "secret")
    port = serve(app).port
    for n in range(3):
        sse.send_new_event(data=n, id=True)
    assert client_for(port, "/stream?channel=secret").status == 403  # the limits come first: before it is full
    clients = [client_for(port), client_for(port, "/stream", {"Last-Event-ID": "0"})]
    clients.append(client_for(port, "/stream?channel=a&channel=b"))
    for client in clients:
        client.next_chunk()
    assert client_for(port).status == 503
    sse.send_new_event(data="live", channel="a")
    assert clients[2].next_event().data == "live"

    found, stats = scrape(registry), sse.stats
    assert value(found, "streams_open") == stats["streams"] == 3
    for name in ("events_sent", "bytes_written", "streams_opened", "replays_served", "events_replayed"):
        assert value(found, f"{name}_total") == stats[name], name
    assert value(found, "streams_refused_total", reason="limit") == 1
    assert value(found, "streams_refused_total", reason="authorization") == 1
    assert value(found, "streams_refused_total", reason="bad_request") == 0
    assert value(found, "send_seconds_count") == 4
    assert 0 < value(found, "send_seconds_sum") < 5
    assert value(found, "send_seconds_bucket", le="+Inf") == 4
    assert {value(found, "channel_streams_open", channel=c) for c in ("sse", "a", "b")} == {2, 1}


def test_per_channel_metrics_name_the_busiest_channels_and_sum_the_rest(make_app, serve, client_for) -> None:
    registry = CollectorRegistry()
    app, _ = make_app(SSE_METRICS=registry, SSE_METRICS_CHANNELS=2)
    port = serve(app).port
    for channel, count in (("busy", 3), ("second", 2), ("third", 1), ("fourth", 1)):
        for _ in range(count):
            client_for(port, f"/stream?channel={channel}").next_chunk()
    found = scrape(registry)
    named = {labels: v for (name, labels), v in found.items() if name == P + "channel_streams_open"}
    assert named == {(("channel", "busy"),): 3, (("channel", "second"),): 2}
    assert value(found, "other_channels_streams_open") == 2
    assert value(found, "streams_open") == 7


def test_without_metrics_nothing_is_registered(make_app) -> None:
    registry = CollectorRegistry()
    make_app(SSE_METRICS=False)
    make_app(SSE_METRICS=registry, SSE_METRICS_CHANNELS=0)
    assert not any(name.startswith(P) for name, _ in scrape(CollectorRegistry()))
    assert all(labels == () or name != P + "channel_streams_open" for name, labels in scrape(registry))


def test_by_default_the_metrics_are_in_prometheus_clients_registry(make_app) -> None:
    app, sse = make_app()
    sse.send_new_event(data="x")
    found = samples(generate_latest(prometheus_client.REGISTRY).decode())
    assert value(found, "events_sent_total") >= 1  # every app of this process that kept the default


def test_several_apps_on_one_registry_add_up(make_app) -> None:
    registry = CollectorRegistry()
    app_one, one = make_app(SSE_METRICS=registry)  # held: an SSE holds its apps weakly
    app_two, two = make_app(SSE_METRICS=registry)
    one.send_new_event(data="x")
    two.send_new_event(data="y")
    assert value(scrape(registry), "events_sent_total") == 2


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_an_invalid_metrics_setting_is_refused_naming_it(make_app, bad) -> None:
    with pytest.raises(TypeError, match="SSE_METRICS must be True"):
        make_app(SSE_METRICS=bad)


# -- four gunicorn workers, prometheus_client's multiprocess mode ----------------------

WORKERS = 4
STREAMS = 24


#: The worker classes the sums are checked under: gunicorn's gevent worker, and gevent-websocket's (issue 22).
WORKER_CLASSES = ["gevent", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"]


class Deployment:
    def __init__(self, tmp_path: Path, redis_server: RedisServer, worker_class: str = "gevent", **env: str) -> None:
        self.port = free_port()
        files = tmp_path / "prometheus"
        files.mkdir()
        command = [
            PYTHON, "-m", "gunicorn", "-c", "tests/apps/gunicorn_metrics.py", "-k", worker_class, "-w", str(WORKERS),
            "--no-control-socket", "-b", f"127.0.0.1:{self.port}", "tests.apps.metrics_app:create_app()",
        ]  # fmt: skip
        env = {"SSE_REDIS_URL": redis_server.url, "PROMETHEUS_MULTIPROC_DIR": str(files), **env}
        self.server = ProcessServer(command, self.port, env=env, log=tmp_path / "gunicorn.log")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def scrape(self) -> dict:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as answer:
            return samples(answer.read().decode())

    def publish(self, data: str, channel: str) -> None:
        body = urllib.parse.urlencode({"data": data, "channel": channel}).encode()
        with urllib.request.urlopen(self.url("/publish"), data=body, timeout=10) as answer:
            assert answer.status == 200

    def new_worker_serves(self, old: set[int]) -> bool:
        with urllib.request.urlopen(self.url("/info"), timeout=10) as answer:
            return int(answer.headers["X-Worker"]) not in old

    def workers(self) -> set[int]:
        children = psutil.Process(self.server.process.pid).children()
        return {child.pid for child in children if child.status() != psutil.STATUS_ZOMBIE}

    def wait_for_workers(self) -> None:
        """Until each worker has answered: one that still boots (importing the app) accepts nothing."""
        answered: set[int] = set()

        def all_answered() -> bool:
            with urllib.request.urlopen(self.url("/info"), timeout=10) as answer:
                answered.add(int(answer.headers["X-Worker"]))
            current = self.workers()
            return len(current) == WORKERS and current <= answered

        wait_until(all_answered, 30, what=f"all {WORKERS} workers to answer /info")


@pytest.fixture(params=WORKER_CLASSES)
def deployment(tmp_path, request) -> Iterator[Deployment]:
    redis_server = RedisServer(tmp_path)
    running = Deployment(tmp_path, redis_server, request.param)
    yield running
    running.server.stop()
    redis_server.stop()


def matches(deployment: Deployment, expected: dict[str, float], channels: dict[str, float]) -> bool:
    found = deployment.scrape()
    got = {name: found.get((P + name, ()), -1) for name in expected}
    got_channels = {c: found.get((P + "channel_streams_open", (("channel", c),)), 0) for c in channels}
    return got == expected and got_channels == channels


def test_four_workers_add_up_to_the_streams_really_open(deployment: Deployment) -> None:
    deployment.wait_for_workers()
    by_worker: dict[int, list[StreamClient]] = {}
    opened = 0
    while opened < STREAMS or len(by_worker) < WORKERS:
        assert opened < 200, f"streams reached only workers {sorted(by_worker)}"
        client = StreamClient(deployment.port, f"/stream?channel={'even' if opened % 2 == 0 else 'odd'}")
        client.next_chunk()  # subscribed
        by_worker.setdefault(int(client.headers["x-worker"]), []).append(client)
        opened += 1
    try:
        for n in range(5):
            deployment.publish(f"event {n}", "even")
        half = opened // 2
        expected = {"streams_open": opened, "streams_opened_total": opened, "events_sent_total": 5}
        wait_until(
            lambda: matches(deployment, {**expected, "send_seconds_count": 5}, {"even": opened - half, "odd": half}),
            what=f"the sums of {opened} streams and 5 events in /metrics",
        )
        # A worker killed outright: gunicorn's child_exit hook drops its gauges,
        # its counters stay in the sums.
        victim, gone = next(iter(by_worker.items()))
        os.kill(victim, signal.SIGKILL)
        for client in gone:
            client.wait_closed()
        left = opened - len(gone)
        wait_until(
            lambda: matches(deployment, {"streams_open": left, "streams_opened_total": opened}, {}),
            what=f"{left} streams open once worker {victim} died",
        )
        # gunicorn's master waits out the graceful timeout for a worker that
        # gets SIGTERM while it boots: stop only once the new one serves.
        wait_until(lambda: deployment.new_worker_serves(set(by_worker)), what="the new worker to serve")
    finally:
        for clients in by_worker.values():
            for client in clients:
                client.close()


def test_a_busy_channel_gets_its_series_after_many_others_came_and_went(tmp_path) -> None:
    # Channels a client names (say ?channel=junk-17) must not use up the per-channel series for good.
    redis_server = RedisServer(tmp_path)
    deployment = Deployment(tmp_path, redis_server, SSE_METRICS_CHANNELS="2")
    try:
        deployment.wait_for_workers()
        for wave in range(30):  # in turn the busiest channel of the workers, far past the old budget of 4 x 2
            junk = [StreamClient(deployment.port, f"/stream?channel=junk-{wave}") for _ in range(8)]
            for client in junk:
                client.next_chunk()
            label = (P + "channel_streams_open", (("channel", f"junk-{wave}"),))
            wait_until(lambda: deployment.scrape().get(label), what=f"junk-{wave} named in /metrics")  # noqa: B023
            for client in junk:
                client.close()
        busy = [StreamClient(deployment.port, "/stream?channel=busy") for _ in range(6)]
        quiet = [StreamClient(deployment.port, "/stream?channel=quiet") for _ in range(2)]
        third = StreamClient(deployment.port, "/stream?channel=third")
        for client in [*busy, *quiet, third]:
            client.next_chunk()

        def series() -> dict:
            found = deployment.scrape()
            named = {labels: v for (name, labels), v in found.items() if name == P + "channel_streams_open"}
            return {"named": named, "other": found.get((P + "other_channels_streams_open", ()))}

        # Only the 2 busiest channels have a series (no junk label is left, even at 0); the third is summed.
        expected = {"named": {(("channel", "busy"),): 6, (("channel", "quiet"),): 2}, "other": 1}
        wait_until(lambda: series() == expected, what=f"busy and quiet named in /metrics, got {series()}")
        for client in [*busy, *quiet, third]:
            client.close()
    finally:
        deployment.server.stop()
        redis_server.stop()
