import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify'
import { Type, type TSchema } from 'typebox'
import { AppError } from '../errors.ts'

type RouteSchema = Omit<NonNullable<RouteOptions['schema']>, 'response'> & { response?: Record<string, unknown> }

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

/**
 * For a request no route took: 405 with `Allow` when the path exists under other methods (found
 * with the router itself, so routes added by any scope, static files included, count), else 404.
 */
export function routeMiss (app: FastifyInstance, request: FastifyRequest, notFoundMessage: string): AppError {
  const path = request.raw.url?.split('?')[0] ?? '/'
  const has = (method: string): boolean => app.findRoute({ method, url: path }) !== null
  // A route of this very method that found nothing (a static file that is not there) is a 404.
  const allowed = has(request.method) ? [] : METHODS.filter(has)
  if (allowed.length === 0) return new AppError('not_found', notFoundMessage)
  return new AppError('method_not_allowed', `${request.method} is not allowed on ${path}: use ${allowed.join(', ')}`, { headers: { allow: allowed.join(', ') } })
}

/**
 * Adds to every route of the scope the errors it can answer with but does not list itself, so
 * `/openapi.json` says what really comes back: 401 and 403 where a token is needed, 400 where
 * anything is validated, 404 where the path names something, 413 and 415 where there is a body.
 */
export function documentErrors (scope: FastifyInstance, errorBody: TSchema, options: { authenticated: boolean }): void {
  scope.addHook('onRoute', route => {
    const schema = (route.schema ?? {}) as RouteSchema
    if (schema.hide === true) return
    const response: Record<string, unknown> = { ...schema.response }
    const add = (status: number, description: string): void => {
      response[status] ??= { ...errorBody, description }
    }
    if (options.authenticated) {
      add(401, 'No or a wrong bearer token.')
      add(403, 'The token lacks the scope this route needs; `scope` names it.')
    }
    if (schema.body !== undefined || schema.querystring !== undefined || schema.params !== undefined || schema.headers !== undefined) {
      add(400, 'A parameter, header or the body is invalid; `field` (`param` for OpenAI) names it.')
    }
    if (schema.params !== undefined) add(404, 'Nothing has that id.')
    if (schema.body !== undefined) {
      add(413, 'The body is too large.')
      add(415, 'The body is not JSON in UTF-8, or is compressed.')
    }
    route.schema = { ...schema, response }
  })
}

/**
 * Unknown query parameters are refused (400 naming them) on every route of the scope: a typo like
 * `?wiat=30` would otherwise be answered at once, as if nothing had been asked.
 */
export function refuseUnknownQuery (scope: FastifyInstance): void {
  scope.addHook('onRoute', route => {
    const schema = (route.schema ?? {}) as RouteSchema
    const query = (schema.querystring ?? Type.Object({})) as Record<string, unknown>
    route.schema = { ...schema, querystring: { ...query, additionalProperties: false } }
  })
}
