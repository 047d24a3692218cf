// The service's API, with the bearer token. The token lives in this tab's sessionStorage and goes
// out only in the Authorization header: never in a URL, never in a cookie another site could ride.

/**
 * @typedef {import('../src/schemas/job.ts').JobView & { tenant?: string, result: (NonNullable<import('../src/schemas/job.ts').JobView['result']> & { structured_output?: unknown }) | null }} Job
 * @typedef {import('../src/schemas/job.ts').JobSummary & { tenant?: string }} JobSummary
 * @typedef {{ jobs: JobSummary[], next_cursor: string | null }} JobPage
 * @typedef {{
 *   status: 'ok' | 'draining', busy: boolean, active: number, queued: number, capacity: number,
 *   max_queue_depth: number, version: string, uptime_seconds: number,
 *   claude: { bin: string, state: string, version: string | null, error: string | null },
 *   workspace: { kind: 'git' | 'directory', state?: string, ref?: string | null, last_error?: string | null },
 *   cluster?: { replicas: number, active: number, queued: number, capacity: number } | null,
 * }} Health
 */

const TOKEN_KEY = 'claude-runner.token'
/** A browser clock this close to the service's is taken as right: the Date header counts whole seconds. */
const CLOCK_TOLERANCE_MS = 2000

/** An error answer of the API: `{error: {code, message, field?}}` and its status. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {{ code?: string, message?: string, field?: string } | undefined} error
   */
  constructor (status, error) {
    super(error?.message ?? `the service answered ${status}`)
    this.name = 'ApiError'
    this.status = status
    this.code = error?.code ?? 'http_error'
    this.field = error?.field
  }
}

export const session = {
  /** @returns {string | null} */
  get token () { return sessionStorage.getItem(TOKEN_KEY) },
  /** @param {string} token */
  signIn (token) { sessionStorage.setItem(TOKEN_KEY, token) },
  signOut () { sessionStorage.removeItem(TOKEN_KEY) },
}

export class Api {
  #token
  #onUnauthorized
  #clockSkewMs = 0

  /**
   * @param {string} token
   * @param {() => void} onUnauthorized called when the service refuses the token
   */
  constructor (token, onUnauthorized) {
    this.#token = token
    this.#onUnauthorized = onUnauthorized
  }

  get token () { return this.#token }

  /**
   * Now, by the service's clock: ages and running times are measured from the service's timestamps,
   * and a browser whose clock is off by minutes would show them off by as much (or below zero).
   */
  now () { return Date.now() + this.#clockSkewMs }

  /** @param {Response} response */
  #learnClock (response) {
    const date = Date.parse(response.headers.get('date') ?? '')
    if (!Number.isFinite(date)) return
    // The service read its clock somewhere in the second the header names.
    const skew = date + 500 - Date.now()
    this.#clockSkewMs = Math.abs(skew) > CLOCK_TOLERANCE_MS ? skew : 0
  }

  /** For requests made without this class (the event stream) that were refused with 401. */
  refused () { this.#onUnauthorized() }

  /**
   * @param {string} method
   * @param {string} path
   * @param {{ body?: unknown, signal?: AbortSignal, headers?: Record<string, string> }} [options]
   */
  async #request (method, path, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { authorization: `Bearer ${this.#token}`, ...options.headers }
    if (options.body !== undefined) headers['content-type'] = 'application/json'
    const response = await fetch(path, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
      cache: 'no-store',
    })
    this.#learnClock(response)
    if (response.status === 401) this.#onUnauthorized()
    if (!response.ok) {
      const body = await response.json().catch(() => undefined)
      throw new ApiError(response.status, body?.error)
    }
    return response
  }

  /**
   * @param {{ status?: string, cursor?: string | null, limit?: number }} query
   * @param {AbortSignal} [signal]
   * @returns {Promise<JobPage>}
   */
  async jobs (query, signal) {
    const params = new URLSearchParams()
    if (query.status) params.set('status', query.status)
    if (query.cursor) params.set('cursor', query.cursor)
    params.set('limit', String(query.limit ?? 25))
    return (await this.#request('GET', `/jobs?${params}`, { signal })).json()
  }

  /** @param {string} id @param {AbortSignal} [signal] @returns {Promise<Job>} */
  async job (id, signal) {
    return (await this.#request('GET', jobPath(id), { signal })).json()
  }

  /**
   * @param {{ prompt: string, agent?: string, model?: string, ref?: string }} body
   * @param {string} idempotencyKey the same for retries of one submission, so none runs twice
   * @returns {Promise<Job>}
   */
  async submit (body, idempotencyKey) {
    return (await this.#request('POST', '/execute', { body, headers: { 'idempotency-key': idempotencyKey } })).json()
  }

  /** @param {string} id @returns {Promise<Job>} */
  async cancel (id) {
    return (await this.#request('DELETE', jobPath(id))).json()
  }

  /** The raw output, as a Blob to save. @param {string} id */
  async output (id) {
    return (await this.#request('GET', `${jobPath(id)}/output`)).blob()
  }

  /**
   * Capacity and state (no token needed). While draining it answers 503 with the same body.
   * @param {AbortSignal} [signal]
   * @returns {Promise<Health>}
   */
  async health (signal) {
    const response = await fetch('/health', { signal, cache: 'no-store' })
    this.#learnClock(response)
    if (!response.ok && response.status !== 503) throw new ApiError(response.status, undefined)
    return response.json()
  }
}

/** @param {string} id */
export function jobPath (id) {
  return `/jobs/${encodeURIComponent(id)}`
}

/** 32 random hex digits. crypto.randomUUID is for secure contexts only; a plain-HTTP intranet host is not one. */
export function randomKey () {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), byte => byte.toString(16).padStart(2, '0')).join('')
}
