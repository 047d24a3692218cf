import type { ConnectionOptions } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import packageJson from '../../package.json' with { type: 'json' }
import { ConfigError } from '../config.ts'
import type { CancelReason } from '../errors.ts'
import { MAX_EVENTS_PER_RUN, type EngineOptions } from './memory-engine.ts'
import { connect, redactRedisUrl, redisOptions } from './redis-connection.ts'
import { DoneWaiters, RedisJobEvents } from './redis-job-events.ts'
import { RedisJobStore } from './redis-job-store.ts'
import { defineScripts } from './redis-scripts.ts'
import { RedisUsageLedger } from './redis-usage.ts'
import { RedisWorkQueue } from './redis-work-queue.ts'
import type { ClusterCounts, Engine, EngineHealth } from './types.ts'

export interface RedisEngineOptions extends EngineOptions {
  url: string
  prefix: string
  replicaTimeoutMs: number
  logger: Logger
  /** See RedisWorkQueueOptions.dispatchTickMs. */
  dispatchTickMs?: number
}

const STATS_MS = 1000
const SWEEP_MS = 30_000
const CONNECT_TIMEOUT_MS = 15_000

/**
 * The cluster's engine: any number of replicas, on any number of machines, share one Redis. Four
 * connections per replica (API requests, writes of runs in flight, pub/sub, blocking stream reads)
 * plus BullMQ's own.
 */
export async function createRedisEngine (options: RedisEngineOptions): Promise<Engine> {
  const { url, prefix, instance, logger, now, replicaTimeoutMs } = options
  const startedAt = new Date(now()).toISOString()
  const name = `claude-runner:${instance}`
  const command = connect(url, 'command', name)
  const writer = connect(url, 'writer', name)
  const subscriber = connect(url, 'subscriber', name)
  const blocker = connect(url, 'blocker', name)
  const connections = [command, writer, subscriber, blocker]
  for (const connection of connections) connection.on('error', () => {}) // reported through /health; ioredis reconnects
  try {
    await withTimeout(Promise.all(connections.map(connection => connection.connect())), CONNECT_TIMEOUT_MS)
    await checkEvictionPolicy(command)
  } catch (error) {
    for (const connection of connections) connection.disconnect()
    if (error instanceof ConfigError) throw error
    throw new ConfigError(`REDIS_URL ${redactRedisUrl(url)} cannot be reached: ${(error as Error).message}`)
  }

  let connectedSince: number | undefined = now()
  let health: EngineHealth = { kind: 'redis', connected: true, cluster: null, lastError: null }
  const setHealth = (change: Partial<EngineHealth>): void => {
    const next = { ...health, ...change }
    if (next.connected !== health.connected || next.lastError !== health.lastError || !sameCluster(next.cluster, health.cluster)) health = next
  }
  function setCluster ([inflight = 0, running = 0, , capacity = 0, replicas = 0]: number[]): void {
    setHealth({ cluster: { replicas, active: running, queued: Math.max(0, inflight - running), capacity } })
  }
  command.on('ready', () => {
    connectedSince = now()
    setHealth({ connected: true, lastError: null })
    logger.info({ redis: redactRedisUrl(url) }, 'connected to Redis')
  })
  command.on('close', () => {
    if (connectedSince !== undefined) logger.warn({ redis: redactRedisUrl(url) }, 'lost Redis; reconnecting')
    connectedSince = undefined
    setHealth({ connected: false })
  })
  command.on('error', error => { setHealth({ lastError: error.message }) })

  const commandScripts = defineScripts(command, prefix)
  const writerScripts = defineScripts(writer, prefix)
  const store = new RedisJobStore({ redis: command, scripts: commandScripts, prefix, now })
  const waiters = new DoneWaiters()
  const events = new RedisJobEvents({ command, blocker, store, waiters })
  const queue = new RedisWorkQueue({
    instance,
    concurrency: options.concurrency,
    maxQueueDepth: options.maxQueueDepth,
    ttlMs: options.ttlMs,
    maxFinished: options.maxFinished,
    maxRetainedBytes: options.maxRetainedBytes,
    maxEvents: MAX_EVENTS_PER_RUN,
    maxEventBytes: options.maxEventBytes,
    replicaTimeoutMs,
    prefix,
    bullConnection: { ...redisOptions(url), maxRetriesPerRequest: null, retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000) } as ConnectionOptions,
    command,
    writer,
    commandScripts,
    writerScripts,
    store,
    now,
    logger,
    onFinished: options.onFinished,
    ...(options.onSettled ? { onSettled: options.onSettled } : {}),
    cluster: () => health.cluster,
    connectedSince: () => connectedSince,
    describe: () => ({ version: packageJson.version, started_at: startedAt }),
    onStats: stats => { if (Array.isArray(stats)) setCluster(stats as number[]) },
    dispatchTickMs: options.dispatchTickMs,
  })

  await subscriber.subscribe(`${prefix}:done`, `${prefix}:cancel`)
  subscriber.on('message', (channel: string, message: string) => {
    if (channel === `${prefix}:done`) {
      waiters.done(message)
    } else if (channel === `${prefix}:cancel`) {
      const newline = message.indexOf('\n')
      const id = newline === -1 ? message : message.slice(0, newline)
      const reason = newline === -1 ? 'user' : (JSON.parse(message.slice(newline + 1)) as { reason: CancelReason }).reason
      queue.cancelled(id, reason)
    }
  })
  // Messages published while this replica was cut off are lost: look again at what it waits for.
  subscriber.on('ready', () => {
    for (const id of waiters.ids()) {
      command.hget(`${prefix}:run:${id}:meta`, 'status').then(status => {
        if (status === null || ['completed', 'failed', 'timed_out', 'cancelled'].includes(status)) waiters.done(id)
      }, () => {})
    }
  })

  const refresh = async (): Promise<void> => {
    setCluster(await commandScripts.stats() as number[])
  }
  await queue.start()
  await refresh()
  const timers = [
    setInterval(() => { refresh().catch(() => {}) }, STATS_MS),
    setInterval(() => { store.evictExpired().catch(() => {}) }, SWEEP_MS),
  ]
  for (const timer of timers) timer.unref()

  let closed: Promise<void> | undefined
  return {
    kind: 'redis',
    instance,
    store,
    queue,
    events,
    usage: new RedisUsageLedger(command, prefix),
    callbacks: {
      claim: async leaseMs => (await commandScripts.webhookClaim(now(), leaseMs) as string | null) ?? undefined,
      record: async (id, attempt, done, nextDueAt) => {
        await commandScripts.webhookResult(id, attempt === null ? '' : JSON.stringify(attempt), done === null ? '' : String(done), nextDueAt)
      },
    },
    ready: Promise.resolve(),
    health: () => health,
    close: () => (closed ??= (async () => {
      for (const timer of timers) clearInterval(timer)
      await queue.close()
      await events.close()
      await Promise.all(connections.map(connection => connection.quit().catch(() => connection.disconnect())))
    })()),
  }
}

/** BullMQ needs `noeviction`: with any other policy a full Redis silently drops queued runs. */
async function checkEvictionPolicy (redis: Redis): Promise<void> {
  const reply = await redis.config('GET', 'maxmemory-policy').catch(() => null) as string[] | null
  const policy = reply?.[1]
  if (policy !== undefined && policy !== 'noeviction') {
    throw new ConfigError(`Redis runs with maxmemory-policy ${policy}: set it to noeviction (redis.conf or CONFIG SET maxmemory-policy noeviction), or it may evict queued jobs under memory pressure`)
  }
}

function sameCluster (a: ClusterCounts | null, b: ClusterCounts | null): boolean {
  if (a === null || b === null) return a === b
  return a.replicas === b.replicas && a.active === b.active && a.queued === b.queued && a.capacity === b.capacity
}

async function withTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer in ${ms / 1000}s`)), ms) })])
  } finally {
    clearTimeout(timer)
  }
}
