import bearerAuth from '@fastify/bearer-auth'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Logger } from 'pino'
import packageJson from '../package.json' with { type: 'json' }
import { buildAgentEnv } from './agent/agent-env.ts'
import { CliProbe } from './agent/cli-info.ts'
import type { Config } from './config.ts'
import { toHttpError } from './http/errors.ts'
import { validatorCompiler } from './http/validation.ts'
import { JobService } from './jobs/job-service.ts'
import { MemoryJobStore, type JobStore } from './jobs/job-store.ts'
import { WebhookSender } from './jobs/webhooks.ts'
import { toJobView } from './schemas/job.ts'
import { healthRoutes } from './routes/health.ts'
import { jobRoutes } from './routes/jobs.ts'
import { openaiRoutes } from './routes/openai.ts'
import { ChatService } from './openai/chat-service.ts'
import { AgentExecutor } from './runner/agent-executor.ts'
import { Runner } from './runner/runner.ts'
import { GitWorkspaces } from './workspace/git-workspaces.ts'
import { DirectoryWorkspaces, WorkspaceFolders, type WorkspaceProvider } from './workspace/workspace.ts'

export interface AppDeps {
  /** The clock jobs are timed and evicted by. */
  now?: () => number
  /** Where jobs are kept (default: in memory). */
  store?: JobStore
  /** The environment the agent's allowlisted environment is taken from (default: process.env). */
  env?: NodeJS.ProcessEnv
  /** A logger, or Fastify logger options (default: pino at LOG_LEVEL). */
  logger?: Logger | FastifyServerOptions['logger']
}

/** What the routes work with; built once per app, so every app (and every test) has its own. */
export interface AppContext {
  config: Config
  runner: Runner
  jobs: JobService
  chat: ChatService
  webhooks: WebhookSender
  workspaces: WorkspaceProvider
  cli: CliProbe
  startedAt: number
  version: string
  now: () => number
  /**
   * Stops taking work and winds down: queued runs are cancelled, running ones get
   * SHUTDOWN_GRACE_SECONDS and are then cancelled. Resolves when every run has ended. Idempotent.
   */
  drain: () => Promise<void>
  /** Last resort (a second signal): SIGKILL every agent process group now. */
  killAgentsNow: () => void
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: AppContext
  }
}

const BODY_LIMIT = 8 * 1024 * 1024
const WEBHOOK_DRAIN_MS = 10_000

/**
 * The composition root: creates the store, queue, runner and workspaces for one app and wires the
 * routes. It never listens; `server.ts` does.
 */
export async function buildApp (config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const now = deps.now ?? Date.now
  const loggerOption = deps.logger ?? { level: config.logLevel, redact: ['req.headers.authorization'] }
  const app = Fastify({
    ...(isPinoLogger(loggerOption) ? { loggerInstance: loggerOption as FastifyBaseLogger } : { logger: loggerOption }),
    bodyLimit: BODY_LIMIT,
    forceCloseConnections: true,
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(validatorCompiler())
  // Every body this API takes is JSON; anything else is a 415, not a confusing schema error.
  app.removeContentTypeParser('text/plain')
  const logger = app.log as Logger

  const folders = new WorkspaceFolders(config.workspaceRoot)
  const leftovers = await folders.init()
  if (leftovers.length > 0) logger.warn({ count: leftovers.length, workspaces: leftovers }, 'removed workspaces left by an earlier run')

  const agentEnv = buildAgentEnv(deps.env ?? process.env, config.agentEnvPassthrough)
  const workspaces: WorkspaceProvider = config.baseRepo === undefined
    ? new DirectoryWorkspaces(folders)
    : new GitWorkspaces({
      folders,
      repo: config.baseRepo,
      ref: config.baseRef,
      refreshMs: config.baseRefreshSeconds * 1000,
      gitCryptKey: config.gitCryptKey,
      maxDiffBytes: config.maxDiffBytes,
      agentEnv,
      logger,
      now,
    })
  const runner = new Runner({ concurrency: config.maxConcurrency, maxQueueDepth: config.maxQueueDepth })
  const executor = new AgentExecutor({
    bin: config.claudeBin,
    env: agentEnv,
    killGraceMs: config.killGraceSeconds * 1000,
    maxOutputBytes: config.maxOutputBytes,
    workspaces,
    onError: (error, context) => logger.error({ err: error }, context),
  })
  // Chat completions run in empty folders, whatever BASE_REPO says: a chat has no repository.
  const chatExecutor = new AgentExecutor({
    bin: config.claudeBin,
    env: agentEnv,
    killGraceMs: config.killGraceSeconds * 1000,
    maxOutputBytes: config.maxOutputBytes,
    workspaces: new DirectoryWorkspaces(folders),
    onError: (error, context) => logger.error({ err: error }, context),
  })
  const chat = new ChatService({
    runner,
    executor: chatExecutor,
    timeoutMs: config.jobTimeoutSeconds * 1000,
    systemPromptMode: config.systemPromptMode,
    models: config.openaiModels,
    permissionMode: config.agentPermissionMode,
    now,
  })
  const store = deps.store ?? new MemoryJobStore({
    ttlMs: config.jobTtlSeconds * 1000,
    maxFinished: config.maxFinishedJobs,
    maxRetainedBytes: config.maxRetainedBytes,
    now,
  })
  const webhooks = new WebhookSender({
    secret: config.webhookSecret,
    allowedHosts: config.webhookAllowedHosts,
    maxAttempts: config.webhookMaxAttempts,
    timeoutMs: config.webhookTimeoutSeconds * 1000,
    backoffMs: config.webhookBackoffSeconds * 1000,
    userAgent: `claude-runner/${packageJson.version}`,
    render: job => toJobView(job, undefined),
    logger,
    now,
  })
  const jobs = new JobService({
    store,
    runner,
    executor,
    defaultTimeoutMs: config.jobTimeoutSeconds * 1000,
    maxEventBytes: config.maxOutputBytes,
    permissionMode: config.agentPermissionMode,
    now,
    logger,
    onFinished: job => { if (job.request.callback_url !== undefined) webhooks.deliver(job) },
  })
  const ctx: AppContext = {
    config,
    runner,
    jobs,
    chat,
    webhooks,
    workspaces,
    cli: new CliProbe(config.claudeBin, agentEnv),
    startedAt: now(),
    version: packageJson.version,
    now,
    drain: () => (draining ??= (async () => {
      await runner.close(config.shutdownGraceSeconds * 1000)
      await jobs.close()
      // Jobs cancelled by the shutdown still tell their callbacks, within a bound.
      await webhooks.close(WEBHOOK_DRAIN_MS)
    })()),
    killAgentsNow: () => {
      executor.killAll()
      chatExecutor.killAll()
    },
  }
  let draining: Promise<void> | undefined
  app.decorate('ctx', ctx)

  app.setErrorHandler((error, request, reply) => {
    const http = toHttpError(error)
    if (http.statusCode >= 500) request.log.error({ err: error }, 'request failed')
    void reply.code(http.statusCode).headers(http.headers).send({ error: { code: http.code, message: http.message, ...http.details } })
  })
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: { code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` } })
  })

  await app.register(healthRoutes, { ctx })
  // Everything but /health needs a token: each API in a scope of its own, with its error shape.
  const authenticate = async (scope: FastifyInstance): Promise<void> => {
    await scope.register(bearerAuth, { keys: config.authTokens, addHook: false, verifyErrorLogLevel: 'debug' })
    scope.addHook('onRequest', (request, reply, done) => { scope.verifyBearerAuth!(request, reply, done) })
  }
  await app.register(async function jobsApi (scope) {
    await authenticate(scope)
    await scope.register(jobRoutes, { ctx })
  })
  await app.register(async function openaiApi (scope) {
    await authenticate(scope)
    await scope.register(openaiRoutes, { ctx })
  }, { prefix: '/v1' })

  app.addHook('onClose', async () => {
    await ctx.drain()
    await workspaces.close()
    await folders.drain()
  })
  return app
}

function isPinoLogger (value: unknown): value is Logger {
  return typeof value === 'object' && value !== null && typeof (value as Logger).child === 'function' && typeof (value as Logger).info === 'function'
}
