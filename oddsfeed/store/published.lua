-- The published form of a delta (docs/internals.md, "The published payload"), loaded in
-- front of apply.lua. The fan-out forwards the bodies as they are, so each must decode to
-- exactly the `delta` message the Python encoders make of the stored delta
-- (oddsfeed/core/wire.py; tests/store/test_published.py compares them):
--   0xc1 (never the first byte of msgpack), flags (1 = urgent: a status other than open),
--   version, base, apply time in us (uint64 each), epoch length (uint16), JSON length
--   (uint32), all big-endian; then the epoch, the JSON body, the msgpack body.
-- Prices are integer ticks in the store; the wire number is ticks / 10000 as the shortest
-- float that reads back as it: JSON gets the exact decimal (trailing zeros trimmed, at
-- least one fractional digit), msgpack a float64 (cmsgpack would write 2.0 as the integer 2).
-- Any other number is written as cmsgpack writes it in the stored delta: an integral one as
-- an integer, anything else as a float.

-- Keys (member names, selection ids: charset-limited ids) need no JSON escaping.

local pub_char, pub_find, pub_fmt = string.char, string.find, string.format
local PUB_CTRL = '[%z\1-\31"\\]'
local function pub_escape(c)
  local short = ({['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'})[c]
  return short or pub_fmt('\\u%04x', string.byte(c))
end

-- A JSON string: '"', '\' and the control characters escaped (as Python's json does);
-- every other byte, UTF-8 included, as it is.
local function pub_jstr(s)
  if not pub_find(s, PUB_CTRL) then return '"' .. s .. '"' end
  return '"' .. (string.gsub(s, PUB_CTRL, pub_escape)) .. '"'
end

local function pub_mstr(s)
  local n = #s
  if n < 32 then return pub_char(0xa0 + n) .. s end
  if n < 256 then return '\217' .. pub_char(n) .. s end
  if n < 65536 then return struct.pack('>BI2', 0xda, n) .. s end
  return struct.pack('>BI4', 0xdb, n) .. s
end

local function pub_integral(x)
  return x == math.floor(x) and x > -2^63 and x < 2^63
end

local function pub_jnum(x)
  if pub_integral(x) then return pub_fmt('%d', x) end
  for _, f in ipairs({'%.15g', '%.16g'}) do
    local s = pub_fmt(f, x)
    if tonumber(s) == x then return s end
  end
  return pub_fmt('%.17g', x)
end

local function pub_mnum(x)
  if x >= 0 and x < 4294967296 and pub_integral(x) then
    if x < 128 then return pub_char(x) end
    if x < 256 then return '\204' .. pub_char(x) end
    if x < 65536 then return struct.pack('>BI2', 0xcd, x) end
    return struct.pack('>BI4', 0xce, x)
  end
  return cmsgpack.pack(x)  -- as the stored delta has it (an integer when integral)
end

local function pub_jprice(ticks)
  local whole = math.floor(ticks / 10000)
  local frac = ticks - whole * 10000
  if frac == 0 then return pub_fmt('%d.0', whole) end
  if frac % 10 ~= 0 then return pub_fmt('%d.%04d', whole, frac) end
  if frac % 100 ~= 0 then return pub_fmt('%d.%03d', whole, frac / 10) end
  if frac % 1000 ~= 0 then return pub_fmt('%d.%02d', whole, frac / 100) end
  return pub_fmt('%d.%d', whole, frac / 1000)
end

local function pub_json(v)
  local t = type(v)
  if t == 'string' then return pub_jstr(v) end
  if t == 'number' then return pub_jnum(v) end
  if t == 'boolean' then return v and 'true' or 'false' end
  if t == 'table' then
    -- as cmsgpack decides: a sequence (or an empty table) is an array
    local parts = {}
    if #v > 0 or next(v) == nil then
      for i, x in ipairs(v) do parts[i] = pub_json(x) end
      return '[' .. table.concat(parts, ',') .. ']'
    end
    for k, x in pairs(v) do parts[#parts + 1] = pub_jstr(k) .. ':' .. pub_json(x) end
    return '{' .. table.concat(parts, ',') .. '}'
  end
  return 'null'
end

-- One value in both encodings.
local function pub_value(v)
  local t = type(v)
  if t == 'string' then return pub_jstr(v), pub_mstr(v) end
  if t == 'number' then return pub_jnum(v), pub_mnum(v) end
  if t == 'boolean' then
    if v then return 'true', '\195' end
    return 'false', '\194'
  end
  return pub_json(v), cmsgpack.pack(v)
end

local function pub_map(n)
  if n < 16 then return pub_char(0x80 + n) end
  return struct.pack('>BI4', 0xdf, n)
end

-- A member name's msgpack form (the names the deltas use, encoded once).
local PUB_KEYS = {price = '\165price', name = '\164name', status = '\166status',
                  point = '\165point', sel = '\163sel', kind = '\164kind',
                  in_play = '\167in_play', bet_delay_ms = '\172bet_delay_ms',
                  locks = '\165locks', src = '\163src'}
-- The members every delta has (written first) and its apply time (not on the wire).
local PUB_FIXED = {op = true, m = true, e = true, v = true, base = true, ts = true, t = true}

-- A msgpack string's header (the string follows it).
local function pub_mhead(s)
  local n = #s
  if n < 32 then return pub_char(0xa0 + n) end
  if n < 256 then return '\217' .. pub_char(n) end
  if n < 65536 then return struct.pack('>BI2', 0xda, n) end
  return struct.pack('>BI4', 0xdb, n)
end

-- The `sel` member appended to the two buffers (J: JSON, M: msgpack, filled up to j and m;
-- answers the new ends): a price as the wire number, a selection's point false (no line) as
-- null. Pieces go in as they are and are joined once, by the caller's table.concat.
local function pub_sel(sel, J, j, M, m)
  local head = m + 1  -- the map's header, once its size is known
  m = head
  j = j + 1; J[j] = '{'
  local n = 0
  for sid, change in pairs(sel) do
    n = n + 1
    J[j + 1] = n > 1 and ',"' or '"'
    J[j + 2] = sid
    J[j + 3] = '":{'
    j = j + 3
    M[m + 1] = pub_mhead(sid)
    M[m + 2] = sid
    m = m + 3
    local fields = m  -- the selection's map header, below
    local k = 0
    for f, x in pairs(change) do
      k = k + 1
      J[j + 1] = k > 1 and ',"' or '"'
      J[j + 2] = f
      J[j + 3] = '":'
      M[m + 1] = PUB_KEYS[f] or pub_mstr(f)
      if f == 'price' then
        J[j + 4], M[m + 2] = pub_jprice(x), struct.pack('>Bd', 0xcb, x / 10000)
      elseif x == false and f == 'point' then
        J[j + 4], M[m + 2] = 'null', '\192'
      else
        J[j + 4], M[m + 2] = pub_value(x)
      end
      j = j + 4
      m = m + 2
    end
    M[fields] = pub_map(k)
    j = j + 1; J[j] = '}'
  end
  M[head] = pub_map(n)
  j = j + 1; J[j] = '}'
  return j, m
end

-- The payload of a delta that changes one selection's price and nothing else (the most
-- common one), or nil: the same bytes as published_delta's general path below, built with
-- one format and one concatenation instead of piece tables.
local function pub_one_price(delta)
  for k, _ in pairs(delta) do
    if not PUB_FIXED[k] and k ~= 'sel' then return nil end
  end
  local sel = delta.sel
  if sel == nil then return nil end
  local sid, change = next(sel)
  if sid == nil or next(sel, sid) ~= nil then return nil end
  local f, x = next(change)
  if f ~= 'price' or next(change, f) ~= nil then return nil end
  local dm, de, v, base = delta.m, delta.e, delta.v, delta.base
  local json = pub_fmt(
    '{"op":"delta","m":"%s","e":"%s","v":%d,"base":%d,"ts":%d,"sel":{"%s":{"price":%s}}}',
    dm, de, v, base, delta.ts, sid, pub_jprice(x))
  return struct.pack('>BBI8I8I8I2I4', 0xc1, 0, v, base, delta.t, #de, #json) .. de .. json ..
         '\135\162op\165delta\161m' .. pub_mhead(dm) .. dm .. '\161e' .. pub_mhead(de) .. de ..
         struct.pack('>BBBI8BBBBBBI8BBBBI8', 0xa1, 0x76, 0xcf, v,
                     0xa4, 0x62, 0x61, 0x73, 0x65, 0xcf, base, 0xa2, 0x74, 0x73, 0xcf, delta.ts) ..
         '\163sel\129' .. pub_mhead(sid) .. sid .. '\129\165price' ..
         struct.pack('>Bd', 0xcb, x / 10000)
end

-- The payload published for `delta` (the stored delta's table; its `t` is the apply time,
-- which is not a member of the wire message). The members every delta has come first;
-- ids and the epoch need no JSON escaping (ids are charset-limited, the epoch is hex).
local function published_delta(delta)
  local one = pub_one_price(delta)
  if one then return one end
  local dm, de = delta.m, delta.e
  -- (the `false`s size the two tables once for a one-price delta; the ends are j and m)
  local J = {pub_fmt('{"op":"delta","m":"%s","e":"%s","v":%d,"base":%d,"ts":%d',
                     dm, de, delta.v, delta.base, delta.ts),
             false, false, false, false, false, false, false, false, false, false, false, false,
             false, false, false}
  local M = {false, '\162op\165delta\161m', pub_mhead(dm), dm, '\161e', pub_mhead(de), de,
             struct.pack('>BBBI8BBBBBBI8BBBBI8', 0xa1, 0x76, 0xcf, delta.v,
                         0xa4, 0x62, 0x61, 0x73, 0x65, 0xcf, delta.base,
                         0xa2, 0x74, 0x73, 0xcf, delta.ts),
             false, false, false, false, false, false, false, false}
  local j, m, n = 1, 8, 6
  for k, v in pairs(delta) do
    if not PUB_FIXED[k] then
      n = n + 1
      J[j + 1] = ',"'
      J[j + 2] = k
      J[j + 3] = '":'
      j = j + 3
      m = m + 1
      M[m] = PUB_KEYS[k] or pub_mstr(k)
      if k == 'sel' then
        j, m = pub_sel(v, J, j, M, m)
      else
        j, m = j + 1, m + 1
        J[j], M[m] = pub_value(v)
      end
    end
  end
  M[1] = pub_map(n)
  j = j + 1; J[j] = '}'
  local json = table.concat(J, '', 1, j)
  local urgent = 0
  if delta.status ~= nil and delta.status ~= 'open' then urgent = 1 end
  return struct.pack('>BBI8I8I8I2I4', 0xc1, urgent, delta.v, delta.base, delta.t, #de,
                     #json) .. de .. json .. table.concat(M, '', 1, m)
end
