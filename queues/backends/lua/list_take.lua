-- Move up to ARGV[1] messages from the ready list to this consumer's processing list, and
-- refresh the consumer's heartbeat, in one atomic step (the reliable-queue pattern for a batch:
-- LMOVE moves one message per command).
-- KEYS: ready list, processing list, heartbeat key, consumers set
-- ARGV: max messages, heartbeat ttl ms, consumer id
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local items = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if not items then
  return {}
end
-- unpack() is limited by the Lua C stack: push in slices
for i = 1, #items, 4000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 3999, #items)))
end
return items
