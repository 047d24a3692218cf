import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { AgentControls } from '../agent/agent-controls.ts'
import { AppError, RunCancelledError } from '../errors.ts'
import type { AgentExecutor, ExecuteOutcome } from '../runner/agent-executor.ts'
import type { Runner } from '../runner/runner.ts'
import { EventLog } from './event-log.ts'
import { Job, type JobRequest, type JobStatus } from './job.ts'
import type { JobStore } from './job-store.ts'

export interface JobServiceOptions {
  store: JobStore
  runner: Runner
  executor: AgentExecutor
  /** Turns a request's agent controls (tool rules, schema, MCP profiles...) into the run's spec. */
  controls: AgentControls
  /** Execution timeout when the request names none. */
  defaultTimeoutMs: number
  /** Bounds each job's event history, like its raw output. */
  maxEventBytes: number
  permissionMode?: string | undefined
  now: () => number
  logger: Logger
  /** Told once per job when it is terminal (webhooks, metrics). */
  onFinished?: (job: Job) => void
  /** How often finished jobs past their TTL are swept (they are also dropped lazily when read). */
  sweepIntervalMs?: number
}

const MAX_EVENTS_PER_JOB = 10_000

/**
 * The jobs of `POST /execute`: accepts them, queues them on the shared runner, records how they
 * went, and answers for them until they are evicted.
 */
export class JobService {
  readonly #options: JobServiceOptions
  readonly #sweep: NodeJS.Timeout
  readonly #settled = new Set<Promise<void>>()
  /** Long-polls waiting for a job to end, each removed as soon as it returns. */
  readonly #waiters = new Map<Job, Set<() => void>>()
  #seq = 0

  constructor (options: JobServiceOptions) {
    this.#options = options
    this.#sweep = setInterval(() => options.store.evictExpired(), options.sweepIntervalMs ?? 30_000)
    this.#sweep.unref()
  }

  /** Accepts a job (it is queued, or started at once) or throws `queue_full` / `shutting_down`. */
  submit (request: JobRequest, options: { idempotency?: { key: string, fingerprint: string } | undefined } = {}): Job {
    const { runner, store, now } = this.#options
    const timeoutMs = request.timeout_seconds === undefined ? this.#options.defaultTimeoutMs : request.timeout_seconds * 1000
    const job = new Job({
      id: randomUUID(),
      seq: ++this.#seq,
      request,
      limits: { timeoutMs },
      createdAt: now(),
      idempotency: options.idempotency,
      events: new EventLog({ maxEvents: MAX_EVENTS_PER_JOB, maxBytes: this.#options.maxEventBytes, now }),
    })
    job.events.append('status', { status: job.status, phase: job.phase })
    // Scheduling may start the job at once; if it throws, the job was never accepted.
    const run = runner.schedule(job.id, signal => this.#run(job, signal), { timeoutMs })
    store.add(job)
    this.#options.logger.info({ jobId: job.id, queued: runner.queued, active: runner.active }, 'job accepted')
    const settled = run.then(() => {}, (error: unknown) => this.#abandon(job, error))
      .finally(() => { this.#settled.delete(settled) })
    this.#settled.add(settled)
    return job
  }

  get (id: string): Job | undefined {
    return this.#options.store.get(id)
  }

  findByIdempotencyKey (key: string): Job | undefined {
    return this.#options.store.findByIdempotencyKey(key)
  }

  /** 1-based place in the queue while the job waits. */
  position (job: Job): number | undefined {
    return job.status === 'queued' ? this.#options.runner.position(job.id) : undefined
  }

  list (options: { status?: JobStatus | undefined, limit: number, before?: number | undefined }): { jobs: Job[], next: number | undefined } {
    return this.#options.store.list(options)
  }

  /**
   * Cancels a job: a queued one is cancelled at once; a running one has its process group sent
   * SIGTERM (SIGKILL after the grace period) and becomes `cancelled` when it has exited.
   */
  cancel (id: string): Job {
    const job = this.get(id)
    if (job === undefined) throw jobNotFound(id)
    if (job.terminal) {
      throw new AppError('job_finished', `job ${id} already ended as ${job.status}; there is nothing to cancel`, { details: { status: job.status } })
    }
    job.cancel ??= { requestedAt: this.#options.now(), reason: 'user' }
    const found = this.#options.runner.cancel(job.id, new RunCancelledError('user'))
    if (found === 'dequeued') this.#finish(job, 'cancelled', { error: { code: 'cancelled', message: 'the job was cancelled before it started' } })
    this.#options.logger.info({ jobId: id, found }, 'job cancel requested')
    return job
  }

  /**
   * Resolves when the job is terminal or after `ms`, whichever comes first. A wait that returns
   * leaves nothing behind (a race on `job.done` would keep each one until the job ends).
   */
  async wait (job: Job, ms: number, signal?: AbortSignal): Promise<void> {
    if (job.terminal || ms <= 0 || signal?.aborted === true) return
    const { promise, resolve: settle } = Promise.withResolvers<void>()
    const resolve = (): void => settle()
    let waiters = this.#waiters.get(job)
    if (waiters === undefined) this.#waiters.set(job, waiters = new Set())
    waiters.add(resolve)
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener('abort', resolve, { once: true })
    try {
      await promise
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', resolve)
      waiters.delete(resolve)
      if (waiters.size === 0 && this.#waiters.get(job) === waiters) this.#waiters.delete(job)
    }
  }

  /** Waits for every accepted job to be terminal (the runner decides how long running ones get). */
  async close (): Promise<void> {
    clearInterval(this.#sweep)
    while (this.#settled.size > 0) await Promise.all(this.#settled)
  }

  async #run (job: Job, signal: AbortSignal): Promise<void> {
    const { now, executor, logger } = this.#options
    job.start(now())
    logger.info({ jobId: job.id, queueWaitMs: (job.startedAt ?? 0) - job.createdAt }, 'job started')
    const { request } = job
    let outcome: ExecuteOutcome
    try {
      outcome = await executor.execute({
        id: job.id,
        ref: request.ref,
        push: request.push,
        spec: {
          prompt: request.prompt,
          model: request.model,
          agent: request.agent,
          maxTurns: request.max_turns,
          maxBudgetUsd: request.max_budget_usd,
          permissionMode: this.#options.permissionMode,
          ...this.#options.controls.toSpec(request),
        },
      }, {
        onPhase: phase => job.enterPhase(phase, now()),
        onEvent: event => job.recordAgentEvent(event),
        onSpawn: pid => { job.pid = pid },
      }, signal)
    } catch (error) {
      logger.error({ err: error, jobId: job.id }, 'job execution failed unexpectedly')
      this.#finish(job, 'failed', { error: { code: 'agent_crashed', message: `internal error while running the job: ${(error as Error).message}` } })
      return
    }
    if (outcome.status === 'cancelled' && signal.reason instanceof RunCancelledError) {
      job.cancel ??= { requestedAt: now(), reason: signal.reason.reason }
    }
    this.#finish(job, outcome.status, { result: outcome.result, exit: outcome.exit, error: outcome.error, output: outcome.output, changes: outcome.changes })
  }

  /** The runner gave up on a job before or outside its run: cancelled while queued, or shutdown. */
  #abandon (job: Job, error: unknown): void {
    if (job.terminal) return
    if (error instanceof RunCancelledError) {
      job.cancel ??= { requestedAt: this.#options.now(), reason: error.reason }
      this.#finish(job, 'cancelled', { error: { code: 'cancelled', message: error.message } })
      return
    }
    this.#options.logger.error({ err: error, jobId: job.id }, 'job abandoned unexpectedly')
    this.#finish(job, 'failed', { error: { code: 'agent_crashed', message: `internal error: ${(error as Error)?.message ?? String(error)}` } })
  }

  #finish (job: Job, status: Exclude<JobStatus, 'queued' | 'running'>, outcome: Parameters<Job['finish']>[2]): void {
    if (job.terminal) return
    job.finish(status, this.#options.now(), outcome)
    for (const wake of this.#waiters.get(job) ?? []) wake()
    this.#options.store.finished(job)
    this.#options.logger.info({
      jobId: job.id,
      status,
      error: job.error?.code,
      runMs: job.startedAt === undefined ? undefined : (job.finishedAt ?? 0) - job.startedAt,
    }, 'job finished')
    try {
      this.#options.onFinished?.(job)
    } catch (error) {
      this.#options.logger.error({ err: error, jobId: job.id }, 'job finish listener failed')
    }
  }
}

export function jobNotFound (id: string): AppError {
  return new AppError('job_not_found', `no job ${id}: it never existed or was evicted after JOB_TTL_SECONDS`)
}
