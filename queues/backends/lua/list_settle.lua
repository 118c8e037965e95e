-- Ack, requeue or dead-letter messages of a processing list, by position.
-- The consumer mirrors its processing list; ARGV[2] is the length it expects. A different
-- length means the reaper presumed the consumer dead and already returned the list to the
-- queue: nothing is settled (-1) and the messages will be delivered again (at-least-once).
-- KEYS: processing list, ready list, dead-letter list
-- ARGV: mode ('trim' | 'ack' | 'requeue' | 'dead'), expected length, positions (0-based)...
--   'trim' acks the first ARGV[3] messages (the common case: a whole, oldest batch).
local proc, mode = KEYS[1], ARGV[1]
if redis.call('LLEN', proc) ~= tonumber(ARGV[2]) then
  return -1
end
if mode == 'trim' then
  redis.call('LTRIM', proc, tonumber(ARGV[3]), -1)
  return tonumber(ARGV[3])
end
-- a marker no imqueue message can equal (they are 32-byte records)
local TOMBSTONE = '\0imq:settled:9c1e5f27a3b84d06'
local values = {}
for i = 3, #ARGV do
  local pos = tonumber(ARGV[i])
  if mode ~= 'ack' then
    values[#values + 1] = redis.call('LINDEX', proc, pos)
  end
  redis.call('LSET', proc, pos, TOMBSTONE)
end
redis.call('LREM', proc, 0, TOMBSTONE)
if mode == 'requeue' then
  -- back to the head, in their original order: they are the oldest
  for i = #values, 1, -1 do
    redis.call('LPUSH', KEYS[2], values[i])
  end
elseif mode == 'dead' then
  for i = 1, #values, 4000 do
    redis.call('RPUSH', KEYS[3], unpack(values, i, math.min(i + 3999, #values)))
  end
end
return #ARGV - 2
