-- oddsfeed delete: remove a market's state, meta and history, and publish gone.
-- KEYS: 1 state, 2 meta, 3 history; ARGV: 1 channel, 2 publish command, 3 market id,
--       4 expected epoch ('' = unconditional), 5 expected version
-- Returns false (no such market), {'deleted', state} or {'precondition', state or ''}.
local raw = redis.call('GET', KEYS[1])
if ARGV[4] and ARGV[4] ~= '' then
  if not raw then return {'precondition', ''} end
  local cur = cmsgpack.unpack(raw)
  if cur.epoch ~= ARGV[4] or cur.version ~= tonumber(ARGV[5]) then
    return {'precondition', raw}
  end
end
if not raw then return false end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call(ARGV[2], ARGV[1], cmsgpack.pack({op = 'gone', m = ARGV[3]}))
return {'deleted', raw}
