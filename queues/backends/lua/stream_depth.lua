-- Entries not yet acked by a group: its pending entries plus its lag (entries not yet
-- delivered). The largest over the stream's groups; with ARGV[1] == 'purge' the stream is
-- emptied and every group reset (purge returns the count).
-- KEYS: stream
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local depth = 0
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do
    info[g[i]] = g[i + 1]
  end
  local lag = info['lag']
  if not lag then
    -- Redis cannot tell the lag after some deletions: count what follows last-delivered-id
    lag = #redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+')
  end
  depth = math.max(depth, info['pending'] + lag)
  groups[#groups + 1] = info['name']
end
if ARGV[1] == 'purge' then
  redis.call('DEL', KEYS[1])
  for _, name in ipairs(groups) do
    redis.call('XGROUP', 'CREATE', KEYS[1], name, '$', 'MKSTREAM')
  end
end
return depth
