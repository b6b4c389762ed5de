-- Append a batch of one task's log lines, numbered in order, keeping the newest ``keep``.
-- KEYS[1] the task's log lines (a list), KEYS[2] their counters (a hash: seq, dropped, lost)
-- ARGV: keep, dropped (lines the writer let go for the same reason as the trim: more than
--       ``keep`` between two writes), lost (lines it could not send: Redis was away), seconds to
--       keep both keys, then the announcement: the number the writer expects the batch's first
--       line to get (0: none), a pub/sub channel and a message, published only if the batch's
--       first line gets that number (the message carries it); then the lines (each a JSON
--       object, as text)
-- A line is stored as "<seq> <json>". ``dropped`` counts the oldest lines trimmed to ``keep``.
-- Returns the number of the batch's first line.
local keep, dropped, lost, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local expected, channel, message = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local n = #ARGV - 7
if n == 0 then  -- counts alone
  if dropped > 0 then redis.call('HINCRBY', KEYS[2], 'dropped', dropped) end
  if lost > 0 then redis.call('HINCRBY', KEYS[2], 'lost', lost) end
  return tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') + 1
end
local last = redis.call('HINCRBY', KEYS[2], 'seq', n)
local first = last - n + 1
local batch = {}
for i = 1, n do batch[i] = (first + i - 1) .. ' ' .. ARGV[i + 7] end
for start = 1, n, 1000 do  -- unpack holds a bounded number of values
  redis.call('RPUSH', KEYS[1], unpack(batch, start, math.min(start + 999, n)))
end
local size = redis.call('LLEN', KEYS[1])
if size > keep then
  redis.call('LTRIM', KEYS[1], size - keep, -1)
  dropped = dropped + size - keep
end
if dropped > 0 then redis.call('HINCRBY', KEYS[2], 'dropped', dropped) end
if lost > 0 then redis.call('HINCRBY', KEYS[2], 'lost', lost) end
-- The registry's pruning deletes both with the record (prune.lua); this only bounds a task's
-- lines whose record is never written (a worker without the registry's Redis, say).
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
if expected == first then redis.call('PUBLISH', channel, message) end
return first
