-- Apply writes to one task record, in order and atomically, and keep its indexes in step.
-- KEYS[1] record hash, KEYS[2] progress history list
-- ARGV: prefix, id, now, quiet ('1' = reply with the code only), history size, then one or more steps of
--       status ('' = none), expect (comma list, '' = any; 'none' = no record),
--       nset, k1, v1, ..., nfill, k1, v1, ..., history point ('' = none), parent id ('' = none)
-- Each step follows the lifecycle rules as if written alone; the indexes are updated once, at the end
-- (the monitor sends a task's whole batch of events as one call). A step whose expectation is not met
-- is skipped. The field ``terms`` (search terms, separated by \x1f) is not set as given: a step's
-- terms are added to the record's (at most RECORD_TERMS, terms.py), kept beside it in s:<id>
-- (not in the hash: every read of a record would carry them), and indexed, i:term:<term>.
-- Nor is ``reindex``: it indexes the record as if it were new (for records written before an
-- index existed; the throughput is not counted again). Returns {code of the last step, flat record}: 1 applied, 0 only missing fields filled,
-- -1 expectation not met.
local prefix, id, now, quiet = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local history_size = tonumber(ARGV[5])
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

local function met(expect, cur)
  for wanted in string.gmatch(expect, '[^,]+') do
    if wanted == cur or (wanted == 'none' and not cur) then return true end
  end
  return false
end

local function allowed(cur, status)
  if status == '' or not cur or cur == status then return true end
  local rank = RANK[cur] or 0
  if rank >= 5 then return (EDGES[cur] or {})[status] == true end
  return (RANK[status] or 0) >= rank
end

local RECORD_TERMS = 128
local old = redis.call('HMGET', key, 'status', 'state', 'name', 'worker', 'queue', 'group_id', 'exc_type')
local code, ran, pushed = 0, false, false
local new_terms = {}
local reindex = false  -- a step set the field 'reindex' (upkeep/reindex.py): index as if new
local i = 6
while i <= #ARGV do
  local status, expect = ARGV[i], ARGV[i + 1]
  local sets, n = i + 3, tonumber(ARGV[i + 2])
  local fills, nfill = sets + 2 * n + 1, tonumber(ARGV[sets + 2 * n])
  local point, parent = ARGV[fills + 2 * nfill], ARGV[fills + 2 * nfill + 1]
  i = fills + 2 * nfill + 2
  local cur = redis.call('HGET', key, 'status')
  if expect ~= '' and not met(expect, cur) then
    code = -1
  else
    ran = true
    local apply = allowed(cur, status)
    -- A repeated terminal status (the worker's signal and the monitor's event both report the
    -- finish) only fills gaps: the first, fuller report wins.
    local fill_only = (not apply) or (cur ~= false and cur == status and (RANK[cur] or 0) >= 5)
    for j = sets, sets + 2 * n - 1, 2 do
      if ARGV[j] == 'terms' then new_terms[#new_terms + 1] = ARGV[j + 1]
      elseif ARGV[j] == 'reindex' then reindex = true
      elseif fill_only then redis.call('HSETNX', key, ARGV[j], ARGV[j + 1])
      else redis.call('HSET', key, ARGV[j], ARGV[j + 1]) end
    end
    for j = fills, fills + 2 * nfill - 1, 2 do redis.call('HSETNX', key, ARGV[j], ARGV[j + 1]) end
    if apply and status ~= '' and not fill_only then redis.call('HSET', key, 'status', status) end
    if apply and point ~= '' then
      redis.call('LPUSH', hist, point)
      pushed = true
    end
    if parent ~= '' then redis.call('SADD', prefix .. 'c:' .. parent, id) end
    code = (apply and not fill_only) and 1 or 0
  end
end
if not ran then
  if quiet == '1' then return {code} end
  return {code, redis.call('HGETALL', key)}
end
if pushed then redis.call('LTRIM', hist, 0, history_size - 1) end

-- updated_at never goes back: writers on machines whose clocks lag would otherwise make a newer
-- version look older, and pages keep the copy with the newest updated_at.
local before = tonumber(redis.call('HGET', key, 'updated_at'))
if before and before > now then now = before end
redis.call('HSETNX', key, 'created_at', tostring(now))
redis.call('HSET', key, 'updated_at', tostring(now))
local score = tonumber(redis.call('HGET', key, 'created_at'))
local new = redis.call('HMGET', key, 'status', 'state', 'name', 'worker', 'queue', 'group_id', 'exc_type')
if reindex then old = {} end  -- ZADD and SADD again are harmless; the throughput is not counted
local fields = {'status', 'state', 'name', 'worker', 'queue', '', 'exc_type'}
for f = 1, 7 do
  if f ~= 6 and old[f] ~= new[f] then
    if old[f] then redis.call('ZREM', prefix .. 'i:' .. fields[f] .. ':' .. old[f], id) end
    if new[f] then redis.call('ZADD', prefix .. 'i:' .. fields[f] .. ':' .. new[f], score, id) end
  end
end
-- The failure inbox: unresolved failures (failed or lost) by task name and exception type, each
-- group an index like the others (by first-record time), the groups named in the set failgroups.
local function failgroup(f)
  if f[1] ~= 'failed' and f[1] ~= 'lost' then return nil end
  return (f[3] or '') .. '\31' .. (f[7] or '')
end
local was, now_in = failgroup(old), failgroup(new)
if was ~= now_in then
  if was then
    local gkey = prefix .. 'i:failgroup:' .. was
    redis.call('ZREM', gkey, id)
    if redis.call('EXISTS', gkey) == 0 then redis.call('SREM', prefix .. 'failgroups', was) end
  end
  if now_in then
    redis.call('ZADD', prefix .. 'i:failgroup:' .. now_in, score, id)
    redis.call('SADD', prefix .. 'failgroups', now_in)
  end
end
if new[3] and new[3] ~= old[3] then redis.call('SADD', prefix .. 'names', new[3]) end
if new[4] and new[4] ~= old[4] then redis.call('SADD', prefix .. 'workers', new[4]) end
if new[5] and new[5] ~= old[5] then redis.call('SADD', prefix .. 'queues', new[5]) end
if new[6] and new[6] ~= old[6] then redis.call('ZADD', prefix .. 'i:group:' .. new[6], score, id) end
if #new_terms > 0 then
  local have, count, added = {}, 0, false
  local terms_key = prefix .. 's:' .. id
  local kept = redis.call('GET', terms_key)
  if kept then
    for term in string.gmatch(kept, '[^\31]+') do
      have[term] = true
      count = count + 1
    end
  end
  for _, given in ipairs(new_terms) do
    for term in string.gmatch(given, '[^\31]+') do
      if count >= RECORD_TERMS then break end
      if not have[term] then
        have[term], count, added = true, count + 1, true
        kept = kept and (kept .. '\31' .. term) or term
        redis.call('ZADD', prefix .. 'i:term:' .. term, score, id)
      end
    end
  end
  if added then redis.call('SET', terms_key, kept) end
end
-- Throughput per minute, counted once: when a record enters finished or failed.
if not reindex and new[1] ~= old[1] and (new[1] == 'finished' or new[1] == 'failed') then
  local bucket = prefix .. 'tp:' .. math.floor(now / 60)
  redis.call('HINCRBY', bucket, new[1], 1)
  redis.call('EXPIRE', bucket, 7200)
end
-- Analytics (the constants and field spelling are record/analytics.py's): a record entering what it
-- ended in counts in its minute, its hour and the totals; a finished or failed one adds its runtime
-- and (first attempt, no ETA) queue wait to histograms. Once per record and status, as above.
local OUTCOME = {finished = true, failed = true, revoked = true, lost = true, abandoned = true}
if not reindex and new[1] ~= old[1] and OUTCOME[new[1]] then
  local BOUNDS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50,
                  100, 250, 500, 1000, 2500, 5000, 10000}
  local function label(value, set, cap)  -- first come first kept, so a series never changes label
    if not value or value == '' then return 'unknown' end
    if #value > 200 or string.find(value, '\31', 1, true) then return 'other' end
    if redis.call('SISMEMBER', set, value) == 1 then return value end
    if value == 'other' or value == 'unknown' or redis.call('SCARD', set) >= cap then return 'other' end
    redis.call('SADD', set, value)
    return value
  end
  local name = label(new[3], prefix .. 'an:names', 200)
  local tail = '\31' .. label(new[5], prefix .. 'an:queues', 50) .. '\31' .. name
  local minute = math.floor(now / 60)
  local mkey, hkey = prefix .. 'an:m:' .. minute, prefix .. 'an:h:' .. math.floor(minute / 60)
  local totals = prefix .. 'an:total'
  local function count(field)  -- a 1 is a new field, maybe of a new hash: (re)set the TTL then
    if redis.call('HINCRBY', mkey, field .. '\31' .. name, 1) == 1 then redis.call('EXPIRE', mkey, 86520) end
    if redis.call('HINCRBY', hkey, field .. '\31' .. name, 1) == 1 then redis.call('EXPIRE', hkey, 93600) end
    redis.call('HINCRBY', totals, field .. tail, 1)
  end
  local function observe(kind, seconds)
    seconds = math.max(seconds, 0)  -- clocks of producer and worker hosts may disagree
    local b = #BOUNDS + 1
    for i = 1, #BOUNDS do
      if seconds <= BOUNDS[i] then b = i break end
    end
    count(kind .. b)
    redis.call('HINCRBYFLOAT', totals, string.upper(kind) .. tail, seconds)
  end
  count('o' .. new[1])
  if new[1] == 'finished' or new[1] == 'failed' then
    local t = redis.call('HMGET', key, 'started_at', 'finished_at', 'runtime', 'sent_at', 'retries', 'eta')
    local started, finished, sent = tonumber(t[1]), tonumber(t[2]), tonumber(t[4])
    local runtime = tonumber(t[3]) or (started and finished and finished - started)
    if runtime then observe('r', runtime) end
    -- A retry keeps its first sent_at, and an ETA task waits on purpose: neither waited in a queue.
    if started and sent and not t[6] and (tonumber(t[5]) or 0) == 0 then observe('w', started - sent) end
  end
end
if redis.call('ZADD', prefix .. 'i:all', 'NX', score, id) == 1 then
  -- A new record: marked as indexed since it was made (upkeep/reindex.py stops at the first one),
  -- and the characters of its id join those of every id (a search for text with a character no
  -- id has cannot be part of an id: listing.py then needs no walk).
  redis.call('HSET', key, 'indexed', '1')
  local seen, chars = {}, {}
  for c = 1, #id do
    local char = string.sub(id, c, c)
    if not seen[char] then
      seen[char] = true
      chars[#chars + 1] = char
    end
  end
  redis.call('SADD', prefix .. 'idchars', unpack(chars))
end
redis.call('ZADD', prefix .. 'i:updated', now, id)
if new[1] and (RANK[new[1]] or 0) >= 5 then redis.call('ZADD', prefix .. 'i:ended', 'NX', now, id) end

if quiet == '1' then return {code} end
return {code, redis.call('HGETALL', key)}
