-- Take or keep a lease: KEYS[1] the lease, ARGV[1] the owner, ARGV[2] its lifetime in seconds.
-- Returns 1 when the owner holds it afterwards (taken now, or renewed), 0 when another does.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
