"""Under gevent, the subscription is read in the hub: events are taken there, anything else reaches the listener.

In a monkey-patched process (gunicorn's gevent worker), the replies the
listener can take in the hub never wake its greenlet; the first one it
cannot take, and those after it, are returned in order. Run in a
monkey-patched process of its own, on a private redis-server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer
from tests.support.servers import PYTHON

SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import json
import sys

import gevent
import redis

from flask_sse_stream.backends.redis_connection import RedisConnections
from flask_sse_stream.backends.redis_subscription import Subscription

url = sys.argv[1]
connections = RedisConnections(url)  # kept: closing it would close the subscription
subscription = Subscription(connections, "k")
subscription.send("SUBSCRIBE", "k")
confirmed = subscription.read(5)
publisher = redis.Redis.from_url(url)
taken, in_hub = [], []

def take(reply):
    if reply[0] != b"message" or reply[2] == b"stop":
        return False
    taken.append(reply[2].decode())
    in_hub.append(gevent.getcurrent() is gevent.get_hub())
    return True

pipe = publisher.pipeline(transaction=False)
for payload in ["a1", "a2", "a3", "stop", "b1", "b2"]:
    pipe.publish("k", payload)
pipe.execute()
returned = [reply[2].decode() for reply in subscription.read(5, take)]
while returned[-1] != "b2":  # the rest, if it came in another read
    returned += [reply[2].decode() for reply in subscription.read(5)]
nothing = subscription.read(0.2, take)
gevent.spawn_later(0.1, subscription.interrupt)
try:
    subscription.read(None, take)
    ended = None
except ConnectionError as error:
    ended = str(error)
print(json.dumps({"confirmed": confirmed[0][0].decode(), "taken": taken, "in_hub": in_hub,
                  "returned": returned, "nothing": nothing, "ended": ended}))
"""


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


def test_events_are_taken_in_the_hub_and_the_first_other_reply_and_the_rest_come_back_in_order(redis_server) -> None:
    done = subprocess.run([PYTHON, "-c", SCRIPT, redis_server.url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["confirmed"] == "subscribe"
    assert outcome["taken"] == ["a1", "a2", "a3"]
    assert outcome["in_hub"] == [True, True, True], "a taken reply woke the reading greenlet"
    assert outcome["returned"] == ["stop", "b1", "b2"]
    assert outcome["nothing"] == [], "a read that waited its time and got nothing returns []"
    assert outcome["ended"] and "ended" in outcome["ended"], outcome["ended"]
