"""The Lua behind core.matching: ``--grep``'s first look at the stream's rows, in Redis, so a
scan sends back only the rows that may hold the text instead of every row."""

from __future__ import annotations

# Read up to ARGV[4] rows from ARGV[2] towards ARGV[3] (XREVRANGE for ARGV[1] 'rev', else
# XRANGE), STEP rows a command, stopping at the row that brings the entries looked at to ARGV[6]
# bytes: that row is the last one, so a call looks at no more than the budget and one row, and
# reads no more than that and STEP rows (an entry can be 1 MiB: a hundred rows a command read
# 100 MB, 190 ms of Redis, before the budget was checked). A row is kept unless it certainly
# cannot match. ARGV[5] is the case-folded needle when that is ASCII: then a row is kept if it
# holds a \u escape, or lowercased holds the needle, or holds one of the few characters whose
# case folding has ASCII in it (ß, the long s, the Kelvin sign, ligatures: FOLDS_TO_ASCII
# below; the entry encoder writes UTF-8, not escapes). Every other character folds to itself
# or to non-ASCII, so a match in the folded message is a match in the lowercased row. ARGV[5]
# is '' when the folded needle is not ASCII: then only rows with a non-ASCII byte or a \u
# escape can match. A row without an entry is not a celery-morgue entry, which no text
# matches; a row's entry is its last field of that name, as redis-py reads it.
# KEYS: stream.  Returns {rows looked at, the last one's id or false, kept rows, 1 if more}.
_GREP_ROWS = r"""
local start, stop, want = ARGV[2], ARGV[3], tonumber(ARGV[4])
local needle, budget = ARGV[5], tonumber(ARGV[6])
local FOLDS_TO_ASCII = {%(folds_to_ascii)s}
local function may_hold(data)
  if string.find(data, '\\u', 1, true) then return true end
  if needle == '' then return string.find(data, '[\128-\255]') ~= nil end
  if string.find(string.lower(data), needle, 1, true) then return true end
  for _, prefix in ipairs(FOLDS_TO_ASCII) do
    if string.find(data, prefix, 1, true) then return true end
  end
  return false
end
local STEP = 8
local scanned, bytes, last, kept = 0, 0, false, {}
while scanned < want and bytes < budget do
  local n = math.min(STEP, want - scanned)
  local rows
  if ARGV[1] == 'rev' then
    rows = redis.call('XREVRANGE', KEYS[1], start, stop, 'COUNT', n)
  else
    rows = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', n)
  end
  for i, row in ipairs(rows) do
    local fields, data = row[2], nil
    for j = 1, #fields, 2 do
      if fields[j] == 'entry' then data = fields[j + 1] end
    end
    scanned, last = scanned + 1, row[1]
    if data then
      bytes = bytes + #data
      if may_hold(data) then kept[#kept + 1] = row end
    end
    if bytes >= budget and i < #rows then return {scanned, last, kept, 1} end
  end
  if #rows < n then return {scanned, last, kept, 0} end
  start = '(' .. last
end
return {scanned, last, kept, 1}
"""

# The UTF-8 beginnings of every character whose case folding holds an ASCII character (and of
# some neighbours: a row kept needlessly is only decoded). tests/test_matching.py checks them
# against every code point.
FOLDS_TO_ASCII = (
    b"\xc3\x9f",  # ß
    b"\xc4\xb0",  # İ
    b"\xc5\x89",  # ŉ
    b"\xc5\xbf",  # long s (U+017F)
    b"\xc7\xb0",  # ǰ
    b"\xe1\xba",  # ẖ ẗ ẘ ẙ ẚ ẞ
    b"\xe2\x84\xaa",  # Kelvin sign
    b"\xef\xac",  # ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ
)


def _lua_bytes(value: bytes) -> str:
    return "'" + "".join(f"\\{byte}" for byte in value) + "'"


GREP_ROWS = _GREP_ROWS.replace(
    "%(folds_to_ascii)s", ", ".join(_lua_bytes(prefix) for prefix in FOLDS_TO_ASCII)
)


# The rows after ARGV[1] (an exclusive '(' id) up to ARGV[2] that no group's index holds: rows
# written by hand, since celery-morgue indexes its own as it stores them. Checked in Redis, so
# a read after a storm of failures sends back their ids, not their entries (400 rows of large
# tracebacks were 13.5 MB). At most ARGV[4] rows, STEP a command, stopping at the row that
# brings the rows' values looked at to ARGV[5] bytes. KEYS: stream, grouped.  ARGV: after, up
# to, where group indexes start, rows, bytes.  Returns {rows looked at, the last one's id or
# false, the ids not indexed, 1 if more}.  Runs after GROUP_HELPERS (row_group, member).
UNINDEXED_ROWS = r"""
local start, stop, zprefix = ARGV[1], ARGV[2], ARGV[3]
local want, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local STEP = 8
local scanned, bytes, last, missing = 0, 0, false, {}
while scanned < want and bytes < budget do
  local n = math.min(STEP, want - scanned)
  local rows = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', n)
  for i, row in ipairs(rows) do
    local fields = row[2]
    scanned, last = scanned + 1, row[1]
    for j = 2, #fields, 2 do bytes = bytes + #fields[j] end
    local g = row_group(fields)
    local held
    if g then
      held = redis.call('ZSCORE', zprefix .. g, member(row[1]))
    else
      held = redis.call('HEXISTS', KEYS[2], row[1]) == 1
    end
    if not held then missing[#missing + 1] = row[1] end
    if bytes >= budget and i < #rows then return {scanned, last, missing, 1} end
  end
  if #rows < n then return {scanned, last, missing, 0} end
  start = '(' .. last
end
return {scanned, last, missing, 1}
"""
