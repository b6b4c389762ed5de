-- One page of task ids from a driver index, filtered by membership in the others.
-- KEYS: driver sorted set, then the filter sets an id must also be in.
-- ARGV: max score, min score, cursor score ('' = from the start), cursor id, limit, scan cap,
--       order ('desc' = newest first, 'asc' = oldest first).
-- Returns {ids and scores flattened, resume score, resume id}; resume is '' when the scan cap
-- was not hit (the page is complete or the index is exhausted).
local driver, maxs, mins = KEYS[1], ARGV[1], ARGV[2]
local cscore, cid = ARGV[3], ARGV[4]
local limit, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local asc = ARGV[7] == 'asc'
local chunk = 256

-- The moving end of the range (the "bound") walks down (desc) or up (asc); the other is fixed.
local bound, fixed = maxs, mins
if asc then bound, fixed = mins, maxs end
local function fetch(from, skip)
  if asc then
    return redis.call('ZRANGEBYSCORE', driver, from, fixed, 'WITHSCORES', 'LIMIT', skip, chunk)
  end
  return redis.call('ZREVRANGEBYSCORE', driver, from, fixed, 'WITHSCORES', 'LIMIT', skip, chunk)
end

-- Members with the boundary score come in id order (reversed for desc); skip those already seen.
local skip = 0
if cscore ~= '' then
  bound = cscore
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', driver, cscore, cscore)) do
    if (asc and id <= cid) or (not asc and id >= cid) then skip = skip + 1 end
  end
end

local out, scanned, found = {}, 0, 0
local last_score, last_id = '', ''
while found < limit and scanned < cap do
  local rows = fetch(bound, skip)
  if #rows == 0 then last_score = '' break end
  for i = 1, #rows, 2 do
    local id, score = rows[i], rows[i + 1]
    scanned = scanned + 1
    local keep = true
    for k = 2, #KEYS do
      if not redis.call('ZSCORE', KEYS[k], id) then keep = false break end
    end
    if keep then
      out[#out + 1] = id
      out[#out + 1] = score
      found = found + 1
    end
    if score == bound then skip = skip + 1 else bound, skip = score, 1 end
    last_score, last_id = score, id
    if found >= limit or scanned >= cap then break end
  end
  if #rows < 2 * chunk and found < limit and scanned < cap then last_score = '' break end
end
if found >= limit or scanned < cap then last_score, last_id = '', '' end
return {out, last_score, last_id}
