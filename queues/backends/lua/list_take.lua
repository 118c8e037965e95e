-- Settle the acks the consumer deferred, move up to ARGV[1] messages from the ready list to
-- this consumer's processing list and refresh its heartbeat, in one atomic step (the
-- reliable-queue pattern for a batch: LMOVE moves one message per command).
--
-- Acks ride on the next take: once the runner has counted a batch, the consumer only notes how
-- many messages at the head of its processing list are done (ARGV[4]) and this script drops
-- them before taking more, so a batch costs one round trip instead of two. A consumer killed
-- before its next take leaves those messages in its list: they are delivered again (duplicates,
-- never losses).
--
-- ARGV[5] is the length the consumer expects its processing list to have before the trim (-1:
-- do not check). Another length means the reaper presumed the consumer dead and returned its
-- list to the queue, then later takes refilled it: the consumer's mirror no longer matches, so
-- the whole list goes back to the head of the queue (to be delivered again) and the reply's
-- status is -1 (the consumer forgets everything it held).
-- KEYS: ready list, processing list, heartbeat key, consumers set
-- ARGV: max messages, heartbeat ttl ms, consumer id, acked at the head, expected length or -1
-- Returns {status (0 | -1), messages taken}.
local ready, proc = KEYS[1], KEYS[2]
local status = 0
local expected = tonumber(ARGV[5])
if expected >= 0 and redis.call('LLEN', proc) ~= expected then
  status = -1
  -- from the tail to the head keeps the list's order in front of the queue
  while redis.call('LMOVE', proc, ready, 'RIGHT', 'LEFT') do
  end
elseif tonumber(ARGV[4]) > 0 then
  redis.call('LTRIM', proc, tonumber(ARGV[4]), -1)
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
local n = tonumber(ARGV[1])
local items = n > 0 and redis.call('LPOP', ready, n)
if not items then
  return {status, {}}
end
-- unpack() is limited by the Lua C stack: push in slices
for i = 1, #items, 4000 do
  redis.call('RPUSH', proc, unpack(items, i, math.min(i + 3999, #items)))
end
return {status, items}
