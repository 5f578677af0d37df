"""Access control on open streams across four gunicorn workers on Redis, and in Chromium.

``tests/apps/access.py`` admits ``?user=<name>`` unless banned (a set in
Redis, so every worker knows), as an ``Admission`` for that subject, until
``?exp=``; ``POST /ban`` bans the user and ends their streams, as a log-out
would. Streams are spread over the four workers, so an ending reaches three
workers other than the one that ends it.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import browser as chromium
from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ProcessServer, free_port
from tests.support.waiting import wait_until
from tests.support.workers import Gunicorn, ended_within, open_streams, worker_of

APP = "tests.apps.access:create_app()"
#: SSE_COUNT_INTERVAL of these tests, and how soon a killed worker's streams must drop out of the counts.
COUNT_INTERVAL = 0.2
EXPIRY = 15 * COUNT_INTERVAL
_names = itertools.count()


def name(what: str) -> str:
    return f"{what}{next(_names)}"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


def start(log: Path, redis_server: RedisServer) -> Gunicorn:
    env = {"SSE_COUNT_INTERVAL": str(COUNT_INTERVAL), "SSE_KEEPALIVE": "0.5", "SSE_RETRY": "200"}
    return Gunicorn(log, redis_server, APP, **env)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Gunicorn]:
    running = start(tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", redis_server)
    yield running
    running.stop()


def read(clients: list[StreamClient], data: str) -> None:
    for client in clients:
        assert client.next_event(10).data == data, f"worker {worker_of(client)}"


def test_ending_by_subject_or_channel_reaches_every_worker_within_a_second_and_ends_only_those(
    fleet, client_for
) -> None:
    alice, bob, news, mail = name("alice"), name("bob"), name("news"), name("mail")
    alices = open_streams(fleet, client_for, f"/stream?user={alice}&channel={news}", at_least=8)
    bobs_news = open_streams(fleet, client_for, f"/stream?user={bob}&channel={news}", at_least=8)
    bobs_mail = open_streams(fleet, client_for, f"/stream?user={bob}&channel={mail}", at_least=8)
    first = fleet.publish(data="before", id="1", channel=news).body["id"]
    read(alices + bobs_news, "before")

    started = time.monotonic()
    assert fleet.request("POST", "/ban", user=alice).status == 200
    by_subject = ended_within(alices, started, 1.0)
    assert max(by_subject) <= 1.0, f"the last of alice's streams ended after {max(by_subject):.2f} s{fleet.why()}"
    mail_sent = fleet.publish(data="mail while ending", id="1", channel=mail).body["id"]
    read(bobs_mail, "mail while ending")
    started = time.monotonic()
    assert fleet.request("POST", "/end", channel=mail).status == 200
    by_channel = ended_within(bobs_mail, started, 1.0)
    assert max(by_channel) <= 1.0, f"the last mail stream ended after {max(by_channel):.2f} s{fleet.why()}"

    second = fleet.publish(data="after", id="1", channel=news).body["id"]
    read(bobs_news, "after")  # untouched, on every worker
    refused = client_for(fleet.port, f"/stream?user={alice}&channel={news}", {"Last-Event-ID": str(first)})
    assert refused.status == 403
    later = fleet.publish(data="mail after", id="1", channel=mail).body["id"]
    resumed = client_for(fleet.port, f"/stream?user={bob}&channel={mail}", {"Last-Event-ID": str(mail_sent)})
    assert [(m.id, m.data) for m in resumed.events(1)] == [(later, "mail after")]
    assert second > first


def test_expiry_ends_a_stream_within_100_ms_of_its_time_on_every_worker(fleet, client_for) -> None:
    expires_at = time.time() + 1.0
    clients = open_streams(fleet, client_for, f"/stream?user={name('carol')}&exp={expires_at}", at_least=4)
    for client in clients:
        client.wait_closed(5)
        assert client.clean_end
    ended_at = time.time()  # the last one
    assert ended_at <= expires_at + 0.1, f"ended {ended_at - expires_at:.3f} s after the expiry{fleet.why()}"


def test_counts_match_the_open_streams_of_every_worker(fleet, client_for) -> None:
    news, mail = name("news"), name("mail")
    both = open_streams(fleet, client_for, f"/stream?user={name('dan')}&channel={news}&channel={mail}", at_least=6)
    only_news = open_streams(fleet, client_for, f"/stream?user={name('eve')}&channel={news}", at_least=6)

    def counted() -> dict[str, int]:
        by_channel = fleet.request("GET", "/counts").body["by_channel"]
        return {channel: by_channel.get(channel, 0) for channel in (news, mail)}

    def one_channel() -> dict[str, int]:
        answer = fleet.request("GET", f"/counts?channel={mail}").body
        return {mail: answer["one"]} if answer["all"] >= len(both) + len(only_news) else {}

    # open_streams closes the streams it does not keep, and a closed stream
    # stays counted until its worker learns it is gone (two keepalives):
    # the counts settle on the streams kept.
    expected = {news: len(both) + len(only_news), mail: len(both)}
    wait_until(lambda: counted() == expected and one_channel() == {mail: len(both)}, 5, "counts of all workers")
    for client in both:
        client.close()
    wait_until(lambda: counted() == {news: len(only_news), mail: 0}, 3, "closed streams to leave the counts")


def test_a_killed_workers_streams_leave_the_counts_within_their_expiry(tmp_path, redis_server, client_for) -> None:
    running = start(tmp_path / "gunicorn.log", redis_server)
    try:
        channel = name("news")
        clients = open_streams(running, client_for, f"/stream?user={name('fay')}&channel={channel}", at_least=8)

        def counted() -> int:
            return int(running.request("GET", "/counts").body["by_channel"].get(channel, 0))

        wait_until(lambda: counted() == len(clients), 3, "the counts of every worker")
        victim = worker_of(clients[0])
        killed = [client for client in clients if worker_of(client) == victim]
        os.kill(victim, signal.SIGKILL)
        psutil.Process(victim).wait(10)
        started = time.monotonic()
        wait_until(lambda: counted() == len(clients) - len(killed), EXPIRY + 2, "the killed worker's streams to leave")
        assert time.monotonic() - started <= EXPIRY + 2 * COUNT_INTERVAL
    finally:
        running.stop()


def test_a_revoked_page_closes_its_event_source_and_gets_nothing_more_while_another_goes_on(fleet, browser) -> None:
    alice, bob, channel = name("alice"), name("bob"), name("room")
    pages = {}
    for user in (alice, bob):
        page = chromium.new_page(browser)
        chromium.load(page, f"http://127.0.0.1:{fleet.port}/page?user={user}&channel={channel}")
        pages[user] = page
    try:
        fleet.publish(data="hello", id="1", channel=channel)
        for page in pages.values():
            assert [e["data"] for e in chromium.wait_received(page, 1)] == ["hello"]

        assert fleet.request("POST", "/ban", user=alice).status == 200
        pages[alice].wait_for_function("() => window.source.readyState === EventSource.CLOSED")
        fleet.publish(data="after", id="1", channel=channel)
        assert [e["data"] for e in chromium.wait_received(pages[bob], 2)] == ["hello", "after"]
        assert [e["data"] for e in chromium.received(pages[alice])] == ["hello"]
    finally:
        for page in pages.values():
            page.context.close()


def test_expiry_ends_a_stream_within_100_ms_under_flask_run(tmp_path, client_for) -> None:
    # werkzeug's threaded server, not monkey-patched: the stream's thread waits for its deadline.
    port = free_port()
    command = [
        PYTHON, "-m", "flask", "--app", APP.removesuffix("()"), "run", "--host", "127.0.0.1", "--port", str(port),
        "--with-threads", "--no-reload", "--no-debugger",
    ]  # fmt: skip
    server = ProcessServer(command, port, log=tmp_path / "flask.log")
    try:
        expires_at = time.time() + 1.0
        client = client_for(port, f"/stream?user=gus&exp={expires_at}")
        assert client.status == 200
        client.wait_closed(5)
        ended_at = time.time()
        assert expires_at - 0.005 <= ended_at <= expires_at + 0.1, f"{ended_at - expires_at:+.3f} s{server.output}"
    finally:
        server.stop()
