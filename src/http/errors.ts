import type { FastifyError } from 'fastify'
import { AppError, ErrorCodes, type ErrorCode } from '../errors.ts'
import { PATTERN_MESSAGES } from '../schemas/common.ts'

export interface HttpError {
  statusCode: number
  code: string
  message: string
  details: Record<string, unknown>
  headers: Record<string, string>
}

interface AjvIssue {
  instancePath: string
  keyword: string
  message?: string
  params: Record<string, unknown>
}

/** Maps any error a request can meet to one status, a stable code and a useful message. */
export function toHttpError (error: unknown): HttpError {
  if (error instanceof AppError) {
    return { statusCode: error.statusCode, code: error.code, message: error.message, details: error.details ?? {}, headers: error.headers ?? {} }
  }
  const fastifyError = error as FastifyError & { validation?: AjvIssue[], validationContext?: string }
  if (Array.isArray(fastifyError.validation)) {
    const { field, message } = describeValidation(fastifyError.validation, fastifyError.validationContext ?? 'body')
    return make('validation_error', message, { field })
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return make('payload_too_large', 'the request body is too large (a prompt may be up to 1 MiB)')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return make('unsupported_media_type', 'send the body as JSON with "Content-Type: application/json"')
  }
  // Whatever else Fastify refuses (a Content-Length that does not match the body, ...) keeps its
  // status and message, in the API's shape.
  const status = fastifyError.statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return make(CLIENT_ERRORS[status] ?? 'bad_request', fastifyError.message)
  }
  return make('internal_error', 'internal error; the service log has the details')
}

const CLIENT_ERRORS: Partial<Record<number, ErrorCode>> = {
  404: 'not_found',
  405: 'method_not_allowed',
  408: 'request_timeout',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  431: 'headers_too_large',
}

function make (code: ErrorCode, message: string, details: Record<string, unknown> = {}): HttpError {
  return { statusCode: ErrorCodes[code], code, message, details, headers: {} }
}

/** Turns the first schema violation into a message that names the field and says what was expected. */
export function describeValidation (issues: AjvIssue[], context: string): { field: string, message: string } {
  const issue = issues[0]
  if (issue === undefined) return { field: context, message: `${context} is invalid` }
  const path = issue.instancePath.split('/').filter(Boolean).join('.')
  const at = (name: string): string => [path, name].filter(Boolean).join('.')
  switch (issue.keyword) {
    case 'additionalProperties': {
      const field = at(String(issue.params.additionalProperty))
      return { field, message: `${context}.${field} is not a known field` }
    }
    case 'required': {
      const field = at(String(issue.params.missingProperty))
      return { field, message: `${context}.${field} is required` }
    }
    case 'pattern': {
      const expected = PATTERN_MESSAGES[String(issue.params.pattern)]
      if (expected !== undefined) return { field: path, message: `${context}.${path} ${expected}` }
      break
    }
    case 'enum':
      if (Array.isArray(issue.params.allowedValues)) {
        return { field: path || context, message: `${context}${path ? `.${path}` : ''} must be one of ${issue.params.allowedValues.map(value => JSON.stringify(value)).join(', ')}` }
      }
      break
  }
  return { field: path || context, message: `${context}${path ? `.${path}` : ''} ${issue.message ?? 'is invalid'}` }
}
