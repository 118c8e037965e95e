-- Ack, requeue or dead-letter messages of a processing list, by position, after dropping the
-- acks the consumer deferred (ARGV[3] messages at the head; see list_take.lua).
-- The consumer mirrors its processing list; ARGV[2] is the length it expects before the trim.
-- A different length means the reaper presumed the consumer dead and returned the list to the
-- queue (later takes may have refilled it): the whole list goes back to the head of the queue,
-- nothing is settled (-1) and the messages will be delivered again (at-least-once).
-- KEYS: processing list, ready list, dead-letter list
-- ARGV: mode ('ack' | 'requeue' | 'dead'), expected length, acked at the head,
--   positions (0-based, in the list after the trim)...
local proc, mode = KEYS[1], ARGV[1]
if redis.call('LLEN', proc) ~= tonumber(ARGV[2]) then
  while redis.call('LMOVE', proc, KEYS[2], 'RIGHT', 'LEFT') do
  end
  return -1
end
if tonumber(ARGV[3]) > 0 then
  redis.call('LTRIM', proc, tonumber(ARGV[3]), -1)
end
if #ARGV == 3 then
  return 0
end
-- a marker no imqueue message can equal (they are 32-byte records)
local TOMBSTONE = '\0imq:settled:9c1e5f27a3b84d06'
local values = {}
for i = 4, #ARGV do
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
return #ARGV - 3
