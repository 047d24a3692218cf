import type { ServerResponse } from 'node:http'

export interface SseOptions {
  /** Send a comment after this much silence, so proxies keep the connection. */
  keepAliveMs: number
  /** Extra response headers. */
  headers?: Record<string, string>
}

/**
 * A Server-Sent Events response written straight to the socket. Headers go out with the first
 * event or the first keep-alive, not before: until then the caller may still answer with a plain
 * JSON error and a fitting status.
 */
export class SseStream {
  readonly #res: ServerResponse
  readonly #options: SseOptions
  #timer: NodeJS.Timeout | undefined
  #ended = false

  constructor (res: ServerResponse, options: SseOptions) {
    this.#res = res
    this.#options = options
    res.once('close', () => this.#stop())
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
      connection: 'keep-alive',
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
    if (!this.#res.destroyed) this.#res.end()
  }

  #write (chunk: string): boolean {
    this.#arm()
    return this.#res.write(chunk)
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
