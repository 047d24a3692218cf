import { AppError } from '../errors.ts'

/*
 * The refusals of admission, the same from both engines: a stable code, a message that says what to
 * do, the counts that explain it, and a Retry-After.
 */

export interface DepthCounts {
  active: number
  queued: number
  capacity: number
  maxQueueDepth: number
}

/** A useful Retry-After: the time for the queue ahead to drain at the average run time, 1 s to 10 min. */
export function retryAfterSeconds (averageRunMs: number | undefined, waiting: number, capacity: number): number {
  const seconds = Math.ceil(((averageRunMs ?? 10_000) * (waiting + 1)) / Math.max(capacity, 1) / 1000)
  return Math.min(Math.max(seconds, 1), 600)
}

export function queueFull (counts: DepthCounts, retryAfter: number): AppError {
  return new AppError('queue_full', `the queue is full: ${counts.active} running and ${counts.queued} waiting reach MAX_QUEUE_DEPTH (${counts.maxQueueDepth}); retry after ${retryAfter}s`, {
    headers: { 'retry-after': String(retryAfter) },
    details: { queued: counts.queued, active: counts.active, capacity: counts.capacity, max_queue_depth: counts.maxQueueDepth },
  })
}

export function tenantQueueFull (tenant: string, queued: number, maxQueued: number, retryAfter: number): AppError {
  return new AppError('tenant_queue_full', `tenant ${tenant} already has ${queued} runs waiting, its max_queued; retry after ${retryAfter}s`, {
    headers: { 'retry-after': String(retryAfter) },
    details: { tenant, queued, max_queued: maxQueued },
  })
}

/** Seconds from `now` to the next 00:00 UTC, when a day's budget starts again. */
export function secondsToMidnightUtc (now: number): number {
  const midnight = new Date(now)
  midnight.setUTCHours(24, 0, 0, 0)
  return Math.max(1, Math.ceil((midnight.getTime() - now) / 1000))
}

export function budgetExceeded (tenant: string, spentUsd: number, budgetUsd: number, now: number): AppError {
  const retryAfter = secondsToMidnightUtc(now)
  return new AppError('budget_exceeded', `tenant ${tenant} has spent $${spentUsd.toFixed(4)} today (UTC), its budget_usd_per_day is $${budgetUsd}; new runs are accepted again at 00:00 UTC, in ${retryAfter}s`, {
    headers: { 'retry-after': String(retryAfter) },
    details: { tenant, spent_usd: spentUsd, budget_usd_per_day: budgetUsd },
  })
}

export function idempotencyConflict (key: string, jobId: string): AppError {
  return new AppError('idempotency_conflict', `Idempotency-Key ${JSON.stringify(key)} was used for job ${jobId} with a different body; use a new key for a new job`, { details: { job_id: jobId } })
}

export function shuttingDown (): AppError {
  return new AppError('shutting_down', 'the service is shutting down and takes no new work; retry against another instance')
}
