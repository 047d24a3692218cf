// Server-Sent Events over fetch. EventSource cannot send an Authorization header, so the stream is
// read with fetch and parsed here, and a dropped connection is resumed with Last-Event-ID.
// Standard APIs only (fetch, ReadableStream, TextDecoderStream): the same code runs in Chromium,
// Firefox and Node, where the tests drive it against the real service.

/** @typedef {{ type: string, data: string, id: string }} SseEvent */

/**
 * The event stream format of the HTML standard ("9.2.6 Interpreting an event stream"): fields
 * `event`, `data`, `id`, `retry`; comments; lines ended by CRLF, LF or CR, split anywhere.
 */
export class SseParser {
  /** The last `id` seen: what a reconnection sends as Last-Event-ID. */
  lastEventId = ''
  /** @type {number | undefined} the server's `retry`, in ms */
  retry
  #onEvent
  #buffer = ''
  #first = true
  /** @type {string[]} */
  #data = []
  #type = ''

  /** @param {(event: SseEvent) => void} onEvent */
  constructor (onEvent) {
    this.#onEvent = onEvent
  }

  /** @param {string} chunk */
  push (chunk) {
    let text = this.#buffer + chunk
    if (this.#first && text.length > 0) {
      this.#first = false
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
    }
    let start = 0
    while (start < text.length) {
      const cr = text.indexOf('\r', start)
      const lf = text.indexOf('\n', start)
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf)
      if (end === -1) break
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (end === cr && cr === text.length - 1) break
      this.#line(text.slice(start, end))
      start = end + (end === cr && text[cr + 1] === '\n' ? 2 : 1)
    }
    this.#buffer = text.slice(start)
  }

  /** @param {string} line */
  #line (line) {
    if (line === '') return this.#dispatch()
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event': this.#type = value; break
      case 'data': this.#data.push(value); break
      case 'id': if (!value.includes('\0')) this.lastEventId = value; break
      case 'retry': if (/^\d+$/.test(value)) this.retry = Number(value); break
    }
  }

  #dispatch () {
    const type = this.#type || 'message'
    this.#type = ''
    if (this.#data.length === 0) return
    const data = this.#data.join('\n')
    this.#data = []
    this.#onEvent({ type, data, id: this.lastEventId })
  }
}

/** A refusal that reconnecting cannot fix (401, 404, ...). */
export class StreamRefused extends Error {
  /** @param {number} status @param {unknown} body */
  constructor (status, body) {
    // The API's own message when it sent one (a 403 names the scope the token lacks).
    const message = /** @type {{ error?: { message?: unknown } } | null} */ (body)?.error?.message
    super(typeof message === 'string' ? message : `the event stream was refused with ${status}`)
    this.name = 'StreamRefused'
    this.status = status
    this.body = body
  }
}

/**
 * @typedef {{
 *   token: string,
 *   signal: AbortSignal,
 *   onEvent: (event: SseEvent) => void,
 *   onState?: (state: 'open' | 'reconnecting', detail?: { attempt: number, delayMs: number, error: unknown }) => void,
 *   endEvent?: string,
 *   lastEventId?: string,
 *   maxDelayMs?: number,
 * }} FollowOptions
 */

/**
 * Follows an event stream until its `endEvent` (default `end`) arrives, reconnecting with
 * Last-Event-ID whenever the connection drops or fails, with a growing delay. Resolves with the
 * last event; rejects with StreamRefused on a 4xx, or with the abort reason.
 * @param {string} url
 * @param {FollowOptions} options
 * @returns {Promise<SseEvent>}
 */
export async function followEvents (url, options) {
  const { token, signal, onEvent, onState, endEvent = 'end', maxDelayMs = 15_000 } = options
  let lastEventId = options.lastEventId ?? ''
  let attempt = 0
  for (;;) {
    signal.throwIfAborted()
    /** @type {SseEvent | undefined} */
    let ended
    let retryMs
    try {
      /** @type {Record<string, string>} */
      const headers = { authorization: `Bearer ${token}`, accept: 'text/event-stream' }
      if (lastEventId !== '') headers['last-event-id'] = lastEventId
      const response = await fetch(url, { headers, signal, cache: 'no-store' })
      if (response.status >= 400 && response.status < 500) {
        throw new StreamRefused(response.status, await response.json().catch(() => null))
      }
      if (!response.ok || response.body === null) throw new Error(`the event stream answered ${response.status}`)
      onState?.('open')
      const parser = new SseParser(event => {
        attempt = 0
        lastEventId = parser.lastEventId
        if (event.type === endEvent) ended = event
        onEvent(event)
      })
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
      try {
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          parser.push(value)
          if (ended !== undefined) break
        }
      } finally {
        reader.releaseLock()
      }
      retryMs = parser.retry
      if (ended !== undefined) {
        await response.body.cancel().catch(() => {})
        return ended
      }
      throw new Error('the event stream closed before its end')
    } catch (error) {
      if (signal.aborted) throw signal.reason
      if (error instanceof StreamRefused) throw error
      attempt++
      const delayMs = Math.min(maxDelayMs, retryMs ?? 500 * 2 ** Math.min(attempt - 1, 10))
      onState?.('reconnecting', { attempt, delayMs, error })
      await sleep(delayMs, signal)
    }
  }
}

/** @param {number} ms @param {AbortSignal} signal */
function sleep (ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(undefined) }, ms)
    const onAbort = () => { clearTimeout(timer); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
