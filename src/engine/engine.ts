import type { Logger } from 'pino'
import type { Config } from '../config.ts'
import { createMemoryEngine } from './memory-engine.ts'
import type { Engine, RunRecord } from './types.ts'

export interface EngineDeps {
  now: () => number
  logger: Logger
  onFinished: (record: RunRecord) => void
  onSettled?: (run: { kind: RunRecord['kind'], queuedMs: number, runMs: number | undefined }) => void
}

/** REDIS_URL unset: everything in this process's memory; set: the cluster's engine on Redis. */
export async function createEngine (config: Config, deps: EngineDeps): Promise<Engine> {
  const options = {
    instance: config.instanceId,
    concurrency: config.maxConcurrency,
    maxQueueDepth: config.maxQueueDepth,
    ttlMs: config.jobTtlSeconds * 1000,
    maxFinished: config.maxFinishedJobs,
    maxRetainedBytes: config.maxRetainedBytes,
    maxEventBytes: config.maxOutputBytes,
    now: deps.now,
    onFinished: deps.onFinished,
    ...(deps.onSettled ? { onSettled: deps.onSettled } : {}),
  }
  if (config.redisUrl === undefined) return createMemoryEngine(options)
  const { createRedisEngine } = await import('./redis-engine.ts')
  return createRedisEngine({ ...options, url: config.redisUrl, prefix: config.redisPrefix, replicaTimeoutMs: config.replicaTimeoutSeconds * 1000, logger: deps.logger })
}
