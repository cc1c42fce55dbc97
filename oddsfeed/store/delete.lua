-- oddsfeed delete: remove a market's state, meta and history, and publish gone.
-- KEYS: 1 state, 2 meta, 3 history; ARGV: 1 channel, 2 publish command, 3 market id
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call(ARGV[2], ARGV[1], cmsgpack.pack({op = 'gone', m = ARGV[3]}))
return raw
