-- Delete records: those unchanged for longer than the retention, then, while the registry is
-- over its cap, the oldest ended ones. Also deletes the ids given explicitly (purge).
-- ARGV: prefix, now, retention seconds, cap, batch, explicit ids...
-- Returns the number of records deleted.
local prefix, now, retention, cap, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5])
local deleted = 0

local function drop(id)
  local key = prefix .. 't:' .. id
  local f = redis.call('HMGET', key, 'status', 'state', 'name', 'worker', 'group_id', 'queue', 'exc_type')
  local names = {'status', 'state', 'name', 'worker', 'group', 'queue', 'exc_type'}
  for i = 1, 7 do
    if f[i] then redis.call('ZREM', prefix .. 'i:' .. names[i] .. ':' .. f[i], id) end
  end
  if f[1] == 'failed' or f[1] == 'lost' then  -- its failure inbox group (write.lua)
    local group = (f[3] or '') .. '\31' .. (f[7] or '')
    redis.call('ZREM', prefix .. 'i:failgroup:' .. group, id)
    if redis.call('EXISTS', prefix .. 'i:failgroup:' .. group) == 0 then
      redis.call('SREM', prefix .. 'failgroups', group)
    end
  end
  local terms = redis.call('GET', prefix .. 's:' .. id)
  if terms then
    for term in string.gmatch(terms, '[^\31]+') do redis.call('ZREM', prefix .. 'i:term:' .. term, id) end
  end
  redis.call('ZREM', prefix .. 'i:all', id)
  redis.call('ZREM', prefix .. 'i:ended', id)
  redis.call('ZREM', prefix .. 'i:updated', id)
  redis.call('DEL', key, prefix .. 'h:' .. id, prefix .. 'c:' .. id, prefix .. 'l:' .. id, prefix .. 'lc:' .. id,
             prefix .. 's:' .. id)
  deleted = deleted + 1
end

for i = 6, #ARGV do drop(ARGV[i]) end
if retention > 0 then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'i:updated', '-inf', now - retention,
                                 'LIMIT', 0, batch)) do
    drop(id)
  end
end
if cap > 0 then
  local excess = redis.call('ZCARD', prefix .. 'i:all') - cap
  if excess > 0 then
    for _, id in ipairs(redis.call('ZRANGE', prefix .. 'i:ended', 0, math.min(excess, batch) - 1)) do
      drop(id)
    end
  end
end
return deleted
