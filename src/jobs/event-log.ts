import type { EventFeed, LoggedEvent } from '../engine/types.ts'

export type { LoggedEvent }

/**
 * A job's history of events, bounded, with live subscribers. Every event gets an increasing `id`,
 * so a follower that lost its connection resumes after the last id it saw. A subscriber that does
 * not keep up is cut off past its buffer instead of holding memory or slowing the job.
 */
export interface EventLogOptions {
  /** Oldest events are dropped past this many... */
  maxEvents: number
  /** ...or past this many bytes of serialised data. */
  maxBytes: number
  /** One event's data is cut to a preview past this many bytes. */
  maxEventBytes?: number
  now?: () => number
}

const PREVIEW_CHARS = 4096
export const MAX_EVENT_BYTES = 64 * 1024

/** An event's data as JSON, once; past `maxEventBytes` only a preview is kept. */
export function serialiseEvent (data: unknown, maxEventBytes = MAX_EVENT_BYTES): string {
  const json = JSON.stringify(data) ?? 'null'
  if (json.length <= maxEventBytes) return json
  const kind = typeof data === 'object' && data !== null && 'type' in data ? (data as { type: unknown }).type : undefined
  return JSON.stringify({ type: kind, truncated: true, bytes: json.length, preview: json.slice(0, PREVIEW_CHARS) })
}

export class EventLog {
  readonly #maxEvents: number
  readonly #maxBytes: number
  readonly #maxEventBytes: number
  readonly #now: () => number
  #events: LoggedEvent[] = []
  #head = 0
  #bytes = 0
  #nextId = 1
  #closed = false
  readonly #subscribers = new Set<EventSubscription>()

  constructor (options: EventLogOptions) {
    this.#maxEvents = options.maxEvents
    this.#maxBytes = options.maxBytes
    this.#maxEventBytes = options.maxEventBytes ?? MAX_EVENT_BYTES
    this.#now = options.now ?? Date.now
  }

  get bytes (): number {
    return this.#bytes
  }

  get closed (): boolean {
    return this.#closed
  }

  get lastId (): number {
    return this.#nextId - 1
  }

  /** Id of the oldest event still held (lastId + 1 when none is). */
  get firstId (): number {
    return this.#events[this.#head]?.id ?? this.#nextId
  }

  append (type: string, data: unknown): LoggedEvent | undefined {
    if (this.#closed) return undefined
    const json = serialiseEvent(data, this.#maxEventBytes)
    const event: LoggedEvent = { id: this.#nextId++, type, at: this.#now(), json }
    this.#events.push(event)
    this.#bytes += json.length
    this.#trim()
    for (const subscriber of this.#subscribers) subscriber.push(event)
    return event
  }

  /** No more events; subscribers end once they have read what they hold. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    for (const subscriber of this.#subscribers) subscriber.end()
  }

  /** Events after `afterId` that are still held. */
  since (afterId: number): LoggedEvent[] {
    const out: LoggedEvent[] = []
    for (let i = this.#head; i < this.#events.length; i++) {
      const event = this.#events[i]!
      if (event.id > afterId) out.push(event)
    }
    return out
  }

  /**
   * Follows the log from after `afterId`: what is held, then live events, ending after the log
   * closes. `maxBufferedBytes` bounds the events waiting for a slow reader; past it the
   * subscription ends with `overflowed` set, and the reader can resume from the last id it got.
   */
  subscribe (afterId: number, maxBufferedBytes: number): EventSubscription {
    const subscription = new EventSubscription(maxBufferedBytes, () => { this.#subscribers.delete(subscription) })
    subscription.missed = afterId + 1 < this.firstId
    subscription.firstId = this.firstId
    for (const event of this.since(afterId)) subscription.push(event)
    if (this.#closed) subscription.end()
    else this.#subscribers.add(subscription)
    return subscription
  }

  get subscriberCount (): number {
    return this.#subscribers.size
  }

  #trim (): void {
    while (this.#events.length - this.#head > this.#maxEvents || (this.#bytes > this.#maxBytes && this.#events.length - this.#head > 1)) {
      const dropped = this.#events[this.#head]!
      this.#bytes -= dropped.json.length
      this.#head++
    }
    // Compact now and then so dropped events are freed.
    if (this.#head > 1024 && this.#head * 2 > this.#events.length) {
      this.#events = this.#events.slice(this.#head)
      this.#head = 0
    }
  }
}

export class EventSubscription implements AsyncIterableIterator<LoggedEvent>, EventFeed {
  /** True when events between the requested id and the oldest held one were already dropped. */
  missed = false
  /** The oldest id held when it subscribed. */
  firstId = 1
  /** True when the reader fell more than `maxBufferedBytes` behind and was cut off. */
  overflowed = false
  /** Called once when the subscription ends (the log closed, it overflowed, or it was returned). */
  onEnd: (() => void) | undefined
  /** Called once when it stops receiving events (for the engine's count of followers). */
  onDetach: (() => void) | undefined
  readonly #maxBufferedBytes: number
  readonly #detach: () => void
  #buffer: LoggedEvent[] = []
  #bufferedBytes = 0
  #ended = false
  #wake: (() => void) | undefined

  constructor (maxBufferedBytes: number, detach: () => void) {
    this.#maxBufferedBytes = maxBufferedBytes
    this.#detach = detach
  }

  push (event: LoggedEvent): void {
    if (this.#ended) return
    if (this.#buffer.length > 0 && this.#bufferedBytes + event.json.length > this.#maxBufferedBytes) {
      this.overflowed = true
      this.end()
      return
    }
    this.#buffer.push(event)
    this.#bufferedBytes += event.json.length
    this.#signal()
  }

  /** True once no more events will come (what is buffered may still be read). */
  get done (): boolean {
    return this.#ended
  }

  end (): void {
    if (this.#ended) return
    this.#ended = true
    this.#detach()
    this.onDetach?.()
    this.#signal()
    this.onEnd?.()
  }

  async next (): Promise<IteratorResult<LoggedEvent>> {
    while (true) {
      const event = this.#buffer.shift()
      if (event !== undefined) {
        this.#bufferedBytes -= event.json.length
        return { value: event, done: false }
      }
      if (this.#ended) return { value: undefined, done: true }
      await new Promise<void>(resolve => { this.#wake = resolve })
    }
  }

  async return (): Promise<IteratorResult<LoggedEvent>> {
    this.#buffer = []
    this.#bufferedBytes = 0
    this.end()
    return { value: undefined, done: true }
  }

  close (): void {
    void this.return()
  }

  [Symbol.asyncIterator] (): this {
    return this
  }

  #signal (): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }
}
