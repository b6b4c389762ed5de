-- Apply one write to a task record, atomically, and keep its indexes in step.
-- KEYS[1] record hash, KEYS[2] progress history list
-- ARGV: prefix, id, now, status ('' = none), expect (comma list, '' = any; 'none' = no record),
--       nset, k1, v1, ..., nfill, k1, v1, ..., history point ('' = none), history size, parent id ('' = none)
-- Returns {code, flat record}: code 1 applied, 0 only missing fields filled, -1 expectation not met.
local prefix, id, now, status, expect = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local key, hist = KEYS[1], KEYS[2]

-- Statuses in lifecycle order. Below 5 a record only moves forward; from 5 on (ended) only along
-- EDGES, so a late or duplicated write can never move a record out of where it ended.
local RANK = {unstarted = 1, scheduled = 2, running = 3, retrying = 3, finished = 5, failed = 5,
              revoked = 5, lost = 5, abandoned = 5, replayed = 6, skipped = 6, expired = 7}
local EDGES = {
  failed = {replayed = true, skipped = true, expired = true},
  lost = {replayed = true, skipped = true, expired = true, finished = true, failed = true, revoked = true},
  finished = {expired = true}, revoked = {expired = true},
  replayed = {expired = true}, skipped = {expired = true},
}

local cur = redis.call('HGET', key, 'status')
if expect ~= '' then
  local met = false
  for wanted in string.gmatch(expect, '[^,]+') do
    if wanted == cur or (wanted == 'none' and not cur) then met = true end
  end
  if not met then return {-1, redis.call('HGETALL', key)} end
end

local function allowed()
  if status == '' or not cur or cur == status then return true end
  local rank = RANK[cur] or 0
  if rank >= 5 then return (EDGES[cur] or {})[status] == true end
  return (RANK[status] or 0) >= rank
end

local old = redis.call('HMGET', key, 'status', 'state', 'name', 'worker', 'queue', 'group_id')
local apply = allowed()
-- A repeated terminal status (the worker's signal and the monitor's event both report the
-- finish) only fills gaps: the first, fuller report wins.
local fill_only = (not apply) or (cur ~= false and cur == status and (RANK[cur] or 0) >= 5)

local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  if fill_only then redis.call('HSETNX', key, ARGV[i], ARGV[i + 1])
  else redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
local nfill = tonumber(ARGV[i])
i = i + 1
for _ = 1, nfill do
  redis.call('HSETNX', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
local point, history_size, parent = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]

if apply and status ~= '' and not fill_only then redis.call('HSET', key, 'status', status) end
redis.call('HSETNX', key, 'created_at', tostring(now))
redis.call('HSET', key, 'updated_at', tostring(now))
if apply and point ~= '' then
  redis.call('LPUSH', hist, point)
  redis.call('LTRIM', hist, 0, history_size - 1)
end

local score = tonumber(redis.call('HGET', key, 'created_at'))
local new = redis.call('HMGET', key, 'status', 'state', 'name', 'worker', 'queue', 'group_id')
local fields = {'status', 'state', 'name', 'worker'}
for f = 1, 4 do
  if old[f] ~= new[f] then
    if old[f] then redis.call('ZREM', prefix .. 'i:' .. fields[f] .. ':' .. old[f], id) end
    if new[f] then redis.call('ZADD', prefix .. 'i:' .. fields[f] .. ':' .. new[f], score, id) end
  end
end
if new[3] and new[3] ~= old[3] then redis.call('SADD', prefix .. 'names', new[3]) end
if new[4] and new[4] ~= old[4] then redis.call('SADD', prefix .. 'workers', new[4]) end
if new[5] and new[5] ~= old[5] then redis.call('SADD', prefix .. 'queues', new[5]) end
if new[6] and new[6] ~= old[6] then redis.call('ZADD', prefix .. 'i:group:' .. new[6], score, id) end
-- Throughput per minute, counted once: when a record enters finished or failed.
if new[1] ~= old[1] and (new[1] == 'finished' or new[1] == 'failed') then
  local bucket = prefix .. 'tp:' .. math.floor(now / 60)
  redis.call('HINCRBY', bucket, new[1], 1)
  redis.call('EXPIRE', bucket, 7200)
end
redis.call('ZADD', prefix .. 'i:all', 'NX', score, id)
redis.call('ZADD', prefix .. 'i:updated', now, id)
if new[1] and (RANK[new[1]] or 0) >= 5 then redis.call('ZADD', prefix .. 'i:ended', 'NX', now, id) end
if parent ~= '' then redis.call('SADD', prefix .. 'c:' .. parent, id) end

local code = 0
if apply and not fill_only then code = 1 end
return {code, redis.call('HGETALL', key)}
