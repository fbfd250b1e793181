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
local pending = {}
for i = 0, n - 1 do
  local b = 3 + i * 8
  local key = ARGV[b + 6]
  if key ~= '' then
    local fp = ARGV[b + 7]
    local prior = pending[key]
    if prior == nil then
      local v = redis.call('HGET', KEYS[5], key)
      if v then prior = string.match(v, '^%d+|(.*)$') end
    end
    if prior ~= nil and prior ~= fp then return 'IDEM' .. key end
    pending[key] = fp
  end
end
local ids = {}
local head = nil
for i = 0, n - 1 do
  local b = 3 + i * 8
  local key = ARGV[b + 6]
  local id = nil
  if key ~= '' then
    local v = redis.call('HGET', KEYS[5], key)
    if v then id = string.match(v, '^(%d+)|') end
  end
  if id == nil then
    id = string.format('%d', redis.call('INCR', KEYS[2]))
    head = id
    local lane, ch, thread, ty, exp = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
    redis.call('HSET', KEYS[3], id, ARGV[b])
    redis.call('ZADD', KEYS[6 + i], id, id .. '|' .. exp .. '|' .. thread .. '|' .. ty)
    redis.call('ZADD', KEYS[4], exp,
      id .. '|' .. exp .. '|' .. ch .. '|' .. lane .. '|' .. thread .. '|' .. ty .. '|' .. key)
    if key ~= '' then redis.call('HSET', KEYS[5], key, id .. '|' .. ARGV[b + 7]) end
  end
  ids[i + 1] = id
end
if head then redis.call('PUBLISH', ARGV[2], head) end
return ids
"#;

/// Purges up to ARGV[2] events expired at ARGV[1] (ms). KEYS: ev, exp, idem, purged, meta.
/// ARGV[3]: the lane key prefix (lane keys are derived from the expiry entries; they share the
/// store's hash tag, so they are in the slot of the declared keys). ARGV[4]: how many purge
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

/// Raises the sequence to at least ARGV[1]. KEYS: seq, meta; ARGV[2]: an epoch for a store that
/// has none, ARGV[3] the wake-up channel. Returns the head (as a string) and 1 when it moved.
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
