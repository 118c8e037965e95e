-- Messages of the queue not yet acked: the ready list plus every processing list.
-- With ARGV[2] == 'purge' they are also removed (purge returns how many).
-- KEYS: ready list, consumers set
-- ARGV: key prefix, 'count' | 'purge'
local total = redis.call('LLEN', KEYS[1])
local purge = ARGV[2] == 'purge'
if purge then
  redis.call('DEL', KEYS[1])
end
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local proc = ARGV[1] .. 'proc:' .. id
  total = total + redis.call('LLEN', proc)
  if purge then
    redis.call('DEL', proc)
  end
end
return total
