"""``flask sse send`` and ``flask sse stats``: the real ``flask`` command, against real servers.

Each command runs as ``python -m flask --app tests.apps.cli_app sse ...`` in a
process of its own. The servers it reaches are ``python -m tests.apps.cli_app``
processes: one on a private Redis (reached through Redis), one with the
in-process store (reached through ``--url`` only).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.support.client import StreamClient
from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON, ROOT, ProcessServer, free_port
from tests.support.waiting import wait_until

TOKEN = "cli-test-token-0123456789"
PREFIX = "clitest"


def flask(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``flask --app tests.apps.cli_app sse <args>``, with only the SSE_* variables of ``env``."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("SSE_", "FLASK_"))}
    return subprocess.run(
        [PYTHON, "-m", "flask", "--app", "tests.apps.cli_app", "sse", *args],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def channel() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_env(redis_server) -> dict[str, str]:
    return {"SSE_REDIS_URL": redis_server.url, "SSE_REDIS_PREFIX": PREFIX}


def serve(env: dict[str, str]) -> Iterator[ProcessServer]:
    port = free_port()
    server = ProcessServer([PYTHON, "-m", "tests.apps.cli_app", str(port)], port, env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_app_server(redis_env) -> Iterator[ProcessServer]:
    """A running server on the private Redis (no token: nothing but Redis reaches it)."""
    yield from serve(redis_env)


@pytest.fixture(scope="module")
def url_server() -> Iterator[ProcessServer]:
    """A running server with the in-process store and a publish token: only --url reaches it."""
    yield from serve({"SSE_PUBLISH_TOKEN": TOKEN})


@pytest.fixture
def stream() -> Iterator[Callable[..., StreamClient]]:
    clients: list[StreamClient] = []

    def connect(server: ProcessServer, *channels: str) -> StreamClient:
        query = "&".join(f"channel={name}" for name in channels)
        client = StreamClient(server.port, f"/stream?{query}")
        client.next_chunk()  # the opening comment: subscribed
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def stream_url(server: ProcessServer) -> str:
    return f"http://127.0.0.1:{server.port}/stream"


# -- send through Redis -----------------------------------------------------------------


def test_send_with_redis_reaches_a_stream_of_a_running_server(redis_app_server, redis_env, stream) -> None:
    name = channel()
    client = stream(redis_app_server, name)
    result = flask("send", "hello from a shell", "--event", "greeting", "--id", "--retry", "3000", "--channel", name,
                   env=redis_env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    message = client.next_event()
    assert (message.data, message.event, client.retry) == ("hello from a shell", "greeting", 3000)
    assert result.stdout == f"{message.id}\n"


def test_send_json_sends_the_text_parsed_as_json(redis_app_server, redis_env, stream) -> None:
    name = channel()
    client = stream(redis_app_server, name)
    result = flask("send", '{"b": [1, 2], "a": "x"}', "--json", "--channel", name, env=redis_env)
    assert (result.returncode, result.stdout) == (0, "sent\n")
    message = client.next_event()
    assert json.loads(message.data) == {"a": "x", "b": [1, 2]}
    assert message.id is None


def test_stats_with_redis_counts_the_shared_store_of_each_channel(redis_env) -> None:
    stored, empty = channel(), channel()
    for text in ("one", "two"):
        assert flask("send", text, "--id", "--channel", stored, env=redis_env).returncode == 0
    result = flask("stats", "--channel", stored, "--channel", empty, env=redis_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "this flask command's own process, which serves no streams" in lines[0]
    assert "Open streams: 0" in lines
    stored_at = lines.index("Stored events:")
    assert lines[stored_at + 1 : stored_at + 3] == [f"  {stored}: 2", f"  {empty}: 0"]
    assert "  events_sent: 0" in lines  # this process sent nothing


def test_stats_with_redis_counts_the_open_streams_of_every_process(redis_app_server, redis_env, stream) -> None:
    # The server's streams, counted by this flask command, which serves none.
    name, other = channel(), channel()
    stream(redis_app_server, name)
    stream(redis_app_server, name, other)
    lines: list[str] = []

    def counted() -> bool:
        nonlocal lines
        lines = flask("stats", env=redis_env).stdout.splitlines()
        return f"  {name}: 2" in lines and f"  {other}: 1" in lines

    wait_until(counted, 10, "the server's counts in Redis")
    total = next(line for line in lines if line.startswith("Open streams in the whole app"))
    assert int(total.rsplit(" ", 1)[1]) >= 2
    assert "Open streams: 0" in lines  # and none in this process


def test_stats_with_redis_lists_every_channel_with_a_store_found_by_scan(redis_server, redis_env) -> None:
    prefixed = {**redis_env, "SSE_REDIS_PREFIX": "scan[*]test"}  # glob characters are taken literally
    client = redis.Redis(port=redis_server.port)
    client.set("{scan[*]test}:store", "not a channel")
    client.rpush("{scanXtest}:store:other", "another prefix's")
    names = [f"c{n:04d}" for n in range(2500)]  # a few pages of SCAN
    with client.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.rpush(f"{{scan[*]test}}:store:{name}", "0 0 0 0\n")
        pipeline.execute()
    assert flask("send", "two", "--id", "--channel", "c0007", env=prefixed).returncode == 0
    client.config_resetstat()

    result = flask("stats", "--json", env=prefixed)

    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)["stored"]
    assert stored == {name: 2 if name == "c0007" else 1 for name in names}
    commands = client.info("commandstats")
    assert "cmdstat_keys" not in commands
    assert commands["cmdstat_scan"]["calls"] > 1


def test_send_when_redis_is_down_fails_with_a_message(redis_env) -> None:
    down = {**redis_env, "SSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = flask("send", "x", "--id", env=down)
    assert result.returncode == 1
    assert "could not send the event: Redis at redis://127.0.0.1:" in result.stderr
    assert "unavailable" in result.stderr
    assert result.stdout == ""


# -- the in-process store -----------------------------------------------------------------


def test_send_with_the_in_process_store_warns_and_still_stores_with_id() -> None:
    result = flask("send", "nobody hears this", "--id")
    assert (result.returncode, result.stdout) == (0, "1\n")  # a new process: the first id
    assert "SSE_REDIS_URL is not set" in result.stderr and "--url" in result.stderr
    live = flask("send", "nor this")
    assert (live.returncode, live.stdout) == (0, "sent\n")


# -- send through a running server's endpoint -------------------------------------------


def test_send_with_url_and_token_reaches_the_servers_stream(url_server, stream) -> None:
    name = channel()
    client = stream(url_server, name)
    result = flask("send", "via the endpoint", "--id", "--event", "news", "--channel", name,
                   "--url", stream_url(url_server), "--token", TOKEN)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning: the server's store is used
    message = client.next_event()
    assert (message.data, message.event) == ("via the endpoint", "news")
    assert result.stdout == f"{message.id}\n"


def test_send_with_url_takes_the_token_from_the_environment(url_server, stream) -> None:
    name = channel()
    client = stream(url_server, name)
    result = flask("send", "[1, 2]", "--json", "--channel", name, "--url", stream_url(url_server) + "/",
                   env={"SSE_PUBLISH_TOKEN": TOKEN})  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "sent\n"), result.stderr
    assert client.next_event().data == "[1, 2]"


def test_stats_with_url_prints_the_running_servers_streams_and_counters(url_server, stream) -> None:
    a, b = channel(), channel()
    stream(url_server, a)
    stream(url_server, a, b)
    assert flask("send", "x", "--id", "--channel", a, "--url", stream_url(url_server), "--token", TOKEN).returncode == 0
    result = flask("stats", "--url", stream_url(url_server), "--token", TOKEN, "--channel", a)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"of the server at {stream_url(url_server)}" in lines[0] and "process " in lines[0]
    assert f"  {a}: 2" in lines and f"  {b}: 1" in lines  # open streams per channel
    stored_at = lines.index("Stored events:")
    assert lines[stored_at + 1] == f"  {a}: 1"
    assert any(line.startswith("  events_sent: ") and int(line.split()[-1]) >= 1 for line in lines)

    as_json = flask("stats", "--url", stream_url(url_server), "--token", TOKEN, "--channel", a, "--json")
    numbers = json.loads(as_json.stdout)
    assert numbers["streams_by_channel"][a] == 2 and numbers["stored"] == {a: 1}
    assert numbers["pid"] == url_server.process.pid


# -- errors -----------------------------------------------------------------------------


def test_a_wrong_token_fails_with_the_servers_answer(url_server) -> None:
    for command in (["send", "x"], ["stats"]):
        result = flask(*command, "--url", stream_url(url_server), "--token", "wrong-token-0123456789")
        assert result.returncode == 1
        assert "answered 401: the token is wrong" in result.stderr


def test_an_invalid_event_fails_with_the_check_that_refused_it(url_server, redis_env) -> None:
    for where in ([], ["--url", stream_url(url_server), "--token", TOKEN]):
        result = flask("send", "x", "--event", "", *where, env=redis_env)
        assert result.returncode == 1
        assert "event must be a non-empty str" in result.stderr
    bad_channel = flask("send", "x", "--channel", "a\tb", env=redis_env)
    assert (bad_channel.returncode, "channel must be" in bad_channel.stderr) == (1, True)


def test_url_errors_say_what_to_do(url_server) -> None:
    nothing = flask("send", "x", "--url", f"http://127.0.0.1:{free_port()}/stream", "--token", TOKEN)
    assert (nothing.returncode, "could not reach" in nothing.stderr) == (1, True)

    not_the_stream = flask("send", "x", "--url", f"http://127.0.0.1:{url_server.port}/elsewhere", "--token", TOKEN)
    assert not_the_stream.returncode == 1
    assert "answered 404" in not_the_stream.stderr and "the stream's URL" in not_the_stream.stderr

    no_token = flask("send", "x", "--url", stream_url(url_server))
    assert (no_token.returncode, "needs the server's SSE_PUBLISH_TOKEN" in no_token.stderr) == (2, True)

    not_http = flask("send", "x", "--url", "ftp://127.0.0.1/stream", "--token", TOKEN)
    assert (not_http.returncode, "http:// or https://" in not_http.stderr) == (2, True)


def test_text_that_is_not_json_with_json_is_a_usage_error() -> None:
    result = flask("send", "{not json", "--json")
    assert result.returncode == 2
    assert "TEXT must be JSON" in result.stderr


def test_the_group_lists_its_commands() -> None:
    result = flask("--help")
    assert result.returncode == 0
    assert "send" in result.stdout and "stats" in result.stdout
