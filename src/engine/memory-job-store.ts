import { EventLog } from '../jobs/event-log.ts'
import { finishRun, retainedBytes, usageDelta, type TerminalUpdate } from '../jobs/job.ts'
import type { JobStore, ListQuery, RunRecord } from './types.ts'
import type { MemoryUsageLedger } from './memory-usage.ts'

export interface MemoryJobStoreOptions {
  /** How long a finished run is kept at most (JOB_TTL_SECONDS); each run says how long it wants. */
  ttlMs: number
  /** How many finished runs are kept at most; the oldest go first. */
  maxFinished: number
  /** How many bytes (records, outputs, event histories) finished runs may hold together. */
  maxRetainedBytes: number
  /** Bounds each run's event history. */
  maxEventBytes: number
  maxEvents: number
  usage: MemoryUsageLedger
  now: () => number
  /** Told once per run when it is terminal, by whoever ended it. */
  onFinished: (record: RunRecord) => void
}

/** One run as the memory engine holds it. */
export interface MemoryEntry {
  readonly record: RunRecord
  /** How long it is kept once finished (AdmitOptions.keepMs). */
  readonly keepMs: number
  lines: readonly string[]
  readonly log: EventLog
  /** Told once, when the run ends; a waiter removes itself when it returns (nothing is kept for it). */
  readonly waiters: Set<() => void>
}

/**
 * Runs in this process's memory. Queued and running ones are never evicted (MAX_QUEUE_DEPTH bounds
 * how many there are); finished ones go after their TTL, or earlier, oldest first, when there are
 * too many or they hold too many bytes, so a flood of jobs cannot exhaust memory.
 */
export class MemoryJobStore implements JobStore {
  readonly #options: MemoryJobStoreOptions
  /** Every run, in submission order. */
  readonly #entries = new Map<string, MemoryEntry>()
  /** `tenant \0 key` → run id. */
  readonly #byIdempotencyKey = new Map<string, string>()
  /** Finished runs in the order they finished: the first is the first to go. */
  readonly #finished = new Map<string, { bytes: number, expiresAt: number }>()
  #retainedBytes = 0

  constructor (options: MemoryJobStoreOptions) {
    this.#options = options
  }

  get retainedBytes (): number {
    return this.#retainedBytes
  }

  get size (): number {
    return this.#entries.size
  }

  // The engine's side: the work queue admits and settles runs through these.

  insert (record: RunRecord, keepMs: number): MemoryEntry {
    const entry: MemoryEntry = {
      record,
      keepMs,
      lines: [],
      log: new EventLog({ maxEvents: this.#options.maxEvents, maxBytes: this.#options.maxEventBytes, now: this.#options.now }),
      waiters: new Set(),
    }
    this.#entries.set(record.id, entry)
    if (record.idempotency !== null) this.#byIdempotencyKey.set(idempotencyKey(record.tenant, record.idempotency.key), record.id)
    return entry
  }

  entry (id: string): MemoryEntry | undefined {
    const entry = this.#entries.get(id)
    if (entry !== undefined && this.#expired(id)) {
      this.#delete(id)
      return undefined
    }
    return entry
  }

  findIdempotent (tenant: string, key: string): MemoryEntry | undefined {
    const id = this.#byIdempotencyKey.get(idempotencyKey(tenant, key))
    return id === undefined ? undefined : this.entry(id)
  }

  /** Ends a run unless it already ended: the terminal event, the output, the bounds, the usage. */
  settle (entry: MemoryEntry, update: TerminalUpdate, lines: readonly string[]): boolean {
    const { record } = entry
    if (record.status !== 'queued' && record.status !== 'running') return false
    const { now, ttlMs, maxFinished, maxRetainedBytes } = this.#options
    const terminal = finishRun(record, update, now())
    entry.lines = lines
    entry.log.append(terminal.type, terminal.data)
    entry.log.close()
    const outputBytes = lines.reduce((sum, line) => sum + line.length + 1, 0)
    const bytes = retainedBytes(record, { lines: lines.length, bytes: outputBytes }, { count: entry.log.lastId - entry.log.firstId + 1, bytes: entry.log.bytes })
    this.#finished.set(record.id, { bytes, expiresAt: now() + Math.min(entry.keepMs, ttlMs) })
    this.#retainedBytes += bytes
    while (this.#finished.size > maxFinished || (this.#retainedBytes > maxRetainedBytes && this.#finished.size > 1)) {
      this.#delete(this.#finished.keys().next().value as string)
    }
    const delta = usageDelta(record)
    if (delta !== undefined) this.#options.usage.add(record.tenant, now(), delta)
    for (const wake of entry.waiters) wake()
    entry.waiters.clear()
    try {
      this.#options.onFinished(record)
    } catch {
      // A listener's bug must not undo the end of a run.
    }
    return true
  }

  // JobStore

  async get (id: string): Promise<RunRecord | undefined> {
    return this.entry(id)?.record
  }

  async output (id: string): Promise<string[]> {
    return [...(this.entry(id)?.lines ?? [])]
  }

  async list (query: ListQuery): Promise<{ records: RunRecord[], next: number | undefined }> {
    await this.evictExpired()
    const records: RunRecord[] = []
    const all = [...this.#entries.values()]
    for (let i = all.length - 1; i >= 0 && records.length <= query.limit; i--) {
      const { record } = all[i]!
      if (record.kind !== 'job') continue
      if (query.before !== undefined && record.seq >= query.before) continue
      if (query.tenant !== undefined && record.tenant !== query.tenant) continue
      if (query.status !== undefined && record.status !== query.status) continue
      records.push(record)
    }
    const more = records.length > query.limit
    if (more) records.pop()
    return { records, next: more ? records.at(-1)!.seq : undefined }
  }

  async evictExpired (): Promise<number> {
    let evicted = 0
    for (const id of [...this.#finished.keys()]) {
      if (!this.#expired(id)) continue
      this.#delete(id)
      evicted++
    }
    return evicted
  }

  async remove (id: string): Promise<'removed' | 'unfinished' | 'unknown'> {
    if (this.entry(id) === undefined) return 'unknown'
    if (!this.#finished.has(id)) return 'unfinished'
    this.#delete(id)
    return 'removed'
  }

  #expired (id: string): boolean {
    const finished = this.#finished.get(id)
    return finished !== undefined && this.#options.now() >= finished.expiresAt
  }

  #delete (id: string): void {
    const entry = this.#entries.get(id)
    const idempotency = entry?.record.idempotency
    if (entry !== undefined && idempotency != null) {
      const key = idempotencyKey(entry.record.tenant, idempotency.key)
      if (this.#byIdempotencyKey.get(key) === id) this.#byIdempotencyKey.delete(key)
    }
    const finished = this.#finished.get(id)
    if (finished !== undefined) {
      this.#retainedBytes -= finished.bytes
      this.#finished.delete(id)
    }
    this.#entries.delete(id)
  }
}

function idempotencyKey (tenant: string, key: string): string {
  return `${tenant}\0${key}`
}
