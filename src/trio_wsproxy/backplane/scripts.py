"""The Lua scripts the backplane runs in Redis, where a step must be atomic.

Membership entries of a node (``P:node-members:<node>``, owner -> entry) are JSON
``[group, member id, leave]``, where ``leave`` is the hex of the encoded
:class:`~trio_wsproxy.protocol.nodes.MemberLeft` announcement: reaping a node publishes
it as it is, so that only the codec ever builds a node-to-node message.
"""

from __future__ import annotations

#: Register the newest connection of an id.
#: KEYS: members hash, node-members hash. ARGV: id, owner, entry, namespace, snapshot, again.
#: Returns the replaced owner (or nil) and, if ARGV[5] is 1, the group's members as a
#: flat list of id, owner pairs (a node asks once per group; join and leave
#: announcements keep it up to date). With ARGV[6] = 1 (registering again after an
#: outage) a different owner is newer and stays: the reply is {that owner, {}, 0} and
#: nothing changes.
JOIN = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[6] == '1' and old and old ~= ARGV[2] then
  return {old, {}, 0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old and old ~= ARGV[2] then
  redis.call('HDEL', ARGV[4] .. ':node-members:' .. string.sub(old, 1, 16), old)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[5] == '1' then
  return {old or false, redis.call('HGETALL', KEYS[1]), 1}
end
return {old or false, {}, 1}
"""

#: Unregister a connection (if it is still the newest of its id).
#: KEYS: members hash, node-members hash. ARGV: id, owner.
LEAVE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
"""

#: Forget a node and every membership it registered that nobody has replaced since, and
#: announce each as left on its group's channel. Unless ARGV[3] is 1 (the node removing
#: itself), nothing happens while the node's key exists: it came back meanwhile.
#: KEYS: node-members hash, nodes set, node key. ARGV: node, namespace, force.
REAP = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local function unhex(text)
  return (text:gsub('..', function(pair) return string.char(tonumber(pair, 16)) end))
end
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local entry = cjson.decode(entries[i + 1])
  local members = ARGV[2] .. ':members:' .. entry[1]
  if redis.call('HGET', members, entry[2]) == entries[i] then
    redis.call('HDEL', members, entry[2])
  end
  redis.call('PUBLISH', ARGV[2] .. ':g:' .. entry[1], unhex(entry[3]))
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return #entries / 2
"""

# -- history (DESIGN.md §7) ---------------------------------------------------------------
#
# Both history scripts take KEYS: the group's history meta hash, stream and index (see
# names.py), and its channel; ARGV 1-7: the Redis run id (INFO server's run_id, as the
# node read it on connecting), a new epoch in case the history has none, the node's id,
# the bounds (count, ttl ms, bytes) and how long the keys outlive the last message (ms).
#
# A history belongs to one run of Redis: after a restart (even one that reloaded a
# snapshot), a flush or an expiry, the next script finds no history of this run and
# starts one with a new epoch, from offset 0. Its index lists each entry's offset, time
# (Redis's clock) and kept bytes, oldest first, so that trimming reads no message.
_HISTORY_COMMON = """
local meta, stream, index = KEYS[1], KEYS[2], KEYS[3]
local function pad(n)
  local s = string.format('%d', n)
  return string.rep('0', 20 - #s) .. s
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function epoch()
  local got = redis.call('HMGET', meta, 'epoch', 'run')
  if got[1] and got[2] == ARGV[1] then
    return got[1], false
  end
  redis.call('DEL', meta, stream, index)
  redis.call('HSET', meta, 'epoch', ARGV[2], 'run', ARGV[1], 'last', 0, 'bytes', 0,
             'trimmed', 0)
  return ARGV[2], true
end
local function trim(now)
  local size, ttl, max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local bytes = tonumber(redis.call('HGET', meta, 'bytes'))
  local len = redis.call('LLEN', index)
  local trimmed = nil
  while len > 0 do
    local o, t, b = string.match(redis.call('LINDEX', index, 0), '^(%d+) (%d+) (%d+)$')
    o, t, b = tonumber(o), tonumber(t), tonumber(b)
    if len > size or bytes > max or t < now - ttl then
      redis.call('LPOP', index)
      redis.call('HDEL', meta, 'd:' .. o)
      len, bytes, trimmed = len - 1, bytes - b, o
    else
      break
    end
  end
  if len == 0 then
    -- Nothing kept (trimmed now, or expired with its keys): everything given out is gone.
    trimmed = tonumber(redis.call('HGET', meta, 'last'))
  end
  if trimmed then
    redis.call('XTRIM', stream, 'MINID', (trimmed + 1) .. '-0')
    redis.call('HSET', meta, 'bytes', bytes, 'trimmed', trimmed)
  end
end
local function expire()
  local ms = tonumber(ARGV[7])
  redis.call('PEXPIRE', meta, 2 * ms)
  redis.call('PEXPIRE', stream, ms)
  redis.call('PEXPIRE', index, ms)
end
"""

#: Give whole messages (ARGV[8] = 'M') or a stream's start ('S') the group's next
#: offsets, keep them, trim, and publish them on the group's channel wrapped in an O.
#: ARGV[9]: for M, the start of the M (kind, node, count), for S the whole S; ARGV[10]
#: (M): '1' or '0' per message, whether it is kept; ARGV[11...] (M): each message's
#: body. A message not kept, and a stream, leave a gap entry ('g'). Returns {receivers
#: of the publish, epoch, first offset}.
SEQUENCE = (
    _HISTORY_COMMON
    + """
local e = epoch()
local now = now_ms()
local n = 1
if ARGV[8] == 'M' then n = #ARGV - 10 end
local last = redis.call('HINCRBY', meta, 'last', n)
local first = last - n + 1
local inner = ARGV[9]
if ARGV[8] == 'M' then
  local kept = 0
  for i = 1, n do
    local o = first + i - 1
    if string.sub(ARGV[10], i, i) == '1' then
      local body = ARGV[10 + i]
      redis.call('XADD', stream, o .. '-0', 'b', body)
      redis.call('RPUSH', index, o .. ' ' .. now .. ' ' .. #body)
      kept = kept + #body
    else
      redis.call('XADD', stream, o .. '-0', 'g', '')
      redis.call('RPUSH', index, o .. ' ' .. now .. ' 0')
    end
  end
  redis.call('HINCRBY', meta, 'bytes', kept)
  inner = inner .. table.concat(ARGV, '', 11)
else
  redis.call('XADD', stream, first .. '-0', 'g', '')
  redis.call('RPUSH', index, first .. ' ' .. now .. ' 0')
end
trim(now)
expire()
local receivers = redis.call('PUBLISH', KEYS[4], 'O' .. ARGV[3] .. e .. pad(first) .. inner)
return {receivers, e, first}
"""
)

#: Read the group's history: its epoch, last offset given out, last offset trimmed, and
#: (ARGV[8] >= 0) up to ARGV[9] entries after offset ARGV[8] (0: all) as a flat list of
#: offset, kind ('b' a kept message, 'g' a gap, 'd' a declined stream claim: nothing),
#: body. A history started by this read (none of this run yet) is announced on the
#: channel (an empty O at offset 0), so that every node following the group learns its
#: epoch. ARGV[10]: 1 to renew the keys' expiry (a node with members in the group).
HISTORY = (
    _HISTORY_COMMON
    + """
local e, fresh = epoch()
if fresh then
  expire()
  redis.call('PUBLISH', KEYS[4], 'O' .. ARGV[3] .. e .. pad(0))
elseif ARGV[10] == '1' then
  expire()
end
trim(now_ms())
local last = tonumber(redis.call('HGET', meta, 'last'))
local trimmed = tonumber(redis.call('HGET', meta, 'trimmed'))
local after = tonumber(ARGV[8])
local entries = {}
if after >= 0 then
  local range
  if tonumber(ARGV[9]) > 0 then
    range = redis.call('XRANGE', stream, (after + 1) .. '-0', '+', 'COUNT', ARGV[9])
  else
    range = redis.call('XRANGE', stream, (after + 1) .. '-0', '+')
  end
  for _, entry in ipairs(range) do
    local o = string.match(entry[1], '^(%d+)')
    local kind, body = entry[2][1], entry[2][2]
    if kind == 'g' and redis.call('HEXISTS', meta, 'd:' .. o) == 1 then
      kind = 'd'
    end
    entries[#entries + 1] = tonumber(o)
    entries[#entries + 1] = kind
    entries[#entries + 1] = body
  end
end
return {e, last, trimmed, entries}
"""
)

#: A stream claim at offset ARGV[1] was declined (another stream had the floor): its
#: gap entry is no message. KEYS: the history meta hash.
DECLINED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'd:' .. ARGV[1], 1)
end
return 1
"""
