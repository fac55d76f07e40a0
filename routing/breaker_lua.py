"""The breaker's Lua scripts: every change of a provider's shared state is one of these, run atomically in Redis.

Time is Redis's own (``TIME``), so every worker and host judges "open for 60 s more" by the same clock.
``KEYS`` are always :meth:`routing.keys.ProviderKeys.as_list`: breaker hash, in-flight, calls, probes, models.
Each script answers one JSON object; a state change comes back as ``transition`` ({from, to, cause, at}).
"""

from __future__ import annotations

PRELUDE = """
local h, inflight, calls, probes, models = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function move(from, to, cause, now)
  redis.call('HSET', h, 'state', to, 'last_from', from, 'last_to', to, 'last_cause', cause, 'last_at', now)
  redis.call('HINCRBY', h, 'epoch', 1)
  return {from = from, to = to, cause = cause, at = now}
end
local function soonest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2])
end
local function open_for(ms, now)
  redis.call('HSET', h, 'open_until', now + ms)
  redis.call('DEL', probes)
end
"""

# ARGV: permit id, half-open probes, max in flight, requests per minute (0: no limit), lease ms, threshold.
# A closed breaker that has seen failures lets no more calls be in flight than could still fail before it
# opens (failures + in flight < threshold): a failing provider gets at most `threshold` calls before the
# breaker opens, however many workers ask at once. A healthy one (no failures) is limited only by its slots.
ACQUIRE = (
    PRELUDE
    + """
local id, probes_max, max_in_flight = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, lease, threshold = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local out = {ok = false}
local state = redis.call('HGET', h, 'state') or 'closed'
if state == 'disabled' then
  out.reason = 'disabled'
  return cjson.encode(out)
end
if state == 'open' then
  local until_ms = tonumber(redis.call('HGET', h, 'open_until') or '0')
  if now < until_ms then
    out.reason, out.retry_in_ms = 'open', until_ms - now
    return cjson.encode(out)
  end
  out.transition = move('open', 'half_open', 'open interval elapsed', now)
  redis.call('DEL', probes)
  state = 'half_open'
end
local probe = state == 'half_open'
if probe then
  redis.call('ZREMRANGEBYSCORE', probes, '-inf', now)
  if redis.call('ZCARD', probes) >= probes_max then
    out.reason, out.retry_in_ms = 'probing', soonest(probes) - now
    return cjson.encode(out)
  end
end
redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now)
if redis.call('ZCARD', inflight) >= max_in_flight then
  out.reason, out.retry_in_ms = 'busy', soonest(inflight) - now
  return cjson.encode(out)
end
if state == 'closed' then
  local failures = tonumber(redis.call('HGET', h, 'failures') or '0')
  if failures > 0 and failures + redis.call('ZCARD', inflight) >= threshold then
    out.reason, out.retry_in_ms = 'suspect', 1000
    return cjson.encode(out)
  end
end
redis.call('ZREMRANGEBYSCORE', calls, '-inf', now - 60000)
if rpm > 0 and redis.call('ZCARD', calls) >= rpm then
  out.reason, out.retry_in_ms = 'rate', soonest(calls) + 60000 - now
  return cjson.encode(out)
end
redis.call('ZADD', inflight, now + lease, id)
redis.call('PEXPIRE', inflight, lease)
redis.call('ZADD', calls, now, id)
redis.call('PEXPIRE', calls, 60000)
if probe then
  redis.call('ZADD', probes, now + lease, id)
  redis.call('PEXPIRE', probes, lease)
end
out.ok, out.probe = true, probe
out.epoch = tonumber(redis.call('HGET', h, 'epoch') or '0')
return cjson.encode(out)
"""
)

# ARGV: verdict (success | failure | release), permit id, permit epoch, probe (1/0), cause, threshold, open ms.
# A verdict about a permit from an earlier epoch (the breaker moved since it was granted) frees its slot only.
VERDICT = (
    PRELUDE
    + """
local verdict, id, epoch, probe, cause = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5]
local threshold, open_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('ZREM', inflight, id)
redis.call('ZREM', probes, id)
local state = redis.call('HGET', h, 'state') or 'closed'
local out = {state = state}
if verdict == 'release' or epoch ~= tonumber(redis.call('HGET', h, 'epoch') or '0') then
  return cjson.encode(out)
end
local now = now_ms()
if verdict == 'success' then
  if state == 'closed' then
    redis.call('HSET', h, 'failures', 0)
  elseif state == 'half_open' and probe then
    out.transition = move('half_open', 'closed', 'probe succeeded', now)
    redis.call('HSET', h, 'failures', 0)
    redis.call('DEL', probes)
  end
  return cjson.encode(out)
end
redis.call('HSET', h, 'last_failure', cause, 'last_failure_at', now)
if state == 'closed' then
  local n = redis.call('HINCRBY', h, 'failures', 1)
  if n >= threshold then
    out.transition = move('closed', 'open', n .. ' failures in a row; last: ' .. cause, now)
    open_for(open_ms, now)
  end
elseif state == 'half_open' and probe then
  out.transition = move('half_open', 'open', 'probe failed: ' .. cause, now)
  open_for(open_ms, now)
end
return cjson.encode(out)
"""
)

# ARGV: action (disable | enable | reset), cause. A reset also forgets the provider's unusable models.
OPERATE = (
    PRELUDE
    + """
local action, cause = ARGV[1], ARGV[2]
local now = now_ms()
local state = redis.call('HGET', h, 'state') or 'closed'
local out = {state = state}
if action == 'disable' then
  if state ~= 'disabled' then out.transition = move(state, 'disabled', cause, now) end
elseif action == 'enable' then
  if state == 'disabled' then out.transition = move('disabled', 'closed', cause, now) end
  redis.call('HSET', h, 'failures', 0)
else
  if state ~= 'closed' then out.transition = move(state, 'closed', cause, now) end
  redis.call('HSET', h, 'failures', 0)
  redis.call('DEL', probes, models)
end
return cjson.encode(out)
"""
)

# KEYS: every provider's five keys, one provider after the other. ARGV: half-open probes, and 1 for the whole
# status (last transition and failure) or 0 for the router's snapshot. Read only: an open breaker whose
# interval passed reads as half-open. One call reads every provider the router considers (one round trip per
# attempt); answers a JSON array in the order of the providers. (On a Redis Cluster the providers' keys would
# live in different slots: this would then be one call per provider.) ``marks`` is the unusable models' hash
# as a flat list (field, value...), present only when there are some (cjson encodes an empty table as {}).
READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local probes_max, whole = tonumber(ARGV[1]), ARGV[2] == '1'
local function read(h, inflight, calls, probes, models)
  local f = redis.call('HMGET', h, 'state', 'failures', 'open_until', 'last_from', 'last_to', 'last_cause',
    'last_at', 'last_failure')
  local out = {state = f[1] or 'closed', failures = tonumber(f[2] or '0'), retry_in_ms = 0, probe_free = true}
  if out.state == 'open' then
    local until_ms = tonumber(f[3] or '0')
    if now >= until_ms then
      out.state = 'half_open'
    else
      out.retry_in_ms = until_ms - now
    end
  elseif out.state == 'half_open' then
    out.probe_free = redis.call('ZCOUNT', probes, string.format('(%d', now), '+inf') < probes_max
  end
  if whole and f[5] then out.last = {from = f[4], to = f[5], cause = f[6], at = tonumber(f[7])} end
  if whole and f[8] then out.last_failure = f[8] end
  out.in_flight = redis.call('ZCOUNT', inflight, string.format('(%d', now), '+inf')
  out.calls_last_minute = redis.call('ZCOUNT', calls, string.format('(%d', now - 60000), '+inf')
  local marks = redis.call('HGETALL', models)
  if #marks > 0 then out.marks = marks end
  return cjson.encode(out)
end
local answers = {}
for i = 1, #KEYS, 5 do
  answers[#answers + 1] = read(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], KEYS[i + 4])
end
return '[' .. table.concat(answers, ',') .. ']'
"""
