import type { Redis } from 'ioredis'
import { unavailable } from './redis-connection.ts'
import type { RedisJobStore } from './redis-job-store.ts'
import { isTerminal, type EventFeed, type JobEvents, type LoggedEvent, type RunStatus } from './types.ts'

type StreamEntry = [id: string, fields: string[]]

function toEvent ([id, fields]: StreamEntry): LoggedEvent {
  const values: Record<string, string> = {}
  for (let i = 0; i + 1 < fields.length; i += 2) values[fields[i]!] = fields[i + 1]!
  return { id: Number(id.split('-')[0]), type: values.t ?? 'unknown', at: Number(values.a ?? 0), json: values.d ?? 'null' }
}

/** The terminal status event ends a run's log: nothing comes after it. */
function isEnd (event: LoggedEvent): boolean {
  if (event.type !== 'status') return false
  const { status } = JSON.parse(event.json) as { status?: RunStatus }
  return status !== undefined && isTerminal(status)
}

/** Events a follower reads from its stream at a time: up to 1 MiB at the largest event size. */
const PULL_BATCH = 16
const BLOCK_MS = 5000

/**
 * One follower of one run's stream. It reads the stream at its own pace (XRANGE from the last id
 * it has), holding at most two batches, so a slow follower costs this replica nothing: Redis holds
 * the events. It is cut off (`overflowed`, as a memory follower that fell too far behind) when the
 * events it has not read yet were trimmed from the run's bounded log: it resumes from its last id
 * and is told of the gap. A follower that stops reading altogether is the HTTP layer's to cut off.
 */
class RedisEventFeed implements EventFeed, AsyncIterableIterator<LoggedEvent> {
  missed = false
  firstId = 1
  overflowed = false
  onEnd: (() => void) | undefined
  readonly key: string
  readonly #command: Redis
  readonly #detach: () => void
  #buffer: LoggedEvent[] = []
  /** The last id read from the stream (buffered or taken). */
  #lastId: number
  /** The terminal event was read: nothing more to pull. */
  #complete = false
  #ended = false
  #pulling: Promise<boolean> | undefined
  #wake: (() => void) | undefined

  constructor (options: { key: string, command: Redis, afterId: number, detach: () => void }) {
    this.key = options.key
    this.#command = options.command
    this.#lastId = options.afterId
    this.#detach = options.detach
  }

  get lastId (): number {
    return this.#lastId
  }

  get done (): boolean {
    return this.#ended || this.#complete
  }

  /** Reads the first batch: what is held after the requested id. False when the stream is gone. */
  async start (): Promise<boolean> {
    const first = await this.#command.xrange(this.key, '-', '+', 'COUNT', 1) as StreamEntry[]
    if (first.length === 0) return false
    const oldest = toEvent(first[0]!)
    this.firstId = oldest.id
    this.missed = this.#lastId + 1 < oldest.id
    // Told once, at the start: what was already gone when it came.
    if (this.missed) this.#lastId = oldest.id - 1
    await this.#pull()
    return true
  }

  /** The stream's tail moved: there is more to read. */
  tail (): void {
    this.#signal()
  }

  end (): void {
    if (this.#ended) return
    this.#ended = true
    this.#detach()
    this.#signal()
    this.onEnd?.()
  }

  close (): void {
    this.#buffer = []
    this.end()
  }

  async next (): Promise<IteratorResult<LoggedEvent>> {
    while (true) {
      const event = this.#buffer.shift()
      if (event !== undefined) {
        if (this.#complete && this.#buffer.length === 0) this.end()
        // Read the next batch while this one is written out.
        if (this.#buffer.length <= PULL_BATCH / 2) void this.#pull()
        return { value: event, done: false }
      }
      if (this.#ended || this.#complete) {
        this.end()
        return { value: undefined, done: true }
      }
      const wake = new Promise<void>(resolve => { this.#wake = resolve })
      if (!(await this.#pull())) await wake
    }
  }

  async return (): Promise<IteratorResult<LoggedEvent>> {
    this.close()
    return { value: undefined, done: true }
  }

  [Symbol.asyncIterator] (): this {
    return this
  }

  /** Reads the next batch into the buffer (one read at a time); true when it read something. */
  #pull (): Promise<boolean> {
    this.#pulling ??= this.#read().finally(() => { this.#pulling = undefined })
    return this.#pulling
  }

  async #read (): Promise<boolean> {
    if (this.#complete || this.#ended) return false
    let entries: StreamEntry[]
    try {
      entries = await this.#command.xrange(this.key, `${this.#lastId + 1}-0`, '+', 'COUNT', PULL_BATCH) as StreamEntry[]
    } catch {
      // Redis unreachable: the tail notice or the next wake-up retries.
      return false
    }
    for (const entry of entries) {
      const event = toEvent(entry)
      if (event.id <= this.#lastId) continue
      if (event.id > this.#lastId + 1) {
        // What it had not read yet was trimmed: cut off, it resumes with a gap.
        this.overflowed = true
        this.end()
        return false
      }
      this.#lastId = event.id
      this.#buffer.push(event)
      this.#signal()
      if (isEnd(event)) {
        this.#complete = true
        break
      }
    }
    return entries.length > 0
  }

  #signal (): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }
}

/**
 * Watches the tail of every stream this replica follows with ONE blocking XREAD on a connection
 * of its own (a blocked read holds its connection, so one per follower would not scale), reading a
 * single entry per stream only to learn that the tail moved. Followers read the events themselves.
 * A stream added while the read blocks wakes it with CLIENT UNBLOCK, so it is watched at once.
 */
class TailWatcher {
  readonly #blocker: Redis
  readonly #command: Redis
  readonly #streams = new Map<string, { feeds: Set<RedisEventFeed>, tailId: number }>()
  #blockerId: number | undefined
  #blocked = false
  #closed = false
  #wake: (() => void) | undefined
  readonly #loop: Promise<void>

  constructor (blocker: Redis, command: Redis) {
    this.#blocker = blocker
    this.#command = command
    const learnId = (): void => {
      blocker.client('ID').then(id => { this.#blockerId = Number(id) }, () => {})
    }
    blocker.on('ready', learnId)
    if (blocker.status === 'ready') learnId()
    this.#loop = this.#run()
  }

  add (feed: RedisEventFeed): void {
    let stream = this.#streams.get(feed.key)
    if (stream === undefined) this.#streams.set(feed.key, stream = { feeds: new Set(), tailId: feed.lastId })
    stream.feeds.add(feed)
    stream.tailId = Math.min(stream.tailId, feed.lastId)
    this.#interrupt()
  }

  remove (feed: RedisEventFeed): void {
    const stream = this.#streams.get(feed.key)
    if (stream === undefined) return
    stream.feeds.delete(feed)
    if (stream.feeds.size === 0) this.#streams.delete(feed.key)
  }

  async close (): Promise<void> {
    this.#closed = true
    for (const { feeds } of this.#streams.values()) for (const feed of feeds) feed.end()
    this.#interrupt()
    await this.#loop
  }

  #interrupt (): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
    if (this.#blocked && this.#blockerId !== undefined) this.#command.client('UNBLOCK', this.#blockerId).catch(() => {})
  }

  async #run (): Promise<void> {
    while (!this.#closed) {
      if (this.#streams.size === 0) {
        await new Promise<void>(resolve => { this.#wake = resolve })
        continue
      }
      const keys = [...this.#streams.keys()]
      const from = keys.map(key => `${this.#streams.get(key)!.tailId}-0`)
      let reply: Array<[string, StreamEntry[]]> | null = null
      this.#blocked = true
      try {
        reply = await this.#blocker.xread('COUNT', 1, 'BLOCK', BLOCK_MS, 'STREAMS', ...keys, ...from) as Array<[string, StreamEntry[]]> | null
      } catch {
        if (this.#closed) break
        await new Promise(resolve => setTimeout(resolve, 200))
        continue
      } finally {
        this.#blocked = false
      }
      if (reply === null) {
        await this.#endVanished(keys)
        continue
      }
      for (const [key] of reply) await this.#moved(key)
    }
  }

  /** The stream has entries past what was known: find its tail and tell its followers. */
  async #moved (key: string): Promise<void> {
    const last = await this.#command.xrevrange(key, '+', '-', 'COUNT', 1).catch(() => []) as StreamEntry[]
    const stream = this.#streams.get(key)
    if (stream === undefined || last.length === 0) return
    const tail = toEvent(last[0]!)
    stream.tailId = tail.id
    for (const feed of [...stream.feeds]) feed.tail()
  }

  /** A stream that expired or was evicted while followed ends its followers. */
  async #endVanished (keys: readonly string[]): Promise<void> {
    const exists = await Promise.all(keys.map(key => this.#command.exists(key).catch(() => 1)))
    keys.forEach((key, i) => {
      if (exists[i] === 0) for (const feed of [...this.#streams.get(key)?.feeds ?? []]) feed.end()
    })
  }
}

/** Run ids whose end was announced on P:done; waiters of this replica are told. */
export class DoneWaiters {
  readonly #waiters = new Map<string, Set<() => void>>()

  add (id: string, resolve: () => void): () => void {
    let set = this.#waiters.get(id)
    if (set === undefined) this.#waiters.set(id, set = new Set())
    set.add(resolve)
    return () => {
      set.delete(resolve)
      if (set.size === 0) this.#waiters.delete(id)
    }
  }

  done (id: string): void {
    for (const resolve of this.#waiters.get(id) ?? []) resolve()
  }

  ids (): string[] {
    return [...this.#waiters.keys()]
  }
}

/** Each run's events in a Redis Stream: any replica replays them by id and follows them live. */
export class RedisJobEvents implements JobEvents {
  readonly #command: Redis
  readonly #store: RedisJobStore
  readonly #watcher: TailWatcher
  readonly #waiters: DoneWaiters
  #followers = 0

  constructor (options: { command: Redis, blocker: Redis, store: RedisJobStore, waiters: DoneWaiters }) {
    this.#command = options.command
    this.#store = options.store
    this.#waiters = options.waiters
    this.#watcher = new TailWatcher(options.blocker, options.command)
  }

  get followers (): number {
    return this.#followers
  }

  async follow (id: string, afterId: number): Promise<EventFeed> {
    let following = false
    const feed: RedisEventFeed = new RedisEventFeed({
      key: this.#store.key(id, 'ev'),
      command: this.#command,
      afterId,
      detach: () => {
        this.#watcher.remove(feed)
        if (following) this.#followers--
        following = false
      },
    })
    try {
      if (!(await feed.start())) {
        feed.end()
        return feed
      }
    } catch (error) {
      feed.close()
      throw unavailable(error)
    }
    if (feed.done) return feed
    following = true
    this.#followers++
    this.#watcher.add(feed)
    return feed
  }

  async since (id: string, afterId: number): Promise<LoggedEvent[]> {
    const entries = await this.#command.xrange(this.#store.key(id, 'ev'), `${afterId + 1}-0`, '+').catch(error => { throw unavailable(error) }) as StreamEntry[]
    return entries.map(toEvent)
  }

  async waitTerminal (id: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (ms <= 0 || signal?.aborted === true) return
    const { promise, resolve } = Promise.withResolvers<void>()
    const remove = this.#waiters.add(id, resolve)
    const timer = setTimeout(resolve, ms)
    const onAbort = (): void => resolve()
    signal?.addEventListener('abort', onAbort, { once: true })
    // Registered first, then checked: an end announced in between is not missed.
    this.#command.hget(this.#store.key(id, 'meta'), 'status').then(status => {
      if (status === null || isTerminal(status as RunStatus)) resolve()
    }, () => resolve())
    try {
      await promise
    } finally {
      clearTimeout(timer)
      remove()
      signal?.removeEventListener('abort', onAbort)
    }
  }

  async close (): Promise<void> {
    await this.#watcher.close()
  }
}
