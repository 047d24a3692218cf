import type { MemoryJobStore } from './memory-job-store.ts'
import type { EventFeed, JobEvents, LoggedEvent } from './types.ts'

/** The event history of each run, held in memory next to its record (see EventLog). */
export class MemoryJobEvents implements JobEvents {
  readonly #store: MemoryJobStore
  #followers = 0

  get followers (): number {
    return this.#followers
  }

  constructor (store: MemoryJobStore) {
    this.#store = store
  }

  async follow (id: string, afterId: number, maxBufferedBytes: number): Promise<EventFeed> {
    const entry = this.#store.entry(id)
    if (entry === undefined) return endedFeed()
    const feed = entry.log.subscribe(afterId, maxBufferedBytes)
    if (feed.done) return feed
    this.#followers++
    feed.onDetach = () => { this.#followers-- }
    return feed
  }

  async since (id: string, afterId: number): Promise<LoggedEvent[]> {
    return this.#store.entry(id)?.log.since(afterId) ?? []
  }

  async waitTerminal (id: string, ms: number, signal?: AbortSignal): Promise<void> {
    const entry = this.#store.entry(id)
    if (entry === undefined || entry.log.closed || ms <= 0 || signal?.aborted === true) return
    // Not a race on a promise of the run's end: each returned wait would stay attached to it.
    const { promise, resolve } = Promise.withResolvers<void>()
    const wake = (): void => resolve()
    entry.waiters.add(wake)
    const timer = setTimeout(wake, ms)
    signal?.addEventListener('abort', wake, { once: true })
    try {
      await promise
    } finally {
      clearTimeout(timer)
      entry.waiters.delete(wake)
      signal?.removeEventListener('abort', wake)
    }
  }
}

/** The feed of a run that is gone: nothing, at once. */
export function endedFeed (): EventFeed {
  return {
    missed: false,
    firstId: 1,
    overflowed: false,
    onEnd: undefined,
    close: () => {},
    async * [Symbol.asyncIterator] () {},
  }
}
