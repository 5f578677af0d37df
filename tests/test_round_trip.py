"""What leaves ``send_new_event`` is what the PyPI SSE clients read (SPEC 1, 2, 5), over real sockets.

One gevent ``WSGIServer`` (in a thread, as ``serve`` runs it) serves the module.
Two long-lived streams read it incrementally with the clients users reach for:
``httpx-sse`` (over httpx) and ``sseclient-py`` (module ``sseclient``, over the
standard library's ``http.client``, as its docstring suggests). Hypothesis
generates the fields; after each event a live ``sync`` event with a fresh token
marks where that example's events end, so one failing example cannot shift
the examples after it.

The clients, read against WHATWG HTML 9.2.6 ("Interpreting an event stream").
Where they deviate, the checks below follow the spec for *our* server's bytes
and only translate each client's representation, never loosen the comparison:

- sseclient-py keeps ``id`` and ``retry`` per event, as strings, and ``None``
  when the event has no such line; the spec's ``lastEventId`` persists across
  events and ``retry`` is not part of the event. httpx-sse keeps ``id`` across
  events (as the spec does) and ``retry`` per event as an int.
- httpx-sse dispatches on a blank line when an event name, an id (even one
  remembered from an earlier event) or a retry is pending, without any
  ``data:`` line; the spec dispatches nothing when the data buffer is empty.
  So after the first id'd event every keep-alive comment becomes an empty
  ``message`` for httpx-sse: the module's keep-alive is an hour, so none
  comes during the test. (Our server never sends an event without data
  here: every generated event has data.)
- httpx-sse's ``int(value)`` accepts ``retry: +5`` or `` 5``; sseclient-py's
  ``line.strip()`` skips whitespace-only lines. Neither matters for what our
  server writes: every line starts with a field name or a colon, and retry is
  written as plain ASCII digits.
- Both treat CR, LF and CRLF as the only line breaks (sseclient-py splits
  ``bytes``, whose ``splitlines`` knows no others; httpx-sse has its own
  splitter), so U+2028, U+0085, form feeds... survive inside data, as in a browser.
- sseclient-py takes an ``id:`` line even when it holds a NUL, which the spec
  ignores; our ids are integers, so it never matters here.

The spec's nuance on the last line: a str ending in a line break (``"a\\n"``) is
sent as ``data: a`` then ``data: `` and read back as ``"a\\n"`` (the spec appends
LF per data line and drops the last one; sseclient-py does the same, httpx-sse
joins the values with LF); ``""`` is one empty ``data:`` line, an event whose
data is ``""`` (it is dispatched: the data buffer holds one LF before the last
one is dropped). The examples pinned with ``@example`` always cover these.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sseclient
from flask import Flask
from httpx_sse import connect_sse
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flask_sse_stream import SSE
from tests.support.client import StreamClient
from tests.support.servers import ThreadServer

CHANNEL = "round-trip"
SYNC = "sync"
TIMEOUT = 10.0
_tokens = itertools.count()
_TOKEN = re.compile(r"sync-[0-9]+")

# -- strategies ---------------------------------------------------------------------

#: Any character a str may hold in UTF-8: everything but lone surrogates.
unicode_chars = st.characters(exclude_categories=("Cs",))
#: What could confuse a line-based parser, mixed into generated text.
TRICKY = [
    "\r", "\n", "\r\n", "\n\r", "\r\r", "\n\n", "\u2028", "\u2029", "\x85", "\x00", "\x0b", "\x0c", "\x1c",
    "\x1e", "\ufeff", " ", "  ", "\t", ":", ": x", "data: x", "data:", "id: 7", "event: x", "retry: 1",
    "é", "\U0001f600", "\u200b",
]  # fmt: skip
texts = st.one_of(
    st.text(unicode_chars),
    st.lists(st.one_of(st.sampled_from(TRICKY), st.text(unicode_chars, max_size=8)), max_size=12).map("".join),
)
# JSON data: lone surrogates are fine inside JSON strings (Flask's provider
# escapes them as \udxxx), NaN and infinities are not JSON.
json_strings = st.text(st.characters(exclude_categories=()), max_size=12)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    json_strings,
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(json_strings, children, max_size=5)),
    max_leaves=25,
)
json_data = json_values.filter(lambda value: value is not None and not isinstance(value, str))
event_names = st.one_of(
    st.none(),
    st.sampled_from(["message", " ", " leading", "trailing ", "a:b", "\u2028", "\x85", "é", "data", "id"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), min_size=1),
)
retries = st.one_of(st.none(), st.integers(min_value=1, max_value=2**64))

#: Everything WHATWG treats as a line break: nothing else.
_BREAK = re.compile(r"\r\n|\r|\n")


def as_browser_sees(text: str) -> str:
    """``event.data`` in a browser for a str sent as data: its line breaks become LF."""
    return _BREAK.sub("\n", text)


# -- the server and the two readers ----------------------------------------------------


@dataclass
class Received:
    """One dispatched event, from either client, in the client's own terms."""

    event: str
    data: str
    id: str | None
    retry: int | str | None


class Reader:
    """A long-lived stream read with one PyPI client, one event at a time."""

    def __init__(self, name: str, events: Iterator[Any]) -> None:
        self.name = name
        self._events = events

    def until_sync(self, token: str) -> list[Received]:
        """The events before the ``sync`` event carrying ``token`` (and after any earlier sync)."""
        got: list[Received] = []
        for event in self._events:
            if event.event == SYNC and _TOKEN.fullmatch(event.data):
                if event.data == token:
                    return got
                got = []  # the end of an earlier example that failed half-way
                continue
            got.append(Received(event.event, event.data, event.id, event.retry))
        raise AssertionError(f"{self.name}: the stream ended before sync {token}")


@dataclass
class Served:
    app: Flask
    sse: SSE
    server: ThreadServer
    httpx_sse: Reader
    sseclient: Reader
    #: The raw WHATWG client of the tests, on the default channel, for the rejections.
    raw: StreamClient
    #: The last id any example got, as httpx-sse remembers it.
    last_id: str = ""

    def sync(self, *readers: Reader) -> dict[str, list[Received]]:
        token = f"sync-{next(_tokens)}"
        self.sse.send_new_event(data=token, event=SYNC, channel=CHANNEL)
        return {reader.name: reader.until_sync(token) for reader in readers}


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    app = Flask(__name__)
    # No keep-alive during the module: httpx-sse would dispatch each one (see above).
    app.config.update(SSE_KEEPALIVE=3600, SSE_MAX_HISTORY=10)
    sse = SSE(app)
    server = ThreadServer(app)
    with ExitStack() as stack:
        web = stack.enter_context(httpx.Client(timeout=httpx.Timeout(TIMEOUT)))
        source = stack.enter_context(
            connect_sse(web, "GET", f"http://127.0.0.1:{server.port}/stream?channel={CHANNEL}")
        )
        assert source.response.status_code == 200
        httpx_reader = Reader("httpx-sse", source.iter_sse())

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        stack.callback(connection.close)
        connection.request("GET", f"/stream?channel={CHANNEL}", headers={"Accept": "text/event-stream"})
        response = connection.getresponse()
        assert response.status == 200
        sseclient_reader = Reader("sseclient-py", sseclient.SSEClient(response).events())

        raw = stack.enter_context(StreamClient(server.port, "/stream", timeout=TIMEOUT))
        assert raw.status == 200
        # Each is subscribed before its response head is sent (SPEC 2).
        assert len(sse.connections) == 3
        try:
            yield Served(app, sse, server, httpx_reader, sseclient_reader, raw)
        finally:
            server.stop()


# -- what is sent is what is read --------------------------------------------------------


def expect(served: Served, sent_id: int | None, event: str | None, retry: int | None) -> tuple[Received, Received]:
    """What httpx-sse and sseclient-py must report for an event with these fields (data aside)."""
    if sent_id is not None:
        served.last_id = str(sent_id)
    name = event or "message"
    by_httpx_sse = Received(name, "", served.last_id, retry)
    by_sseclient = Received(name, "", None if sent_id is None else str(sent_id), None if retry is None else str(retry))
    return by_httpx_sse, by_sseclient


def check_round_trip(served: Served, data: Any, event: str | None, with_id: bool, retry: int | None) -> list[str]:
    """Send one event; return what each client read as data, after checking its other fields."""
    sent_id = served.sse.send_new_event(data=data, event=event, id=with_id, retry=retry, channel=CHANNEL)
    assert (sent_id is not None) == with_id
    by_httpx_sse, by_sseclient = expect(served, sent_id, event, retry)
    got = served.sync(served.httpx_sse, served.sseclient)
    datas = []
    for name, wanted in (("httpx-sse", by_httpx_sse), ("sseclient-py", by_sseclient)):
        assert len(got[name]) == 1, f"{name} read {got[name]} for one event"
        [received] = got[name]
        assert (received.event, received.id, received.retry) == (wanted.event, wanted.id, wanted.retry), name
        datas.append(received.data)
    return datas


@settings(max_examples=1000, deadline=None, database=None)
@given(data=texts, event=event_names, with_id=st.booleans(), retry=retries)
@example(data="", event=None, with_id=False, retry=None)
@example(data="a\n", event=None, with_id=True, retry=None)
@example(data="\r\n\r\n", event="x", with_id=False, retry=1)
@example(data="\r", event=None, with_id=False, retry=None)
@example(data="  two leading spaces", event=" leading", with_id=True, retry=None)
@example(data="a\u2028b\x85c\x00d\x0be", event="\u2028", with_id=False, retry=None)
@example(data="data: x\n\nid: 99\nevent: fake\n\n", event=None, with_id=False, retry=None)
def test_text_data_event_id_and_retry_read_back_as_sent(served: Served, data: str, event, with_id, retry) -> None:
    for read in check_round_trip(served, data, event, with_id, retry):
        assert read == as_browser_sees(data)


@settings(max_examples=500, deadline=None, database=None)
@given(data=json_data, event=event_names, with_id=st.booleans(), retry=retries)
def test_json_data_parses_back_equal(served: Served, data: Any, event, with_id, retry) -> None:
    for read in check_round_trip(served, data, event, with_id, retry):
        assert "\n" not in read and "\r" not in read  # JSON text is one data: line
        assert json.loads(read) == data


@settings(max_examples=100, deadline=None, database=None)
@given(
    channel=st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=200),
    data=texts,
)
def test_any_valid_channel_name_reaches_its_stream_through_the_query(served: Served, channel: str, data: str) -> None:
    path = "/stream?channel=" + quote(channel, safe="")
    with StreamClient(served.server.port, path, timeout=TIMEOUT) as client:
        assert client.status == 200, client.body()
        served.sse.send_new_event(data=data, event="x", channel=channel)
        message = client.next_event()
    assert (message.event, message.data) == ("x", as_browser_sees(data))


# -- what could change the framing never leaves send_new_event --------------------------------


def with_inserted(base: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``base`` text with a ``bad`` piece inserted at any position."""
    return st.tuples(base, bad, st.integers(min_value=0)).map(
        lambda t: t[0][: t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1) :]
    )


name_chars = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=10)
bad_event_names = st.one_of(
    with_inserted(name_chars, st.sampled_from(["\r", "\n", "\r\n", "\x00", "\n\ndata: injected\n\n"])),
    with_inserted(name_chars, st.characters(categories=("Cs",))),
    st.just(""),
    st.sampled_from([b"x", 1, 1.5, ["x"], True]),
)
# Each bad channel, once "cleaned" (control characters dropped), would be the
# stream's own channel "sse": a sanitising library would let it through.
bad_channels = st.one_of(
    with_inserted(st.just("sse"), st.characters(categories=("Cc",))),
    with_inserted(st.just("sse"), st.characters(categories=("Cs",))),
    st.just(""),
    st.integers(min_value=201, max_value=5000).map(lambda n: "sse" + "e" * (n - 3)),
    st.sampled_from([b"sse", None, 1, ("sse",)]),
)
bad_retries = st.one_of(
    st.integers(max_value=0),
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(["3000", "3000\n", "1\ndata: injected", b"3000"]),
)
bad_ids = st.sampled_from([0, 1, "1", "true", None, 1.0, [True]])
rejected = st.one_of(
    bad_event_names.map(lambda v: {"event": v}),
    bad_channels.map(lambda v: {"channel": v}),
    bad_retries.map(lambda v: {"retry": v}),
    bad_ids.map(lambda v: {"id": v}),
)


@settings(max_examples=600, deadline=None, database=None)
@given(bad=rejected, data=st.one_of(texts, json_data), with_id=st.booleans())
def test_anything_that_could_change_the_framing_raises_and_sends_nothing(
    served: Served, bad: dict[str, Any], data: Any, with_id: bool
) -> None:
    sse = served.sse
    before = sse.stats
    stored = dict(sse.messages)
    fields: dict[str, Any] = {"data": data, "event": "leak", "id": with_id, "retry": 1234, "channel": "sse", **bad}

    with pytest.raises((TypeError, ValueError)):
        sse.send_new_event(**fields)

    token = f"sentinel-{next(_tokens)}"
    sse.send_new_event(data=token)
    message, late = served.raw.next_event(), []
    while message.data.startswith("sentinel-") and message.data != token:
        # An earlier example's sentinel, which that example failed before reading: read past it, so that
        # this example is judged on its own and Hypothesis reports the earlier failure as it was.
        late.append(message.data)
        message = served.raw.next_event()
    # The very next event on the stream is the sentinel, with nothing of the rejected one in it.
    assert message.lines == [f"data: {token}"], message
    assert not late, f"sentinels of earlier examples came first: {late}"
    assert (message.event, message.data) == ("message", token)
    assert served.raw.retry is None, "a retry: line of a rejected event reached the client"
    assert sse.messages == stored
    assert sse.stats["events_sent"] == before["events_sent"] + 1
