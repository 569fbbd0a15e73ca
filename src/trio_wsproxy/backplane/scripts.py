"""The Lua scripts the backplane runs in Redis, where a step must be atomic.

Membership entries of a node (``P:node-members:<node>``, owner -> entry) are JSON
``[group, member id, leave]``, where ``leave`` is the hex of the encoded
:class:`~trio_wsproxy.protocol.nodes.MemberLeft` announcement: reaping a node publishes
it as it is, so that only the codec ever builds a node-to-node message.
"""

from __future__ import annotations

from ..protocol.nodes import NODE_ID_LENGTH

#: Register the newest connection of an id.
#: KEYS: members hash, node-members hash. ARGV: id, owner, entry, namespace, snapshot, again.
#: Returns the replaced owner (or nil) and, if ARGV[5] is 1, the group's members as a
#: flat list of id, owner pairs (a node asks once per group; join and leave
#: announcements keep it up to date). With ARGV[6] = 1 (registering again after an
#: outage) a different owner is newer and stays: the reply is {that owner, {}, 0} and
#: nothing changes. (``string.sub(old, 1, NODE_ID_LENGTH)`` is ``nodes.owner_node(old)``.)
#: The reply's last element is 1 when the group had no member on any node before: it is
#: occupied now, and this node alone saw it so (the webhooks' ``occupied``).
JOIN = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[6] == '1' and old and old ~= ARGV[2] then
  return {old, {}, 0, 0}
end
local occupied = 0
if redis.call('EXISTS', KEYS[1]) == 0 then occupied = 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old and old ~= ARGV[2] then
  redis.call('HDEL', ARGV[4] .. ':node-members:' .. string.sub(old, 1, NODE_ID_LENGTH), old)
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[5] == '1' then
  return {old or false, redis.call('HGETALL', KEYS[1]), 1, occupied}
end
return {old or false, {}, 1, occupied}
""".replace("NODE_ID_LENGTH", str(NODE_ID_LENGTH))

#: Unregister a connection (if it is still the newest of its id).
#: KEYS: members hash, node-members hash. ARGV: id, owner.
#: Returns 2 when that took the group's last member on any node (this node alone sees it
#: so: the webhooks' ``vacated``), else 1.
LEAVE = """
local vacated = 1
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('EXISTS', KEYS[1]) == 0 then vacated = 2 end
end
redis.call('HDEL', KEYS[2], ARGV[2])
return vacated
"""

#: Forget a node and every membership it registered that nobody has replaced since, and
#: announce each as left on its group's channel. Unless ARGV[3] is 1 (the node removing
#: itself), nothing happens while the node's key exists: it came back meanwhile.
#: KEYS: node-members hash, nodes set, node key. ARGV: node, namespace, force.
#: Returns -1 (it came back), or a flat list of group, member id and vacated (1 when that
#: member was the group's last on any node, else 0) per membership forgotten: the
#: reaping node alone gets it, and tells the webhooks of those leaves.
REAP = """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local gone = {}
local function unhex(text)
  return (text:gsub('..', function(pair) return string.char(tonumber(pair, 16)) end))
end
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local entry = cjson.decode(entries[i + 1])
  local members = ARGV[2] .. ':members:' .. entry[1]
  local vacated = 0
  if redis.call('HGET', members, entry[2]) == entries[i] then
    redis.call('HDEL', members, entry[2])
    if redis.call('EXISTS', members) == 0 then vacated = 1 end
  end
  redis.call('PUBLISH', ARGV[2] .. ':g:' .. entry[1], unhex(entry[3]))
  gone[#gone + 1] = entry[1]
  gone[#gone + 1] = entry[2]
  gone[#gone + 1] = vacated
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return gone
"""

# -- history (DESIGN.md §7) ---------------------------------------------------------------
#
# Both history scripts take KEYS: the group's history meta hash, stream and index (see
# names.py), and its channel; ARGV 1-7: the Redis run id (INFO server's run_id, as the
# node read it on connecting), a new epoch in case the history has none, the node's id,
# the bounds (count, ttl ms, bytes) and how long the keys outlive their last renewal (ms;
# the meta hash twice that). Nodes renew the keys of the groups they have members in.
#
# A history belongs to one run of Redis: after a restart (even one that reloaded a
# snapshot), a flush or an expiry, the next script finds no history of this run and
# starts one with a new epoch, from offset 0. One stream entry holds one batch (what one
# node published at once): its id is ``<first offset>-0``, and its fields are, per
# message in order, 'b' and the message's body, or 'g' and nothing (a gap: a message
# too large to keep, or a stream). The index lists each batch's first offset, count,
# time (Redis's clock) and kept bytes, oldest first, so that trimming reads no message;
# trimming drops whole batches, oldest first, while the history holds more than its
# bounds allow.
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
local function expire()
  local ms = tonumber(ARGV[7])
  redis.call('PEXPIRE', meta, 2 * ms)
  redis.call('PEXPIRE', stream, ms)
  redis.call('PEXPIRE', index, ms)
end
-- The history's epoch, last offset, last offset trimmed and bytes kept, and whether it
-- was started just now.
local function history()
  local got = redis.call('HMGET', meta, 'epoch', 'run', 'last', 'trimmed', 'bytes')
  if got[1] and got[2] == ARGV[1] then
    return got[1], tonumber(got[3]), tonumber(got[4]), tonumber(got[5]), false
  end
  redis.call('DEL', meta, stream, index)
  redis.call('HSET', meta, 'epoch', ARGV[2], 'run', ARGV[1], 'last', 0, 'bytes', 0,
             'trimmed', 0)
  expire()
  return ARGV[2], 0, 0, 0, true
end
-- Drop the oldest batches while the history is over a bound; returns the new trimmed
-- offset (what was given out before is gone) and bytes kept.
local function trim(now, last, trimmed, bytes)
  local size, ttl, max = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local dropped = false
  while last > trimmed do
    local head = redis.call('LINDEX', index, 0)
    if not head then
      trimmed = last  -- nothing kept (expired with its keys): everything before is gone
      dropped = true
      break
    end
    local o, n, t, b = string.match(head, '^(%d+) (%d+) (%d+) (%d+)$')
    o, n, t, b = tonumber(o), tonumber(n), tonumber(t), tonumber(b)
    if not o then
      -- Not ours (written by hand?): forget what is kept rather than guess.
      redis.call('DEL', index)
      o, n, b = last, 1, bytes
    end
    if not t or last - trimmed > size or bytes > max or t < now - ttl then
      redis.call('LPOP', index)
      if b == 0 and n == 1 then
        redis.call('HDEL', meta, 'd:' .. o)
      end
      trimmed, bytes, dropped = o + n - 1, bytes - b, true
    else
      break
    end
  end
  if dropped then
    redis.call('XTRIM', stream, 'MINID', (trimmed + 1) .. '-0')
    redis.call('HSET', meta, 'bytes', bytes, 'trimmed', trimmed)
  end
  return trimmed, bytes
end
"""

#: Give whole messages (ARGV[8] = 'M') or a stream's start ('S') the group's next
#: offsets, keep them as one batch, trim, and publish them on the group's channel
#: wrapped in an O. ARGV[9]: for M, the start of the M (kind, node, count), for S the
#: whole S; ARGV[10] (M): '1' or '0' per message, whether it is kept; ARGV[11...] (M):
#: each message's body. Returns {receivers of the publish, epoch, first offset}.
SEQUENCE = (
    _HISTORY_COMMON
    + """
local e, last, trimmed, bytes = history()
local now = now_ms()
local n = 1
if ARGV[8] == 'M' then n = #ARGV - 10 end
local first = last + 1
last = last + n
local inner = ARGV[9]
local kept = 0
if ARGV[8] == 'M' then
  local fields = {}
  for i = 1, n do
    if string.byte(ARGV[10], i) == 49 then  -- '1'
      fields[2 * i - 1], fields[2 * i] = 'b', ARGV[10 + i]
      kept = kept + #ARGV[10 + i]
    else
      fields[2 * i - 1], fields[2 * i] = 'g', ''
    end
  end
  redis.call('XADD', stream, first .. '-0', unpack(fields))
  inner = inner .. table.concat(ARGV, '', 11)
else
  redis.call('XADD', stream, first .. '-0', 'g', '')
end
if redis.call('RPUSH', index, first .. ' ' .. n .. ' ' .. now .. ' ' .. kept) == 1 then
  expire()  -- (a new index: the others renew it every ttl/3 while they have members)
end
bytes = bytes + kept
redis.call('HSET', meta, 'last', last, 'bytes', bytes)
trim(now, last, trimmed, bytes)
local receivers = redis.call('PUBLISH', KEYS[4], 'O' .. ARGV[3] .. e .. pad(first) .. inner)
return {receivers, e, first}
"""
)

#: Read the group's history: its epoch, last offset given out, last offset trimmed, and
#: (ARGV[8] >= 0) the entries after offset ARGV[8] in batches, up to ARGV[9] batches (0:
#: all), as a flat list of offset, kind ('b' a kept message, 'g' a gap, 'd' a declined
#: stream claim: nothing), body. A history started by this read (none of this run yet)
#: is announced on the channel (an empty O at offset 0), so that every node following
#: the group learns its epoch. ARGV[10]: 1 to renew the keys' expiry (a node with
#: members in the group, every ttl/3).
HISTORY = (
    _HISTORY_COMMON
    + """
local e, last, trimmed, bytes, fresh = history()
if fresh then
  redis.call('PUBLISH', KEYS[4], 'O' .. ARGV[3] .. e .. pad(0))
elseif ARGV[10] == '1' then
  expire()
end
trimmed = trim(now_ms(), last, trimmed, bytes)
local after = tonumber(ARGV[8])
local entries = {}
if after >= 0 and after < last then
  -- The batch holding offset after + 1 may start before it.
  local start = (after + 1) .. '-0'
  local before = redis.call('XREVRANGE', stream, start, '-', 'COUNT', 1)
  if before[1] then start = before[1][1] end
  local range
  if tonumber(ARGV[9]) > 0 then
    range = redis.call('XRANGE', stream, start, '+', 'COUNT', ARGV[9])
  else
    range = redis.call('XRANGE', stream, start, '+')
  end
  for _, entry in ipairs(range) do
    local o = tonumber(string.match(entry[1], '^(%d+)'))
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if o > after then
        local kind = fields[i]
        if kind == 'g' and #fields == 2 and redis.call('HEXISTS', meta, 'd:' .. o) == 1 then
          kind = 'd'
        end
        entries[#entries + 1] = o
        entries[#entries + 1] = kind
        entries[#entries + 1] = fields[i + 1]
      end
      o = o + 1
    end
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
