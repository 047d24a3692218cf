import { Ajv } from 'ajv'
import type { FastifySchemaCompiler } from 'fastify'

/**
 * Fastify's default Ajv coerces types and silently drops unknown fields. A JSON body must be taken
 * as sent: `"5"` is not a number and an unknown field is a mistake worth a 400 that names it.
 * Query strings and path parameters are text by nature, so they are coerced.
 */
export function validatorCompiler (): FastifySchemaCompiler<unknown> {
  const strict = new Ajv({ coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false, strict: false })
  const lenient = new Ajv({ coerceTypes: 'array', removeAdditional: false, useDefaults: true, allErrors: false, strict: false })
  return ({ schema, httpPart }) => (httpPart === 'body' ? strict : lenient).compile(schema as object)
}
