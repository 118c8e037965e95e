-- A consumer closing: put every entry it still holds back at the end of the stream (so any
-- consumer reads it at once, without waiting for XAUTOCLAIM's idle time), ack the originals
-- and remove the consumer from the group.
-- KEYS: stream
-- ARGV: group, consumer
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local returned = 0
while true do
  local pending = redis.call('XPENDING', stream, group, '-', '+', 1000, consumer)
  if #pending == 0 then
    break
  end
  for _, p in ipairs(pending) do
    local entry = redis.call('XRANGE', stream, p[1], p[1])[1]
    if entry then
      redis.call('XADD', stream, '*', 'm', entry[2][2])
      returned = returned + 1
    end
    redis.call('XACK', stream, group, p[1])
  end
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
return returned
