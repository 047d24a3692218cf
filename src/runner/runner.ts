import PQueue from 'p-queue'
import { AppError, RunCancelledError, RunTimeoutError } from '../errors.ts'

export type RunKind = 'job' | 'chat'

export interface RunnerOptions {
  /** How many runs at once. */
  concurrency: number
  /**
   * How many runs may be admitted and not yet finished, running and waiting together (the seed's
   * rule); one more is refused with `queue_full`.
   */
  maxQueueDepth: number
  /** Told when a run leaves the runner: how long it waited, and ran (undefined if it never started). */
  onSettled?: (run: { id: string, kind: RunKind, queuedMs: number, runMs: number | undefined }) => void
}

export interface ScheduleOptions {
  /** Aborts the run's signal with a `RunTimeoutError`; counted from the start of the run, never while it waits. */
  timeoutMs?: number | undefined
  /** Aborting it removes a waiting run at once, or stops a running one. */
  signal?: AbortSignal | undefined
  kind?: RunKind | undefined
}

interface Entry {
  /** Aborts while the run waits: p-queue drops it from the queue. */
  readonly dequeue: AbortController
  /** Aborts while the run runs: the task stops its agent; the slot is held until the task settles. */
  readonly run: AbortController
}

/**
 * The one bounded FIFO queue that every agent run goes through (jobs and chat completions alike).
 * At most `concurrency` tasks run; the rest wait in submission order; once `maxQueueDepth` runs are
 * admitted (running plus waiting), `schedule` refuses. A running task is never dropped from its slot early: cancelling one aborts
 * its signal, and the slot is freed only when the task (and so its process group) has finished.
 */
export class Runner {
  readonly capacity: number
  readonly maxQueueDepth: number
  readonly #queue: PQueue
  readonly #onSettled: RunnerOptions['onSettled']
  readonly #waiting = new Map<string, Entry>()
  readonly #running = new Map<string, Entry>()
  #closing = false
  /** Moving average of run durations, for a useful Retry-After. */
  #averageRunMs: number | undefined

  constructor (options: RunnerOptions) {
    if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
      throw new TypeError(`concurrency must be an integer >= 1, got ${options.concurrency}`)
    }
    if (!Number.isInteger(options.maxQueueDepth) || options.maxQueueDepth < 1) {
      throw new TypeError(`maxQueueDepth must be an integer >= 1, got ${options.maxQueueDepth}`)
    }
    this.capacity = options.concurrency
    this.maxQueueDepth = options.maxQueueDepth
    this.#queue = new PQueue({ concurrency: options.concurrency })
    this.#onSettled = options.onSettled
  }

  get active (): number {
    return this.#running.size
  }

  get queued (): number {
    return this.#waiting.size
  }

  get closing (): boolean {
    return this.#closing
  }

  /** 1-based place of a waiting run in the queue, or undefined when it is not waiting. */
  position (id: string): number | undefined {
    let place = 1
    for (const key of this.#waiting.keys()) {
      if (key === id) return place
      place++
    }
    return undefined
  }

  /**
   * Queues `task`; it gets a signal that aborts on timeout or cancel. Throws `queue_full` or
   * `shutting_down` at once (nothing was queued); otherwise settles with the task.
   */
  schedule<T> (id: string, task: (signal: AbortSignal) => Promise<T>, options: ScheduleOptions = {}): Promise<T> {
    if (this.#closing) {
      throw new AppError('shutting_down', 'the service is shutting down and takes no new work; retry against another instance')
    }
    if (this.#waiting.has(id) || this.#running.has(id)) throw new TypeError(`a run with id ${id} is already scheduled`)
    if (this.#running.size + this.#waiting.size >= this.maxQueueDepth) {
      const retryAfter = this.#retryAfterSeconds()
      throw new AppError('queue_full', `the queue is full: ${this.#running.size} running and ${this.#waiting.size} waiting reach MAX_QUEUE_DEPTH (${this.maxQueueDepth}); retry after ${retryAfter}s`, {
        headers: { 'retry-after': String(retryAfter) },
        details: { queued: this.#waiting.size, active: this.#running.size, capacity: this.capacity, max_queue_depth: this.maxQueueDepth },
      })
    }
    const entry: Entry = { dequeue: new AbortController(), run: new AbortController() }
    this.#waiting.set(id, entry)
    const queuedAt = performance.now()
    let startedAt: number | undefined

    const external = options.signal
    const onExternalAbort = (): void => { this.cancel(id, external?.reason) }
    external?.addEventListener('abort', onExternalAbort, { once: true })

    const promise = this.#queue.add(async () => {
      this.#waiting.delete(id)
      this.#running.set(id, entry)
      const started = startedAt = performance.now()
      const timer = options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => entry.run.abort(new RunTimeoutError(options.timeoutMs!)), options.timeoutMs)
      try {
        return await task(entry.run.signal)
      } finally {
        clearTimeout(timer)
        this.#running.delete(id)
        const took = performance.now() - started
        this.#averageRunMs = this.#averageRunMs === undefined ? took : this.#averageRunMs * 0.8 + took * 0.2
      }
    }, { signal: entry.dequeue.signal })

    const cleanup = (): void => {
      external?.removeEventListener('abort', onExternalAbort)
      this.#waiting.delete(id)
      const now = performance.now()
      this.#onSettled?.({
        id,
        kind: options.kind ?? 'job',
        queuedMs: (startedAt ?? now) - queuedAt,
        runMs: startedAt === undefined ? undefined : now - startedAt,
      })
    }
    promise.then(cleanup, cleanup)
    if (external?.aborted === true) onExternalAbort()
    return promise
  }

  /**
   * Cancels a run: a waiting one leaves the queue at once (its promise rejects with `reason`);
   * a running one has its signal aborted. Returns what it found.
   */
  cancel (id: string, reason: unknown = new RunCancelledError('user')): 'dequeued' | 'aborted' | 'unknown' {
    const waiting = this.#waiting.get(id)
    if (waiting !== undefined) {
      this.#waiting.delete(id)
      waiting.dequeue.abort(reason)
      return 'dequeued'
    }
    const running = this.#running.get(id)
    if (running !== undefined) {
      running.run.abort(reason)
      return 'aborted'
    }
    return 'unknown'
  }

  /**
   * Stops taking work, drops everything waiting, lets running tasks finish for `graceMs`, then
   * cancels them, and resolves when every task has settled.
   */
  async close (graceMs: number): Promise<void> {
    this.#closing = true
    for (const id of [...this.#waiting.keys()]) this.cancel(id, new RunCancelledError('shutdown'))
    if (this.#running.size > 0 && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        this.#queue.onIdle(),
        new Promise<void>(resolve => { timer = setTimeout(resolve, graceMs) }),
      ])
      clearTimeout(timer)
    }
    for (const id of [...this.#running.keys()]) this.cancel(id, new RunCancelledError('shutdown'))
    await this.#queue.onIdle()
  }

  #retryAfterSeconds (): number {
    const average = this.#averageRunMs ?? 10_000
    const seconds = Math.ceil((average * (this.#waiting.size + 1)) / this.capacity / 1000)
    return Math.min(Math.max(seconds, 1), 600)
  }
}
