import { toHttpError } from './errors.ts'

export interface ShapedError<Body> {
  statusCode: number
  headers: Record<string, string>
  body: Body
}

export interface OpenAIErrorShape {
  error: { message: string, type: string, param: string | null, code: string | null }
}

/** Errors in OpenAI's shape, so OpenAI clients raise the right error class. */
export function toOpenAIError (error: unknown): ShapedError<OpenAIErrorShape> {
  const http = toHttpError(error)
  const type = http.statusCode === 429
    ? 'rate_limit_error'
    : http.statusCode >= 500 ? 'server_error' : http.statusCode === 401 ? 'authentication_error' : 'invalid_request_error'
  const code = http.code === 'unauthorized' ? 'invalid_api_key' : http.code
  const param = typeof http.details.field === 'string' ? http.details.field : null
  return { statusCode: http.statusCode, headers: http.headers, body: { error: { message: http.message, type, param, code } } }
}

export interface AnthropicErrorShape {
  type: 'error'
  /** `code` is the service's own stable code (docs/api.md), beside Anthropic's `type`. */
  error: { type: string, message: string, code: string }
}

/**
 * Errors in Anthropic's shape and with its statuses, so Anthropic clients raise the right error
 * class and retry what Anthropic's API would have them retry (a 529 is retried; a 503 would be too,
 * but Anthropic's clients and docs know only 529 as "overloaded").
 */
export function toAnthropicError (error: unknown): ShapedError<AnthropicErrorShape> {
  const http = toHttpError(error)
  const [statusCode, type] = anthropicStatus(http.statusCode)
  return { statusCode, headers: http.headers, body: { type: 'error', error: { type, message: http.message, code: http.code } } }
}

function anthropicStatus (status: number): [number, string] {
  switch (status) {
    case 401: return [401, 'authentication_error']
    case 403: return [403, 'permission_error']
    case 404: return [404, 'not_found_error']
    case 413: return [413, 'request_too_large']
    case 429: return [429, 'rate_limit_error']
    case 503: return [529, 'overloaded_error']
    case 504: return [504, 'timeout_error']
  }
  return status >= 500 ? [500, 'api_error'] : [status, 'invalid_request_error']
}
