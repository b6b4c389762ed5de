-- One stretch of a page of task ids, walked from the best index, newest (or oldest) first.
-- KEYS: the index of all tasks, a scratch key, then the filter groups' index keys one group after
--       the other.
-- ARGV: max score, min score, cursor score ('' = from the start), cursor id, limit, cap (the work
--       this call may do: 1 an index entry walked, plus the read cost for each record read), read
--       cost, order ('desc' = newest first, 'asc' = oldest first), q ('' = none), the prefix of a
--       record's key (the record of id X is that prefix .. X), the number of groups, then per group
--       its record field and its values (one per key, in the keys' order), then the number of task
--       names that contain q, and those names.
-- A task matches when it is in at least one key of every group (a group is one filter: the
-- statuses asked for, a name, ...) and, with q, when its id contains q or its name is one of the
-- names. The indexes are kept from the record's own fields (write.lua, prune.lua): a task is in
-- i:<field>:<value> exactly when its record's <field> is <value>, so one HMGET of the record
-- checks every filter and the name at once, however many statuses or names there are.
-- Every index scores a task by the time it was first recorded, so any of them can drive the walk.
-- Redis is also the broker, and a script holds it whole: a call stops once it has done ``cap``
-- work (the caller goes on with more calls), so no call holds Redis long whatever the filters.
-- Returns {ids and scores flattened, resume score, resume id, work done}; resume is '' unless the
-- cap stopped the walk (else the page is complete or the index exhausted).
local maxs, mins, cscore, cid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, cap, read_cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local asc, q, record = ARGV[8] == 'asc', ARGV[9], ARGV[10]

local groups, fields, allowed, sizes = {}, {}, {}, {}
local k, a = 3, 12
local ngroups = tonumber(ARGV[11])
for g = 1, ngroups do
  local keys, values, size = {}, {}, 0
  fields[g] = ARGV[a]
  local n = tonumber(ARGV[a + 1])
  for i = 1, n do
    keys[i] = KEYS[k]
    values[ARGV[a + 1 + i]] = true
    size = size + redis.call('ZCARD', KEYS[k])
    k = k + 1
  end
  a = a + 2 + n
  if size == 0 then return {{}, '', '', 0} end
  groups[g], allowed[g], sizes[g] = keys, values, size
end
local names, nnames = {}, tonumber(ARGV[a])
for i = 1, nnames do names[ARGV[a + i]] = true end

-- The driver: the smallest one-key group, else all tasks. A group of several keys (statuses)
-- that is smaller still is merged into the scratch key when merging its m entries costs less
-- than walking the other driver until limit matches turn up (about limit * n / m entries), and
-- m is at most half this call's cap (the merge is not counted: it costs less than walking).
local driver, driven, best = KEYS[1], 0, redis.call('ZCARD', KEYS[1])
for g = 1, ngroups do
  if #groups[g] == 1 and sizes[g] < best then driver, driven, best = groups[g][1], g, sizes[g] end
end
local merged = false
for g = 1, ngroups do
  if #groups[g] > 1 and sizes[g] * sizes[g] < limit * best and 2 * sizes[g] <= cap then
    best, driven, merged = sizes[g], g, true
  end
end
if merged then
  driver = KEYS[2]
  local args = {driver, #groups[driven], unpack(groups[driven])}
  -- Every index holds a task at the same score; MAX (not the default SUM) keeps it.
  table.insert(args, 'AGGREGATE')
  table.insert(args, 'MAX')
  redis.call('ZUNIONSTORE', unpack(args))
  redis.call('EXPIRE', driver, 60)  -- deleted below; this only guards against an error between
end

-- The record fields an entry is checked on: the other groups', then the name for q.
local checks, need = {}, {}
for g = 1, ngroups do
  if g ~= driven then
    checks[#checks + 1] = g
    need[#need + 1] = fields[g]
  end
end
if nnames > 0 then need[#need + 1] = 'name' end

local find = string.find
local function matches(id)  -- whether the entry matches, and whether its record was read
  local in_id = q ~= '' and find(id, q, 1, true) ~= nil
  if #checks == 0 and (q == '' or in_id) then return true, false end
  if q ~= '' and not in_id and nnames == 0 then return false, false end  -- no read needed
  local f = redis.call('HMGET', record .. id, unpack(need))
  for i, g in ipairs(checks) do
    if not allowed[g][f[i]] then return false, true end
  end
  if q == '' or in_id then return true, true end
  return nnames > 0 and names[f[#need]] == true, true
end
-- A search for an id alone (no other filter, no name matching) may walk every entry: keep that
-- loop to one substring test an entry.
local id_only = q ~= '' and #need == 0

-- The walk goes by rank (scores are formatted only for the ids returned: formatting every
-- walked entry's score cost most of a walk). Ranks count in walk order: ZREVRANGE's for desc.
local function count_before(score, inclusive)  -- entries that come before ``score`` in walk order
  local edge = inclusive and score or '(' .. score
  if asc then return redis.call('ZCOUNT', driver, '-inf', edge) end
  return redis.call('ZCOUNT', driver, edge, '+inf')
end
local pos, last = 0, redis.call('ZCARD', driver) - 1
if asc then
  if mins ~= '-inf' then pos = count_before(mins, false) end
  if maxs ~= '+inf' then last = count_before(maxs, true) - 1 end
else
  if maxs ~= '+inf' then pos = count_before(maxs, false) end
  if mins ~= '-inf' then last = count_before(mins, true) - 1 end
end
if cscore ~= '' then
  local seen
  local at = redis.call('ZSCORE', driver, cid)
  if at and tonumber(at) == tonumber(cscore) then
    -- The cursor's task is in the driver: its rank counts what was seen, ties included.
    if asc then seen = redis.call('ZRANK', driver, cid) + 1
    else seen = redis.call('ZREVRANK', driver, cid) + 1 end
  else
    -- Members with the cursor's score come in id order (reversed for desc): skip those seen.
    seen = count_before(cscore, false)
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', driver, cscore, cscore)) do
      if (asc and id <= cid) or (not asc and id >= cid) then seen = seen + 1 end
    end
  end
  if seen > pos then pos = seen end
end

local out, spent, found, size = {}, 0, 0, limit
local last_id = nil
while found < limit and spent < cap and pos <= last do
  local stop = math.min(pos + size, pos + cap - spent, last + 1) - 1
  local ids
  if asc then ids = redis.call('ZRANGE', driver, pos, stop)
  else ids = redis.call('ZREVRANGE', driver, pos, stop) end
  if #ids == 0 then break end
  local used = #ids
  for i = 1, #ids do
    local id = ids[i]
    local keep, read
    if id_only then keep = find(id, q, 1, true) else keep, read = matches(id) end
    spent = spent + (read and 1 + read_cost or 1)
    if keep then
      out[#out + 1] = id
      out[#out + 1] = redis.call('ZSCORE', driver, id)
      found = found + 1
    end
    if found >= limit or spent >= cap then
      used = i
      break
    end
  end
  pos, last_id = pos + used, ids[used]
  size = math.min(size * 4, 1024)  -- a sparse filter walks far: bigger steps
end
local resume_score, resume_id = '', ''
if found < limit and pos <= last and last_id ~= nil then  -- stopped by the cap
  resume_score, resume_id = redis.call('ZSCORE', driver, last_id), last_id
end
if merged then redis.call('DEL', driver) end
return {out, resume_score, resume_id, spent}
