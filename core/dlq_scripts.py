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
#
# A row's group is its LAST field named ``group``, when that is 12 lowercase hex characters:
# redis-py gives a row as a dict, where a field written twice keeps its last value, so Python
# (core.dlq._row_group) and these scripts read a hostile row alike.
#
# A row counts in its group while its index holds it: every script that indexes a row counts
# it in the same step, and every script that takes one out uncounts it only if its index held
# it (or the index is gone: it expired, its newest entry past its retention, while a trim had
# still to take its entries out). A row written by hand that names a group is not uncounted
# for what was never counted.
GROUP_HELPERS = """
local function member(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.char(96 + #ms) .. ms .. string.char(96 + #seq) .. seq
end
local function row_group(fields)
  local g
  for i = 1, #fields, 2 do
    if fields[i] == 'group' then g = fields[i + 1] end
  end
  if g and #g == 12 and not string.find(g, '[^0-9a-f]') then return g end
  return nil
end
-- How many of the rows name each group, and (if with_members) their members by group; an
-- entry stored before groups existed leaves the ``grouped`` hash here.
local function groups_of(rows, grouped, with_members)
  local named, members = {}, {}
  for _, row in ipairs(rows) do
    local g = row_group(row[2])
    if not g then
      g = redis.call('HGET', grouped, row[1])
      if g then redis.call('HDEL', grouped, row[1]) end
    end
    if g then
      named[g] = (named[g] or 0) + 1
      if with_members then
        members[g] = members[g] or {}
        table.insert(members[g], member(row[1]))
      end
    end
  end
  return named, members
end
-- Uncount what left group g's index: removed, or, if the index is gone, every row named.
local function uncount(groups, index, g, removed, named)
  if removed == 0 and redis.call('EXISTS', index) == 0 then removed = named end
  if removed > 0 and redis.call('HINCRBY', groups, g, -removed) <= 0 then
    redis.call('HDEL', groups, g)
  end
end
-- Rows taken out anywhere (a delete, a requeue): one ZREM per group.
local function ungroup(rows, groups, grouped, zprefix)
  local _, members = groups_of(rows, grouped, true)
  for g, of_group in pairs(members) do
    local index = zprefix .. g
    uncount(groups, index, g, redis.call('ZREM', index, unpack(of_group)), #of_group)
  end
end
-- The oldest rows, to drop: every index member up to the last of them is one of them (or of a
-- row already gone), so each group's index loses its head in one range call, whatever its size.
local function drop_oldest(stream, rows, groups, grouped, zprefix)
  if #rows == 0 then return end
  local last = '[' .. member(rows[#rows][1])
  for g, named in pairs(groups_of(rows, grouped, false)) do
    local index = zprefix .. g
    uncount(groups, index, g, redis.call('ZREMRANGEBYLEX', index, '-', last), named)
  end
  redis.call('XTRIM', stream, 'MAXLEN', redis.call('XLEN', stream) - #rows)
end
-- The oldest rows up to ``high``, read a step at a time: at most max_rows, and no more once
-- their values pass BYTE_BUDGET (a row can be 1 MiB: a count alone would not bound the call).
-- A call reads the budget and at most a step more: a quarter of a MiB of small rows, about
-- 1 ms of Redis, or four rows of 1 MiB (25 such rows a step were 25 MB, 25-30 ms). Returns the
-- rows and whether more may be due.
local BYTE_BUDGET, STEP = 262144, 4
local function oldest_rows(stream, high, max_rows)
  local rows, bytes, low = {}, 0, '-'
  while #rows < max_rows and bytes < BYTE_BUDGET do
    local want = math.min(STEP, max_rows - #rows)
    local part = redis.call('XRANGE', stream, low, high, 'COUNT', want)
    for _, row in ipairs(part) do
      table.insert(rows, row)
      local fields = row[2]
      for i = 2, #fields, 2 do bytes = bytes + #fields[i] end
    end
    if #part < want then return rows, false end
    low = '(' .. part[#part][1]
  end
  return rows, true
end
-- A queue whose stream is gone or empty keeps no groups. Rows leave their groups one by one and
-- the group keys expire with the stream, so there is normally nothing here; what is left (rows
-- removed by hand, keys of a version that gave them no TTL) goes by UNLINK, which frees a big
-- key off Redis's main thread. Past FORGET_LIMIT groups their indexes are left to their TTL:
-- naming each would make this call as long as the groups are many.
local FORGET_LIMIT = 1000
local function forget_groups(groups, grouped, zprefix)
  if redis.call('HLEN', groups) <= FORGET_LIMIT then
    for _, g in ipairs(redis.call('HKEYS', groups)) do redis.call('UNLINK', zprefix .. g) end
  end
  redis.call('UNLINK', groups, grouped)
end
-- keep_stream: leave the emptied stream itself (it expires by its TTL), so that it keeps its
-- last id and the next entry's id is above everything a clear removed.
local function forget_if_empty(stream, queues, queue, groups, grouped, zprefix, keep_stream)
  local n = redis.call('XLEN', stream)
  if n == 0 then
    forget_groups(groups, grouped, zprefix)
    if not keep_stream then redis.call('UNLINK', stream) end
    redis.call('HDEL', queues, queue)
  end
  return n
end
"""

# KEYS: stream.  ARGV: queue, entry json, task id, failure id, group (checked by the caller: it
# names a key), reason.  The other keys, and the numbers (retention ms, cap, dedupe ms, seen limit
# and what its trim keeps, chunk), are formatted in per instance: each argument costs encoding on
# the hot path.  Each call inside a script costs about as much as the command itself, so the hot
# path makes few: the time comes from the new stream id; the failure id is checked by adding it (a
# duplicate's row is taken back); and the work that only bounds memory (retention, which readers
# apply anyway before they answer, the dedupe window) runs on about one write in 16 and when a queue
# starts.  The cap and retention drop at most a chunk a call, so no write stalls Redis on a backlog.
# The group keys get the stream's TTL, so an expired stream's groups expire with it (an index not
# written since expires earlier, its entries all past their retention by then: see ungroup).  A
# stream that starts anew forgets what its group keys still held (see forget_groups).  Returns the
# new stream id, or false if this failure was already stored.  Every entry stored counts once in the
# captured hash, under "reason:queue", which nothing expires or lowers: a Prometheus counter reads
# it (a reason never holds a ':', a queue may).  Runs after GROUP_HELPERS (not joined here: this one
# is formatted).
ADD = """
local queue, group = ARGV[1], ARGV[5]
local id = redis.call('XADD', KEYS[1], '*', 'task_id', ARGV[3], 'group', group, 'entry', ARGV[2])
local now_ms = tonumber(string.match(id, '^%%d+'))
if redis.call('ZADD', %(seen)s, 'NX', now_ms, ARGV[4]) == 0 then
  redis.call('XDEL', KEYS[1], id)
  if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
  return false
end
redis.call('HINCRBY', %(captured)s, ARGV[6] .. ':' .. queue, 1)
local zprefix = %(namespace)s .. 'group:' .. queue .. ':'
local groups = %(namespace)s .. 'groups:' .. queue
local grouped = %(namespace)s .. 'grouped:' .. queue
local index = zprefix .. group
local length = redis.call('XLEN', KEYS[1])
if length == 1 then
  forget_groups(groups, grouped, zprefix)
  redis.call('UNLINK', index)
end
redis.call('ZADD', index, 0, member(id))
redis.call('HINCRBY', groups, group, 1)
if length > %(cap)d then
  local rows = oldest_rows(KEYS[1], '+', math.min(length - %(cap)d, %(chunk)d))
  drop_oldest(KEYS[1], rows, groups, grouped, zprefix)
end
redis.call('PEXPIRE', KEYS[1], %(retention_ms)d)
redis.call('PEXPIRE', groups, %(retention_ms)d)
redis.call('PEXPIRE', index, %(retention_ms)d)
redis.call('PEXPIRE', grouped, %(retention_ms)d)
local seen = redis.call('ZCARD', %(seen)s)
if seen > %(seen_limit)d then
  redis.call('ZREMRANGEBYRANK', %(seen)s, 0, seen - %(seen_kept)d - 1)
end
if length == 1 or now_ms %% 16 == 0 then
  redis.call('HSET', %(queues)s, queue, %(retention_ms)d)
  redis.call('ZREMRANGEBYSCORE', %(seen)s, '-inf', now_ms - %(dedupe_ms)d)
  local min_ms = now_ms - %(retention_ms)d
  if min_ms > 0 then
    local rows = oldest_rows(KEYS[1], min_ms - 1, %(chunk)d)
    drop_oldest(KEYS[1], rows, groups, grouped, zprefix)
  end
end
return id
"""


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal, every byte but letters and digits escaped: a prefix
    formatted into a script can hold quotes, backslashes or newlines."""
    # Three digits always: a shorter escape would take a digit that follows it.
    escaped = (
        chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\{b:03d}" for b in text.encode()
    )
    return "'" + "".join(escaped) + "'"


# TRIM's reply without its writes, for a client that may not write (see
# DeadLetterQueue.applies_retention).  KEYS: stream.
LENGTH = "return {redis.call('XLEN', KEYS[1]), 0}"


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
    local rows, full = oldest_rows(KEYS[1], min_ms - 1, tonumber(ARGV[3]))
    drop_oldest(KEYS[1], rows, KEYS[3], KEYS[4], ARGV[2])
    if full then more = 1 end
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
local rows, full = oldest_rows(KEYS[1], ARGV[3], tonumber(ARGV[4]))
drop_oldest(KEYS[1], rows, KEYS[3], KEYS[4], ARGV[2])
-- The emptied stream is kept with its last id: a deleted one would give an entry added in the
-- same millisecond (or under a Redis clock behind) an id at or below ARGV[3], which a next chunk
-- would clear unseen and the UI would take for one already seen. Nothing up to ARGV[3] is left
-- in an empty stream, so stop there.
if forget_if_empty(KEYS[1], KEYS[2], ARGV[1], KEYS[3], KEYS[4], ARGV[2], true) == 0 then
  return {#rows, 0}
end
if full then return {#rows, 1} end
return {#rows, 0}
"""
)

# KEYS: stream, queues, groups, grouped.  ARGV: queue, zprefix, entry ids.  Returns how many
# of them existed.
DELETE = (
    GROUP_HELPERS
    + """
local rows, ids = {}, {}
for i = 3, #ARGV do
  local row = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)[1]
  if row then
    table.insert(rows, row)
    table.insert(ids, row[1])
  end
end
local removed = 0
if #rows > 0 then
  ungroup(rows, KEYS[3], KEYS[4], ARGV[2])
  removed = redis.call('XDEL', KEYS[1], unpack(ids))
end
forget_if_empty(KEYS[1], KEYS[2], ARGV[1], KEYS[3], KEYS[4], ARGV[2])
return removed
"""
)

# Index rows not in their group's index yet, each once (a concurrent reader may be at it too):
# an entry stored before groups existed (no ``group`` field: its group goes in the ``grouped``
# hash), or a row written by hand that names a group.  The caller gives the group it read for
# each row (the row's own, else the ``grouped`` hash's, else computed); a row whose group is
# not that any more is left for the next call.  The keys written get the stream's TTL, as ADD
# gives them.  KEYS: stream, queues, groups, grouped, then the group index of each pair.
# ARGV: queue, then entry id and group pairs.  Returns how many were counted.
GROUP = (
    GROUP_HELPERS
    + """
local done = 0
local ttl = redis.call('PTTL', KEYS[1])
for i = 2, #ARGV, 2 do
  local id, g = ARGV[i], ARGV[i + 1]
  local index = KEYS[4 + i / 2]
  local rows = redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1)
  if #rows > 0 then
    local own = row_group(rows[1][2])
    local counted = false
    if own then
      counted = own == g and redis.call('ZADD', index, 'NX', 0, member(id)) == 1
    else
      local known = redis.call('HGET', KEYS[4], id)
      if not known then
        redis.call('HSET', KEYS[4], id, g)
        known = g
      end
      counted = known == g and redis.call('ZADD', index, 'NX', 0, member(id)) == 1
    end
    if counted then
      redis.call('HINCRBY', KEYS[3], g, 1)
      if ttl > 0 then redis.call('PEXPIRE', index, ttl) end
      done = done + 1
    end
  end
end
if done > 0 and ttl > 0 then
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return done
"""
)

# Part of a rebuild of a queue's counts from its rows (after GROUP has indexed every row):
# take out of one group's index a chunk of members whose row is gone, and at the last chunk
# set the group's count to what its index holds.  KEYS: stream, groups, the group's index.
# ARGV: group, the member to start after ('' for the first), chunk.  Returns {stale members
# removed, the member to continue after, or '' when the group is done}.
REBUILD_GROUP = """
local low = '-'
if ARGV[2] ~= '' then low = '(' .. ARGV[2] end
local members = redis.call('ZRANGEBYLEX', KEYS[3], low, '+', 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for _, m in ipairs(members) do
  local n = string.byte(m, 1) - 96
  local id = string.sub(m, 2, n + 1) .. '-' .. string.sub(m, n + 3)
  if #redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1) == 0 then
    redis.call('ZREM', KEYS[3], m)
    removed = removed + 1
  end
end
if #members == tonumber(ARGV[3]) then return {removed, members[#members]} end
local count = redis.call('ZCARD', KEYS[3])
if count > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], count)
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return {removed, ''}
"""

# Part of a rebuild: a chunk of the ``grouped`` hash, its entries whose row is gone removed.
# KEYS: stream, grouped.  ARGV: HSCAN cursor, chunk.  Returns {removed, next cursor ('0' at
# the end)}.
REBUILD_GROUPED = """
local reply = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local removed = 0
local pairs_ = reply[2]
for i = 1, #pairs_, 2 do
  local id = pairs_[i]
  if #redis.call('XRANGE', KEYS[1], id, id, 'COUNT', 1) == 0 then
    redis.call('HDEL', KEYS[2], id)
    removed = removed + 1
  end
end
return {removed, reply[1]}
"""

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
CLAIM_HELPER = """
local function claim(stream, marker_key, queues, id, task_id, token, queue, ttl_ms, window_ms)
  if #redis.call('XRANGE', stream, id, id, 'COUNT', 1) == 0 then return {'gone'} end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local held = redis.call('GET', marker_key)
  local verdict = 'ok'
  if held then
    local ok, old = pcall(cjson.decode, held)
    local at = ok and type(old) == 'table' and tonumber(old['at_ms']) or now
    local age = now - at
    if not ok or type(old) ~= 'table' or old['phase'] ~= 'claimed'
       or age < tonumber(window_ms) then
      return {'held', held, tostring(age)}
    end
    verdict = 'reclaimed'
  end
  local marker = cjson.encode({task_id = task_id, token = token, at_ms = now, phase = 'claimed'})
  local ttl = tonumber(redis.call('HGET', queues, queue) or ttl_ms)
  redis.call('SET', marker_key, marker, 'PX', ttl)
  if held then return {verdict, marker, held} end
  return {verdict, marker}
end
"""
CLAIM = (
    CLAIM_HELPER
    + """
return claim(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
"""
)

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
