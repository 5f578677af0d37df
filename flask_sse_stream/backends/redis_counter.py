"""The id counter of a Redis app: it never goes back, whatever Redis forgets.

Each process remembers the highest id it has seen (given, received or read)
and the epoch of the counter it knows; each send carries them, and the
counter is checked on every new connection before anything else is done on
it. The rules are in the Lua below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors

# The counter is the one thing that must never go back: an id given twice
# is an event some browser skips. Before an id is given, `safe_counter` makes
# sure it is past every id given before:
# - a counter that has to be made (a new app, or Redis lost it: restarted
#   empty, the key deleted or evicted) starts at the Redis clock in
#   microseconds: past every id any Redis gave this app before, whoever saw
#   them (it would take a million ids a second since 1970 to catch up);
# - a counter below the highest id the calling process has seen (`floor`)
#   moves past it, to the clock as well: another process may have seen ids a
#   little above `floor` that this one has not received;
# - a process whose ids predate a restart that came back with fewer (see
#   `check_run`) reports them: the ids below the restart's jump are marked lost.
# Ids up to a move may have been lost with the data: that is recorded in
# `lost`, and every process learns it from the control message, in order with
# the events. `publish` is PUBLISH, or SPUBLISH on a cluster.
# K: the keys, by name: id, epoch, lost, control, run, restart.
COUNTER = """
local function clock_us()
  local t = redis.call('TIME')
  return t[1] * 1000000 + t[2]
end

local function fmt(n) return string.format('%.0f', n) end

local function new_epoch(K)
  local t = redis.call('TIME')
  local epoch = t[1] .. '.' .. t[2]
  redis.call('SET', K.epoch, epoch)
  return epoch
end

-- Ids up to `upto` may have been lost or given twice: recorded, and told to every process.
local function mark_lost(K, upto, publish)
  local lost = tonumber(redis.call('GET', K.lost) or '0')
  if upto > lost then
    lost = upto
    redis.call('SET', K.lost, fmt(lost))
    redis.call(publish, K.control, '\\nlost\\n' .. fmt(lost))
  end
  return lost
end

-- The counter, moved past every id given before if it is not, and the epoch.
local function safe_counter(K, floor, known, publish)
  local both = redis.call('MGET', K.epoch, K.id)
  local epoch, current = both[1], both[2]
  if known ~= '' and epoch and epoch ~= known then
    -- The counter changed hands since this process last looked: if a restart
    -- came back without ids this process saw, they are lost.
    local r = redis.call('HMGET', K.restart, 'epoch', 'from', 'to')
    if r[1] == epoch and floor > tonumber(r[2]) and floor < tonumber(r[3]) then
      mark_lost(K, tonumber(r[3]) - 1, publish)
    end
  end
  if not epoch then epoch = new_epoch(K) end
  if not current then floor = math.max(floor, clock_us()) end
  current = tonumber(current or '0')
  if current < floor then
    local base = math.max(floor, clock_us())
    redis.call('SET', K.id, fmt(base))
    if base > floor then mark_lost(K, base - 1, publish) else mark_lost(K, base, publish) end
    current = base  -- no id is ever base itself, unless it is floor: the next one is base + 1
  end
  return current, epoch
end

-- Whether Redis restarted since the counter was last checked: it may have
-- come back from an older snapshot, an AOF that missed the last writes, or a
-- replica that lagged (a failover), with a counter below ids it gave before,
-- that no process still alive may have seen. The counter jumps to the clock;
-- ids above the copy's counter and below the jump were given, if at all, by
-- the Redis before: `restart` keeps the range (a client resuming from one of
-- them gets the reset event), and a process that saw one reports it (above).
local function check_run(K)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if redis.call('GET', K.run) == run then return end
  redis.call('SET', K.run, run)
  local current = redis.call('GET', K.id)
  if not current then return end  -- made past every id when first needed
  local to = math.max(tonumber(current), clock_us())
  redis.call('SET', K.id, fmt(to))
  redis.call('HSET', K.restart, 'epoch', new_epoch(K), 'from', current, 'to', fmt(to))
end
"""

#: Checks the counter: as the app starts, on every new connection (so that a
#: restart is noticed before anything else is done on it), when a
#: subscription comes back, and when an id arrives twice. KEYS: id, control, lost, epoch, run, restart.
#: ARGV: floor, publish command, the epoch this process knows. Returns {lost, epoch, last id}.
CHECK = (
    COUNTER
    + """
local K = {id = KEYS[1], control = KEYS[2], lost = KEYS[3], epoch = KEYS[4], run = KEYS[5], restart = KEYS[6]}
check_run(K)
local current, epoch = safe_counter(K, tonumber(ARGV[1]), ARGV[3], ARGV[2])
return {redis.call('GET', K.lost) or '0', epoch, fmt(current)}
"""
)


class Counter:
    """This process's view of the app's counter, and the checks that keep it from going back."""

    def __init__(self, key: Callable[[str], str], control_key: str, publish_command: str) -> None:
        #: The highest id this process has seen: given, received or read.
        self.seen = 0
        #: The epoch of the counter it knows ("": none yet).
        self.epoch = ""
        self.primed = False
        self.keys = [key("id"), control_key, key("lost"), key("epoch"), key("run"), key("restart")]
        self.publish_command = publish_command
        self._script: Any = None
        self._call: Callable[..., Any] | None = None

    def bind(self, client: Any, call: Callable[..., Any]) -> None:
        """Where the check runs: the app's client, through ``call(action, command)``."""
        self._script = client.register_script(CHECK)
        self._call = call

    def saw(self, id: int) -> None:
        if id > self.seen:
            self.seen = id

    def learn(self, epoch: bytes, last_id: bytes | int) -> None:
        self.epoch = epoch.decode()
        self.saw(int(last_id))

    def prime(self, action: str = "read the id counter") -> None:
        """Learn the counter and its epoch once: if Redis loses them later, this process can tell.

        Done as the app starts (if Redis answers then) and else before the first send.
        """
        self.move_past(self.seen, action)
        self.primed = True

    def move_past(self, floor: int, action: str = "repair the id counter") -> int:
        """Move the counter past ``floor`` (and past every id, if Redis lost it); the ids that may be lost."""
        assert self._call is not None, "bind() first"
        args = [floor, self.publish_command, self.epoch]
        lost, epoch, last_id = self._call(action, lambda: self._script(keys=self.keys, args=args))
        self.learn(epoch, last_id)
        return int(lost)

    def check_connection(self, connection: Any) -> None:
        """Run on every new connection to Redis, before anything else is sent on it.

        A new connection may be to a Redis that restarted, from an older
        snapshot say: the counter is checked before this process gives an id,
        or reads, through that Redis.
        """
        args = [self.seen, self.publish_command, self.epoch]
        connection.send_command("EVAL", CHECK, len(self.keys), *self.keys, *args)
        try:
            _, epoch, last_id = connection.read_response()
        except (redis_errors.MovedError, redis_errors.AskError):
            return  # a cluster node that does not hold the app's slot: nothing of the app is there
        self.learn(epoch, last_id)
