import type { Job, JobStatus } from './job.ts'

export interface ListOptions {
  status?: JobStatus | undefined
  limit: number
  /** Only jobs older than the one this cursor came from. */
  before?: number | undefined
}

/**
 * Where jobs live while they can be asked about. Swappable behind this small interface (a shared
 * store would let several instances answer for each other's jobs).
 */
export interface JobStore {
  add (job: Job): void
  get (id: string): Job | undefined
  /** The job submitted with this Idempotency-Key, while it is kept. */
  findByIdempotencyKey (key: string): Job | undefined
  /** Called once a job is terminal: from now on it can be evicted. */
  finished (job: Job): void
  /** Newest first. */
  list (options: ListOptions): { jobs: Job[], next: number | undefined }
  /** Drops finished jobs past their TTL; returns how many went. */
  evictExpired (): number
  readonly size: number
}

export interface MemoryJobStoreOptions {
  /** How long a finished job is kept. */
  ttlMs: number
  /** How many finished jobs are kept at most; the oldest go first. */
  maxFinished: number
  /** How many bytes (prompts, outputs, diffs, event history) finished jobs may hold together. */
  maxRetainedBytes: number
  now?: () => number
}

/**
 * In-memory store. Queued and running jobs are never evicted (the queue bounds how many there
 * are); finished ones go after the TTL, or earlier, oldest first, when there are too many of them
 * or they hold too many bytes, so a flood of jobs cannot exhaust memory.
 */
export class MemoryJobStore implements JobStore {
  readonly #ttlMs: number
  readonly #maxFinished: number
  readonly #maxRetainedBytes: number
  readonly #now: () => number
  /** Every job, in submission order. */
  readonly #jobs = new Map<string, Job>()
  readonly #byIdempotencyKey = new Map<string, Job>()
  /** Finished jobs, in the order they finished: the first is the first to go. */
  readonly #finished = new Map<string, { job: Job, bytes: number }>()
  #retainedBytes = 0

  constructor (options: MemoryJobStoreOptions) {
    this.#ttlMs = options.ttlMs
    this.#maxFinished = options.maxFinished
    this.#maxRetainedBytes = options.maxRetainedBytes
    this.#now = options.now ?? Date.now
  }

  get size (): number {
    return this.#jobs.size
  }

  get retainedBytes (): number {
    return this.#retainedBytes
  }

  add (job: Job): void {
    this.#jobs.set(job.id, job)
    if (job.idempotency !== undefined) this.#byIdempotencyKey.set(job.idempotency.key, job)
  }

  findByIdempotencyKey (key: string): Job | undefined {
    const job = this.#byIdempotencyKey.get(key)
    return job === undefined ? undefined : this.get(job.id)
  }

  get (id: string): Job | undefined {
    const job = this.#jobs.get(id)
    if (job !== undefined && this.#expired(job)) {
      this.#delete(job.id)
      return undefined
    }
    return job
  }

  finished (job: Job): void {
    if (!this.#jobs.has(job.id) || this.#finished.has(job.id)) return
    const bytes = job.retainedBytes()
    this.#finished.set(job.id, { job, bytes })
    this.#retainedBytes += bytes
    while (this.#finished.size > this.#maxFinished || (this.#retainedBytes > this.#maxRetainedBytes && this.#finished.size > 1)) {
      const oldest = this.#finished.keys().next().value as string
      this.#delete(oldest)
    }
  }

  list (options: ListOptions): { jobs: Job[], next: number | undefined } {
    this.evictExpired()
    const jobs: Job[] = []
    const all = [...this.#jobs.values()]
    for (let i = all.length - 1; i >= 0 && jobs.length <= options.limit; i--) {
      const job = all[i]!
      if (options.before !== undefined && job.seq >= options.before) continue
      if (options.status !== undefined && job.status !== options.status) continue
      jobs.push(job)
    }
    const more = jobs.length > options.limit
    if (more) jobs.pop()
    return { jobs, next: more ? jobs.at(-1)!.seq : undefined }
  }

  evictExpired (): number {
    let evicted = 0
    for (const { job } of this.#finished.values()) {
      // Finish order is time order: the first one that has not expired ends the sweep.
      if (!this.#expired(job)) break
      this.#delete(job.id)
      evicted++
    }
    return evicted
  }

  #expired (job: Job): boolean {
    return job.finishedAt !== undefined && this.#now() - job.finishedAt >= this.#ttlMs
  }

  #delete (id: string): void {
    const job = this.#jobs.get(id)
    if (job?.idempotency !== undefined && this.#byIdempotencyKey.get(job.idempotency.key) === job) {
      this.#byIdempotencyKey.delete(job.idempotency.key)
    }
    const finished = this.#finished.get(id)
    if (finished !== undefined) {
      this.#retainedBytes -= finished.bytes
      this.#finished.delete(id)
    }
    this.#jobs.delete(id)
  }
}
