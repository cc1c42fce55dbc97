-- oddsfeed atomic apply: the one write path for a market (docs/internals.md).
-- Mirrors oddsfeed/core/book.py apply_update exactly; tests/store compares the two.
-- Called with one item (3 KEYS, its ARGV) it answers that item's reply; with several (a
-- batch: 3 KEYS and 12 ARGV per item, items one after another) a list of their replies, the
-- items applied in order, each exactly as when called alone (apply_market below). An item
-- that raises a Lua error answers that error in its place and the next items still apply;
-- like a single call that fails, a failing item keeps the writes it made before the error
-- (Valkey does not roll a script back), and the items after it apply to the state as it
-- left it.
-- One item's KEYS: 1 state, 2 meta hash, 3 history stream
-- One item's ARGV: 1 msgpack update, 2 channel, 3 epoch for a new market, 4 now ms,
--       5 history length, 6 publish command, 7 expected epoch ('' = none), 8 expected version,
--       9 the update's seq as a decimal string ('' = none; compared as text, since Lua
--         numbers are doubles and feed sequences or ns timestamps may exceed 2^53)
--       10 the event's bet-stop record '<gen>:<0|1>' read in the event's slot by the caller
--          ('' = not read: a creation of a missing market then answers need_gate, so only
--          creations pay
--          for the read; oddsfeed/store/gate.py),
--       11 '' for an ordinary update, 'stop' or 'start' for a desk's event bet stop / start
--          carrying the new record in ARGV 10
--       12 'short' for short replies (below), '' (or absent) for full ones
-- Bet stop (store-only state, beside book.py): the meta hash keeps the newest record this
-- market has seen (bs_gen, bs_on) and bs_susp = "open but for the bet stop". While bs_on,
-- the market is never open: a change to open is held as suspended (bs_susp set); bet-start
-- reopens only a market with bs_susp. Records are ordered by gen (one counter per event), so
-- a stale stop or start arriving late changes nothing.
-- Feeds and locks (store-only state in the meta hash too; docs/protocol.md section 6):
--   fd  msgpack {feed name = {priority, last seen ms (server TIME)}} of every feed that
--       wrote this market; drv the feed whose update made the latest version (the driver);
--   lk  msgpack {m = whole-market lock, s = {selection id = true}}; rf:<selection> and rf:*
--       count the feed updates whose fields a selection / whole-market lock dropped;
--   ss  1 while the market is suspended by a silence sweep: the next update of a feed that
--       applies reopens it unless it sets a status itself, whichever feed's sweep it was.
-- upd.feed = {n = name, p = priority, s = staleness ms, h = silence sweep} marks a feed's
-- write; without it the write is a desk's, which no lock refuses and failover ignores.
-- upd.lock = {on = bool, sels = ids or absent for the whole market} is a desk's lock/unlock.
-- The state keeps `locks` (while any is set) and `src` (the driver) for snapshots; a delta
-- carries them when they change. Replies: {'changed', state, delta, refused},
-- {'noop', state, refused} (refused: the lock drops of this update), {'created', state},
-- {'standby', the live feed, state}, {'out_of_order', last seq}, {'precondition', state},
-- {'need_gate'}, {'rejected', reason, path, message}.
-- Short replies (for callers that do not answer with the market): changed, noop and standby
-- carry {epoch, version, status} in the state's place; the other replies are full.
-- In the msgpack maps a selection's point is absent or false when it has no line
-- (Lua tables cannot hold nil), and an empty map may arrive as an empty array.

-- Constants and helpers (taking what they need of an item as arguments, closing over none
-- of its locals): defined once per call, not once per item of a batch.
local FIELDS = {'name', 'kind', 'status', 'in_play', 'bet_delay_ms'}
local DEFAULTS = {kind = '', status = 'open', in_play = false, bet_delay_ms = 0}
local SEL_FIELDS = {'name', 'price', 'status'}

-- A short reply's stand-in for a state (a table, or packed: unpacked here).
local function head(st)
  if type(st) == 'string' then st = cmsgpack.unpack(st) end
  return {st.epoch, st.version, st.status}
end

-- A decimal string <= another, exactly, at any size.
local function seq_le(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

local function new_selection(sid, p)
  if p.name == nil or p.price == nil then
    return nil
  end
  local s = {name = p.name, price = p.price, status = p.status or 'active'}
  if p.point then s.point = p.point end
  return s
end

local function incomplete(sid)
  return {'rejected', 'invalid', 'selections.' .. sid, 'a new selection needs name and price'}
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The locks as the wire shows them: of selections that exist, in id order.
local function locks_wire(l, sels)
  local ids = {}
  for sid, _ in pairs(l.s) do
    if sels[sid] ~= nil then table.insert(ids, sid) end
  end
  table.sort(ids)
  return {market = l.m == true, selections = ids}
end
local function same_locks(a, b)
  return a.market == b.market and table.concat(a.selections, ',') == table.concat(b.selections, ',')
end

local function save_bet_stop(KEYS, bs_gen, bs_on, bs_susp)
  if bs_gen > 0 then
    redis.call('HSET', KEYS[2], 'bs_gen', string.format('%.0f', bs_gen),
               'bs_on', bs_on and '1' or '0', 'bs_susp', bs_susp and '1' or '0')
  end
end

local function save_feeds(KEYS, feed, feeds)
  if feed and not feed.h then redis.call('HSET', KEYS[2], 'fd', cmsgpack.pack(feeds)) end
end

local function remember_source(KEYS, ARGV, src_field)
  if src_field then
    redis.call('HSET', KEYS[2], src_field, ARGV[9])
  end
end

-- The selections of a whole market (create, replace): nil and the bad id when one lacks
-- a name or a price.
local function whole_selections(given, order)
  local sels = {}
  for _, sid in ipairs(order) do
    local p = given[sid]
    if p.status ~= 'removed' then
      local s = new_selection(sid, p)
      if not s then return nil, sid end
      sels[sid] = s
    end
  end
  return sels
end

-- A creation is published as stored; a delta in its wire form (published.lua), which the
-- fan-out forwards without decoding it.
local function publish(ARGV, payload, delta)
  if delta then payload = published_delta(delta) end
  redis.call(ARGV[6], ARGV[2], payload)
end

-- One item, KEYS and ARGV as above; its reply. (The body is not indented, so that it reads
-- as the whole script did.)
local function apply_market(KEYS, ARGV)
local upd = cmsgpack.unpack(ARGV[1])
local raw = redis.call('GET', KEYS[1])
local usels = upd.selections or {}
-- The update's selection ids in their given order (a Lua table forgets it): the first
-- incomplete new selection is the one reported, as in book.py.
local order = upd.order or {}
local ts = upd.ts or tonumber(ARGV[4])
local short = ARGV[12] == 'short'

if ARGV[7] ~= '' then
  if not raw then return {'precondition', ''} end
  local cur = cmsgpack.unpack(raw)
  if cur.epoch ~= ARGV[7] or cur.version ~= tonumber(ARGV[8]) then
    return {'precondition', raw}
  end
end

local gate = ARGV[10] or ''
local mode = ARGV[11] or ''
if not raw and gate == '' and (upd.create or upd.replace) then return {'need_gate'} end
-- The meta hash, read once: the bet stop's fields, then those of feeds and locks (below).
local bs = redis.call('HMGET', KEYS[2], 'bs_gen', 'bs_on', 'bs_susp', 'fd', 'lk', 'drv', 'ss')
local bs_gen = tonumber(bs[1]) or 0
local bs_on = bs[2] == '1'
local bs_susp = bs[3] == '1'
local arg_gen, arg_on = 0, false
if gate ~= '' then
  local g, o = string.match(gate, '^(%d+):([01])$')
  if not g then return redis.error_reply('bad bet-stop record ' .. gate) end
  arg_gen = tonumber(g)
  arg_on = o == '1'
end

if mode ~= '' then
  if arg_gen <= bs_gen then
    -- an older stop or start than one this market has already seen
    if raw then return {'noop', raw} end
    return {'rejected', 'unknown_market', '', 'market ' .. upd.market .. ' does not exist'}
  end
  if not bs_on then bs_susp = false end
  bs_gen = arg_gen
  bs_on = arg_on
  if raw then
    local cur = cmsgpack.unpack(raw)
    if mode == 'stop' and cur.status == 'open' then
      upd.fields = {status = 'suspended'}
      bs_susp = true
    elseif mode == 'start' and bs_susp and cur.status == 'suspended' then
      upd.fields = {status = 'open'}
    end
    if mode == 'start' then bs_susp = false end
  end
  save_bet_stop(KEYS, bs_gen, bs_on, bs_susp)
  if not raw then
    return {'rejected', 'unknown_market', '', 'market ' .. upd.market .. ' does not exist'}
  end
elseif not raw and arg_gen > bs_gen then
  bs_gen = arg_gen
  bs_on = arg_on
  bs_susp = false
end
local f = upd.fields or {}

-- Failover: a feed yields (answered 'standby', its seq record untouched) while another
-- feed of a higher priority (a lower number) was seen within its staleness period; a
-- silence sweep yields while any other feed was. A sweep is no sign of life.
local feed = upd.feed
local feeds = bs[4] and cmsgpack.unpack(bs[4]) or {}
local lk = bs[5] and cmsgpack.unpack(bs[5]) or {m = false, s = {}}
local driver = bs[6]
local swept = bs[7] == '1'
if type(lk.s) ~= 'table' then lk.s = {} end

if feed then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local standby = nil
  if raw then
    for name, rec in pairs(feeds) do
      if name ~= feed.n and now - rec[2] <= feed.s and (feed.h or rec[1] < feed.p) then
        standby = name
        break
      end
    end
  end
  if not feed.h then feeds[feed.n] = {feed.p, now} end
  -- seen, whatever the outcome (a creation saves it below)
  if raw then save_feeds(KEYS, feed, feeds) end
  if standby then return {'standby', standby, short and head(raw) or raw} end
end


-- Sources are checked only against an existing market: a market created anew starts
-- with a clean record (its meta is reset below).
local src_field = nil
if upd.source and ARGV[9] ~= '' then
  src_field = 'src:' .. upd.source
  if raw then
    local last = redis.call('HGET', KEYS[2], src_field)
    if last and seq_le(ARGV[9], last) then
      return {'out_of_order', last}
    end
  end
end




local hist_len = tonumber(ARGV[5])
-- Who made each version, kept beside the delta in the history entry (not published): the
-- feed's source, or desk:<token subject> for the HTTP API.
local writer = upd.source or ''

if not raw then
  if not (upd.create or upd.replace) then
    return {'rejected', 'unknown_market', '', 'market ' .. upd.market .. ' does not exist'}
  end
  for _, k in ipairs({'event', 'sport', 'name'}) do
    if f[k] == nil then
      return {'rejected', 'invalid', k, 'is required to create a market'}
    end
  end
  local sels, bad = whole_selections(usels, order)
  if not sels then return incomplete(bad) end
  local state = {id = upd.market, event = f.event, sport = f.sport, name = f.name,
                 epoch = ARGV[3], version = 1, ts = ts, selections = sels}
  for k, v in pairs(DEFAULTS) do
    if f[k] ~= nil then state[k] = f[k] else state[k] = v end
  end
  if bs_on then
    bs_susp = state.status == 'open'
    if bs_susp then state.status = 'suspended' end
  end
  if feed and not feed.h then state.src = feed.n end
  state.susp_v = 0
  if state.status ~= 'open' then state.susp_v = 1 end
  local packed = cmsgpack.pack(state)
  redis.call('SET', KEYS[1], packed)
  redis.call('DEL', KEYS[2], KEYS[3])
  save_bet_stop(KEYS, bs_gen, bs_on, bs_susp)
  remember_source(KEYS, ARGV, src_field)
  if feed and not feed.h then
    feeds = {[feed.n] = feeds[feed.n]}
    save_feeds(KEYS, feed, feeds)
    redis.call('HSET', KEYS[2], 'drv', feed.n)
  end
  local payload = cmsgpack.pack({op = 'created', market = state, t = now_us()})
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', hist_len, '1-0', 'd', payload, 'w', writer)
  publish(ARGV, payload)
  return {'created', packed}
end

local state = cmsgpack.unpack(raw)
if feed and not feed.h and swept and f.status == nil then f.status = 'open' end

-- Locks: a feed's update loses what a lock holds (every field under a whole-market lock,
-- a locked selection's patch otherwise), counted per selection; the rest applies.
local refused = 0
if feed and lk.m then
  if next(f) ~= nil or #order > 0 or upd.replace then
    redis.call('HINCRBY', KEYS[2], 'rf:*', 1)
    refused = 1
  end
  f, order, usels = {}, {}, {}
  upd.replace = false
elseif feed and next(lk.s) ~= nil then
  local kept = {}
  for _, sid in ipairs(order) do
    if lk.s[sid] then
      redis.call('HINCRBY', KEYS[2], 'rf:' .. sid, 1)
      refused = refused + 1
    else
      table.insert(kept, sid)
    end
  end
  order = kept
end

local locked_before = lk.m or next(lk.s) ~= nil
local locks_before = locked_before and locks_wire(lk, state.selections or {})

-- A status given (by the provider or a desk) decides from now on, not the sweep.
if swept and f.status ~= nil and not (feed and feed.h and f.status == 'suspended') then
  redis.call('HDEL', KEYS[2], 'ss')
end

-- A desk's lock or unlock (of named selections of the market, or of the whole market).
local lock = upd.lock
if lock then
  local have = state.selections or {}
  for _, sid in ipairs(lock.sels or {}) do
    if have[sid] == nil then
      return {'rejected', 'invalid', 'selections', 'unknown selection ' .. sid}
    end
  end
  if lock.sels then
    for _, sid in ipairs(lock.sels) do lk.s[sid] = lock.on or nil end
  elseif lock.on then
    lk.m = true
  else
    lk.m = false
    lk.s = {}
  end
end

for _, k in ipairs({'event', 'sport'}) do
  if f[k] ~= nil and f[k] ~= state[k] then
    return {'rejected', 'conflict', k, k .. ' cannot change (is ' .. state[k] .. ')'}
  end
end

local newf = {}
for _, k in ipairs(FIELDS) do
  if f[k] ~= nil then
    newf[k] = f[k]
  elseif upd.replace and k ~= 'name' then
    newf[k] = DEFAULTS[k]
  else
    newf[k] = state[k]
  end
end

if bs_on and mode == '' then
  if newf.status == 'open' then
    newf.status = 'suspended'
    bs_susp = true
  elseif f.status ~= nil then
    bs_susp = false  -- suspended or closed for a reason of its own: bet-start leaves it
  end
  save_bet_stop(KEYS, bs_gen, bs_on, bs_susp)
end

local old_sels = state.selections or {}
local new_sels = {}
if upd.replace then
  local bad
  new_sels, bad = whole_selections(usels, order)
  if not new_sels then return incomplete(bad) end
  if feed then  -- a locked selection stays as it is, even when the feed left it out
    for sid, _ in pairs(lk.s) do
      local s = old_sels[sid]
      if s then
        new_sels[sid] = {name = s.name, price = s.price, status = s.status, point = s.point}
      end
    end
  end
else
  for sid, s in pairs(old_sels) do
    new_sels[sid] = {name = s.name, price = s.price, status = s.status, point = s.point}
  end
  for _, sid in ipairs(order) do
    local p = usels[sid]
    if p.status == 'removed' then
      new_sels[sid] = nil
    elseif new_sels[sid] == nil then
      local s = new_selection(sid, p)
      if not s then return incomplete(sid) end
      new_sels[sid] = s
    else
      local s = new_sels[sid]
      for _, k in ipairs(SEL_FIELDS) do
        if p[k] ~= nil then s[k] = p[k] end
      end
      if p.point ~= nil then
        if p.point then s.point = p.point else s.point = nil end
      end
    end
  end
end

-- diff (book.diff)
local delta = {op = 'delta', m = state.id, e = state.epoch}
local changed = false
for _, k in ipairs(FIELDS) do
  if newf[k] ~= state[k] then
    delta[k] = newf[k]
    changed = true
  end
end
local sel = {}
local sel_changed = false
for sid, _ in pairs(old_sels) do
  if new_sels[sid] == nil then
    sel[sid] = {status = 'removed'}
    sel_changed = true
  end
end
for sid, s in pairs(new_sels) do
  local b = old_sels[sid]
  if b == nil then
    sel[sid] = {name = s.name, price = s.price, status = s.status, point = s.point or false}
    sel_changed = true
  else
    local c = {}
    local any = false
    for _, k in ipairs(SEL_FIELDS) do
      if b[k] ~= s[k] then c[k] = s[k]; any = true end
    end
    if b.point ~= s.point then c.point = s.point or false; any = true end
    if any then sel[sid] = c; sel_changed = true end
  end
end

local locks_after = locks_before
if lock or (locked_before and (upd.replace or sel_changed)) then
  locks_after = locks_wire(lk, new_sels)
  if not same_locks(locks_before or locks_wire({m = false, s = {}}, {}), locks_after) then
    delta.locks = locks_after
    changed = true
  end
end

if not changed and not sel_changed then
  remember_source(KEYS, ARGV, src_field)
  return {'noop', short and head(state) or raw, refused}
end
if state.status == 'settled' then
  return {'rejected', 'settled', 'status', 'a settled market accepts no further change'}
end

if feed and feed.h and delta.status == 'suspended' then
  redis.call('HSET', KEYS[2], 'ss', '1')
end
local version = state.version + 1
delta.v = version
delta.base = state.version
delta.ts = ts
if sel_changed then delta.sel = sel end
for _, k in ipairs(FIELDS) do state[k] = newf[k] end
state.selections = new_sels
state.version = version
state.ts = ts
if newf.status ~= 'open' then state.susp_v = version end
if delta.locks then
  -- the state keeps them too, for snapshots (nil: none)
  if locks_after.market or #locks_after.selections > 0 then
    state.locks = locks_after
  else
    state.locks = nil
  end
  local kept = {}
  for _, sid in ipairs(locks_after.selections) do kept[sid] = true end
  redis.call('HSET', KEYS[2], 'lk', cmsgpack.pack({m = locks_after.market, s = kept}))
end
if feed and not feed.h and driver ~= feed.n then
  delta.src = feed.n
  state.src = feed.n
  redis.call('HSET', KEYS[2], 'drv', feed.n)
end
local packed = cmsgpack.pack(state)
redis.call('SET', KEYS[1], packed)
remember_source(KEYS, ARGV, src_field)
delta.t = now_us()
local payload = cmsgpack.pack(delta)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', hist_len, string.format('%.0f', version) .. '-0', 'd',
           payload, 'w', writer)
publish(ARGV, payload, delta)
return {'changed', short and head(state) or packed, payload, refused}
end

if #KEYS == 3 then return apply_market(KEYS, ARGV) end
local replies = {}
for i = 0, #KEYS / 3 - 1 do
  local ok, reply = pcall(apply_market, {KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]},
                          {unpack(ARGV, 12 * i + 1, 12 * i + 12)})
  if not ok then
    -- a redis.call error comes as {err = text}, any other Lua error as its text
    reply = redis.error_reply(type(reply) == 'table' and reply.err or tostring(reply))
  end
  replies[i + 1] = reply
end
return replies
