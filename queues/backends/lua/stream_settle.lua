-- Requeue or dead-letter stream entries a consumer holds: copy each body to the end of the
-- stream (requeue) or to the dead-letter list, then XACK it, atomically. The acked original is
-- removed by the trimming later.
-- KEYS: stream, dead-letter list
-- ARGV: group, mode ('requeue' | 'dead'), ids...
local stream, dead, group, mode = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local moved = 0
for i = 3, #ARGV do
  local entry = redis.call('XRANGE', stream, ARGV[i], ARGV[i])[1]
  if entry then
    local body = entry[2][2]
    if mode == 'requeue' then
      redis.call('XADD', stream, '*', 'm', body)
    else
      redis.call('RPUSH', dead, body)
    end
    moved = moved + 1
  end
  redis.call('XACK', stream, group, ARGV[i])
end
return moved
