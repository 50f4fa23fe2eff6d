"""The Lua scripts behind core.redrive: TURN, one call per message before its publish, removes the
previous message's entry (it was published) and claims this one; LEAVE removes a published entry
on its own (at the end of a batch, or before a paced run's wait).

TURN claims with CLAIM's own function (core.dlq_scripts CLAIM_HELPER), and LEAVE keeps the
rule of FINISH: an entry is claimed only if it still exists and nobody holds it (a "claimed"
marker older than the claim window is a requeue that stopped, and may be taken over); a
published entry leaves with our marker. Claiming at the entry's turn, not a batch ahead, is
what keeps an entry another operator deleted meanwhile from being sent, and a paced run from
holding claims longer than the window.
"""

from __future__ import annotations

from celery_morgue.core.dlq_scripts import CLAIM_HELPER, GROUP_HELPERS

# A published entry leaves (out of its group too), and our marker with it: the marker is ours
# whether it still says "claimed" or already "published" (CONFIRM runs right after the publish,
# its reply read later; if it did not run, the claim is still ours). Returns forget_if_empty's
# answer: how many entries the queue has left.
_LEAVE = """
local function leave(stream, queues, groups, grouped, marker, queue, zprefix, id, claimed,
                      published)
  local rows = redis.call('XRANGE', stream, id, id, 'COUNT', 1)
  if #rows > 0 then
    ungroup(rows, groups, grouped, zprefix)
    redis.call('XDEL', stream, id)
  end
  local held = redis.call('GET', marker)
  if held == claimed or held == published then redis.call('DEL', marker) end
  return forget_if_empty(stream, queues, queue, groups, grouped, zprefix)
end
"""

# KEYS: stream, queues, groups, grouped, this entry's marker[, the previous entry's marker].
# ARGV: queue, zprefix, default ttl ms, claim window ms, entry id, new task id, token[, the
# previous entry's id, its claimed marker, its published marker].  The previous entry
# (published) leaves; then this one is claimed.  Returns what CLAIM returns: {'ok', marker},
# {'reclaimed', marker, old marker}, {'gone'} or {'held', old marker, age ms}.
TURN = (
    GROUP_HELPERS
    + CLAIM_HELPER
    + _LEAVE
    + """
if #KEYS == 6 then
  if leave(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[1], ARGV[2], ARGV[8], ARGV[9],
           ARGV[10]) == 0 then
    return {'gone'}
  end
end
return claim(KEYS[1], KEYS[5], KEYS[2], ARGV[5], ARGV[6], ARGV[7], ARGV[1], ARGV[3], ARGV[4])
"""
)

# The last published entry of a batch leaves before the next batch is read (a read under a text
# filter can take seconds), and a paced run's before its wait.  KEYS: stream, queues, groups,
# grouped, its marker.  ARGV: queue, zprefix, entry id, its claimed marker, its published marker.
LEAVE = (
    GROUP_HELPERS
    + _LEAVE
    + """
leave(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"""
)
