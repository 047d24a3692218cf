import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { ErrorCodes, type ErrorCode } from '../errors.ts'

/**
 * Errors met before a request reaches any route, so before any API scope could give them its
 * shape. Their body fits both shapes the service speaks: `code` and `message` for the job API,
 * plus `type` and `param` for OpenAI clients.
 */
export function errorBody (code: ErrorCode, message: string): { error: { code: ErrorCode, message: string, type: string, param: null } } {
  return { error: { code, message, type: 'invalid_request_error', param: null } }
}

/**
 * Node's `clientError`: the request could not be read at all (a request line or headers that are
 * not HTTP, headers past the size limit, a request not received within REQUEST_TIMEOUT_SECONDS).
 * There is no request object, only the socket: the answer is written on it and it is closed.
 */
export function onClientError (error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const [code, message]: [ErrorCode, string] = error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
    ? ['request_timeout', 'the request was not received in time (REQUEST_TIMEOUT_SECONDS): send the headers and the whole body at once']
    : error.code === 'HPE_HEADER_OVERFLOW'
      ? ['headers_too_large', 'the request line and headers are larger than 16 KiB']
      : ['bad_request', `the request is not valid HTTP/1.1 (${error.code ?? 'parse error'})`]
  const status = ErrorCodes[code]
  const body = JSON.stringify(errorBody(code, message))
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}

/** Fastify's routing errors (`frameworkErrors`): a path that does not decode, a parameter too long. */
export function onFrameworkError (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const path = request.url.split('?')[0] ?? ''
  const [code, message]: [ErrorCode, string] = error.code === 'FST_ERR_MAX_PARAM_LENGTH'
    ? ['uri_too_long', `a part of the path ${clip(path)} is too long`]
    : error.code === 'FST_ERR_BAD_URL'
      ? ['bad_request', `the path ${clip(path)} does not decode: every "%" must start a %XX escape of UTF-8`]
      : ['internal_error', 'internal error; the service log has the details']
  if (code === 'internal_error') request.log.error({ err: error }, 'routing failed')
  void reply.code(ErrorCodes[code]).send(errorBody(code, message))
}

const clip = (path: string): string => JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}…` : path)
