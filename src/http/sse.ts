import type { ServerResponse } from 'node:http'

export interface SseOptions {
  /** Send a comment after this much silence, so proxies keep the connection. */
  keepAliveMs: number
  /**
   * A client that takes nothing for this long while data waits for it (or after the end) is cut
   * off: a stalled socket must not stay open, or keep its buffer, for as long as TCP allows.
   */
  writeTimeoutMs: number
  /** Bytes that may wait for a slow client (in the response and its socket); past it, it is cut off. Default 4 MiB. */
  maxBufferedBytes?: number
  /** Extra response headers. */
  headers?: Record<string, string>
}

/** One event: `data` may hold newlines (each becomes a `data:` line). */
export interface SseFrame {
  event?: string
  data: string
}

/** What a stream may hold for a client that does not read, as `/jobs/:id/events` allows a follower. */
export const MAX_STREAM_BUFFER_BYTES = 4 * 1024 * 1024

/**
 * A Server-Sent Events response written straight to the socket. Headers go out with the first
 * event or the first keep-alive, not before: until then the caller may still answer with a plain
 * JSON error and a fitting status.
 *
 * Writing never waits for the client. A client that falls more than `maxBufferedBytes` behind, or
 * takes nothing for `writeTimeoutMs`, has its connection destroyed: the response's `close` event
 * tells the route, which cancels whatever it was streaming for.
 */
export class SseStream {
  readonly #res: ServerResponse
  readonly #options: SseOptions
  readonly #maxBufferedBytes: number
  #timer: NodeJS.Timeout | undefined
  #stall: NodeJS.Timeout | undefined
  #ended = false
  #cutOff = false

  constructor (res: ServerResponse, options: SseOptions) {
    this.#res = res
    this.#options = options
    this.#maxBufferedBytes = options.maxBufferedBytes ?? MAX_STREAM_BUFFER_BYTES
    res.once('close', () => {
      this.#stop()
      clearTimeout(this.#stall)
    })
  }

  /** True when the stream was closed because its client did not keep up. */
  get cutOff (): boolean {
    return this.#cutOff
  }

  get started (): boolean {
    return this.#res.headersSent
  }

  /** True once the stream ended or the client went away. */
  get closed (): boolean {
    return this.#ended || this.#res.destroyed
  }

  /** Starts counting silence; the first keep-alive also sends the headers. */
  watch (): void {
    this.#arm()
  }

  start (): void {
    if (this.#res.headersSent || this.closed) return
    this.#res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // The connection goes with the stream: a client that never read what it was sent must not
      // keep the socket as an idle keep-alive one once the stream is over.
      connection: 'close',
      'x-accel-buffering': 'no',
      ...this.#options.headers,
    })
    this.#res.flushHeaders()
  }

  /** Writes one event; returns false when the socket buffer is full (wait for `drained()`). */
  send (data: string, fields: { event?: string, id?: number | string } = {}): boolean {
    if (this.closed) return false
    this.start()
    let frame = ''
    if (fields.id !== undefined) frame += `id: ${fields.id}\n`
    if (fields.event !== undefined) frame += `event: ${fields.event}\n`
    for (const line of data.split('\n')) frame += `data: ${line}\n`
    return this.#write(frame + '\n')
  }

  comment (text: string): boolean {
    if (this.closed) return false
    this.start()
    return this.#write(`: ${text}\n\n`)
  }

  /** Resolves when the socket can take more, or it closed. */
  drained (): Promise<void> {
    if (this.closed || !this.#res.writableNeedDrain) return Promise.resolve()
    return new Promise(resolve => {
      const done = (): void => {
        this.#res.off('drain', done)
        this.#res.off('close', done)
        resolve()
      }
      this.#res.once('drain', done)
      this.#res.once('close', done)
    })
  }

  /** Answers with a JSON error instead, if nothing was streamed yet; returns whether it could. */
  fail (status: number, body: unknown): boolean {
    if (this.#res.headersSent || this.closed) return false
    this.#stop()
    this.#res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' })
    this.#res.end(JSON.stringify(body))
    this.#ended = true
    return true
  }

  end (): void {
    if (this.#ended) return
    this.#stop()
    this.#ended = true
    if (this.#res.destroyed) return
    this.#res.end()
    // What is still buffered must reach the client in time too, or the socket goes.
    if (!this.#res.writableFinished) this.#watchStall()
  }

  #write (chunk: string): boolean {
    this.#arm()
    const flushed = this.#res.write(chunk)
    if (this.#res.writableLength > this.#maxBufferedBytes) {
      this.#cut()
      return false
    }
    if (!flushed) this.#watchStall()
    return flushed
  }

  /** Cuts the client off unless the socket drains (or the response finishes) within the write timeout. */
  #watchStall (): void {
    if (this.#stall !== undefined || this.#res.destroyed) return
    const settled = (): void => {
      clearTimeout(this.#stall)
      this.#stall = undefined
      this.#res.off('drain', settled)
      this.#res.off('finish', settled)
    }
    this.#stall = setTimeout(() => {
      settled()
      this.#cut()
    }, this.#options.writeTimeoutMs)
    this.#stall.unref()
    this.#res.once('drain', settled)
    this.#res.once('finish', settled)
  }

  #cut (): void {
    if (this.#res.destroyed) return
    this.#cutOff = true
    this.#stop()
    this.#res.destroy()
  }

  #arm (): void {
    clearTimeout(this.#timer)
    if (this.closed) return
    this.#timer = setTimeout(() => { this.comment('keep-alive') }, this.#options.keepAliveMs)
    this.#timer.unref()
  }

  #stop (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
