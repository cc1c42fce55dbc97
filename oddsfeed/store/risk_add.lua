-- oddsfeed risk counts: add one slip's counts to an account's bucket (docs/operations.md).
-- KEYS: 1 the bucket hash (one window, one bucket of time)
-- ARGV: 1 the account (token subject), 2 msgpack array of increments (core/risk.py FIELDS),
--       3 expire-at in ms, 4 the most accounts one bucket holds
-- Returns 1 when counted, 0 when the bucket is full and the account is not in it yet.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local vals = {}
if cur then
  vals = cmsgpack.unpack(cur)
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
local inc = cmsgpack.unpack(ARGV[2])
for i = 1, #inc do vals[i] = (vals[i] or 0) + inc[i] end
redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(vals))
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
