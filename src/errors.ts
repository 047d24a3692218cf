/**
 * Every error a client can see, in one place: a stable `code`, the HTTP status it answers with,
 * and a message that says what to do. Clients branch on `code`; the message is for people.
 */
export const ErrorCodes = {
  unauthorized: 401,
  validation_error: 400,
  /** Not HTTP the server can read: a malformed request line, a URL that does not decode. */
  bad_request: 400,
  invalid_ref: 400,
  push_not_allowed: 400,
  callback_not_allowed: 400,
  unknown_mcp_server: 400,
  payload_too_large: 413,
  unsupported_media_type: 415,
  unsupported_encoding: 415,
  request_timeout: 408,
  uri_too_long: 414,
  headers_too_large: 431,
  not_found: 404,
  method_not_allowed: 405,
  job_not_found: 404,
  job_finished: 409,
  idempotency_conflict: 422,
  queue_full: 429,
  tenant_queue_full: 429,
  budget_exceeded: 429,
  forbidden: 403,
  shutting_down: 503,
  engine_unavailable: 503,
  internal_error: 500,
  // OpenAI-compatible API (/v1): what the run of a chat completion can end with.
  unsupported: 400,
  model_not_found: 404,
  upstream_rate_limited: 429,
  upstream_error: 502,
  upstream_overloaded: 503,
  structured_output_missing: 502,
  agent_failed: 500,
  agent_timeout: 504,
  // OpenAI Responses API: stored responses.
  response_not_found: 404,
  previous_response_not_found: 404,
  response_in_progress: 409,
} as const

export type ErrorCode = keyof typeof ErrorCodes

export class AppError extends Error {
  override name = 'AppError'
  readonly code: ErrorCode
  readonly statusCode: number
  /** Extra fields for the error body, e.g. the state of a finished job. */
  readonly details: Record<string, unknown> | undefined
  /** Response headers that go with the error, e.g. `Retry-After`. */
  readonly headers: Record<string, string> | undefined

  constructor (code: ErrorCode, message: string, options: { details?: Record<string, unknown>, headers?: Record<string, string>, cause?: unknown } = {}) {
    super(message, { cause: options.cause })
    this.code = code
    this.statusCode = ErrorCodes[code]
    this.details = options.details
    this.headers = options.headers
  }
}

/**
 * Why a run stopped before its agent finished. These travel as `AbortSignal` reasons, so whoever
 * observes the abort can tell a timeout from a cancellation from a shutdown.
 */
export class RunTimeoutError extends Error {
  override name = 'RunTimeoutError'
  readonly timeoutMs: number
  constructor (timeoutMs: number) {
    super(`the run exceeded its timeout of ${formatSeconds(timeoutMs)}`)
    this.timeoutMs = timeoutMs
  }
}

/** Who stopped a run: a DELETE, the shutdown, a client that went away, or its answer's bound (chat). */
export type CancelReason = 'user' | 'shutdown' | 'client_disconnected' | 'answer_limit'

const CANCEL_MESSAGES: Record<CancelReason, string> = {
  user: 'the job was cancelled',
  shutdown: 'the job was cancelled because the service is shutting down',
  client_disconnected: 'the client went away before the answer was ready',
  answer_limit: 'the answer reached MAX_OUTPUT_BYTES',
}

export class RunCancelledError extends Error {
  override name = 'RunCancelledError'
  readonly reason: CancelReason
  constructor (reason: CancelReason) {
    super(CANCEL_MESSAGES[reason])
    this.reason = reason
  }
}

export function formatSeconds (ms: number): string {
  const s = ms / 1000
  return `${Number.isInteger(s) ? s : s.toFixed(3)}s`
}
