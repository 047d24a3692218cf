import { createHmac } from 'node:crypto'
import type { Logger } from 'pino'
import { request } from 'undici'
import { AppError } from '../errors.ts'
import type { CallbackOutbox, CallbackRecord, RunRecord } from '../engine/types.ts'

export interface WebhookOptions {
  secret: string | undefined
  /** Host names (or host:port) callbacks may go to; empty: callbacks are off. */
  allowedHosts: readonly string[]
  maxAttempts: number
  timeoutMs: number
  /** Delay before the second attempt; it doubles after each failure (capped at 5 minutes). */
  backoffMs: number
  userAgent: string
  /** The job JSON sent as the body. */
  render: (job: RunRecord) => unknown
  logger: Logger
  now: () => number
}

const MAX_BACKOFF_MS = 5 * 60_000
const OUTBOX_POLL_MS = 500

const backoffMs = (base: number, attempt: number): number => Math.min(base * 2 ** (attempt - 1), MAX_BACKOFF_MS)
const delivered = (attempt: { status: number | null }): boolean => attempt.status !== null && attempt.status >= 200 && attempt.status < 300

export const SIGNATURE_HEADER = 'x-claude-runner-signature'

/** Signs `${timestamp}.${body}` with HMAC-SHA256: the timestamp is signed too, so replays can be refused. */
export function sign (secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`
}

/**
 * Tells a job's `callback_url` that the job ended: one POST of the job JSON, signed, retried with
 * exponential backoff on errors and non-2xx answers, a timeout per attempt, every attempt recorded
 * on the job. Only hosts in WEBHOOK_ALLOWED_HOSTS are ever called: the URL is checked at submit.
 */
export class WebhookSender {
  readonly #options: WebhookOptions
  readonly #pending = new Set<Promise<void>>()
  /** Aborted on close: no more waiting between attempts. */
  readonly #hurry = new AbortController()
  /** Aborted when the close grace is over: attempts in flight are dropped. */
  readonly #stop = new AbortController()
  #kick: (() => void) | undefined
  #stopServing: (() => Promise<void>) | undefined

  constructor (options: WebhookOptions) {
    this.#options = options
  }

  /** Throws `callback_not_allowed` unless `url` is an http(s) URL to an allowed host. */
  check (url: string): void {
    const refuse = (why: string): never => {
      throw new AppError('callback_not_allowed', `body.callback_url ${why}`, { details: { field: 'callback_url' } })
    }
    if (this.#options.allowedHosts.length === 0) refuse('cannot be used: callbacks are off on this service (WEBHOOK_ALLOWED_HOSTS is empty)')
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return refuse('is not a URL')
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') refuse('must be http or https')
    if (parsed.username !== '' || parsed.password !== '') refuse('must not carry credentials')
    const host = parsed.hostname.toLowerCase()
    const allowed = this.#options.allowedHosts.some(entry => {
      const lower = entry.toLowerCase()
      return lower === host || lower === parsed.host.toLowerCase()
    })
    if (!allowed) refuse(`goes to ${parsed.host}, which is not in WEBHOOK_ALLOWED_HOSTS`)
  }

  deliver (job: RunRecord): void {
    const delivery = this.#deliver(job).catch(error => {
      this.#options.logger.error({ err: error, jobId: job.id }, 'webhook delivery failed unexpectedly')
    }).finally(() => { this.#pending.delete(delivery) })
    this.#pending.add(delivery)
  }

  /** Lets pending deliveries finish without further backoff waits, for at most `graceMs`. */
  async close (graceMs: number): Promise<void> {
    this.#hurry.abort()
    await this.#stopServing?.()
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.all(this.#pending),
      new Promise<void>(resolve => { timer = setTimeout(resolve, graceMs) }),
    ])
    clearTimeout(timer)
    this.#stop.abort()
    await Promise.all(this.#pending)
  }

  async #deliver (job: RunRecord): Promise<void> {
    const url = job.request?.callback_url
    const record = job.callback
    if (url === undefined || record === null || this.#options.secret === undefined) return
    const body = JSON.stringify(this.#options.render(job))
    for (let attempt = 1; attempt <= this.#options.maxAttempts; attempt++) {
      const result = await this.#attempt(job, url, body, attempt)
      record.attempts.push(result)
      if (delivered(result)) {
        record.delivered = true
        return
      }
      if (attempt < this.#options.maxAttempts && !this.#stop.signal.aborted) await this.#backoff(attempt)
      if (this.#stop.signal.aborted) break
    }
    record.delivered = false
  }

  /**
   * With the Redis engine: delivers what the cluster's outbox holds, whichever replica ended the
   * job. Each callback is leased to one replica at a time; a replica that dies mid-attempt lets the
   * lease run out and another one retries it, so every callback arrives at least once, normally
   * once, with the same delivery id header every time.
   */
  serve (outbox: CallbackOutbox, load: (id: string) => Promise<RunRecord | undefined>): void {
    // An attempt ends within its timeout: past that and a margin, the replica that took it is gone.
    const leaseMs = this.#options.timeoutMs + 2_000
    const poll = async (): Promise<void> => {
      while (!this.#stop.signal.aborted && !this.#hurry.signal.aborted) {
        const id = await outbox.claim(leaseMs)
        if (id === undefined) return
        const job = await load(id)
        const url = job?.request?.callback_url
        if (job === undefined || job.callback === null || url === undefined || this.#options.secret === undefined) {
          await outbox.record(id, null, false, 0)
          continue
        }
        const attempt = job.callback.attempts.length + 1
        const result = await this.#attempt(job, url, JSON.stringify(this.#options.render(job)), attempt)
        const done = delivered(result) ? true : attempt >= this.#options.maxAttempts ? false : null
        const wait = backoffMs(this.#options.backoffMs, attempt)
        await outbox.record(id, result, done, this.#options.now() + wait)
        // Look again when it is due, not at the next poll (any replica may take it by then).
        if (done === null) setTimeout(() => this.#kick?.(), wait).unref()
      }
    }
    let polling: Promise<void> | undefined
    this.#kick = () => {
      polling ??= poll().catch(error => {
        this.#options.logger.warn({ err: error }, 'webhook outbox unreachable; retrying')
      }).finally(() => { polling = undefined })
    }
    const timer = setInterval(this.#kick, OUTBOX_POLL_MS)
    timer.unref()
    this.#stopServing = async () => {
      clearInterval(timer)
      await polling
    }
  }

  /** Something was added to the outbox: look now rather than at the next poll. */
  kick (): void {
    this.#kick?.()
  }

  /** One POST of the job JSON, signed; never throws. */
  async #attempt (job: RunRecord, url: string, body: string, attempt: number): Promise<CallbackRecord['attempts'][number]> {
    const at = this.#options.now()
    const started = performance.now()
    const timestamp = Math.floor(at / 1000)
    let status: number | null = null
    let error: string | null = null
    try {
      const response = await request(url, {
        method: 'POST',
        body,
        headers: {
          'content-type': 'application/json',
          'user-agent': this.#options.userAgent,
          'x-claude-runner-event': 'job.finished',
          'x-claude-runner-delivery': job.callback!.delivery_id,
          'x-claude-runner-attempt': String(attempt),
          [SIGNATURE_HEADER]: sign(this.#options.secret!, timestamp, body),
        },
        signal: AbortSignal.any([AbortSignal.timeout(this.#options.timeoutMs), this.#stop.signal]),
        headersTimeout: this.#options.timeoutMs,
        bodyTimeout: this.#options.timeoutMs,
      })
      status = response.statusCode
      await response.body.dump({ limit: 64 * 1024 })
    } catch (cause) {
      error = (cause as Error).message
    }
    const result = { at, status, error, duration_ms: Math.round(performance.now() - started) }
    if (delivered(result)) this.#options.logger.info({ jobId: job.id, attempt, status }, 'webhook delivered')
    else this.#options.logger.warn({ jobId: job.id, attempt, status, error }, 'webhook attempt failed')
    return result
  }

  async #backoff (attempt: number): Promise<void> {
    const hurry = this.#hurry.signal
    if (hurry.aborted) return
    const ms = backoffMs(this.#options.backoffMs, attempt)
    await new Promise<void>(resolve => {
      const wake = (): void => {
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        hurry.removeEventListener('abort', wake)
        resolve()
      }, ms)
      hurry.addEventListener('abort', wake, { once: true })
    })
  }
}
