"""The Lua behind core.matching: ``--grep``'s first look at the stream's rows, in Redis, so a
scan sends back only the rows that may hold the text instead of every row."""

from __future__ import annotations

# Read up to ARGV[4] rows from ARGV[2] towards ARGV[3] (XREVRANGE for ARGV[1] 'rev', else
# XRANGE), a hundred a command, stopping early once ARGV[6] bytes of entries were looked at (a
# call stays a few milliseconds even on 32 KiB tracebacks). A row is kept unless it certainly
# cannot match: its entry is plain ASCII without a \u escape and, lowercased, does not hold
# ARGV[5] (the case-folded needle, ASCII; '' when the folded needle is not ASCII, which such a
# row cannot hold). A row without an entry is not a celery-morgue entry, which no text matches.
# KEYS: stream.  Returns {rows looked at, the last one's id or false, kept rows, 1 if more}.
GREP_ROWS = r"""
local start, stop, want = ARGV[2], ARGV[3], tonumber(ARGV[4])
local needle, budget = ARGV[5], tonumber(ARGV[6])
local scanned, bytes, last, kept = 0, 0, false, {}
while scanned < want and bytes < budget do
  local n = math.min(100, want - scanned)
  local rows
  if ARGV[1] == 'rev' then
    rows = redis.call('XREVRANGE', KEYS[1], start, stop, 'COUNT', n)
  else
    rows = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', n)
  end
  for _, row in ipairs(rows) do
    local fields, data = row[2], nil
    for i = 1, #fields, 2 do
      if fields[i] == 'entry' then data = fields[i + 1] break end
    end
    if data then
      bytes = bytes + #data
      if string.find(data, '[\128-\255]') or string.find(data, '\\u', 1, true)
         or (needle ~= '' and string.find(string.lower(data), needle, 1, true)) then
        kept[#kept + 1] = row
      end
    end
  end
  scanned = scanned + #rows
  if #rows > 0 then
    last = rows[#rows][1]
    start = '(' .. last
  end
  if #rows < n then return {scanned, last, kept, 0} end
end
return {scanned, last, kept, 1}
"""
