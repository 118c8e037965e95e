-- The reaper: return the processing lists of dead consumers (heartbeat expired) to the head
-- of the ready list, oldest first, and forget those consumers. With ARGV[2] set, return that
-- one consumer's list unconditionally (a consumer closing cleanly).
-- Keys of consumers are derived from the queue's prefix; they share its hash slot.
-- KEYS: ready list, consumers set
-- ARGV: key prefix, consumer id or ''
local ready, consumers, prefix = KEYS[1], KEYS[2], ARGV[1]
local returned = 0
local function give_back(id)
  local proc = prefix .. 'proc:' .. id
  -- RPOPLPUSH from the tail to the head keeps the list's order in front of the queue
  while redis.call('LMOVE', proc, ready, 'RIGHT', 'LEFT') do
    returned = returned + 1
  end
  redis.call('DEL', prefix .. 'hb:' .. id)
  redis.call('SREM', consumers, id)
end
if ARGV[2] ~= '' then
  give_back(ARGV[2])
  return returned
end
for _, id in ipairs(redis.call('SMEMBERS', consumers)) do
  if redis.call('EXISTS', prefix .. 'hb:' .. id) == 0 then
    give_back(id)
  end
end
return returned
