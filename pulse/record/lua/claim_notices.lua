-- Claim the alert notices due for delivery: KEYS[1] the outbox (a sorted set by next attempt time),
-- ARGV[1] now, ARGV[2] the most to claim, ARGV[3] the claim's length in seconds. A claimed notice's
-- next attempt moves past the claim, so no other caller takes it while it is being delivered; if
-- its deliverer dies, it is due again when the claim runs out. Returns the claimed ids.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[3])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', until_, id)
end
return due
