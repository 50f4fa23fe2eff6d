"""The Lua scripts behind core.dlq: each change to a queue, its indexes and its requeue markers
happens in one script, so readers never see one without the other.

Every key a script touches comes from the DLQ's prefix (core.dlq builds them); a script is
given them in KEYS, except the group indexes of rows a trim or a delete takes out, which are
only known inside the script and are named there from a prefix it is given.
"""

from __future__ import annotations

# Shared by the scripts that take entries out: what a stream row's group is, and how its index
# follows it out. Rows keep their group in their own ``group`` field; an entry stored before
# groups existed has its group in the ``grouped`` hash (entry id -> group) once it was grouped.
# The group indexes are sorted sets of members that sort as the stream ids do (all scores 0,
# so Redis orders members bytewise): a letter for the number of digits, then the digits.
# Which groups a trim touches is only known inside the script, so their keys are built there
# from ``zprefix`` (passed in, and derived from the DLQ prefix like every other key).
GROUP_HELPERS = """
local function member(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.char(96 + #ms) .. ms .. string.char(96 + #seq) .. seq
end
local function row_group(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'group' then
      local g = fields[i + 1]
      if #g == 12 and not string.find(g, '[^0-9a-f]') then return g end
      return nil
    end
  end
  return nil
end
local function ungroup(rows, groups, grouped, zprefix)
  for _, row in ipairs(rows) do
    local id = row[1]
    local g = row_group(row[2])
    if not g then
      g = redis.call('HGET', grouped, id)
      if g then redis.call('HDEL', grouped, id) end
    end
    if g then
      -- Counted whether or not the index still held it: a group's index key may have expired
      -- (its newest entry passed its retention) before a trim took its entries out.
      redis.call('ZREM', zprefix .. g, member(id))
      if redis.call('HINCRBY', groups, g, -1) <= 0 then redis.call('HDEL', groups, g) end
    end
  end
end
local function drop_oldest(stream, rows, groups, grouped, zprefix)
  if #rows == 0 then return end
  ungroup(rows, groups, grouped, zprefix)
  redis.call('XTRIM', stream, 'MAXLEN', redis.call('XLEN', stream) - #rows)
end
-- keep_stream: leave the emptied stream itself (it expires by its TTL), so that it keeps its
-- last id and the next entry's id is above everything a clear removed.
local function forget_if_empty(stream, queues, queue, groups, grouped, zprefix, keep_stream)
  local n = redis.call('XLEN', stream)
  if n == 0 then
    for _, g in ipairs(redis.call('HKEYS', groups)) do redis.call('DEL', zprefix .. g) end
    redis.call('DEL', groups, grouped)
    if not keep_stream then redis.call('DEL', stream) end
    redis.call('HDEL', queues, queue)
  end
  return n
end
"""

# KEYS: stream, queues, seen, groups, the entry's group index, grouped.  ARGV: queue, entry
# json, task id, failure id (the group, and where group index keys start, are the end and the
# rest of KEYS[5]).  The numbers are formatted in per instance (retention ms, cap, dedupe ms,
# seen limit and what its trim keeps, chunk): fewer arguments to encode on the hot path.  Each
# call inside a script costs about as much as the command itself, so the hot path makes few:
# the time comes from the new stream id; the failure id is checked by adding it (a duplicate's
# row is taken back); and the work that only bounds memory (retention, which readers apply
# anyway before they answer, the dedupe window, the index's copy of the retention) runs on
# about one write in 16 and when a queue starts.  The cap and retention drop at most a chunk a
# call, so no write stalls Redis on a backlog.  A stream that starts anew (it expired by its
# TTL) first drops what a group index still held of it.  Returns the new stream id, or false
# if this failure was already stored.  Runs after GROUP_HELPERS (not joined here: this one is
# formatted).
ADD = """
local group, zprefix = string.sub(KEYS[5], -12), string.sub(KEYS[5], 1, -13)
local id = redis.call('XADD', KEYS[1], '*', 'task_id', ARGV[3], 'group', group, 'entry', ARGV[2])
local now_ms = tonumber(string.match(id, '^%%d+'))
if redis.call('ZADD', KEYS[3], 'NX', now_ms, ARGV[4]) == 0 then
  redis.call('XDEL', KEYS[1], id)
  if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
  return false
end
local length = redis.call('XLEN', KEYS[1])
if length == 1 then
  for _, g in ipairs(redis.call('HKEYS', KEYS[4])) do redis.call('DEL', zprefix .. g) end
  redis.call('DEL', KEYS[4], KEYS[6])
end
redis.call('ZADD', KEYS[5], 0, member(id))
redis.call('HINCRBY', KEYS[4], group, 1)
if length > %(cap)d then
  local over = math.min(length - %(cap)d, %(chunk)d)
  local rows = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
  drop_oldest(KEYS[1], rows, KEYS[4], KEYS[6], zprefix)
end
redis.call('PEXPIRE', KEYS[1], '%(retention_ms)d')
local seen = redis.call('ZCARD', KEYS[3])
if seen > %(seen_limit)d then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, seen - %(seen_kept)d - 1)
end
if length == 1 or now_ms %% 16 == 0 then
  redis.call('HSET', KEYS[2], ARGV[1], '%(retention_ms)d')
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms - %(dedupe_ms)d)
  local min_ms = now_ms - %(retention_ms)d
  if min_ms > 0 then
    local rows = redis.call('XRANGE', KEYS[1], '-', min_ms - 1, 'COUNT', %(chunk)d)
    drop_oldest(KEYS[1], rows, KEYS[4], KEYS[6], zprefix)
  end
end
return id
"""

# Drop (a chunk of) what retention says is gone, then answer; an emptied queue leaves the
# index.  KEYS: stream, queues, groups, grouped.  ARGV: queue, zprefix, chunk.
# Returns {queue length, 1 if more is due}.
TRIM = (
    GROUP_HELPERS
    + """
local retention = redis.call('HGET', KEYS[2], ARGV[1])
local more = 0
if retention then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local min_ms = now_ms - tonumber(retention)
  if min_ms > 0 then
    local rows = redis.call('XRANGE', KEYS[1], '-', min_ms - 1, 'COUNT', ARGV[3])
    drop_oldest(KEYS[1], rows, KEYS[3], KEYS[4], ARGV[2])
    if #rows == tonumber(ARGV[3]) then more = 1 end
  end
end
return {forget_if_empty(KEYS[1], KEYS[2], ARGV[1], KEYS[3], KEYS[4], ARGV[2]), more}
"""
)

# Remove a chunk of the entries up to and including ARGV[3].  KEYS: stream, queues, groups,
# grouped.  ARGV: queue, zprefix, last id to remove, chunk.  Returns {removed, 1 if more}.
CLEAR_BEFORE = (
    GROUP_HELPERS
    + """
local rows = redis.call('XRANGE', KEYS[1], '-', ARGV[3], 'COUNT', ARGV[4])
drop_oldest(KEYS[1], rows, KEYS[3], KEYS[4], ARGV[2])
-- The emptied stream is kept with its last id: a deleted one would give an entry added in the
-- same millisecond (or under a Redis clock behind) an id at or below ARGV[3], which a next chunk
-- would clear unseen and the UI would take for one already seen. Nothing up to ARGV[3] is left
-- in an empty stream, so stop there.
if forget_if_empty(KEYS[1], KEYS[2], ARGV[1], KEYS[3], KEYS[4], ARGV[2], true) == 0 then
  return {#rows, 0}
end
if #rows == tonumber(ARGV[4]) then return {#rows, 1} end
return {#rows, 0}
"""
)

# KEYS: stream, queues, groups, grouped.  ARGV: queue, zprefix, entry ids.  Returns how many
# of them existed.
DELETE = (
    GROUP_HELPERS
    + """
local removed = 0
for i = 3, #ARGV do
  local rows = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)
  if #rows > 0 then
    ungroup(rows, KEYS[3], KEYS[4], ARGV[2])
    removed = removed + redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
forget_if_empty(KEYS[1], KEYS[2], ARGV[1], KEYS[3], KEYS[4], ARGV[2])
return removed
"""
)

# Group entries stored before groups existed (each once: a concurrent reader may be at it too).
# KEYS: stream, queues, groups, grouped, then the group index of each pair.  ARGV: queue, then
# entry id and group pairs.  Returns how many were grouped.
GROUP = (
    GROUP_HELPERS
    + """
local done = 0
for i = 2, #ARGV, 2 do
  local id, g = ARGV[i], ARGV[i + 1]
  local rows = redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1)
  if #rows > 0 and not row_group(rows[1][2]) and redis.call('HSETNX', KEYS[4], id, g) == 1 then
    redis.call('ZADD', KEYS[4 + i / 2], 0, member(id))
    redis.call('HINCRBY', KEYS[3], g, 1)
    done = done + 1
  end
end
return done
"""
)

# A page of one group, newest first.  KEYS: stream, groups, the group's index.  ARGV: group,
# the member of the cursor ('' for the newest), limit.  Returns {count, members, rows} (a row
# is nil if the stream no longer has it).
GROUP_PAGE = """
local top = '+'
if ARGV[2] ~= '' then top = '(' .. ARGV[2] end
local members = redis.call('ZREVRANGEBYLEX', KEYS[3], top, '-', 'LIMIT', 0, ARGV[3])
local rows = {}
for i, m in ipairs(members) do
  local n = string.byte(m, 1) - 96
  local id = string.sub(m, 2, n + 1) .. '-' .. string.sub(m, n + 3)
  rows[i] = redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1)[1] or false
end
return {tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or 0), members, rows}
"""

# Each group's count, first and last member, and newest row.  KEYS: stream, groups, then each
# group's index.  ARGV: the groups.  A group gone meanwhile has a count of 0.
GROUP_DETAILS = """
local out = {}
for i, g in ipairs(ARGV) do
  local index = KEYS[2 + i]
  local first = redis.call('ZRANGE', index, 0, 0)[1] or false
  local last = redis.call('ZRANGE', index, -1, -1)[1] or false
  local row = false
  if last then
    local n = string.byte(last, 1) - 96
    local id = string.sub(last, 2, n + 1) .. '-' .. string.sub(last, n + 3)
    row = redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1)[1] or false
  end
  out[i] = {tonumber(redis.call('HGET', KEYS[2], g) or 0), first, last, row}
end
return out
"""


# Claim an entry for requeue: only if it still exists and nobody holds it. The marker says
# which task id it is being sent as and its phase: "claimed" until the publish returned, then
# "published". A "claimed" marker older than the claim window is a requeue that stopped, maybe
# before it sent anything (its release failed with the broker): it may be claimed again, and
# the caller is told which task that earlier requeue may have sent.
# KEYS: stream, marker, queues.  ARGV: entry id, new task id, token, queue, default ttl ms,
# claim window ms.  Returns {'ok', marker}, {'reclaimed', marker, old marker}, {'gone'} or
# {'held', old marker, age ms}.
CLAIM = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return {'gone'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('GET', KEYS[2])
local verdict = 'ok'
if held then
  local ok, old = pcall(cjson.decode, held)
  local at = ok and type(old) == 'table' and tonumber(old['at_ms']) or now
  local age = now - at
  if not ok or type(old) ~= 'table' or old['phase'] ~= 'claimed'
     or age < tonumber(ARGV[6]) then
    return {'held', held, tostring(age)}
  end
  verdict = 'reclaimed'
end
local marker = cjson.encode({task_id = ARGV[2], token = ARGV[3], at_ms = now, phase = 'claimed'})
local ttl = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or ARGV[5])
redis.call('SET', KEYS[2], marker, 'PX', ttl)
if held then return {verdict, marker, held} end
return {verdict, marker}
"""

# The publish returned: the marker, if still ours, says so before the entry is removed.
# KEYS: marker.  ARGV: our marker, the published one.
CONFIRM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""

# Undo a claim whose publish failed, if it is still ours.  KEYS: marker.  ARGV: marker value.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The publish succeeded: the entry goes (out of its group too), and our marker with it.
# KEYS: stream, marker, queues, groups, grouped.  ARGV: entry id, marker value, queue, zprefix.
FINISH = (
    GROUP_HELPERS
    + """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
if #rows > 0 then
  ungroup(rows, KEYS[4], KEYS[5], ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[1])
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
forget_if_empty(KEYS[1], KEYS[3], ARGV[3], KEYS[4], KEYS[5], ARGV[4])
return 1
"""
)
