import type { Redis } from 'ioredis'

/*
 * Every change of a run's state in Redis is one Lua script: atomic across replicas, so a check and
 * the change it guards can never interleave with another replica's (see shared/research/scale-out.md:
 * a count followed by an add admitted 124 runs against a limit of 20).
 *
 * Keys, under REDIS_PREFIX (P):
 *   P:run:ID            the record (JSON, written whole by the replica that owns the run, never by Lua)
 *   P:run:ID:meta       hash: seq, status, tenant, kind, instance (owner), spawned (owner that started
 *                       the agent), dispatched, claims, cancel (JSON), evn/evbytes (event log), fp/idem
 *                       (Idempotency-Key), cbdone (callback outcome)
 *   P:run:ID:ev         stream of events, ids N-0 for N = 1, 2, 3...; fields t (type), d (data), a (time)
 *   P:run:ID:out        the raw stream-json lines; P:run:ID:cb  list of callback attempts (JSON)
 *   P:pending           zset seq → id: admitted, waiting for a slot
 *   P:promoted          zset time → id: handed to BullMQ, not yet taken by a replica's worker
 *   P:counts            hash: inflight (admitted, not finished), dispatched, running, retained (bytes)
 *   P:tenant:T          hash: inflight, dispatched, cap (max_running, '' for none)
 *   P:list, P:list:T    zset seq → id of jobs (not chats), for GET /jobs
 *   P:finished          zset finish order → id (the count and byte bounds drop the first);
 *   P:expiry            zset expiry time → id (the TTL); P:finbytes  hash id → "bytes\ntenant\nidem key"
 *   P:idem:T:KEY        the run made with that Idempotency-Key
 *   P:replicas          hash instance → JSON; P:capacity  hash instance → MAX_CONCURRENCY (not draining)
 *   P:alive:INSTANCE    heartbeat, expires after REPLICA_TIMEOUT_SECONDS
 *   P:inst:INSTANCE:runs   set of runs that replica has taken
 *   P:usage:T:DATE      hash of the tenant's usage on that UTC day; P:tenants  set of tenant names
 *   P:webhooks          zset due time → id: callbacks to deliver (a claim pushes the due time ahead)
 *   channels P:cancel ("run id\ncancel JSON"), P:done (run id)
 * Scripts name keys from the prefix themselves, so this needs one Redis (not Redis Cluster).
 */

const PRELUDE = `
local P = ARGV[1]
local function k(...) return P .. ':' .. table.concat({...}, ':') end
local function run(id) return P .. ':run:' .. id end
local TERMINAL = { completed = true, failed = true, timed_out = true, cancelled = true }
local function n(v) return tonumber(v or '0') or 0 end

local function append_event(id, etype, json, now, max_events, max_bytes)
  local meta = run(id) .. ':meta'
  local stream = run(id) .. ':ev'
  local seq = redis.call('HINCRBY', meta, 'evn', 1)
  redis.call('XADD', stream, seq .. '-0', 't', etype, 'd', json, 'a', now)
  local bytes = redis.call('HINCRBY', meta, 'evbytes', #json)
  local len = redis.call('XLEN', stream)
  while len > 1 and (len > max_events or bytes > max_bytes) do
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    local fields = first[2]
    local size = 0
    for i = 1, #fields, 2 do if fields[i] == 'd' then size = #fields[i + 1] end end
    redis.call('XDEL', stream, first[1])
    bytes = redis.call('HINCRBY', meta, 'evbytes', -size)
    len = len - 1
  end
  return seq
end

-- The cluster's numbers, returned by every script that changes them so a replica's /health follows
-- at once what it did itself: {inflight, running, dispatched, capacity, replicas}.
local function stats()
  local counts = k('counts')
  local capacity = 0
  for _, v in ipairs(redis.call('HVALS', k('capacity'))) do capacity = capacity + n(v) end
  return { n(redis.call('HGET', counts, 'inflight')), n(redis.call('HGET', counts, 'running')), n(redis.call('HGET', counts, 'dispatched')), capacity, redis.call('HLEN', k('replicas')) }
end

local function delete_run(id)
  local info = redis.call('HGET', k('finbytes'), id)
  if info then
    local bytes, tenant, idem = string.match(info, '^(%d+)\\n([^\\n]*)\\n(.*)$')
    redis.call('HINCRBY', k('counts'), 'retained', -n(bytes))
    redis.call('HDEL', k('finbytes'), id)
    if tenant and tenant ~= '' then redis.call('ZREM', k('list', tenant), id) end
    if idem and idem ~= '' and redis.call('GET', idem) == id then redis.call('DEL', idem) end
  end
  redis.call('ZREM', k('list'), id)
  redis.call('ZREM', k('finished'), id)
  redis.call('ZREM', k('expiry'), id)
  redis.call('DEL', run(id), run(id) .. ':out', run(id) .. ':ev', run(id) .. ':meta', run(id) .. ':cb')
end
`

const scripts = {
  /**
   * ARGV: P, id, record, tenant, kind, idem key name (''), fingerprint, max depth, max queued (''),
   * max running (''), budget (''), today, first event, now, max events, max event bytes, keep ms.
   * → {'admitted', seq} | {'existing', id} | {'conflict', id} | {'queue_full', inflight, running}
   *   | {'tenant_queue_full', waiting} | {'budget', spent}, each with stats() last
   */
  admit: `
local id, record, tenant, kind, idem, fp = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local max_depth, max_queued, max_running, budget, today = n(ARGV[8]), ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local event, now, max_events, max_bytes = ARGV[13], ARGV[14], n(ARGV[15]), n(ARGV[16])
if idem ~= '' then
  local existing = redis.call('GET', idem)
  if existing then
    local seen = redis.call('HGET', run(existing) .. ':meta', 'fp')
    if seen then
      if seen ~= fp then return { 'conflict', existing, '', stats() } end
      return { 'existing', existing, '', stats() }
    end
    redis.call('DEL', idem)
  end
end
local counts = k('counts')
local inflight = n(redis.call('HGET', counts, 'inflight'))
if inflight >= max_depth then return { 'queue_full', tostring(inflight), tostring(n(redis.call('HGET', counts, 'running'))), stats() } end
local tkey = k('tenant', tenant)
if max_queued ~= '' then
  local waiting = n(redis.call('HGET', tkey, 'inflight')) - n(redis.call('HGET', tkey, 'dispatched'))
  if waiting >= n(max_queued) then return { 'tenant_queue_full', tostring(waiting), '', stats() } end
end
if budget ~= '' then
  local spent = n(redis.call('HGET', k('usage', tenant, today), 'total_cost_usd'))
  if spent >= n(budget) then return { 'budget', tostring(spent), '', stats() } end
end
local seq = redis.call('INCR', k('seq'))
redis.call('SET', run(id), record)
redis.call('HSET', run(id) .. ':meta', 'seq', seq, 'status', 'queued', 'tenant', tenant, 'kind', kind, 'evn', 0, 'evbytes', 0, 'fp', fp, 'idem', idem, 'keep', ARGV[17])
append_event(id, 'status', event, now, max_events, max_bytes)
redis.call('ZADD', k('pending'), seq, id)
redis.call('HINCRBY', counts, 'inflight', 1)
redis.call('HINCRBY', tkey, 'inflight', 1)
redis.call('HSET', tkey, 'cap', max_running)
redis.call('SADD', k('tenants'), tenant)
if kind == 'job' then
  redis.call('ZADD', k('list'), seq, id)
  redis.call('ZADD', k('list', tenant), seq, id)
end
if idem ~= '' then redis.call('SET', idem, id) end
return { 'admitted', tostring(seq), '', stats() }
`,

  /**
   * Hands the oldest waiting runs whose tenant is below its max_running to BullMQ, while the
   * cluster has a free slot. ARGV: P, now, scan limit → {ids to add to BullMQ, stats()}.
   */
  dispatch: `
local now, limit = ARGV[2], n(ARGV[3])
local capacity = 0
for _, v in ipairs(redis.call('HVALS', k('capacity'))) do capacity = capacity + n(v) end
local free = capacity - n(redis.call('HGET', k('counts'), 'dispatched'))
local out = {}
if free <= 0 then return { out, stats() } end
local full = {}
for _, id in ipairs(redis.call('ZRANGE', k('pending'), 0, limit - 1)) do
  if free <= 0 then break end
  local meta = run(id) .. ':meta'
  local tenant = redis.call('HGET', meta, 'tenant')
  if not tenant then
    redis.call('ZREM', k('pending'), id)
  elseif not full[tenant] then
    local tkey = k('tenant', tenant)
    local cap = redis.call('HGET', tkey, 'cap')
    if cap and cap ~= '' and n(redis.call('HGET', tkey, 'dispatched')) >= n(cap) then
      full[tenant] = true
    else
      redis.call('ZREM', k('pending'), id)
      redis.call('ZADD', k('promoted'), now, id)
      redis.call('HSET', meta, 'dispatched', 1)
      redis.call('HINCRBY', tkey, 'dispatched', 1)
      redis.call('HINCRBY', k('counts'), 'dispatched', 1)
      free = free - 1
      table.insert(out, id)
    end
  end
end
return { out, stats() }
`,

  /**
   * A replica's worker took a run from BullMQ. ARGV: P, id, instance, max claims.
   * → {'run', record, seq} | {'spawned', owner, record} | {'cancelled', record, cancel}
   *   | {'exhausted', record} | {'skip'} | {'gone'}
   */
  claim: `
local id, instance, max_claims = ARGV[2], ARGV[3], n(ARGV[4])
local meta = run(id) .. ':meta'
redis.call('ZREM', k('promoted'), id)
local status = redis.call('HGET', meta, 'status')
if not status then return { 'gone' } end
if TERMINAL[status] then return { 'skip' } end
local record = redis.call('GET', run(id))
local spawned = redis.call('HGET', meta, 'spawned')
if spawned then return { 'spawned', spawned, record } end
local cancel = redis.call('HGET', meta, 'cancel')
if cancel then return { 'cancelled', record, cancel } end
if redis.call('HINCRBY', meta, 'claims', 1) > max_claims then return { 'exhausted', record, '' } end
local previous = redis.call('HGET', meta, 'instance')
if previous then redis.call('SREM', k('inst', previous, 'runs'), id) end
if status == 'queued' then redis.call('HINCRBY', k('counts'), 'running', 1) end
redis.call('HSET', meta, 'status', 'running', 'instance', instance)
redis.call('SADD', k('inst', instance, 'runs'), id)
return { 'run', record, tostring(redis.call('HGET', meta, 'seq')), stats() }
`,

  /** The agent is about to be started: only by its owner, and only once. ARGV: P, id, instance → 1 | 0 */
  spawn: `
local id, instance = ARGV[2], ARGV[3]
local meta = run(id) .. ':meta'
if redis.call('HGET', meta, 'status') ~= 'running' or redis.call('HGET', meta, 'instance') ~= instance then return 0 end
if redis.call('HSETNX', meta, 'spawned', instance) == 1 then return 1 end
if redis.call('HGET', meta, 'spawned') == instance then return 1 end
return 0
`,

  /** The owner writes the record of a run in flight. ARGV: P, id, instance, record → 1 | 0 */
  save: `
local id, instance = ARGV[2], ARGV[3]
local meta = run(id) .. ':meta'
if redis.call('HGET', meta, 'status') ~= 'running' or redis.call('HGET', meta, 'instance') ~= instance then return 0 end
redis.call('SET', run(id), ARGV[4])
return 1
`,

  /** ARGV: P, id, instance, type, data, now, max events, max bytes → event id | 0 */
  append: `
local id, instance = ARGV[2], ARGV[3]
local meta = run(id) .. ':meta'
if redis.call('HGET', meta, 'status') ~= 'running' or redis.call('HGET', meta, 'instance') ~= instance then return 0 end
return append_event(id, ARGV[4], ARGV[5], ARGV[6], n(ARGV[7]), n(ARGV[8]))
`,

  /**
   * Ends a run, once: the terminal record, its output and terminal event, the counters, the
   * retention bounds, the tenant's usage, the callback's place in the outbox. ARGV: P, id, expected
   * owner ('' = any), record, output, status, event, now, expires at and ttl ms at the latest (the
   * run's own keep time, from admission, when shorter), max finished,
   * max retained bytes, max events, max event bytes, date, cost, input, output, cache read,
   * cache creation tokens, agent seconds, callback (1/0), usage ttl s, bytes held by record and
   * output, bytes per event beyond its data → {1 | 0, stats()}
   */
  finish: `
local id, expected, record, output, status, event, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local expires_at, ttl, max_finished, max_retained = ARGV[9], n(ARGV[10]), n(ARGV[11]), n(ARGV[12])
local max_events, max_bytes, date = n(ARGV[13]), n(ARGV[14]), ARGV[15]
local meta = run(id) .. ':meta'
-- The keep time the run was admitted with, within the TTL (the longest any run is kept).
local keep = n(redis.call('HGET', meta, 'keep') or ARGV[10])
if keep < ttl then
  ttl = keep
  expires_at = n(now) + keep
end
local current = redis.call('HGET', meta, 'status')
if not current or TERMINAL[current] then return { 0, stats() } end
local owner = redis.call('HGET', meta, 'instance')
if expected == '' and current ~= 'queued' then return { 0, stats() } end
if expected ~= '' and owner ~= expected then return { 0, stats() } end
local tenant = redis.call('HGET', meta, 'tenant')
local tkey = k('tenant', tenant)
redis.call('ZREM', k('pending'), id)
redis.call('ZREM', k('promoted'), id)
redis.call('HINCRBY', k('counts'), 'inflight', -1)
redis.call('HINCRBY', tkey, 'inflight', -1)
if redis.call('HGET', meta, 'dispatched') == '1' then
  redis.call('HINCRBY', k('counts'), 'dispatched', -1)
  redis.call('HINCRBY', tkey, 'dispatched', -1)
end
if current == 'running' then redis.call('HINCRBY', k('counts'), 'running', -1) end
if owner then redis.call('SREM', k('inst', owner, 'runs'), id) end
redis.call('SET', run(id), record)
if #output > 0 then redis.call('SET', run(id) .. ':out', output) end
redis.call('HSET', meta, 'status', status)
append_event(id, 'status', event, now, max_events, max_bytes)
local idem = redis.call('HGET', meta, 'idem') or ''
-- ARGV[24]: what the record and output hold (see retainedBytes); the event log's part is added here.
local bytes = n(ARGV[24]) + n(redis.call('HGET', meta, 'evbytes')) + redis.call('XLEN', run(id) .. ':ev') * n(ARGV[25])
redis.call('ZADD', k('finished'), redis.call('INCR', k('finseq')), id)
redis.call('ZADD', k('expiry'), expires_at, id)
redis.call('HSET', k('finbytes'), id, bytes .. '\\n' .. tenant .. '\\n' .. idem)
redis.call('HINCRBY', k('counts'), 'retained', bytes)
local usage = k('usage', tenant, date)
redis.call('HINCRBY', usage, status, 1)
redis.call('HINCRBYFLOAT', usage, 'total_cost_usd', ARGV[16])
redis.call('HINCRBY', usage, 'input_tokens', ARGV[17])
redis.call('HINCRBY', usage, 'output_tokens', ARGV[18])
redis.call('HINCRBY', usage, 'cache_read_input_tokens', ARGV[19])
redis.call('HINCRBY', usage, 'cache_creation_input_tokens', ARGV[20])
redis.call('HINCRBYFLOAT', usage, 'agent_seconds', ARGV[21])
redis.call('EXPIRE', usage, n(ARGV[23]))
if ARGV[22] == '1' then redis.call('ZADD', k('webhooks'), now, id) end
for _, key in ipairs({ run(id), run(id) .. ':out', run(id) .. ':ev', meta, run(id) .. ':cb' }) do redis.call('PEXPIRE', key, ttl) end
if idem ~= '' then redis.call('PEXPIRE', idem, ttl) end
while true do
  local count = redis.call('ZCARD', k('finished'))
  local retained = n(redis.call('HGET', k('counts'), 'retained'))
  if not (count > max_finished or (retained > max_retained and count > 1)) then break end
  delete_run(redis.call('ZRANGE', k('finished'), 0, 0)[1])
end
redis.call('PUBLISH', k('done'), id)
return { 1, stats() }
`,

  /** ARGV: P, id, cancel JSON → {'dequeue', record} | {'signalled'} | {'unknown'} */
  cancel: `
local id = ARGV[2]
local meta = run(id) .. ':meta'
local status = redis.call('HGET', meta, 'status')
if not status or TERMINAL[status] then return { 'unknown' } end
if redis.call('ZSCORE', k('pending'), id) then return { 'dequeue', redis.call('GET', run(id)) } end
redis.call('HSETNX', meta, 'cancel', ARGV[3])
redis.call('PUBLISH', k('cancel'), id .. '\\n' .. ARGV[3])
return { 'signalled' }
`,

  /** ARGV: P, instance, ttl ms, info JSON, capacity ('' while draining) */
  heartbeat: `
local instance = ARGV[2]
redis.call('SET', k('alive', instance), '1', 'PX', ARGV[3])
redis.call('HSET', k('replicas'), instance, ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', k('capacity'), instance, ARGV[5]) else redis.call('HDEL', k('capacity'), instance) end
return 1
`,

  /** A replica leaves (close), or is found dead: its capacity goes. ARGV: P, instance */
  leave: `
redis.call('DEL', k('alive', ARGV[2]))
redis.call('HDEL', k('replicas'), ARGV[2])
redis.call('HDEL', k('capacity'), ARGV[2])
return 1
`,

  /** Replicas whose heartbeat expired. ARGV: P → {instance, ...} */
  dead: `
local dead = {}
for _, instance in ipairs(redis.call('HKEYS', k('replicas'))) do
  if redis.call('EXISTS', k('alive', instance)) == 0 then table.insert(dead, instance) end
end
for _, instance in ipairs(redis.call('HKEYS', k('capacity'))) do
  if redis.call('EXISTS', k('alive', instance)) == 0 then redis.call('HDEL', k('capacity'), instance) end
end
return dead
`,

  /** ARGV: P → stats() */
  stats: `
return stats()
`,

  /** Drops a finished run (a deleted response). ARGV: P, id, now → 'removed' | 'unfinished' | 'unknown' */
  remove: `
local id = ARGV[2]
local status = redis.call('HGET', run(id) .. ':meta', 'status')
if not status then return 'unknown' end
if not TERMINAL[status] then return 'unfinished' end
local expiry = redis.call('ZSCORE', k('expiry'), id)
delete_run(id)
if expiry and n(expiry) <= n(ARGV[3]) then return 'unknown' end
return 'removed'
`,

  /** Finished runs past their TTL leave the indexes (their keys expired by themselves). ARGV: P, now → count */
  sweep: `
local ids = redis.call('ZRANGEBYSCORE', k('expiry'), '-inf', ARGV[2], 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do delete_run(id) end
return #ids
`,

  /** The next callback due, leased for a while. ARGV: P, now, lease ms → id | false */
  webhookClaim: `
local due = redis.call('ZRANGEBYSCORE', k('webhooks'), '-inf', ARGV[2], 'LIMIT', 0, 1)[1]
if not due then return false end
redis.call('ZADD', k('webhooks'), n(ARGV[2]) + n(ARGV[3]), due)
return due
`,

  /** ARGV: P, id, attempt JSON, outcome ('true' | 'false' | '' to retry), next due → attempts so far */
  webhookResult: `
local id = ARGV[2]
local ttl = redis.call('PTTL', run(id))
if ttl == -2 then
  redis.call('ZREM', k('webhooks'), id)
  return 0
end
local attempts = 0
if ARGV[3] ~= '' then
  attempts = redis.call('RPUSH', run(id) .. ':cb', ARGV[3])
  if ttl > 0 then redis.call('PEXPIRE', run(id) .. ':cb', ttl) end
end
if ARGV[4] ~= '' then
  redis.call('HSET', run(id) .. ':meta', 'cbdone', ARGV[4])
  redis.call('ZREM', k('webhooks'), id)
else
  redis.call('ZADD', k('webhooks'), ARGV[5], id)
end
return attempts
`,
} as const

export type ScriptName = keyof typeof scripts
export type Reply = string | number | null | Reply[]

export type Scripts = { [K in ScriptName]: (...args: Array<string | number>) => Promise<Reply> }

/** Registers every script on a connection (EVALSHA, falling back to EVAL after a Redis restart). */
export function defineScripts (redis: Redis, prefix: string): Scripts {
  const callers: Partial<Scripts> = {}
  for (const [name, body] of Object.entries(scripts) as Array<[ScriptName, string]>) {
    redis.defineCommand(`cr_${name}`, { numberOfKeys: 0, lua: PRELUDE + body })
    const command = (redis as unknown as Record<string, (...args: Array<string | number>) => Promise<Reply>>)[`cr_${name}`]!
    callers[name] = (...args) => command.call(redis, prefix, ...args.map(String))
  }
  return callers as Scripts
}
