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

local PUB_ESCAPES = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                     ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}

local function pub_escape(c)
  return PUB_ESCAPES[c] or string.format('\\u%04x', string.byte(c))
end

-- A JSON string: '"', '\' and the control characters escaped (as Python's json does);
-- every other byte, UTF-8 included, as it is.
local function pub_jstr(s)
  return '"' .. (string.gsub(s, '[%z\1-\31"\\]', pub_escape)) .. '"'
end

local function pub_jnum(x)
  if x == math.floor(x) and x > -2^63 and x < 2^63 then return string.format('%d', x) end
  for _, f in ipairs({'%.15g', '%.16g'}) do
    local s = string.format(f, x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

local function pub_jprice(ticks)
  local whole = math.floor(ticks / 10000)
  local frac = ticks - whole * 10000
  if frac == 0 then return string.format('%d.0', whole) end
  return string.format('%d.', whole) .. (string.gsub(string.format('%04d', frac), '0+$', ''))
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

local function pub_map(n)
  if n < 16 then return string.char(0x80 + n) end
  return struct.pack('>BI4', 0xdf, n)
end

-- The `sel` member in both encodings: a selection's point false (no line) is null.
local function pub_sel(sel)
  local js, ms, n = {}, {}, 0
  for sid, change in pairs(sel) do
    local jf, mf, k = {}, {}, 0
    for f, x in pairs(change) do
      k = k + 1
      local jv, mv
      if f == 'price' then
        jv, mv = pub_jprice(x), struct.pack('>Bd', 0xcb, x / 10000)
      elseif x == false and f == 'point' then
        jv, mv = 'null', '\192'
      else
        jv, mv = pub_json(x), cmsgpack.pack(x)
      end
      jf[k] = pub_jstr(f) .. ':' .. jv
      mf[k] = cmsgpack.pack(f) .. mv
    end
    n = n + 1
    js[n] = pub_jstr(sid) .. ':{' .. table.concat(jf, ',') .. '}'
    ms[n] = cmsgpack.pack(sid) .. pub_map(k) .. table.concat(mf)
  end
  return '{' .. table.concat(js, ',') .. '}', pub_map(n) .. table.concat(ms)
end

-- The payload published for `delta` (the stored delta's table; its `t` is the apply time,
-- which is not a member of the wire message).
local function published_delta(delta)
  local js, ms, n = {}, {}, 0
  for k, v in pairs(delta) do
    if k ~= 't' then
      local jv, mv
      if k == 'sel' then
        jv, mv = pub_sel(v)
      else
        jv, mv = pub_json(v), cmsgpack.pack(v)
      end
      n = n + 1
      js[n] = pub_jstr(k) .. ':' .. jv
      ms[n] = cmsgpack.pack(k) .. mv
    end
  end
  local json = '{' .. table.concat(js, ',') .. '}'
  local urgent = 0
  if delta.status ~= nil and delta.status ~= 'open' then urgent = 1 end
  return struct.pack('>BBI8I8I8I2I4', 0xc1, urgent, delta.v, delta.base, delta.t, #delta.e,
                     #json) .. delta.e .. json .. pub_map(n) .. table.concat(ms)
end
