import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../errors.ts'

/** Objects and arrays inside one another, the body itself included. */
export const MAX_JSON_DEPTH = 64

/**
 * The only body parser: JSON, taken exactly as sent. Anything the default parser would have
 * turned into something else, or into a confusing "not valid JSON", is refused with what is wrong:
 * a compressed body (415 naming the encoding), a charset other than UTF-8 (415), bytes that are
 * not UTF-8 (400: they would reach the agent as U+FFFD), nesting past MAX_JSON_DEPTH (400 naming
 * the field: serialising it again later would overflow the stack), and `__proto__` or
 * `constructor.prototype` keys (400: they could change an object's prototype downstream).
 */
export function registerJsonBody (app: FastifyInstance, bodyLimit: number): void {
  const utf8 = new TextDecoder('utf-8', { fatal: true })
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'buffer', bodyLimit }, (request: FastifyRequest, body: Buffer, done: (error: Error | null, value?: unknown) => void) => {
    try {
      done(null, parseJsonBody(request, body, utf8))
    } catch (error) {
      done(error as Error)
    }
  })
}

function parseJsonBody (request: FastifyRequest, body: Buffer, utf8: InstanceType<typeof TextDecoder>): unknown {
  const encoding = request.headers['content-encoding']
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
    throw new AppError('unsupported_encoding', `Content-Encoding ${JSON.stringify(encoding)} is not supported: send the body uncompressed`)
  }
  const charset = charsetOf(request.headers['content-type'])
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new AppError('unsupported_media_type', `charset ${JSON.stringify(charset)} is not supported: send the body as UTF-8 ("Content-Type: application/json" or "application/json; charset=utf-8")`)
  }
  if (body.length === 0) throw new AppError('validation_error', 'the body is empty; send a JSON object', { details: { field: 'body' } })
  let text: string
  try {
    text = utf8.decode(body)
  } catch {
    throw new AppError('validation_error', 'the body is not valid UTF-8: send JSON encoded as UTF-8', { details: { field: 'body' } })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new AppError('validation_error', `the body is not valid JSON: ${(error as Error).message}`, { details: { field: 'body' } })
  }
  checkShape(value)
  return value
}

function charsetOf (contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined
  for (const parameter of contentType.split(';').slice(1)) {
    const [name, raw = ''] = parameter.split('=', 2)
    if (name?.trim().toLowerCase() === 'charset') return raw.trim().replace(/^"(.*)"$/, '$1').toLowerCase()
  }
  return undefined
}

interface Node {
  value: object
  depth: number
  key: string | undefined
  parent: Node | undefined
}

const pathOf = (node: Node | undefined, key?: string): string[] => {
  const path = key === undefined ? [] : [key]
  for (let at = node; at?.key !== undefined; at = at.parent) path.unshift(at.key)
  return path
}

/**
 * Walks the parsed body once, without recursion (so a deep body cannot overflow this walk
 * either), for nesting depth and prototype keys.
 */
function checkShape (root: unknown): void {
  if (root === null || typeof root !== 'object') return
  const stack: Node[] = [{ value: root, depth: 1, key: undefined, parent: undefined }]
  while (stack.length > 0) {
    const node = stack.pop()!
    if (node.depth > MAX_JSON_DEPTH) {
      const field = pathOf(node)[0] ?? 'body'
      throw new AppError('validation_error', `body.${field} is nested more than ${MAX_JSON_DEPTH} levels deep`, { details: { field } })
    }
    if (Array.isArray(node.value)) {
      const items: unknown[] = node.value
      for (let i = 0; i < items.length; i++) {
        const child = items[i]
        if (child !== null && typeof child === 'object') stack.push({ value: child, depth: node.depth + 1, key: String(i), parent: node })
      }
      continue
    }
    for (const key of Object.keys(node.value)) {
      const child = (node.value as Record<string, unknown>)[key]
      const container = child !== null && typeof child === 'object'
      if (key === '__proto__' || (key === 'constructor' && container && Object.hasOwn(child, 'prototype'))) {
        const field = pathOf(node, key).join('.')
        throw new AppError('validation_error', `body.${field}: a "${key === '__proto__' ? '__proto__' : 'constructor.prototype'}" key is refused (it could change an object's prototype); rename the field`, { details: { field } })
      }
      if (container) stack.push({ value: child, depth: node.depth + 1, key, parent: node })
    }
  }
}
