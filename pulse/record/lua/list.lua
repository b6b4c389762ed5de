-- One page of task ids, walked from the best index, newest (or oldest) first.
-- KEYS: the index of all tasks, a scratch key, the filter groups' keys one group after the other,
--       then the name indexes whose name contains q.
-- ARGV: max score, min score, cursor score ('' = from the start), cursor id, limit, scan cap,
--       order ('desc' = newest first, 'asc' = oldest first), q ('' = none), the number of groups,
--       each group's number of keys, the number of name indexes.
-- A task matches when it is in at least one key of every group (a group is one filter: the
-- statuses asked for, a name, ...) and, with q, when its id contains q or it is in a name index.
-- Every index scores a task by the time it was first recorded, so any of them can drive the walk.
-- Returns {ids and scores flattened, resume score, resume id}; resume is '' when the scan cap
-- was not hit (the page is complete or the index is exhausted).
local maxs, mins, cscore, cid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local asc, q = ARGV[7] == 'asc', ARGV[8]

local groups, sizes, k = {}, {}, 3
local ngroups = tonumber(ARGV[9])
for g = 1, ngroups do
  local keys, size = {}, 0
  for i = 1, tonumber(ARGV[9 + g]) do
    keys[i] = KEYS[k]
    size = size + redis.call('ZCARD', KEYS[k])
    k = k + 1
  end
  if size == 0 then return {{}, '', ''} end
  groups[g], sizes[g] = keys, size
end
local names = {}
for i = 1, tonumber(ARGV[10 + ngroups]) do names[i] = KEYS[k + i - 1] end

-- The driver: the smallest one-key group, else all tasks. A group of several keys (statuses)
-- that is smaller still is merged into the scratch key when merging its m entries costs less
-- than walking the other driver until limit matches turn up (about limit * n / m entries).
local driver, driven, best = KEYS[1], 0, redis.call('ZCARD', KEYS[1])
for g = 1, ngroups do
  if #groups[g] == 1 and sizes[g] < best then driver, driven, best = groups[g][1], g, sizes[g] end
end
local merged = false
for g = 1, ngroups do
  if #groups[g] > 1 and sizes[g] * sizes[g] < limit * best then
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

-- The other groups, most selective first: a task failing one is dropped after one lookup.
local checks = {}
for g = 1, ngroups do
  if g ~= driven then checks[#checks + 1] = g end
end
table.sort(checks, function(a, b) return sizes[a] < sizes[b] end)

local function in_any(keys, id)
  for _, key in ipairs(keys) do
    if redis.call('ZSCORE', key, id) then return true end
  end
  return false
end

local find = string.find
local function matches(id)
  for _, g in ipairs(checks) do
    if not in_any(groups[g], id) then return false end
  end
  if q == '' then return true end
  return find(id, q, 1, true) ~= nil or in_any(names, id)
end
-- A search for an id alone (no other filter, no name matching) may walk every entry: keep that
-- loop to one substring test an entry.
local id_only = q ~= '' and #checks == 0 and #names == 0

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
  -- Members with the cursor's score come in id order (reversed for desc): skip those seen.
  local seen = count_before(cscore, false)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', driver, cscore, cscore)) do
    if (asc and id <= cid) or (not asc and id >= cid) then seen = seen + 1 end
  end
  if seen > pos then pos = seen end
end

local out, scanned, found, size = {}, 0, 0, limit
local last_id = nil
while found < limit and scanned < cap and pos <= last do
  local stop = math.min(pos + size, pos + cap - scanned, last + 1) - 1
  local ids
  if asc then ids = redis.call('ZRANGE', driver, pos, stop)
  else ids = redis.call('ZREVRANGE', driver, pos, stop) end
  if #ids == 0 then break end
  for i = 1, #ids do
    local id = ids[i]
    local keep
    if id_only then keep = find(id, q, 1, true) else keep = matches(id) end
    if keep then
      out[#out + 1] = id
      out[#out + 1] = redis.call('ZSCORE', driver, id)
      found = found + 1
      if found >= limit then
        scanned, pos, last_id = scanned + i, pos + i, id
        break
      end
    end
  end
  if found < limit then scanned, pos, last_id = scanned + #ids, pos + #ids, ids[#ids] end
  size = math.min(size * 4, 1024)  -- a sparse filter walks far: bigger steps
end
local resume_score, resume_id = '', ''
if found < limit and pos <= last and last_id ~= nil then  -- stopped by the cap
  resume_score, resume_id = redis.call('ZSCORE', driver, last_id), last_id
end
if merged then redis.call('DEL', driver) end
return {out, resume_score, resume_id}
