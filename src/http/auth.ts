import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../errors.ts'
import { forbidden, type Scope } from '../tenants/scopes.ts'
import type { Tenants } from '../tenants/tenants.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scopes that open this route (any one of them), instead of its API's. */
    scopes?: readonly Scope[]
  }
}

export interface AuthOptions {
  tenants: Tenants
  /** The scopes that open the API (any one of them); a route may name its own (`config.scopes`). Empty: any valid token. */
  scopes: readonly Scope[]
  /** Also take `x-api-key: <token>` (the /v1 APIs: Anthropic's SDK authenticates that way). */
  apiKey?: boolean
}

/**
 * Authentication and authorisation of every route of `scope`: the token (Bearer, in any case, or
 * x-api-key where allowed) names its holder, whose caller the routes act as; a token outside its
 * scopes is a 403. Errors go through the scope's error handler, so each API answers in its shape.
 *
 * Replaces @fastify/bearer-auth: it reads only the Authorization header, and its `auth` callback
 * answers yes or no, where this needs the holder of the token and a 403 distinct from the 401.
 */
export function authenticate (scope: FastifyInstance, options: AuthOptions): void {
  const { tenants, apiKey = false } = options
  if (apiKey) {
    scope.addHook('onRoute', route => {
      route.schema = { ...route.schema, security: [{ bearer: [] }, { apiKey: [] }] }
    })
  }
  scope.addHook('onRequest', async request => {
    const token = tokenOf(request, apiKey)
    const holder = token === undefined ? undefined : tenants.authenticate(token)
    if (holder === undefined) throw unauthorized(apiKey)
    const needed = request.routeOptions.config.scopes ?? options.scopes
    if (isNonEmpty(needed) && !needed.some(name => holder.scopes.has(name))) throw forbidden(needed)
    request.caller = holder.caller
  })
}

function tokenOf (request: FastifyRequest, apiKey: boolean): string | undefined {
  const header = request.headers.authorization
  if (header !== undefined) {
    // The scheme is case-insensitive (RFC 9110): `bearer <token>` is as good as `Bearer <token>`.
    const match = /^bearer +(\S+) *$/i.exec(header)
    return match?.[1]
  }
  const key = apiKey ? request.headers['x-api-key'] : undefined
  return typeof key === 'string' ? key.trim() : undefined
}

function unauthorized (apiKey: boolean): AppError {
  const how = apiKey ? '"Authorization: Bearer <token>" or "x-api-key: <token>"' : '"Authorization: Bearer <token>"'
  return new AppError('unauthorized', `a valid bearer token is required: send ${how} with a token of AUTH_TOKENS or TENANTS_FILE`, { headers: { 'www-authenticate': 'Bearer' } })
}

const isNonEmpty = <T>(list: readonly T[]): list is readonly [T, ...T[]] => list.length > 0
