"""The Lua scripts of the Redis backend: each runs atomically in Redis.

Keys, under ``SSE_REDIS_PREFIX`` (``sse``) in braces, so that on a Redis
Cluster every key of an app is in one hash slot (the scripts touch several):

- ``{sse}:id``: the last id given;
- ``{sse}:store:<channel>``: the stored entries of a channel, oldest first;
- ``{sse}:marks:<channel>``: a hash: ``last``, the last id stored there,
  ``gone``, the highest id that left the store (trimmed or expired),
  ``bytes``, the bytes of the stored frames (``SSE_MAX_HISTORY_BYTES``), and
  ``seq``, the number of events ever sent to the channel (a subscription that
  was lost can tell whether it missed one). It expires with the store (and
  ``SSE_TOMBSTONE_TTL`` later: the channel's tombstone), or, without a store,
  ``SSE_TOMBSTONE_TTL`` after the channel's last event;
- ``{sse}:clock``: with ``SSE_HISTORY_TTL``, a few (time, id) checkpoints over
  the tombstones' lifetime: ids sent before a tombstone could expire;
- ``{sse}:lost``: ids up to this one may have been lost or given twice, after
  Redis lost data;
- ``{sse}:epoch``: a token, made anew when the counter is made or jumps
  after a restart: a process that knew another one has the counter's story
  to catch up with;
- ``{sse}:run``: the ``run_id`` of the Redis server that last checked the
  counter: another one means Redis restarted (or failed over) since, maybe
  with less than it had;
- ``{sse}:restart``: the last such restart: ``epoch``, and ``from`` and
  ``to``, the counter it came back with and where it jumped to: ids above
  the one and below the other were given by the Redis before, which it forgot.

Pub/sub channels (not keys): ``{sse}:events`` carries every event when each
process subscribes to the whole app; ``{sse}:c:<channel>`` carries one
channel's events when processes subscribe per channel; ``{sse}:control``
carries control messages (in the whole-app mode, ``{sse}:events`` does).

- ``{sse}:ending`` and ``{sse}:endings``: how many ``end_streams`` calls
  there have been, and the latest of them, newest first, each
  ``b"<seq> <origin> <json>"`` (a subscription that was lost catches up
  with them);
- ``{sse}:counts``: a sorted set of the processes that have streams, by when
  their counts expire (ms), and ``{sse}:counts:<process>``, a hash of each
  one's open streams per channel (the field ``""``: all its streams).

A stored entry is ``b"<id> <ms> <len(meta)> <seq>\\n" + meta + frame``,
where ``frame`` is the encoded event without its ``id:`` line and ``meta``
the JSON ``[event, retry, text, is_json]`` that :meth:`SSE.history` needs. A
published message is ``channel \\n id \\n seq \\n frame`` (``id`` empty for a
live-only event). A control message has an empty channel:
``\\n lost \\n <id>``, ``\\n mark \\n <token>``, ``\\n end \\n <seq> <origin> <json>``.
"""

from __future__ import annotations

from .redis_counter import COUNTER

#: The sends of one batch (see :mod:`..group_commit`), in order, as if each ran alone.
#: KEYS: id, lost, clock, control, epoch, restart, then per send: store, marks, pub/sub channel.
#: ARGV: max_history, ttl_ms, floor, tombstone_ms, publish command, the epoch this process
#: knows, max_history_bytes, then per send: channel, frame, with_id, meta. Returns {epoch, id of
#: each send ('' if live)}.
SEND = (
    COUNTER
    + """
local K = {id = KEYS[1], lost = KEYS[2], control = KEYS[4], epoch = KEYS[5], restart = KEYS[6]}
local max, ttl, floor, tomb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local publish, known, max_bytes = ARGV[5], ARGV[6], tonumber(ARGV[7])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local result = {''}

-- A stored entry's id, and the bytes of its frame (the event as sent, without its id line).
local function measure(entry)
  local id, meta, start = string.match(entry, '^(%d+) %d+ (%d+) %d+\\n()')
  return id, #entry - start + 1 - tonumber(meta)
end

local function frame_bytes(entry)
  local _, bytes = measure(entry)
  return bytes
end

local function pop(store)
  return measure(redis.call('LPOP', store))
end

local function send(store, marks, pubsub, channel, frame, with_id, meta)
  local id, stored, new_store = '', false, false
  local seq = redis.call('HINCRBY', marks, 'seq', 1)
  if with_id == '1' then
    local last, held = unpack(redis.call('HMGET', marks, 'last', 'bytes'))
    local here = tonumber(last or '0')
    local current
    current, result[1] = safe_counter(K, math.max(floor, here), known, publish)
    id = fmt(current + 1)
    redis.call('SET', K.id, id)
    if max > 0 then
      local gone = nil
      local entry = id .. ' ' .. now .. ' ' .. #meta .. ' ' .. seq .. '\\n' .. meta .. frame
      local size = redis.call('RPUSH', store, entry)
      stored = true
      if size == 1 then
        new_store = true
        if here > 0 then gone = here end  -- the store had expired: its last id left it
        held = #frame
      elseif held then
        held = tonumber(held) + #frame
      else  -- a store kept before its bytes were counted: count them once
        held = 0
        for _, kept in ipairs(redis.call('LRANGE', store, 0, -1)) do held = held + frame_bytes(kept) end
      end
      local excess, bytes = size - max, 0
      if excess == 1 then
        gone, bytes = pop(store)
        held, size = held - bytes, size - 1
      elseif excess > 1 then  -- SSE_MAX_HISTORY was lowered
        for _, old in ipairs(redis.call('LRANGE', store, 0, excess - 1)) do held = held - frame_bytes(old) end
        gone = string.match(redis.call('LINDEX', store, excess - 1), '^(%d+) ')
        redis.call('LTRIM', store, excess, -1)
        size = max
      end
      while held > max_bytes and size > 1 do
        gone, bytes = pop(store)
        held, size = held - bytes, size - 1
      end
      if ttl > 0 then
        while true do
          local head = redis.call('LINDEX', store, 0)
          if not head then break end
          local hid, ms = string.match(head, '^(%d+) (%d+) ')
          if tonumber(ms) > now - ttl then break end
          gone = hid
          held = held - frame_bytes(redis.call('LPOP', store))
        end
        redis.call('PEXPIRE', store, ttl)
        local newest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
        if #newest == 0 or now - tonumber(newest[2]) >= (ttl + tomb) / 32 then
          redis.call('ZADD', KEYS[3], now, id)
        end
        redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - ttl - tomb))
      end
      if gone then
        redis.call('HSET', marks, 'last', id, 'bytes', held, 'gone', gone)
      else
        redis.call('HSET', marks, 'last', id, 'bytes', held)
      end
    end
  end
  if ttl > 0 then
    redis.call('PEXPIRE', marks, ttl + tomb)
  elseif stored then
    if new_store then redis.call('PERSIST', marks) end  -- it lives with the store
  elseif redis.call('EXISTS', store) == 0 then
    redis.call('PEXPIRE', marks, tomb)  -- no store: the sequence outlives the channel's last event a while
  end
  redis.call(publish, pubsub, channel .. '\\n' .. id .. '\\n' .. seq .. '\\n' .. frame)
  return id
end

for i = 0, (#KEYS - 6) / 3 - 1 do
  local k, a = 7 + 3 * i, 8 + 4 * i
  result[i + 2] = send(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return result
"""
)

#: One consistent read for streams that open, and for a subscription that comes back.
#: KEYS: id, lost, clock, control, restart, then per channel: store, marks.
#: ARGV: ttl_ms, tombstone_ms, marker (published when not empty, to place this read among the
#: messages), publish command.
#: Returns: last id, lost, forgotten below, now in ms, {from, to} of the last restart, then per
#: channel: entries, {gone, last, seq}.
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
local result = {last, lost, string.format('%.0f', forgotten), now, redis.call('HMGET', KEYS[5], 'from', 'to')}
for i = 6, #KEYS, 2 do
  result[#result + 1] = redis.call('LRANGE', KEYS[i], 0, -1)
  result[#result + 1] = redis.call('HMGET', KEYS[i + 1], 'gone', 'last', 'seq')
end
if ARGV[3] ~= '' then redis.call(ARGV[4], KEYS[4], '\\nmark\\n' .. ARGV[3]) end
return result
"""

#: end_streams: remembered for subscriptions that come back, and published, as
#: ``<seq> <origin>@<Redis time in ms> <json>``.
#: KEYS: ending, endings, control. ARGV: the ending's JSON, origin, publish command, how many to keep.
END = """
local seq = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local ms = string.format('%.0f', t[1] * 1000 + math.floor(t[2] / 1000))
local entry = seq .. ' ' .. ARGV[2] .. '@' .. ms .. ' ' .. ARGV[1]
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
redis.call(ARGV[3], KEYS[3], '\\nend\\n' .. entry)
return seq
"""

#: The endings after ``known`` (all it holds if Redis lost data). KEYS: ending, endings. ARGV: known, the head
#: (``<seq> <origin>@<ms>``) of the ending ``known`` as taken, or ''. Returns {seq, entries newest first, Redis
#: time in ms, 1 if Redis lost data}: its count is below ``known``, or the ending it holds at ``known`` is another
#: one (Redis came back empty, and took as many endings since).
ENDINGS = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local known, head = tonumber(ARGV[1]), ARGV[2]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local at = seq >= known and redis.call('LINDEX', KEYS[2], seq - known)
if seq < known or (head ~= '' and at and string.sub(at, 1, #head + 1) ~= head .. ' ') then
  return {seq, redis.call('LRANGE', KEYS[2], 0, -1), now, 1}
end
if seq == known then return {seq, {}, now, 0} end
return {seq, redis.call('LRANGE', KEYS[2], 0, seq - known - 1), now, 0}
"""

#: A process's open streams per channel. KEYS: counts, its counts hash. ARGV: process, ttl_ms,
#: full ('1': the pairs are all its counts; '0': the changes, 0 for a channel it no longer
#: serves), then channel, count pairs. Returns 0 when changes came for a hash that expired.
WRITE_COUNTS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
elseif redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '0' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
"""

#: Every other live process's counts, summed. KEYS: counts. ARGV: the prefix of the hashes,
#: this process, '1' to read one field (then its name: a channel, or '' for all streams) or '0'
#: for every field. Returns channel, count pairs.
READ_COUNTS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local sums, order = {}, {}
for _, process in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  if process ~= ARGV[2] then
    local fields
    if ARGV[3] == '0' then
      fields = redis.call('HGETALL', ARGV[1] .. process)
    else
      fields = {ARGV[4], redis.call('HGET', ARGV[1] .. process, ARGV[4]) or '0'}
    end
    for i = 1, #fields, 2 do
      local channel = fields[i]
      if not sums[channel] then sums[channel] = 0; order[#order + 1] = channel end
      sums[channel] = sums[channel] + tonumber(fields[i + 1])
    end
  end
end
local result = {}
for _, channel in ipairs(order) do
  result[#result + 1] = channel
  result[#result + 1] = sums[channel]
end
return result
"""
