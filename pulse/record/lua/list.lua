-- One stretch of a page of task ids, walked from the best index, newest (or oldest) first.
-- KEYS: the index of all tasks, a scratch key, then the filter groups' keys one group after the
--       other: a group's value keys, then its membership indexes (search terms, a failure group).
-- ARGV: max score, min score, cursor score ('' = from the start), cursor id, limit, cap (the work
--       this call may do: 1 an index entry walked, plus the read cost for each record read and
--       TERM_COST for each membership checked), read cost, order ('desc' = newest first, 'asc' =
--       oldest first), the prefix of a record's key (the record of id X is that prefix .. X), the
--       number of groups, then per group: its record field ('' = none), a text the id may contain
--       ('' = none), the number of its values and the values (one per value key, in the keys'
--       order), the number of its membership indexes.
-- A task matches when it is in every group (a group is one filter: the statuses asked for, a
-- name, a search term, a free word...). It is in a group when its id contains the group's text,
-- or its record's field holds one of the group's values, or it is in one of the group's
-- membership indexes. The indexes are kept from the record's own fields (write.lua, prune.lua): a task is in
-- i:<field>:<value> exactly when its record's <field> is <value>, so one HMGET of the record
-- checks every field of every group at once, however many statuses or names there are.
-- Every index scores a task by the time it was first recorded, so any of them can drive the walk.
-- Redis is also the broker, and a script holds it whole: a call stops once it has done ``cap``
-- work (the caller goes on with more calls), so no call holds Redis long whatever the filters.
-- Returns {ids and scores flattened, resume score, resume id, work done}; resume is '' unless the
-- cap stopped the walk (else the page is complete or the index exhausted).
local maxs, mins, cscore, cid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit, cap, read_cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local asc, record = ARGV[8] == 'asc', ARGV[9]
local TERM_COST = 2  -- a membership check (ZSCORE) costs about half a record read

-- Keys no task is in are dropped: a group left with none (and no id text) matches nothing.
local groups, need = {}, {}
local k, a = 3, 11
local ngroups = tonumber(ARGV[10])
for g = 1, ngroups do
  local grp = {field = ARGV[a], idsub = ARGV[a + 1], allowed = {}, tkeys = {}, keys = {}, size = 0}
  local nvalues = tonumber(ARGV[a + 2])
  for i = 1, nvalues do
    local n = redis.call('ZCARD', KEYS[k])
    if n > 0 then
      grp.allowed[ARGV[a + 2 + i]] = true
      grp.keys[#grp.keys + 1], grp.size, grp.has_field = KEYS[k], grp.size + n, true
    end
    k = k + 1
  end
  a = a + 3 + nvalues
  local nterms = tonumber(ARGV[a])
  for _ = 1, nterms do
    local n = redis.call('ZCARD', KEYS[k])
    if n > 0 then
      grp.tkeys[#grp.tkeys + 1] = KEYS[k]
      grp.keys[#grp.keys + 1], grp.size = KEYS[k], grp.size + n
    end
    k = k + 1
  end
  a = a + 1
  if #grp.keys == 0 and grp.idsub == '' then return {{}, '', '', 0} end
  groups[g] = grp
end

-- The driver: the smallest one-key group, else all tasks. A group of several keys (statuses, a
-- free word's names and term) that is smaller still is merged into the scratch key when merging
-- its m entries costs less than walking the other driver until limit matches turn up (about
-- limit * n / m entries), and m is at most half this call's cap (the merge is not counted: it
-- costs less than walking). A group with id text cannot drive: any id may contain it.
local driver, driven, best = KEYS[1], 0, redis.call('ZCARD', KEYS[1])
for g = 1, ngroups do
  local grp = groups[g]
  if grp.idsub == '' and #grp.keys == 1 and grp.size < best then driver, driven, best = grp.keys[1], g, grp.size end
end
local merged = false
for g = 1, ngroups do
  local grp = groups[g]
  if grp.idsub == '' and #grp.keys > 1 and grp.size * grp.size < limit * best and 2 * grp.size <= cap then
    best, driven, merged = grp.size, g, true
  end
end
if merged then
  driver = KEYS[2]
  local args = {driver, #groups[driven].keys, unpack(groups[driven].keys)}
  -- Every index holds a task at the same score; MAX (not the default SUM) keeps it.
  table.insert(args, 'AGGREGATE')
  table.insert(args, 'MAX')
  redis.call('ZUNIONSTORE', unpack(args))
  redis.call('EXPIRE', driver, 60)  -- deleted below; this only guards against an error between
end

-- The groups an entry is checked on, cheapest first: id text alone, then record fields, then
-- terms. The record fields are read at most once an entry, all in one HMGET.
local checks = {}
for pass = 1, 3 do
  for g = 1, ngroups do
    local grp = groups[g]
    local kind = (#grp.keys == 0 and 1) or (#grp.tkeys == 0 and 2) or 3
    if g ~= driven and kind == pass then
      checks[#checks + 1] = grp
      if grp.has_field then
        need[#need + 1] = grp.field
        grp.at = #need
      end
    end
  end
end

local find = string.find
local function matches(id)  -- whether the entry matches, and the work its checks cost
  local cost, f = 0, nil
  for _, grp in ipairs(checks) do
    local ok = grp.idsub ~= '' and find(id, grp.idsub, 1, true) ~= nil
    if not ok and grp.has_field then
      if not f then
        f = redis.call('HMGET', record .. id, unpack(need))
        cost = cost + read_cost
      end
      ok = grp.allowed[f[grp.at]] == true
    end
    if not ok then
      for _, tkey in ipairs(grp.tkeys) do
        cost = cost + TERM_COST
        if redis.call('ZSCORE', tkey, id) then
          ok = true
          break
        end
      end
    end
    if not ok then return false, cost end
  end
  return true, cost
end

-- A search for part of an id alone (no other check) may walk every entry: keep that loop to one
-- substring test an entry.
local id_only = #checks == 1 and #checks[1].keys == 0 and checks[1].idsub or false

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
    local keep, cost
    if id_only then keep, cost = find(id, id_only, 1, true) ~= nil, 0 else keep, cost = matches(id) end
    spent = spent + 1 + cost
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
