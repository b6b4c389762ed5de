-- One page of task ids, newest first, from a driver index filtered by membership in the others.
-- KEYS: driver sorted set, then the filter sets an id must also be in.
-- ARGV: max score, min score, cursor score ('' = from the top), cursor id, limit, scan cap.
-- Returns {ids and scores flattened, resume score, resume id}; resume is '' when the scan cap
-- was not hit (the page is complete or the index is exhausted).
local driver, maxs, mins = KEYS[1], ARGV[1], ARGV[2]
local cscore, cid = ARGV[3], ARGV[4]
local limit, cap = tonumber(ARGV[5]), tonumber(ARGV[6])
local chunk = 256

-- Members with the boundary score come in reverse id order; skip the ones already seen.
local skip = 0
if cscore ~= '' then
  maxs = cscore
  for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', driver, cscore, cscore)) do
    if id >= cid then skip = skip + 1 end
  end
end

local out, scanned, found = {}, 0, 0
local last_score, last_id = '', ''
while found < limit and scanned < cap do
  local rows = redis.call('ZREVRANGEBYSCORE', driver, maxs, mins, 'WITHSCORES', 'LIMIT', skip, chunk)
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
    if score == maxs then skip = skip + 1 else maxs, skip = score, 1 end
    last_score, last_id = score, id
    if found >= limit or scanned >= cap then break end
  end
  if #rows < 2 * chunk and found < limit and scanned < cap then last_score = '' break end
end
if found >= limit or scanned < cap then last_score, last_id = '', '' end
return {out, last_score, last_id}
