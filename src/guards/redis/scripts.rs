//! The guards' Lua scripts, one per guard: each decision is one call, so it is atomic in Redis
//! as a compare-and-swap is in a shared-memory table. The arithmetic mirrors the shared-memory
//! backends step for step (the Rust side turns the raw numbers a script returns into the same
//! answers, with the same code), and `tests/redis_guards.rs` runs one scenario on both.
//!
//! Every script takes the time first (`ARGV[1]`: ms, or -1 for Redis's `TIME`) and returns it
//! first. Lua numbers are doubles: every value here stays below 2^53 (times in 1/64 ms since
//! 1970 are about 2^47), and numbers written to Redis go through `string.format('%d')`, since
//! Lua's own conversion switches to exponent notation past 14 digits.

use std::sync::OnceLock;

use ::redis::Script;

/// Shared head of every script: the time, and integer formatting.
const PRELUDE: &str = r#"
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(x) return string.format('%d', x) end
"#;

/// A rate-limit decision on one key's hash (`tat` in 1/64 ms, penalty `p` stamped `ps`,
/// block `k` strikes until `u`). ARGV: now, cost, mode (0 peek, 1 consume, 2 reset), T, tau,
/// penalty ‰, min allowance ‰, recovery ms, block base, block max, block forget. Returns now,
/// allowed, TAT after, retry (units), penalty read, penalty after, the block's end (0: none;
/// one in force already, or one this refusal started), 1 if the block was in force already. The key expires when its state has decayed to
/// the all-zero one (the shared table's "stale"), so idle keys cost no memory.
const LIMIT: &str = r#"
local mode = ARGV[3]
if mode == '2' then
  redis.call('DEL', KEYS[1])
  return {now}
end
local cost, t, tau = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local pen, minf, rec = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local bbase, bmax, bforget = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local s = redis.call('HMGET', KEYS[1], 'tat', 'p', 'ps', 'k', 'u')
local tat, p, ps = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0
local strikes, untl = tonumber(s[4]) or 0, tonumber(s[5]) or 0
local penalty = 0
if p > 0 then
  penalty = math.max(p - math.min(math.floor(math.max(now - ps, 0) * 1000 / rec), 1000), 0)
end
if untl > now then return {now, 0, 0, 0, penalty, penalty, untl, 1} end
local factor = minf + math.floor((1000 - minf) * (1000 - penalty) / 1000)
local one = math.min(math.floor((t * 1000 + factor - 1) / factor), tau)
local now_u = now * 64
local base = math.max(tat, now_u)
local new = base + math.min(one * cost, tau)
local function keep()
  local ttl = math.floor((tat - now_u + 63) / 64)
  if p > 0 then ttl = math.max(ttl, ps + math.floor((p * rec + 999) / 1000) - now) end
  if strikes > 0 then ttl = math.max(ttl, untl + bforget - now) end
  redis.call('PEXPIRE', KEYS[1], fmt(math.max(ttl, 0) + 1000))
end
if new - now_u <= tau then
  if mode ~= '1' then return {now, 1, base, 0, penalty, penalty, 0, 0} end
  tat = new
  redis.call('HSET', KEYS[1], 'tat', fmt(tat))
  keep()
  return {now, 1, tat, 0, penalty, penalty, 0, 0}
end
local retry = new - tau - now_u
if mode ~= '1' or pen == 0 then return {now, 0, base, retry, penalty, penalty, 0, 0} end
p, ps = math.min(penalty + pen, 1000), now
redis.call('HSET', KEYS[1], 'p', fmt(p), 'ps', fmt(ps))
local blocked = 0
if penalty >= 1000 and bbase > 0 then
  if now - untl >= bforget then strikes = 0 end
  strikes = math.min(strikes + 1, 1023)
  untl = now + math.min(bbase * 2 ^ (strikes - 1), bmax)
  blocked = untl
  redis.call('HSET', KEYS[1], 'k', fmt(strikes), 'u', fmt(untl))
end
keep()
return {now, 0, base, retry, penalty, p, blocked, 0}
"#;

/// A slot operation on one user's sorted set of leases (member: the lease's token, score: its
/// expiry in ms). ARGV: now, op (1 acquire, 2 release, 3 renew, 4 held, 5 count), token, max,
/// lease ms, evict (1 = take over the lease that expires first). Returns now, then: acquire
/// the expiry (0 = refused) and 1 if a live lease was evicted; release / held 1 or 0; renew
/// the new expiry (0 = lost); count the live leases. Expired leases are dropped before each
/// acquisition, and the key expires with its last lease, so a host that died leaves nothing
/// behind once its leases run out.
const SLOTS: &str = r#"
local op, token = ARGV[2], ARGV[3]
local function expiry() return math.ceil((now + tonumber(ARGV[5])) / 1000) * 1000 end
local function keep()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', KEYS[1], fmt(math.max(tonumber(last[2]) - now, 0) + 1000)) end
end
if op == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
  local max, n = tonumber(ARGV[4]), redis.call('ZCARD', KEYS[1])
  local evicted = 0
  if n >= max then
    if ARGV[6] ~= '1' then return {now, 0, 0} end
    redis.call('ZPOPMIN', KEYS[1], n - max + 1)
    evicted = 1
  end
  local e = expiry()
  redis.call('ZADD', KEYS[1], fmt(e), token)
  keep()
  return {now, e, evicted}
end
if op == '5' then
  return {now, redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now), '+inf')}
end
local s = tonumber(redis.call('ZSCORE', KEYS[1], token))
if op == '2' then
  if not s then return {now, 0} end
  redis.call('ZREM', KEYS[1], token)
  return {now, 1}
end
if not s or s <= now then return {now, 0} end
if op == '4' then return {now, 1} end
local e = expiry()
redis.call('ZADD', KEYS[1], 'XX', fmt(e), token)
keep()
return {now, e}
"#;

/// A breaker operation on one breaker's hash (state word as fields `s` 0 closed / 1 open / 2
/// half-open, `e` backoff exponent, `n`, `tm`; window buckets `b0`–`b9` as `number:failures:
/// outcomes`). ARGV: now, op (1 check, 2 status, 3 success, 4 failure, 5 reset, 6 force open),
/// bucket ms, failure threshold, failure ratio ‰, min requests, open ms, max open ms, probes,
/// probe timeout ms, force-open ms. Returns now, the state word (s, e, n, tm) the answer is
/// judged on, the window's outcomes and failures, 1 if a probe was admitted, 1 if it opened.
/// A check answers on the word before it admitted a probe (as the shared table's does).
const BREAKER: &str = r#"
local op, bucket_ms = ARGV[2], tonumber(ARGV[3])
local thr, ratio, minreq = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local open_ms, max_open = tonumber(ARGV[7]), tonumber(ARGV[8])
local h = redis.call('HMGET', KEYS[1], 's', 'e', 'n', 'tm')
local s, e, n, tm = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0
local cur = math.floor(now / bucket_ms)
local function bucket(v)
  if not v then return nil end
  local num, f, r = string.match(v, '^(%d+):(%d+):(%d+)$')
  return tonumber(num), tonumber(f), tonumber(r)
end
local function window()
  local since = cur + 1
  if s == 0 then since = math.floor(tm / bucket_ms) end
  local req, fail = 0, 0
  local b = redis.call('HMGET', KEYS[1], 'b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8', 'b9')
  for i = 1, 10 do
    local num, f, r = bucket(b[i])
    if num and num <= cur and cur - num < 10 and num >= since then
      req, fail = req + r, fail + f
    end
  end
  return req, fail
end
local function period(x) return math.min(open_ms * 2 ^ x, max_open) end
local function save() redis.call('HSET', KEYS[1], 's', s, 'e', e, 'n', n, 'tm', fmt(tm)) end
local probe, opened = 0, 0
local function reply()
  local req, fail = window()
  return {now, s, e, n, tm, req, fail, probe, opened}
end
if op == '1' or op == '2' then
  if s == 0 or (s == 1 and now < tm) then return reply() end
  local expired = s == 1 or now >= tm
  local taken = n
  if expired then taken = 0 end
  if op == '2' or taken >= tonumber(ARGV[9]) then return reply() end
  probe = 1
  local out = reply()
  s, n = 2, taken + 1
  if expired then tm = now + tonumber(ARGV[10]) end
  save()
  return out
end
if op == '5' then
  s, e, n, tm = 0, 0, 0, now
  save()
  return reply()
end
if op == '6' then
  s, n, tm = 1, 0, now + tonumber(ARGV[11])
  save()
  return reply()
end
local failed = op == '4'
local field = 'b' .. (cur % 10)
local num, f, r = bucket(redis.call('HGET', KEYS[1], field))
if num ~= cur then f, r = 0, 0 end
r = math.min(r + 1, 1048575)
if failed then f = math.min(f + 1, 1048575) end
redis.call('HSET', KEYS[1], field, fmt(cur) .. ':' .. fmt(f) .. ':' .. fmt(r))
if s == 1 and now < tm then
  return reply()
elseif s == 0 and not failed then
  if n > 0 then n = 0; save() end
elseif s == 0 then
  local n1 = math.min(n + 1, 127)
  local req, fail = window()
  if n1 >= thr or (ratio > 0 and req >= minreq and fail * 1000 >= req * ratio) then
    s, e, n, tm, opened = 1, 0, 0, now + period(0), 1
  else
    n = n1
  end
  save()
elseif failed then
  e = math.min(e + 1, 31)
  s, n, tm, opened = 1, 0, now + period(e), 1
  save()
else
  s, e, n, tm = 0, 0, 0, now
  save()
end
return reply()
"#;

fn cached(cell: &'static OnceLock<Script>, body: &str) -> &'static Script {
    cell.get_or_init(|| Script::new(&format!("{PRELUDE}{body}")))
}

/// The rate-limit script.
pub(crate) fn limit() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, LIMIT)
}

/// The slots script.
pub(crate) fn slots() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, SLOTS)
}

/// The breaker script.
pub(crate) fn breaker() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    cached(&S, BREAKER)
}
