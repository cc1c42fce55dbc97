-- oddsfeed history read: the state and the history entries from a version on, atomically.
-- KEYS: 1 state, 2 history; ARGV: 1 first stream id wanted, 2 max entries
local raw = redis.call('GET', KEYS[1])
if not raw then return {''} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local entries = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
return {raw, first, entries}
