import bearerAuth from '@fastify/bearer-auth'
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
 * @fastify/bearer-auth reads the token; its `auth` callback looks it up in the tenants (constant-
 * time) and keeps who holds it for the scope check that follows, which is ours: a 403 is not a 401.
 */
export async function authenticate (scope: FastifyInstance, options: AuthOptions): Promise<void> {
  const { tenants, apiKey = false } = options
  const holders = new WeakMap<FastifyRequest, NonNullable<ReturnType<Tenants['authenticate']>>>()
  if (apiKey) {
    scope.addHook('onRoute', route => {
      route.schema = { ...route.schema, security: [{ bearer: [] }, { apiKey: [] }] }
    })
    // Anthropic's SDK authenticates with x-api-key: without an Authorization header, it is the token.
    scope.addHook('onRequest', (request, _reply, done) => {
      const key = request.headers['x-api-key']
      if (request.headers.authorization === undefined && typeof key === 'string') request.raw.headers.authorization = `Bearer ${key.trim()}`
      done()
    })
  }
  await scope.register(bearerAuth, {
    keys: [],
    addHook: false,
    // The scheme is case-insensitive (RFC 9110): `bearer <token>` is as good as `Bearer <token>`.
    specCompliance: 'rfc6749',
    verifyErrorLogLevel: 'debug',
    auth: (token, request) => {
      const holder = tenants.authenticate(token)
      if (holder === undefined) return false
      holders.set(request, holder)
      return true
    },
  })
  scope.addHook('onRequest', (request, reply, done) => {
    scope.verifyBearerAuth!(request, reply, error => {
      const holder = holders.get(request)
      if (error !== undefined || holder === undefined) {
        done(unauthorized(apiKey))
        return
      }
      const needed = request.routeOptions.config.scopes ?? options.scopes
      if (isNonEmpty(needed) && !needed.some(name => holder.scopes.has(name))) {
        done(forbidden(needed))
        return
      }
      request.caller = holder.caller
      done()
    })
  })
}

function unauthorized (apiKey: boolean): AppError {
  const how = apiKey ? '"Authorization: Bearer <token>" or "x-api-key: <token>"' : '"Authorization: Bearer <token>"'
  return new AppError('unauthorized', `a valid bearer token is required: send ${how} with a token of AUTH_TOKENS or TENANTS_FILE`, { headers: { 'www-authenticate': 'Bearer' } })
}

const isNonEmpty = <T>(list: readonly T[]): list is readonly [T, ...T[]] => list.length > 0
