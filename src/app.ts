import { hostname } from 'node:os'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions, type onRequestHookHandler } from 'fastify'
import type { Logger } from 'pino'
import { Type } from 'typebox'
import type { Config } from './config.ts'
import { authenticate } from './http/auth.ts'
import { onClientError, onFrameworkError } from './http/client-errors.ts'
import { toHttpError } from './http/errors.ts'
import { registerJsonBody } from './http/json-body.ts'
import { documentErrors, refuseUnknownQuery, routeMiss } from './http/route-contract.ts'
import { validatorCompiler } from './http/validation.ts'
import { healthRoutes } from './routes/health.ts'
import { jobRoutes } from './routes/jobs.ts'
import { anthropicRoutes } from './routes/anthropic.ts'
import { modelsRoutes } from './routes/models.ts'
import { openaiRoutes } from './routes/openai.ts'
import { responsesRoutes } from './routes/responses.ts'
import { uiRoutes } from './routes/ui.ts'
import { usageRoutes } from './routes/usage.ts'
import type { Caller } from './jobs/job-service.ts'
import { ErrorBody } from './schemas/common.ts'
import { OpenAIErrorBody } from './schemas/openai.ts'
import { createServices, type ServiceDeps, type Services } from './services.ts'

export interface AppDeps extends ServiceDeps {
  /** A logger, or Fastify logger options (default: pino at LOG_LEVEL). */
  logger?: Logger | FastifyServerOptions['logger']
}

/** What the routes work with: the app's services. */
export type AppContext = Services

declare module 'fastify' {
  interface FastifyInstance {
    ctx: AppContext
  }
  interface FastifyRequest {
    /** Who sent the request, set by authentication: its tenant, limits and reach. */
    caller: Caller
  }
}

const BODY_LIMIT = 8 * 1024 * 1024
/** Path parameters Fastify's router takes (ids are up to 128 characters; the schemas say so with a 400). */
const MAX_PARAM_LENGTH = 1024

/**
 * The composition root: creates the services of one app (store, queue, runner, workspaces) and
 * wires the routes. It never listens; `server.ts` does.
 */
export async function buildApp (config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  // Every line says which replica wrote it (INSTANCE_ID), beside pino's pid and hostname.
  const loggerOption = deps.logger ?? { level: config.logLevel, redact: ['req.headers.authorization', 'req.headers["x-api-key"]'], base: { pid: process.pid, hostname: hostname(), instance: config.instanceId } }
  const app = Fastify({
    ...(isPinoLogger(loggerOption) ? { loggerInstance: loggerOption as FastifyBaseLogger } : { logger: loggerOption }),
    bodyLimit: BODY_LIMIT,
    forceCloseConnections: true,
    // Counts only receiving a request (headers and body): responses and streams are not limited.
    // Node 24 takes it only when its server is created (Fastify sets it later, to no effect), and
    // checks for expired requests every 30 s unless told otherwise.
    requestTimeout: Math.round(config.requestTimeoutSeconds * 1000),
    http: {
      requestTimeout: Math.round(config.requestTimeoutSeconds * 1000),
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.round(config.requestTimeoutSeconds * 250))),
    },
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Errors met before any route: in the API's shape, not Fastify's or Node's.
    clientErrorHandler: onClientError,
    frameworkErrors: onFrameworkError,
    // One line per request (below), not Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(validatorCompiler())
  app.decorateRequest('caller', null as unknown as Caller)
  // Every body this API takes is JSON; anything else is a 415, not a confusing schema error.
  registerJsonBody(app, BODY_LIMIT)

  const ctx = await createServices(config, deps, app.log as Logger)
  app.decorate('ctx', ctx)
  app.addHook('onClose', () => ctx.close())

  app.setErrorHandler((error, request, reply) => {
    const http = toHttpError(error)
    if (http.statusCode >= 500) request.log.error({ err: error }, 'request failed')
    void reply.code(http.statusCode).headers(http.headers).send({ error: { code: http.code, message: http.message, ...http.details } })
  })
  // Every API request is counted and logged once, when its response closes, so streams (hijacked
  // replies) are too. The hook is added to each API scope and to the 404 handler, not to the root:
  // health checks and scrapes, which machines send every few seconds, run no hook at all.
  const observe: onRequestHookHandler = (request, reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched'
    const started = performance.now()
    reply.raw.once('close', () => {
      const seconds = (performance.now() - started) / 1000
      const status = reply.raw.statusCode
      ctx.metrics.httpRequest(request.method, route, status, seconds)
      // The tenant, once authentication named one (a refused token leaves it null).
      const tenant = (request.caller as Caller | null)?.tenant
      request.log.info({ method: request.method, url: request.url, status, tenant, ms: Math.round(seconds * 1e4) / 10, aborted: !reply.raw.writableFinished || undefined }, 'request')
    })
    done()
  }
  app.setNotFoundHandler({ preHandler: observe }, async request => {
    throw routeMiss(app, request, `no route ${request.method} ${request.url.split('?')[0]}`)
  })
  // Polled routes log nothing of their own, so they skip the per-request child logger too.
  const polled = (scope: FastifyInstance): void => { scope.setChildLoggerFactory(logger => logger) }

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'claude-runner', version: ctx.version, description: 'Claude Code as a service: jobs for CI, an OpenAI-compatible endpoint. See docs/api.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' } } },
      security: [{ bearer: [] }],
    },
  })

  await app.register(async function healthApi (scope) {
    polled(scope)
    await scope.register(healthRoutes, { ctx })
  })
  // The dashboard's static files (and / sending there) need no token: they hold no data; the API
  // holds it all.
  await app.register(async function dashboard (scope) {
    polled(scope)
    await scope.register(uiRoutes)
  })
  // Everything else needs a token: each API in a scope of its own, with its error shape and the
  // scope a token needs for it (src/http/auth.ts).
  const { tenants } = ctx
  await app.register(async function jobsApi (scope) {
    scope.addHook('onRequest', observe)
    await authenticate(scope, { tenants, scopes: ['jobs'] })
    documentErrors(scope, ErrorBody, { authenticated: true })
    refuseUnknownQuery(scope)
    await scope.register(jobRoutes, { ctx })
    await scope.register(usageRoutes, { ctx })
    scope.get('/openapi.json', { schema: { hide: true }, config: { scopes: [] } }, async () => app.swagger())
  })
  // /v1 speaks OpenAI's APIs and Anthropic's Messages API: each in a scope of its own, with its
  // own error shape (the token check's 401 included).
  await app.register(async function openaiApi (scope) {
    scope.addHook('onRequest', observe)
    await authenticate(scope, { tenants, scopes: ['chat'], apiKey: true })
    documentErrors(scope, OpenAIErrorBody, { authenticated: true })
    await scope.register(openaiRoutes, { ctx })
    await scope.register(modelsRoutes, { ctx })
    await scope.register(responsesRoutes, { ctx })
    await scope.register(anthropicRoutes, { ctx })
  }, { prefix: '/v1' })
  await app.register(async function metricsApi (scope) {
    polled(scope)
    // Prometheus may hold a token of its own (METRICS_TOKEN) that opens nothing else.
    await authenticate(scope, { tenants, scopes: ['metrics'] })
    documentErrors(scope, ErrorBody, { authenticated: true })
    scope.get('/metrics', {
      schema: {
        summary: 'Prometheus metrics. Needs the metrics scope (METRICS_TOKEN, AUTH_TOKENS, or a tenant given it).',
        response: { 200: { description: 'The Prometheus text format.', content: { 'text/plain': { schema: Type.String() } } } },
      },
    }, async (_request, reply) => {
      void reply.header('content-type', ctx.metrics.registry.contentType)
      return ctx.metrics.registry.metrics()
    })
  })
  return app
}

function isPinoLogger (value: unknown): value is Logger {
  return typeof value === 'object' && value !== null && typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function'
}
