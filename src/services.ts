import type { Logger } from 'pino'
import packageJson from '../package.json' with { type: 'json' }
import { AgentControls } from './agent/agent-controls.ts'
import { buildAgentEnv } from './agent/agent-env.ts'
import { CliProbe } from './agent/cli-info.ts'
import { JsonSchemaChecker } from './agent/json-schema-check.ts'
import { McpProfiles } from './agent/mcp-profiles.ts'
import { stat } from 'node:fs/promises'
import { ConfigError, type Config } from './config.ts'
import { createEngine } from './engine/engine.ts'
import type { Engine, RunRecord } from './engine/types.ts'
import { JobService } from './jobs/job-service.ts'
import { createRunWorker } from './jobs/run-worker.ts'
import { WebhookSender } from './jobs/webhooks.ts'
import { Metrics } from './metrics.ts'
import { ChatService } from './openai/chat-service.ts'
import { AgentExecutor } from './runner/agent-executor.ts'
import { toJobView } from './schemas/job.ts'
import { GitWorkspaces } from './workspace/git-workspaces.ts'
import { DirectoryWorkspaces, WorkspaceFolders, type WorkspaceProvider } from './workspace/workspace.ts'

export interface ServiceDeps {
  /** The clock jobs are timed and evicted by. */
  now?: () => number
  /** The environment the agent's allowlisted environment is taken from (default: process.env). */
  env?: NodeJS.ProcessEnv
}

/** The domain of one app: everything the routes work with, none of it shared with another app. */
export interface Services {
  config: Config
  /** Where runs are admitted, queued, recorded and followed: memory, or Redis (REDIS_URL). */
  engine: Engine
  jobs: JobService
  chat: ChatService
  webhooks: WebhookSender
  workspaces: WorkspaceProvider
  /** Checks and maps what a request asks of the agent beyond its prompt. */
  controls: AgentControls
  metrics: Metrics
  cli: CliProbe
  startedAt: number
  version: string
  now: () => number
  /**
   * Stops taking work and winds down: queued runs are cancelled, running ones get
   * SHUTDOWN_GRACE_SECONDS and are then cancelled, callbacks get a last chance. Idempotent.
   */
  drain: () => Promise<void>
  /** Last resort (a second signal): SIGKILL every agent process group now. */
  killAgentsNow: () => void
  /** Drains, then removes what is left on disk and stops timers. */
  close: () => Promise<void>
}

const WEBHOOK_DRAIN_MS = 10_000

export async function createServices (config: Config, deps: ServiceDeps, logger: Logger): Promise<Services> {
  const now = deps.now ?? Date.now
  const folders = new WorkspaceFolders(config.workspaceRoot)
  const leftovers = await folders.init()
  if (leftovers.length > 0) logger.warn({ count: leftovers.length, workspaces: leftovers }, 'removed workspaces left by an earlier run')

  const agentEnv = buildAgentEnv(deps.env ?? process.env, config.agentEnvPassthrough)
  // Facts of the CLI (2.1.332): as root it refuses bypassPermissions unless IS_SANDBOX=1. Every job
  // would fail with the CLI's message; say it once, at start-up, instead.
  if (config.agentPermissionMode === 'bypassPermissions' && process.getuid?.() === 0 && agentEnv.IS_SANDBOX !== '1') {
    throw new ConfigError('AGENT_PERMISSION_MODE=bypassPermissions as root: the Claude Code CLI refuses it unless IS_SANDBOX=1. Set IS_SANDBOX=1 if this machine is a sandbox, or run the service as another user (the Docker image does)')
  }
  if (config.claudeConfigTemplate !== undefined && !(await isDirectory(config.claudeConfigTemplate))) {
    throw new ConfigError(`CLAUDE_CONFIG_TEMPLATE ${config.claudeConfigTemplate} is not a folder`)
  }
  const controls = new AgentControls({ mcpProfiles: await McpProfiles.load(config.mcpConfigDir), schemas: new JsonSchemaChecker() })
  if (config.mcpConfigDir !== undefined) logger.info({ dir: config.mcpConfigDir, profiles: controls.mcpProfiles.names }, 'MCP server profiles loaded')
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
  const executorFor = (provider: WorkspaceProvider): AgentExecutor => new AgentExecutor({
    bin: config.claudeBin,
    env: agentEnv,
    killGraceMs: config.killGraceSeconds * 1000,
    maxOutputBytes: config.maxOutputBytes,
    workspaces: provider,
    configs: { folders, template: config.claudeConfigTemplate },
    onError: (error, context) => logger.error({ err: error }, context),
  })
  const executor = executorFor(workspaces)
  // Chat completions run in empty folders, whatever BASE_REPO says: a chat has no repository.
  const chatExecutor = executorFor(new DirectoryWorkspaces(folders))
  const webhooks = new WebhookSender({
    secret: config.webhookSecret,
    allowedHosts: config.webhookAllowedHosts,
    maxAttempts: config.webhookMaxAttempts,
    timeoutMs: config.webhookTimeoutSeconds * 1000,
    backoffMs: config.webhookBackoffSeconds * 1000,
    userAgent: `claude-runner/${packageJson.version}`,
    render: record => toJobView(record, undefined),
    logger,
    now,
  })
  // Read at scrape time only, by when the engine exists.
  const metrics: Metrics = new Metrics(() => engine.queue.counts, () => engine.health().cluster)
  const onFinished = (record: RunRecord): void => {
    if (record.kind !== 'job') return
    metrics.jobFinished(record)
    logger.info({ jobId: record.id, status: record.status, error: record.error?.code, runMs: record.startedAt === null ? undefined : (record.finishedAt ?? 0) - record.startedAt }, 'job finished')
    if (record.request?.callback_url === undefined) return
    if (engine.callbacks !== undefined) webhooks.kick()
    else webhooks.deliver(record)
  }
  const engine = await createEngine(config, {
    now,
    logger,
    onFinished,
    onSettled: run => metrics.runSettled(run.kind, run.queuedMs, run.runMs),
  })
  const chat = new ChatService({
    engine,
    controls,
    timeoutMs: config.jobTimeoutSeconds * 1000,
    maxAnswerBytes: config.maxOutputBytes,
    systemPromptMode: config.systemPromptMode,
    models: config.openaiModels,
    permissionMode: config.agentPermissionMode,
    now,
    onFinished: (outcome, result) => metrics.chatFinished(outcome, result),
  })
  const jobs = new JobService({
    engine,
    controls,
    defaultTimeoutMs: config.jobTimeoutSeconds * 1000,
    keepMs: config.jobTtlSeconds * 1000,
    permissionMode: config.agentPermissionMode,
    now,
    logger,
  })
  if (engine.callbacks !== undefined) webhooks.serve(engine.callbacks, id => engine.store.get(id))
  engine.queue.process(createRunWorker({ jobs: executor, chats: chatExecutor, now, logger }))

  let draining: Promise<void> | undefined
  const drain = (): Promise<void> => (draining ??= (async () => {
    await engine.queue.drain(config.shutdownGraceSeconds * 1000)
    // Jobs cancelled by the shutdown still tell their callbacks, within a bound.
    await webhooks.close(WEBHOOK_DRAIN_MS)
  })())
  return {
    config,
    engine,
    jobs,
    chat,
    webhooks,
    workspaces,
    controls,
    metrics,
    cli: new CliProbe(config.claudeBin, agentEnv),
    startedAt: now(),
    version: packageJson.version,
    now,
    drain,
    killAgentsNow: () => {
      executor.killAll()
      chatExecutor.killAll()
    },
    close: async () => {
      await drain()
      await engine.close()
      await workspaces.close()
      await controls.close()
      await folders.drain()
      metrics.close()
    },
  }
}

async function isDirectory (path: string): Promise<boolean> {
  return stat(path).then(info => info.isDirectory(), () => false)
}
