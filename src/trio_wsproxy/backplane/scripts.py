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
