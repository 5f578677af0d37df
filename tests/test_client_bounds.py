"""What one client can steer: its IPv6 addresses counted by prefix, and the size of an event."""

from __future__ import annotations

import pytest

from flask_sse_stream.stream_request import client_key
from tests.test_publish import call

TOKEN = "client-bounds-token-0123456789"


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:aaaa::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:aaaa::1", 128, "2001:db8:1:2:aaaa::1/128"),
        ("fe80::1%eth0", 64, "fe80::/64"),
        ("::ffff:192.0.2.7", 64, "192.0.2.7"),  # an IPv4 client of a dual-stack socket: its own address
        ("192.0.2.7", 64, "192.0.2.7"),
        ("not an address", 64, "not an address"),
        (None, 64, None),
    ],
)
def test_ipv6_clients_are_grouped_by_their_prefix(address, prefix, key) -> None:
    assert client_key(address, prefix) == key


def test_one_ipv6_64_is_one_client_for_the_per_client_limit(make_app) -> None:
    app, sse = make_app(SSE_MAX_CONNECTIONS_PER_CLIENT=2)
    client = app.test_client()
    responses = []
    for host in range(1, 5):  # four addresses of one /64, as one host can take
        environ = {"REMOTE_ADDR": f"2001:db8:0:7::{host:x}"}
        responses.append(client.get("/stream", environ_base=environ, buffered=False))
    assert [response.status_code for response in responses] == [200, 200, 429, 429]
    responses.append(client.get("/stream", environ_base={"REMOTE_ADDR": "2001:db8:0:8::1"}, buffered=False))
    assert responses[-1].status_code == 200  # another /64: another client
    assert len(sse.connections) == 3
    for response in responses:
        response.close()
    assert len(sse.connections) == 0


@pytest.mark.parametrize("value", [0, 129, 64.0, "64", True])
def test_an_invalid_ipv6_prefix_is_refused_naming_it(make_app, value) -> None:
    with pytest.raises(ValueError, match="SSE_CLIENT_IPV6_PREFIX must be an int from 1 to 128"):
        make_app(SSE_CLIENT_IPV6_PREFIX=value)


def test_an_event_over_the_byte_bound_is_refused_naming_its_size(make_app) -> None:
    app, sse = make_app(SSE_MAX_EVENT_BYTES=1000)
    with pytest.raises(ValueError, match=r"SSE_MAX_EVENT_BYTES \(1000\)") as raised:
        sse.send_new_event(data="\n" * 200, id=True)  # 200 bytes of data, 1,408 bytes as sent
    assert "1408 bytes" in str(raised.value)
    assert sse.history() == {}
    assert sse.send_new_event(data="x" * 900, id=True) == 1


def test_the_default_byte_bound_is_4_mib(make_app) -> None:
    app, sse = make_app()
    assert app.config["SSE_MAX_EVENT_BYTES"] == 4 * 1024 * 1024
    assert sse.send_new_event(data="y" * 4_000_000, id=True) == 1  # 4 MB of data, as some apps send
    with pytest.raises(ValueError, match="over SSE_MAX_EVENT_BYTES"):
        sse.send_new_event(data="\n" * 600_000, id=True)  # 0.6 MB of newlines: a 4.2 MB event
    assert list(sse.history()) == [1]


def test_the_publish_endpoint_answers_400_to_an_event_over_the_bound(make_app, serve) -> None:
    app, sse = make_app(SSE_PUBLISH_TOKEN=TOKEN, SSE_MAX_EVENT_BYTES=1024 * 1024)
    port = serve(app).port
    # Within the 1 MiB body limit; as sent, each newline is a line "data: ": a 3.5 MB event.
    answer = call(port, body={"data": "\n" * 500_000, "id": True}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 400
    assert answer.json()["field"] == "data"
    assert "SSE_MAX_EVENT_BYTES (1048576)" in answer.json()["error"]
    assert sse.history() == {}


@pytest.mark.parametrize("value", [0, -1, 1.5, "1000", True])
def test_an_invalid_event_byte_bound_is_refused_naming_it(make_app, value) -> None:
    with pytest.raises(ValueError, match="SSE_MAX_EVENT_BYTES must be an int of at least 64"):
        make_app(SSE_MAX_EVENT_BYTES=value)
