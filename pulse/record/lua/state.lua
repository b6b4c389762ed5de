-- Store a task's PROGRESS meta in Celery's Redis result backend as RedisBackend.store_result does:
-- never over a SUCCESS (a duplicated run must not undo a finish), then publish it on the key's channel.
-- KEYS[1] the backend key; ARGV: the encoded meta (JSON), expiry in seconds (0 = none).
-- Returns 1 when stored, 0 when a SUCCESS was kept.
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
local expires = tonumber(ARGV[2])
if expires > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', expires)
else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
