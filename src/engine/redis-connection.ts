import { Redis, type RedisOptions } from 'ioredis'
import { ConfigError } from '../config.ts'
import { AppError } from '../errors.ts'

/**
 * REDIS_URL as ioredis options: `redis://[user:password@]host[:port][/db]`, `rediss://` (TLS), or
 * `unix:///path/to/redis.sock[?db=N]`.
 */
export function redisOptions (url: string): RedisOptions {
  if (url.startsWith('unix://')) {
    const parsed = new URL(url)
    const db = database(url, parsed.searchParams.get('db') ?? '0')
    return { path: decodeURIComponent(parsed.pathname), db, ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}) }
  }
  const parsed = new URL(url)
  const db = database(url, parsed.pathname.length > 1 ? parsed.pathname.slice(1) : '0')
  return {
    host: parsed.hostname.replace(/^\[|\]$/g, ''),
    port: parsed.port === '' ? 6379 : Number(parsed.port),
    db,
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    ...(parsed.protocol === 'rediss:' ? { tls: { servername: parsed.hostname } } : {}),
  }
}

/** A typo in the database would otherwise put the service's keys, silently, in database 0. */
function database (url: string, raw: string): number {
  if (!/^\d{1,5}$/.test(raw)) throw new ConfigError(`REDIS_URL ${redactRedisUrl(url)}: the database must be a number (0, 1, ...), got ${JSON.stringify(raw)}`)
  return Number(raw)
}

/** A URL fit for logs and /health: the password is never shown. */
export function redactRedisUrl (url: string): string {
  return url.replace(/^(rediss?:\/\/)([^@/]*)@/i, (_match, scheme: string, userinfo: string) => `${scheme}${userinfo.includes(':') ? `${userinfo.split(':')[0]}:***` : '***'}@`)
}

export type ConnectionRole =
  /** Requests of API clients: fails at once while Redis is unreachable (503, nothing accepted). */
  | 'command'
  /** Writes of runs in flight: queued while Redis is unreachable, written when it is back. */
  | 'writer'
  /** Pub/sub: cancels and ends of runs. */
  | 'subscriber'
  /** Blocking reads of event streams. */
  | 'blocker'

export function connect (url: string, role: ConnectionRole, name: string): Redis {
  const failFast = role === 'command'
  return new Redis({
    ...redisOptions(url),
    connectionName: `${name}:${role}`,
    lazyConnect: true,
    enableOfflineQueue: !failFast,
    maxRetriesPerRequest: failFast ? 0 : null,
    // Reconnect for ever, backing off to 2 s: a replica rides out a Redis restart by itself.
    retryStrategy: times => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    // ioredis' own default of 10 s would hold the first request of a replica started before Redis.
    connectTimeout: 5000,
  })
}

const CONNECTION_ERRORS = /Connection is closed|Stream isn't writeable|enableOfflineQueue|ECONNREFUSED|ECONNRESET|ENOENT|ETIMEDOUT|EPIPE|MaxRetriesPerRequest|LOADING|connect|socket/i

/** Turns "Redis cannot be reached" into the API's 503 `engine_unavailable`; other errors pass. */
export function unavailable (error: unknown): unknown {
  if (error instanceof AppError) return error
  const message = error instanceof Error ? error.message : String(error)
  if (!CONNECTION_ERRORS.test(message)) return error
  return new AppError('engine_unavailable', `the job engine (Redis) cannot be reached right now (${message}); nothing was changed: retry shortly`, {
    headers: { 'retry-after': '5' },
    cause: error,
  })
}
