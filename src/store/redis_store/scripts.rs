//! The Lua scripts: every write to a Redis store is one of them, so each is atomic (see
//! `docs/redis.md`). Ids are rendered with `string.format('%d')`: Lua's own number-to-string
//! conversion switches to exponent notation past 14 digits.

use std::sync::OnceLock;

use ::redis::Script;

/// Appends a batch. KEYS: meta, seq, lanes, exp, idem, then one lane key per event. ARGV: an
/// epoch for a store that has none, the wake-up channel, `1` when some event has an
/// idempotency key (else `0`: the plan below is skipped), then per event 6 values: payload,
/// thread ('' for none), type, expires_at, idempotency key ('' for none), its fingerprint.
/// Returns the ids (numbers for new events, strings for ones an idempotency key named), or the
/// string `IDEM` followed by the conflicting key (nothing written).
///
/// Per event it runs one `XADD` (the lane entry is the whole event: id, expiry, thread, type,
/// payload and idempotency key), with its values passed straight from `ARGV`: no string is
/// built per event but the id. Per lane and call it adds one `…:lanes` score and one expiry
/// range. Measured in `benches/journal/2026-12-07-redis-batch.md`.
const APPEND: &str = r#"
local n = (#ARGV - 3) / 6
-- Plan (only when a key is given): per event, a stored id (a string: its key names an event
-- already there), or the ordinal of a new event in this batch (a number); `owner` marks the
-- event that writes it. A key seen twice takes the first one's plan. Nothing is written
-- before the plan is whole, so a conflict leaves everything as it was.
local plan, owner, count = nil, nil, n
if ARGV[3] == '1' then
  local seen = {}
  plan, owner, count = {}, {}, 0
  for i = 1, n do
    local b = 4 + (i - 1) * 6
    local key, fp = ARGV[b + 4], ARGV[b + 5]
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
end
local ids = {}
if count == 0 then
  for i = 1, n do ids[i] = plan[i] end
  return ids
end
-- A stream takes only ids above its top. Every lane's top is at most the highest `…:lanes`
-- score, so a sequence at or above that is safe; one below it (the sequence key lost or
-- edited while the lanes were kept, e.g. evicted) fails here, before anything is written.
local last = redis.call('INCRBY', KEYS[2], count)
local base = last - count
-- A store with no event yet (new, or Redis lost everything) gets its epoch here; one whose
-- epoch alone went missing gets it from the next reader (every read creates one it lacks).
if base == 0 then redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) end
local top = redis.call('ZRANGE', KEYS[3], 0, 0, 'REV', 'WITHSCORES')[2]
if top and tonumber(top) > base then
  redis.call('DECRBY', KEYS[2], count)
  return redis.error_reply('LMSRT the sequence (' .. string.format('%d', base) ..
    ') is below the highest id in the lanes (' .. top .. '): lost or edited, not appending')
end
-- Per lane key: {first id, last id, lowest expiry}.
local spans, idem = {}, {}
for i = 1, n do
  local p = i
  if plan then p = plan[i] end
  if type(p) == 'number' then
    local id = base + p
    ids[i] = id
    if owner == nil or owner[i] then
      local b = 4 + (i - 1) * 6
      local lk, x, key = KEYS[5 + i], ARGV[b + 3], ARGV[b + 4]
      local sid = string.format('%d', id)
      if key == '' then
        redis.call('XADD', lk, sid, 'x', x, 'h', ARGV[b + 1], 't', ARGV[b + 2], 'd', ARGV[b])
      else
        redis.call('XADD', lk, sid, 'x', x, 'h', ARGV[b + 1], 't', ARGV[b + 2], 'd', ARGV[b], 'k', key)
        idem[#idem + 1] = key
        idem[#idem + 1] = sid .. '|' .. ARGV[b + 5]
      end
      local xn = tonumber(x)
      local s = spans[lk]
      if s == nil then
        spans[lk] = {sid, sid, xn}
      else
        s[2] = sid
        if xn < s[3] then s[3] = xn end
      end
    end
  else
    ids[i] = p
  end
end
for lk, s in pairs(spans) do
  redis.call('ZADD', KEYS[3], s[2], lk)
  redis.call('ZADD', KEYS[4], s[3], lk .. '|' .. s[1] .. '|' .. s[2])
end
for j = 1, #idem, 1000 do
  redis.call('HSET', KEYS[5], unpack(idem, j, math.min(j + 999, #idem)))
end
redis.call('PUBLISH', ARGV[2], string.format('%d', last))
return ids
"#;

/// Purges up to `ARGV[2]` events expired at `ARGV[1]` (ms). KEYS: exp, idem, purged, meta, lanes.
/// An expiry entry is `LANEKEY|FIRST|LAST` scored by the lowest expiry among the lane's
/// entries with ids in `FIRST..=LAST` (one append's, or what a purge left of them): the
/// entries are read, the expired ones removed (with their idempotency key) and recorded in
/// `…:purged`, and the rest go back as one range scored by their lowest expiry. A lane left
/// empty is deleted with its `…:lanes` member. `ARGV[3]`: how many purge records to keep; the
/// oldest beyond that are folded into meta's `folded` (the highest id folded away), which
/// fetches treat as a gap for any lane that moves across it. Returns how many events were
/// purged.
const PURGE: &str = r#"
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local ranges = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, max)
local n = 0
for _, r in ipairs(ranges) do
  if n >= max then break end
  redis.call('ZREM', KEYS[1], r)
  local lk, first, last = string.match(r, '^(.*)|(%d+)|(%d+)$')
  local ch, lane = string.match(lk or '', 'l:(%-?%d+):(%d)$')
  if ch then
    local lo, low = nil, nil
    for _, e in ipairs(redis.call('XRANGE', lk, first, last)) do
      -- Fields: x, h, t, d, then k when the event has an idempotency key.
      local f = e[2]
      local x = tonumber(f[2])
      if n < max and x <= now then
        local id = string.match(e[1], '^(%d+)')
        redis.call('XDEL', lk, e[1])
        if f[9] == 'k' then
          local v = redis.call('HGET', KEYS[2], f[10])
          if v and string.match(v, '^(%d+)|') == id then redis.call('HDEL', KEYS[2], f[10]) end
        end
        redis.call('ZADD', KEYS[3], id, id .. '|' .. ch .. '|' .. lane .. '|' .. f[4] .. '|' .. f[6])
        n = n + 1
      else
        lo = lo or string.match(e[1], '^(%d+)')
        if low == nil or x < low then low = x end
      end
    end
    if lo then
      redis.call('ZADD', KEYS[1], low, lk .. '|' .. lo .. '|' .. last)
    elseif redis.call('XLEN', lk) == 0 then
      redis.call('DEL', lk)
      redis.call('ZREM', KEYS[5], lk)
    end
  end
end
local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[3])
if over > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[3], over)
  local hi = string.match(popped[#popped - 1], '^(%d+)|')
  local cur = redis.call('HGET', KEYS[4], 'folded')
  if cur == false or tonumber(hi) > tonumber(cur) then
    redis.call('HSET', KEYS[4], 'folded', hi)
  end
end
return n
"#;

/// Reads what the tail (the daemon's feed) hands over next, in one atomic step. KEYS: meta, seq,
/// lanes. `ARGV[1]`: the last id handed over, `ARGV[2]`: at most this many events per lane.
/// Returns the epoch (nil when Redis has none), the head, `upto` (every event in
/// `(ARGV[1], upto]` is in the reply: the head, or less when a lane had more than `ARGV[2]`),
/// then id and payload of each such event, lane by lane (the caller sorts).
const TAIL: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local from, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local upto = head
local out = {epoch, string.format('%d', head), ''}
if epoch and head > from then
  local got = {}
  for _, lk in ipairs(redis.call('ZRANGE', KEYS[3], '(' .. ARGV[1], '+inf', 'BYSCORE')) do
    local es = redis.call('XRANGE', lk, '(' .. ARGV[1], '+', 'COUNT', max)
    if #es == max then
      local l = tonumber(string.match(es[#es][1], '^(%d+)'))
      if l < upto then upto = l end
    end
    got[#got + 1] = es
  end
  for _, es in ipairs(got) do
    for _, e in ipairs(es) do
      local id = string.match(e[1], '^(%d+)')
      if tonumber(id) <= upto then
        out[#out + 1] = id
        out[#out + 1] = e[2][8]
      end
    end
  end
end
out[3] = string.format('%d', upto)
return out
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

/// The tail's read.
pub(super) fn tail() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, TAIL)
}

/// The `advance_ids` script.
pub(super) fn advance() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, ADVANCE)
}
