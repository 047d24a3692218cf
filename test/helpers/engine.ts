import { randomBytes } from 'node:crypto'
import { pino } from 'pino'
import type { EngineOptions } from '../../src/engine/memory-engine.ts'
import type { RedisEngineOptions } from '../../src/engine/redis-engine.ts'

/** What an engine driven directly by a test is built from: small bounds, a silent log. */
export function engineOptions (overrides: Partial<EngineOptions> = {}): EngineOptions {
  return {
    instance: `test-${randomBytes(3).toString('hex')}`,
    concurrency: 1,
    maxQueueDepth: 100,
    ttlMs: 3_600_000,
    maxFinished: 1000,
    maxRetainedBytes: 256 * 1024 * 1024,
    maxEventBytes: 8 * 1024 * 1024,
    now: Date.now,
    onFinished: () => {},
    ...overrides,
  }
}

/** The same for the Redis engine on `url`, under `prefix`. */
export function redisEngineOptions (url: string, prefix: string, overrides: Partial<RedisEngineOptions> = {}): RedisEngineOptions {
  return { ...engineOptions(), url, prefix, replicaTimeoutMs: 30_000, logger: pino({ level: 'silent' }), ...overrides }
}
