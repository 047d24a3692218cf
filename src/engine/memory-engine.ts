import { MemoryJobEvents } from './memory-job-events.ts'
import { MemoryJobStore } from './memory-job-store.ts'
import { MemoryUsageLedger } from './memory-usage.ts'
import { MemoryWorkQueue } from './memory-work-queue.ts'
import { type Engine, type EngineHealth, type RunRecord } from './types.ts'

/** What both engines are built from (see createEngine). */
export interface EngineOptions {
  instance: string
  concurrency: number
  maxQueueDepth: number
  ttlMs: number
  maxFinished: number
  maxRetainedBytes: number
  /** Bounds one run's event history (MAX_OUTPUT_BYTES). */
  maxEventBytes: number
  now: () => number
  /** Told once per run when it ends, on the replica that ended it. */
  onFinished: (record: RunRecord) => void
  /** Told when a run leaves one of this replica's slots. */
  onSettled?: (run: { kind: RunRecord['kind'], queuedMs: number, runMs: number | undefined }) => void
}

export const MAX_EVENTS_PER_RUN = 10_000
const SWEEP_MS = 30_000

/** Everything in this process's memory: the embedded default, no Redis needed. */
export function createMemoryEngine (options: EngineOptions): Engine {
  const usage = new MemoryUsageLedger()
  const store = new MemoryJobStore({
    ttlMs: options.ttlMs,
    maxFinished: options.maxFinished,
    maxRetainedBytes: options.maxRetainedBytes,
    maxEventBytes: options.maxEventBytes,
    maxEvents: MAX_EVENTS_PER_RUN,
    usage,
    now: options.now,
    onFinished: options.onFinished,
  })
  const queue = new MemoryWorkQueue({
    concurrency: options.concurrency,
    maxQueueDepth: options.maxQueueDepth,
    store,
    usage,
    now: options.now,
    instance: options.instance,
    ...(options.onSettled ? { onSettled: options.onSettled } : {}),
  })
  // Finished runs past their TTL also go when they are read; the sweep frees the ones nobody reads.
  const sweep = setInterval(() => { void store.evictExpired() }, SWEEP_MS)
  sweep.unref()
  const health: EngineHealth = { kind: 'memory', connected: true, cluster: null, lastError: null }
  return {
    kind: 'memory',
    instance: options.instance,
    store,
    queue,
    events: new MemoryJobEvents(store),
    usage,
    ready: Promise.resolve(),
    health: () => health,
    close: async () => { clearInterval(sweep) },
  }
}
