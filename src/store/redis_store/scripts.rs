//! The Lua scripts: every write to a Redis store is one of them, so each is atomic (see
//! `docs/redis.md`). Ids are rendered with `string.format('%d')`: Lua's own number-to-string
//! conversion switches to exponent notation past 14 digits.

use std::sync::OnceLock;

use ::redis::Script;

/// Appends a batch. KEYS: meta, seq, ev, exp, idem, then one lane key per event. ARGV: an
/// epoch for a store that has none, the wake-up channel, then per event 8 values: payload,
/// lane, channel, thread ('' for none), type, expires_at, idempotency key ('' for none), its
/// fingerprint. Returns the ids as strings, or the string `IDEM` followed by the conflicting
/// key (nothing written).
const APPEND: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local n = (#ARGV - 2) / 8
-- Plan: per event, a stored id (a string: its key names an event already there), or the
-- ordinal of a new event in this batch (a number); `owner` marks the event that writes it.
-- A key seen twice takes the first one's plan. Nothing is written before the plan is whole,
-- so a conflict leaves everything as it was.
local seen, plan, owner, count = {}, {}, {}, 0
for i = 1, n do
  local b = 3 + (i - 1) * 8
  local key, fp = ARGV[b + 6], ARGV[b + 7]
  local s = nil
  if key ~= '' then
    s = seen[key]
    if s == nil then
      local v = redis.call('HGET', KEYS[5], key)
      if v then
        local id, prior = string.match(v, '^(%d+)|(.*)$')
        s = {id, prior}
        seen[key] = s
      end
    end
    if s ~= nil and s[2] ~= fp then return 'IDEM' .. key end
  end
  if s == nil then
    count = count + 1
    owner[i] = true
    s = {count, fp}
    if key ~= '' then seen[key] = s end
  end
  plan[i] = s[1]
end
-- One command per key for the whole batch (in chunks: Lua's unpack has a stack limit).
local function bulk(cmd, key, args)
  for j = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, j, math.min(j + 999, #args)))
  end
end
local ids = {}
if count == 0 then
  for i = 1, n do ids[i] = plan[i] end
  return ids
end
local last = redis.call('INCRBY', KEYS[2], count)
local base = last - count
local ev, exp, idem, lanes = {}, {}, {}, {}
for i = 1, n do
  local p = plan[i]
  if type(p) == 'number' then
    local id = string.format('%d', base + p)
    ids[i] = id
    if owner[i] then
      local b = 3 + (i - 1) * 8
      local lane, ch, thread, ty, x, key = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
      ev[#ev + 1] = id
      ev[#ev + 1] = ARGV[b]
      local lk = KEYS[5 + i]
      local l = lanes[lk]
      if l == nil then l = {}; lanes[lk] = l end
      l[#l + 1] = id
      l[#l + 1] = id .. '|' .. x .. '|' .. thread .. '|' .. ty
      exp[#exp + 1] = x
      exp[#exp + 1] = id .. '|' .. x .. '|' .. ch .. '|' .. lane .. '|' .. thread .. '|' .. ty .. '|' .. key
      if key ~= '' then
        idem[#idem + 1] = key
        idem[#idem + 1] = id .. '|' .. ARGV[b + 7]
      end
    end
  else
    ids[i] = p
  end
end
bulk('HSET', KEYS[3], ev)
bulk('ZADD', KEYS[4], exp)
for lk, l in pairs(lanes) do bulk('ZADD', lk, l) end
if #idem > 0 then bulk('HSET', KEYS[5], idem) end
redis.call('PUBLISH', ARGV[2], string.format('%d', last))
return ids
"#;

/// Purges up to `ARGV[2]` events expired at `ARGV[1]` (ms). KEYS: ev, exp, idem, purged, meta.
/// `ARGV[3]`: the lane key prefix (lane keys are derived from the expiry entries; they share the
/// store's hash tag, so they are in the slot of the declared keys). `ARGV[4]`: how many purge
/// records to keep; the oldest beyond that are folded into meta's `folded` (the highest id
/// folded away), which fetches treat as a gap for any lane that moves across it. Returns how
/// many events were purged.
const PURGE: &str = r#"
local entries = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
for _, m in ipairs(entries) do
  local id, exp, ch, lane, thread, ty, key =
    string.match(m, '^(%d+)|(%d+)|(%d+)|(%d)|([^|]*)|([^|]*)|(.*)$')
  if id then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', ARGV[3] .. ch .. ':' .. lane, id .. '|' .. exp .. '|' .. thread .. '|' .. ty)
    if key ~= '' then
      local v = redis.call('HGET', KEYS[3], key)
      if v and string.match(v, '^(%d+)|') == id then redis.call('HDEL', KEYS[3], key) end
    end
    redis.call('ZADD', KEYS[4], id, id .. '|' .. ch .. '|' .. lane .. '|' .. thread .. '|' .. ty)
  end
  redis.call('ZREM', KEYS[2], m)
end
local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[4])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[4], over)
  local hi = string.match(popped[#popped - 1], '^(%d+)|')
  local cur = redis.call('HGET', KEYS[5], 'folded')
  if cur == false or tonumber(hi) > tonumber(cur) then
    redis.call('HSET', KEYS[5], 'folded', hi)
  end
end
return #entries
"#;

/// Raises the sequence to at least `ARGV[1]`. KEYS: seq, meta; `ARGV[2]`: an epoch for a store that
/// has none, `ARGV[3]` the wake-up channel. Returns the head (as a string) and 1 when it moved.
const ADVANCE: &str = r#"
redis.call('HSETNX', KEYS[2], 'epoch', ARGV[2])
local head = redis.call('GET', KEYS[1]) or '0'
if tonumber(head) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], ARGV[1])
  return {ARGV[1], 1}
end
return {head, 0}
"#;

fn cached(cell: &'static OnceLock<Script>, src: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(src))
}

/// The append script (its SHA is computed once per process).
pub(super) fn append() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, APPEND)
}

/// The purge script.
pub(super) fn purge() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, PURGE)
}

/// The `advance_ids` script.
pub(super) fn advance() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, ADVANCE)
}
