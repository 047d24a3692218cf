import { Ajv2020 } from 'ajv/dist/2020.js'
import type { ValidateFunction } from 'ajv'

/**
 * Checks real responses against an OpenAPI 3.1 document, and makes requests from it: a valid one
 * per operation (from required fields and fixtures) and invalid ones (a wrong value per parameter
 * and body field, an unknown query parameter, no token). Generic on purpose: it walks whatever
 * the document lists, so routes added later are covered without touching the test.
 */
export interface Schema {
  type?: string | string[]
  properties?: Record<string, Schema>
  required?: string[]
  items?: Schema
  enum?: unknown[]
  pattern?: string
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  minLength?: number
  maxLength?: number
  minItems?: number
  default?: unknown
  anyOf?: Schema[]
}

export interface Parameter {
  in: 'query' | 'path' | 'header'
  name: string
  required?: boolean
  schema: Schema
}

export interface Operation {
  parameters?: Parameter[]
  requestBody?: { content: Record<string, { schema: Schema }> }
  responses: Record<string, { description: string, content?: Record<string, { schema: Schema }> }>
  security?: unknown[]
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>
  security?: unknown[]
}

export interface Probe {
  /** What the request tries, for failure messages. */
  what: string
  method: string
  url: string
  headers: Record<string, string>
  body?: unknown
}

const typeOf = (schema: Schema): string | undefined => Array.isArray(schema.type) ? schema.type.find(type => type !== 'null') : schema.type

/** A value the schema accepts, from its default, enum, bounds or type. */
export function sample (schema: Schema): unknown {
  if (schema.default !== undefined) return schema.default
  if (schema.enum !== undefined) return schema.enum[0]
  if (schema.anyOf !== undefined) return sample(schema.anyOf[0]!)
  switch (typeOf(schema)) {
    case 'object': {
      const value: Record<string, unknown> = {}
      for (const name of schema.required ?? []) value[name] = sample(schema.properties?.[name] ?? {})
      return value
    }
    case 'array': return Array.from({ length: schema.minItems ?? 0 }, () => sample(schema.items ?? {}))
    case 'integer':
    case 'number': return schema.minimum ?? (schema.exclusiveMinimum === undefined ? 1 : schema.exclusiveMinimum + 1)
    case 'boolean': return false
    case 'null': return null
    default: return 'a'.repeat(Math.max(1, schema.minLength ?? 1))
  }
}

/** Values the schema refuses: the wrong type, and past each bound it has. */
export function wrongValues (schema: Schema): unknown[] {
  const type = typeOf(schema)
  const values: unknown[] = [type === 'string' ? 12345 : 'AAA']
  if (schema.maximum !== undefined) values.push(schema.maximum + 1_000_000)
  if (schema.maxLength !== undefined) values.push('a'.repeat(schema.maxLength + 1))
  if (schema.pattern !== undefined) values.push('!! not matching')
  if (schema.enum !== undefined) values.push('not-one-of-them')
  return values
}

const text = (value: unknown): string => typeof value === 'string' ? value : JSON.stringify(value)

export interface Fixtures {
  /** Path parameter values by name; any other gets `x`. */
  params: Record<string, string>
  /** Bodies known to be good, by `METHOD /path`, tried besides the one made from the schema. */
  bodies: Record<string, unknown[]>
  auth: Record<string, string>
  /** A valid token of too narrow a scope for most routes, tried on every secured one. */
  narrowAuth?: Record<string, string>
}

/** Every request to try against one operation of the document. */
export function probesFor (doc: OpenApiDocument, path: string, method: string, fixtures: Fixtures): Probe[] {
  const operation = doc.paths[path]![method]!
  const parameters = operation.parameters ?? []
  const pathWith = (overrides: Record<string, string> = {}): string =>
    path.replace(/\{([^}]+)\}/g, (_match, name: string) => encodeURIComponent(overrides[name] ?? fixtures.params[name] ?? 'x'))
  const query = (values: Record<string, unknown>): string => {
    const search = new URLSearchParams(Object.entries(values).map(([name, value]): [string, string] => [name, text(value)])).toString()
    return search === '' ? '' : `?${search}`
  }
  const requiredQuery: Record<string, unknown> = {}
  const headers: Record<string, string> = {}
  for (const parameter of parameters) {
    if (parameter.required !== true) continue
    if (parameter.in === 'query') requiredQuery[parameter.name] = sample(parameter.schema)
    if (parameter.in === 'header') headers[parameter.name] = text(sample(parameter.schema))
  }
  const bodySchema = operation.requestBody?.content['application/json']?.schema
  const upper = method.toUpperCase()
  const base = (what: string, overrides: Partial<Probe> = {}): Probe => ({
    what,
    method: upper,
    url: pathWith() + query(requiredQuery),
    headers: { ...fixtures.auth, ...headers, ...(bodySchema === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(bodySchema === undefined ? {} : { body: sample(bodySchema) }),
    ...overrides,
  })

  const probes: Probe[] = [base('a request made from the schema')]
  const secured = operation.security ?? doc.security ?? []
  if (secured.length > 0) {
    const { authorization: _dropped, ...anonymous } = base('').headers
    probes.push(base('no token', { headers: anonymous }))
    if (fixtures.narrowAuth !== undefined) probes.push(base('a token without the scope', { headers: { ...anonymous, ...fixtures.narrowAuth } }))
  }
  for (const body of fixtures.bodies[`${upper} ${path}`] ?? []) probes.push(base(`the body ${JSON.stringify(body).slice(0, 80)}`, { body }))
  probes.push(base('an unknown query parameter', { url: pathWith() + query({ ...requiredQuery, zz_unknown: '1' }) }))
  for (const parameter of parameters) {
    for (const wrong of wrongValues(parameter.schema)) {
      const what = `${parameter.in} ${parameter.name} = ${text(wrong).slice(0, 40)}`
      if (parameter.in === 'query') probes.push(base(what, { url: pathWith() + query({ ...requiredQuery, [parameter.name]: wrong }) }))
      if (parameter.in === 'path') probes.push(base(what, { url: pathWith({ [parameter.name]: text(wrong) }) + query(requiredQuery) }))
      if (parameter.in === 'header') probes.push(base(what, { headers: { ...base('').headers, [parameter.name]: text(wrong) } }))
    }
  }
  if (bodySchema !== undefined) {
    const valid = sample(bodySchema) as Record<string, unknown>
    probes.push(base('a body that is an array', { body: [] }))
    probes.push(base('a body missing its required fields', { body: {} }))
    for (const [name, property] of Object.entries(bodySchema.properties ?? {})) {
      for (const wrong of wrongValues(property)) probes.push(base(`body.${name} = ${text(wrong).slice(0, 40)}`, { body: { ...valid, [name]: wrong } }))
      if (typeOf(property) === 'boolean') probes.push(base(`body.${name} = true`, { body: { ...valid, [name]: true } }))
    }
  }
  return probes
}

export class ResponseChecker {
  readonly #ajv = new Ajv2020({ strict: false, allErrors: false })
  readonly #compiled = new Map<Schema, ValidateFunction>()

  /** What is wrong with this response for this operation, or an empty list. */
  problems (operation: Operation, status: number, contentType: string | null, body: string): string[] {
    const documented = operation.responses[String(status)] ?? operation.responses.default
    if (documented === undefined) return [`status ${status} is not documented (documented: ${Object.keys(operation.responses).join(', ')})`]
    if (body === '' && documented.content === undefined) return []
    const media = (contentType ?? '').split(';')[0]!.trim()
    const content = documented.content?.[media]
    if (content === undefined) return [`${status} came as ${JSON.stringify(contentType)}, documented as ${Object.keys(documented.content ?? {}).join(', ') || 'no body'}`]
    if (media === 'application/json') {
      let validate = this.#compiled.get(content.schema)
      if (validate === undefined) this.#compiled.set(content.schema, validate = this.#ajv.compile(content.schema))
      let value: unknown
      try {
        value = JSON.parse(body)
      } catch {
        return [`${status} is not JSON: ${body.slice(0, 200)}`]
      }
      if (!validate(value)) return [`${status} does not match its schema: ${this.#ajv.errorsText(validate.errors)} in ${body.slice(0, 300)}`]
    }
    if (media === 'text/event-stream') {
      for (const frame of body.split('\n\n').filter(frame => frame !== '')) {
        if (!frame.split('\n').every(line => /^(id|event|data|retry)?:/.test(line) || line.startsWith(':'))) return [`not an event stream: ${frame.slice(0, 200)}`]
      }
    }
    if (media === 'application/x-ndjson') {
      for (const line of body.split('\n').filter(line => line !== '')) {
        try {
          JSON.parse(line)
        } catch {
          return [`not NDJSON: ${line.slice(0, 200)}`]
        }
      }
    }
    return []
  }
}
