"""The Lua scripts of the Redis backend: each runs atomically in Redis.

Keys, under ``SSE_REDIS_PREFIX`` (``sse``):

- ``sse:id``: the last id given;
- ``sse:store:<channel>``: the stored entries of a channel, oldest first;
- ``sse:marks:<channel>``: a hash: ``last``, the last id stored there, and
  ``gone``, the highest id that left the store (trimmed or expired). With
  ``SSE_HISTORY_TTL`` it expires ``SSE_TOMBSTONE_TTL`` seconds after the
  store: it is the channel's tombstone;
- ``sse:clock``: with ``SSE_HISTORY_TTL``, a few (time, id) checkpoints over
  the tombstones' lifetime: ids sent before a tombstone could expire;
- ``sse:lost``: ids up to this one may have been lost or given twice, after
  Redis lost data;
- ``sse:live``: how many live-only events were sent: a process whose
  subscription was down can tell whether its streams missed one;
- ``sse:events``: the pub/sub channel of every event, and of control messages.

A stored entry is ``b"<id> <ms> <len(meta)>\\n" + meta + frame``, where
``frame`` is the encoded event without its ``id:`` line and ``meta`` the JSON
``[event, retry, text, is_json]`` that :meth:`SSE.history` needs. A published
message is ``channel \\n id \\n live \\n frame``: an id'd event has an empty
``live``, a live-only one an empty ``id`` and the count of ``sse:live``. A
control message has an empty channel: ``\\n lost \\n <id>``, ``\\n mark \\n <token>``.
"""

from __future__ import annotations

# When the counter is below the highest id some process has seen (Redis
# restored from an older snapshot, restarted empty, the id key deleted or
# evicted), move it past every id given before: to the Redis clock in
# microseconds, or past `floor` if that is higher. Another process may have
# seen ids a little above `floor` that this one has not received yet; none is
# anywhere near the clock (which would take a million events a second since
# 1970). Ids up to there may have been lost with the data: that is recorded,
# and every process learns it from the control message, in order with the
# events.
_MOVE_PAST = """
local function move_past(id_key, events_key, lost_key, floor)
  local t = redis.call('TIME')
  local base = math.max(floor, t[1] * 1000000 + t[2])
  local lost = math.max(base, tonumber(redis.call('GET', lost_key) or '0'))
  redis.call('SET', lost_key, string.format('%.0f', lost))
  redis.call('SET', id_key, string.format('%.0f', base))
  redis.call('PUBLISH', events_key, '\\nlost\\n' .. string.format('%.0f', lost))
  return string.format('%.0f', lost)
end
"""

#: KEYS: id, store, marks, events, lost, clock, live.
#: ARGV: channel, frame, with_id, max_history, ttl_ms, meta, floor, tombstone_ms.
SEND = (
    _MOVE_PAST
    + """
local channel, frame, id, live = ARGV[1], ARGV[2], '', ''
if ARGV[3] ~= '1' then
  live = redis.call('INCR', KEYS[7])
else
  local max, ttl, floor, tomb = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  local here = tonumber(redis.call('HGET', KEYS[3], 'last') or '0')
  if here > floor then floor = here end
  if current < floor then
    move_past(KEYS[1], KEYS[4], KEYS[5], floor)
    current = tonumber(redis.call('GET', KEYS[1]))
  end
  id = string.format('%.0f', current + 1)
  redis.call('SET', KEYS[1], id)
  if max > 0 then
    local t = redis.call('TIME')
    local now = t[1] * 1000 + math.floor(t[2] / 1000)
    local gone = nil
    if here > 0 and redis.call('EXISTS', KEYS[2]) == 0 then gone = here end
    redis.call('RPUSH', KEYS[2], id .. ' ' .. now .. ' ' .. #ARGV[6] .. '\\n' .. ARGV[6] .. frame)
    redis.call('HSET', KEYS[3], 'last', id)
    local excess = redis.call('LLEN', KEYS[2]) - max
    if excess > 0 then
      gone = string.match(redis.call('LINDEX', KEYS[2], excess - 1), '^(%d+) ')
      redis.call('LTRIM', KEYS[2], excess, -1)
    end
    if ttl > 0 then
      while true do
        local head = redis.call('LINDEX', KEYS[2], 0)
        if not head then break end
        local hid, ms = string.match(head, '^(%d+) (%d+) ')
        if tonumber(ms) > now - ttl then break end
        gone = hid
        redis.call('LPOP', KEYS[2])
      end
      redis.call('PEXPIRE', KEYS[2], ttl)
      redis.call('PEXPIRE', KEYS[3], ttl + tomb)
      local newest = redis.call('ZRANGE', KEYS[6], -1, -1, 'WITHSCORES')
      if #newest == 0 or now - tonumber(newest[2]) >= (ttl + tomb) / 32 then
        redis.call('ZADD', KEYS[6], now, id)
      end
      redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. (now - ttl - tomb))
    end
    if gone then redis.call('HSET', KEYS[3], 'gone', gone) end
  end
end
redis.call('PUBLISH', KEYS[4], channel .. '\\n' .. id .. '\\n' .. live .. '\\n' .. frame)
return id
"""
)

#: KEYS: id, events, lost. ARGV: floor. Returns ``lost``.
MOVE_PAST = (
    _MOVE_PAST
    + """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  return move_past(KEYS[1], KEYS[2], KEYS[3], floor)
end
return redis.call('GET', KEYS[3]) or '0'
"""
)

#: One consistent read for streams that open, and for a subscription that comes back.
#: KEYS: id, lost, clock, events, live, then per channel: store, marks.
#: ARGV: ttl_ms, tombstone_ms, marker (published when not empty, to place this read among the messages).
#: Returns: last id, lost, forgotten below, now in ms, live-only events sent so far,
#: then per channel: entries, {gone, last}.
READ = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl, tomb = tonumber(ARGV[1]), tonumber(ARGV[2])
local last_id = tonumber(redis.call('GET', KEYS[1]) or '0')
local forgotten = 0
if ttl > 0 then
  local first = redis.call('ZRANGEBYSCORE', KEYS[3], now - ttl - tomb, '+inf', 'LIMIT', 0, 1)
  if #first > 0 then forgotten = tonumber(first[1]) else forgotten = last_id end
end
local last, lost = redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '0'
local result = {last, lost, string.format('%.0f', forgotten), now, redis.call('GET', KEYS[5]) or '0'}
for i = 6, #KEYS, 2 do
  result[#result + 1] = redis.call('LRANGE', KEYS[i], 0, -1)
  result[#result + 1] = redis.call('HMGET', KEYS[i + 1], 'gone', 'last')
end
if ARGV[3] ~= '' then redis.call('PUBLISH', KEYS[4], '\\nmark\\n' .. ARGV[3]) end
return result
"""
