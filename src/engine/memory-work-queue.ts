import PQueue from 'p-queue'
import { RunCancelledError, RunTimeoutError, type CancelReason } from '../errors.ts'
import { startRun, type TerminalUpdate } from '../jobs/job.ts'
import { budgetExceeded, idempotencyConflict, queueFull, retryAfterSeconds, shuttingDown, tenantQueueFull } from './admission.ts'
import type { MemoryEntry, MemoryJobStore } from './memory-job-store.ts'
import type { MemoryUsageLedger } from './memory-usage.ts'
import type { AdmitOptions, AdmitResult, QueueCounts, RunHandle, RunProcessor, RunRecord, WorkQueue } from './types.ts'

export interface MemoryWorkQueueOptions {
  /** MAX_CONCURRENCY: runs at once. */
  concurrency: number
  /** MAX_QUEUE_DEPTH: runs admitted and not finished (running plus waiting). */
  maxQueueDepth: number
  store: MemoryJobStore
  usage: MemoryUsageLedger
  now: () => number
  /** INSTANCE_ID: recorded as the replica that ran each run. */
  instance: string
  /** Told when a run leaves a slot: how long it waited and ran. */
  onSettled?: (run: { kind: RunRecord['kind'], queuedMs: number, runMs: number | undefined }) => void
}

interface Running {
  readonly entry: MemoryEntry
  readonly controller: AbortController
}

/**
 * The one queue every run of this process goes through, jobs and chat completions alike. Waiting
 * runs start in submission order, skipping those whose tenant is at its `max_running` (they keep
 * their place); p-queue holds the slots. A running run keeps its slot until its task has settled,
 * i.e. until its process group is dead: cancelling aborts its signal, nothing more.
 */
export class MemoryWorkQueue implements WorkQueue {
  readonly #options: MemoryWorkQueueOptions
  readonly #slots: PQueue
  /** Waiting runs, in submission order. */
  readonly #pending = new Map<string, MemoryEntry>()
  readonly #running = new Map<string, Running>()
  readonly #tenants = new Map<string, { inflight: number, running: number, maxRunning: number | undefined }>()
  #processor: RunProcessor | undefined
  #closing = false
  #seq = 0
  /** Moving average of run durations, for a useful Retry-After. */
  #averageRunMs: number | undefined

  constructor (options: MemoryWorkQueueOptions) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new TypeError(`concurrency must be an integer >= 1, got ${options.concurrency}`)
    }
    if (!Number.isInteger(options.maxQueueDepth) || options.maxQueueDepth < 1) {
      throw new TypeError(`maxQueueDepth must be an integer >= 1, got ${options.maxQueueDepth}`)
    }
    this.#options = options
    this.#slots = new PQueue({ concurrency: options.concurrency })
  }

  get counts (): QueueCounts {
    return { active: this.#running.size, capacity: this.#options.concurrency, queued: this.#pending.size, closing: this.#closing }
  }

  async admit (record: RunRecord, { limits, keepMs }: AdmitOptions): Promise<AdmitResult> {
    const { store, now } = this.#options
    if (this.#closing) throw shuttingDown()
    if (record.idempotency !== null) {
      const existing = store.findIdempotent(record.tenant, record.idempotency.key)
      if (existing !== undefined) {
        if (existing.record.idempotency?.fingerprint !== record.idempotency.fingerprint) throw idempotencyConflict(record.idempotency.key, existing.record.id)
        return { admitted: false, record: existing.record }
      }
    }
    const active = this.#running.size
    const queued = this.#pending.size
    if (active + queued >= this.#options.maxQueueDepth) {
      throw queueFull({ active, queued, capacity: this.#options.concurrency, maxQueueDepth: this.#options.maxQueueDepth }, this.#retryAfter(queued))
    }
    const tenant = this.#tenant(record.tenant)
    if (limits.maxQueued !== undefined && tenant.inflight - tenant.running >= limits.maxQueued) {
      throw tenantQueueFull(record.tenant, tenant.inflight - tenant.running, limits.maxQueued, this.#retryAfter(tenant.inflight - tenant.running))
    }
    if (limits.budgetUsdPerDay !== undefined) {
      const spent = this.#options.usage.costOn(record.tenant, now())
      if (spent >= limits.budgetUsdPerDay) throw budgetExceeded(record.tenant, spent, limits.budgetUsdPerDay, now())
    }
    tenant.maxRunning = limits.maxRunning
    tenant.inflight++
    record.seq = ++this.#seq
    const entry = store.insert(record, keepMs)
    entry.log.append('status', { status: record.status, phase: record.phase })
    this.#pending.set(record.id, entry)
    this.#dispatch()
    return { admitted: true, record }
  }

  async cancel (id: string, reason: CancelReason): Promise<'dequeued' | 'signalled' | 'unknown'> {
    const waiting = this.#pending.get(id)
    if (waiting !== undefined) {
      this.#pending.delete(id)
      this.#tenant(waiting.record.tenant).inflight--
      const cancel = { requestedAt: this.#options.now(), reason }
      this.#options.store.settle(waiting, { status: 'cancelled', error: { code: 'cancelled', message: cancelledMessage(reason) }, cancel }, [])
      this.#options.onSettled?.({ kind: waiting.record.kind, queuedMs: this.#options.now() - waiting.record.createdAt, runMs: undefined })
      this.#dispatch()
      return 'dequeued'
    }
    const running = this.#running.get(id)
    if (running === undefined) return 'unknown'
    this.#abort(running, reason)
    return 'signalled'
  }

  async position (id: string): Promise<number | undefined> {
    let place = 1
    for (const key of this.#pending.keys()) {
      if (key === id) return place
      place++
    }
    return undefined
  }

  process (processor: RunProcessor): void {
    this.#processor = processor
    this.#dispatch()
  }

  async drain (graceMs: number): Promise<void> {
    this.#closing = true
    for (const id of [...this.#pending.keys()]) await this.cancel(id, 'shutdown')
    if (this.#running.size > 0 && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        this.#slots.onIdle(),
        new Promise<void>(resolve => { timer = setTimeout(resolve, graceMs) }),
      ])
      clearTimeout(timer)
    }
    for (const running of this.#running.values()) this.#abort(running, 'shutdown')
    await this.#slots.onIdle()
  }

  /** Stops a running run: its signal aborts, and its record says who asked. */
  #abort (running: Running, reason: CancelReason): void {
    if (running.controller.signal.aborted) return
    running.entry.record.cancel ??= { requestedAt: this.#options.now(), reason }
    running.controller.abort(new RunCancelledError(reason))
  }

  #dispatch (): void {
    if (this.#processor === undefined || this.#closing) return
    for (const entry of this.#pending.values()) {
      if (this.#running.size >= this.#options.concurrency) return
      const tenant = this.#tenant(entry.record.tenant)
      if (tenant.maxRunning !== undefined && tenant.running >= tenant.maxRunning) continue
      this.#start(entry, this.#processor)
    }
  }

  #start (entry: MemoryEntry, processor: RunProcessor): void {
    const { record } = entry
    this.#pending.delete(record.id)
    const tenant = this.#tenant(record.tenant)
    tenant.running++
    const running: Running = { entry, controller: new AbortController() }
    this.#running.set(record.id, running)
    const startedAt = performance.now()
    const queuedMs = this.#options.now() - record.createdAt
    startRun(record, this.#options.now(), this.#options.instance)
    void this.#slots.add(async () => {
      const timer = setTimeout(() => running.controller.abort(new RunTimeoutError(record.timeoutMs)), record.timeoutMs)
      try {
        await processor(this.#handle(entry), running.controller.signal)
      } catch (error) {
        // The processor never throws; if it did, the run still ends, and says why.
        this.#options.store.settle(entry, { status: 'failed', error: { code: 'agent_crashed', message: `internal error while running: ${(error as Error).message}` } }, [])
      } finally {
        clearTimeout(timer)
        this.#running.delete(record.id)
        tenant.running--
        tenant.inflight--
        const took = performance.now() - startedAt
        this.#averageRunMs = this.#averageRunMs === undefined ? took : this.#averageRunMs * 0.8 + took * 0.2
        this.#options.onSettled?.({ kind: record.kind, queuedMs, runMs: took })
        this.#dispatch()
      }
    })
  }

  #handle (entry: MemoryEntry): RunHandle {
    const store = this.#options.store
    return {
      record: entry.record,
      event: (type, data) => { entry.log.append(type, data) },
      save: () => {},
      claimSpawn: async () => {},
      finish: async (update: TerminalUpdate, lines) => store.settle(entry, update, lines),
    }
  }

  #tenant (name: string): { inflight: number, running: number, maxRunning: number | undefined } {
    let tenant = this.#tenants.get(name)
    if (tenant === undefined) this.#tenants.set(name, tenant = { inflight: 0, running: 0, maxRunning: undefined })
    return tenant
  }

  #retryAfter (waiting: number): number {
    return retryAfterSeconds(this.#averageRunMs, waiting, this.#options.concurrency)
  }
}

export function cancelledMessage (reason: CancelReason): string {
  return reason === 'user' ? 'the job was cancelled before it started' : new RunCancelledError(reason).message
}
