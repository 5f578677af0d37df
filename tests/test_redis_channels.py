"""Per-channel subscriptions: a process subscribes to the channels its streams serve, and to nothing else.

With ``SSE_REDIS_SUBSCRIBE = "channels"`` (the default), a process subscribes
to a channel on its one subscription connection when its first stream of that
channel opens, before the stream reads the store, and unsubscribes when the
last one closes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flask_sse_stream.core import core_of
from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.streams import until_end
from tests.support.waiting import wait_until

CONTROL = "{sse}:control"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def channels_subscribed(server: RedisServer) -> set[str]:
    with server.client() as client:
        return {name.decode() for name in client.pubsub_channels()}


def test_a_process_subscribes_to_the_channels_of_its_streams_only(redis_server, make_app, serve, client_for) -> None:
    # (A server learns that a client left when it next writes: keep-alives every 0.2 s.)
    app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_KEEPALIVE=0.2)
    try:
        port = serve(app).port
        news = client_for(port, "/stream?channel=news")
        both = client_for(port, "/stream?channel=news&channel=user-42")
        assert channels_subscribed(redis_server) == {CONTROL, "{sse}:c:news", "{sse}:c:user-42"}
        both.close()
        wait_until(lambda: channels_subscribed(redis_server) == {CONTROL, "{sse}:c:news"}, 10, "user-42 released")
        sent = sse.send_new_event(data="still here", id=True, channel="news")
        assert isinstance(sent, int), sent
        message = news.next_event()
        assert (message.data, message.id) == ("still here", sent)
    finally:
        sse.close()


def test_a_stream_new_to_the_process_gets_an_event_sent_elsewhere_right_after_it_opened(
    redis_server, make_app, serve
) -> None:
    # The subscription is confirmed before the stream's headers are sent: an
    # event sent by another worker as soon as they arrive reaches the stream.
    app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_KEEPALIVE=0.2)
    other_app, elsewhere = make_app(SSE_REDIS_URL=redis_server.url)
    try:
        port = serve(app).port
        for n in range(20):
            with StreamClient(port, f"/stream?channel=fresh-{n}") as client:
                assert elsewhere.send_new_event(data=f"at once {n}", channel=f"fresh-{n}") is None
                assert client.next_event().data == f"at once {n}"
    finally:
        sse.close()
        elsewhere.close()


def test_thousands_of_short_streams_on_their_own_channels_leak_no_subscription_and_lose_no_event(
    redis_server, make_app, serve
) -> None:
    app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_MAX_HISTORY=10, SSE_KEEPALIVE=0.2)
    try:
        port = serve(app).port
        for batch in range(20):
            clients = [StreamClient(port, f"/stream?channel=job-{batch}-{n}") for n in range(100)]
            for n in range(len(clients)):
                sse.send_new_event(data=f"done {batch}-{n}", id=True, channel=f"job-{batch}-{n}")
            for n, client in enumerate(clients):
                assert client.next_event().data == f"done {batch}-{n}"
                client.close()
        wait_until(lambda: channels_subscribed(redis_server) == {CONTROL}, 20, "every job channel released")
        assert core_of(app).backend.channels.held == set()  # type: ignore[attr-defined]
        # And the process subscribes again as streams come.
        again = StreamClient(port, "/stream?channel=job-0-0")
        assert [m.data for m in until_end(again, sse, "job-0-0")] == ["done 0-0"]
        again.close()
    finally:
        sse.close()


def test_a_command_on_a_subscription_redis_ended_raises_connection_error_and_ends_it(redis_server) -> None:
    """A stream that opens (SUBSCRIBE) or closes (UNSUBSCRIBE) just as Redis drops the connection: before
    the listener notices, the command fails. That must be the ConnectionError a stream answers 503 for (not
    redis-py's own error, a 500), and the connection must end, so the listener subscribes again."""
    from flask_sse_stream.backends.redis_channels import ChannelSubscriptions
    from flask_sse_stream.backends.redis_connection import RedisConnections
    from flask_sse_stream.backends.redis_subscription import Subscription

    connections = RedisConnections(redis_server.url)
    subscription = Subscription(connections, CONTROL)
    subscription.send("SUBSCRIBE", CONTROL, "{sse}:c:a")
    assert len(subscription.read(5)) == 2
    channels = ChannelSubscriptions(lambda channel: f"{{sse}}:c:{channel}", "SUBSCRIBE", "UNSUBSCRIBE", lambda _: False)
    channels.held.add("a")
    channels.attach(subscription)
    with redis_server.client() as client:
        client.client_kill_filter(_type="pubsub")
    # The first writes may still go into the kernel's buffer; one of these meets the reset connection.
    with pytest.raises(ConnectionError, match="could not send SUBSCRIBE"):
        for n in range(50):
            subscription.send("SUBSCRIBE", f"{{sse}}:c:x{n}")
    assert channels.release(["a"]) == ["a"]  # no error: the next connection holds what is held
    with pytest.raises(ConnectionError):
        while subscription.read(5):
            pass
    subscription.close()
    connections.close()


def open_streams_channels(sse) -> set[str]:
    return {CONTROL} | {f"{{sse}}:c:{channel}" for stream in sse.connections for channel in stream.channels}


def test_a_stream_that_gave_up_on_its_subscription_while_redis_was_down_leaves_nothing_subscribed(
    redis_server, make_app, serve, client_for
) -> None:
    app, sse = make_app(SSE_REDIS_URL=redis_server.url, SSE_KEEPALIVE=0.2)
    try:
        port = serve(app).port
        assert client_for(port, "/stream?channel=news").status == 200
        redis_server.stop()
        lonely = client_for(port, "/stream?channel=lonely")  # waits for its subscription, then gives up
        lonely.wait_closed(15)
        assert sse.connections[0].channels == ("news",) and len(sse.connections) == 1
        redis_server.start()
        wait_until(lambda: sse.stats["redis_reconnects"] == 1, 15, "the subscription made again")
        wait_until(lambda: channels_subscribed(redis_server) == open_streams_channels(sse), 5, "only what streams use")
    finally:
        sse.close()


def test_a_channel_whose_stream_gave_up_while_redis_stalled_is_not_held_once_redis_answers(
    tmp_path, make_app, serve, client_for
) -> None:
    server = RedisServer(tmp_path, extra_args=["--enable-debug-command", "local"])
    app, sse = make_app(SSE_REDIS_URL=server.url, SSE_KEEPALIVE=0.2)
    try:
        port = serve(app).port
        assert client_for(port, "/stream?channel=news").status == 200
        stall = threading.Thread(target=sleep, args=(server, 8))
        stall.start()
        wait_until(lambda: stall_seen(server), 5, "Redis asleep")
        stalled = client_for(port, "/stream?channel=stalled")  # asks, is not confirmed in time, gives up
        stalled.wait_closed(15)
        stall.join(15)
        wait_until(lambda: channels_subscribed(server) == open_streams_channels(sse), 5, "only what streams use")
    finally:
        sse.close()
        server.stop()


def sleep(server: RedisServer, seconds: int) -> None:
    """DEBUG SLEEP: Redis answers nobody for ``seconds`` (once: redis-py would time out at 5 s and send it again)."""
    with redis.Redis(port=server.port, socket_timeout=None, retry=Retry(NoBackoff(), 0)) as client:
        client.execute_command("DEBUG", "SLEEP", str(seconds))


def stall_seen(server: RedisServer) -> bool:
    """Whether Redis is asleep: a PING gets no answer within 0.2 s."""
    with redis.Redis(port=server.port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)) as client:
        try:
            client.ping()
        except redis.TimeoutError:
            return True
        return False
