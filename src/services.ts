import type { Logger } from 'pino'
import packageJson from '../package.json' with { type: 'json' }
import { AgentControls } from './agent/agent-controls.ts'
import { buildAgentEnv } from './agent/agent-env.ts'
import { CliProbe } from './agent/cli-info.ts'
import type { AgentSpec } from './agent/cli-args.ts'
import { JsonSchemaChecker } from './agent/json-schema-check.ts'
import { McpProfiles } from './agent/mcp-profiles.ts'
import { ProcessRecords } from './agent/process-records.ts'
import { Bubblewrap, NoSandbox, type Sandbox } from './agent/sandbox.ts'
import { stat } from 'node:fs/promises'
import { isAbsolute } from 'node:path'
import { ConfigError, type Config } from './config.ts'
import { createEngine } from './engine/engine.ts'
import type { Engine, RunRecord } from './engine/types.ts'
import { JobService } from './jobs/job-service.ts'
import { createRunWorker } from './jobs/run-worker.ts'
import { WebhookSender } from './jobs/webhooks.ts'
import { Metrics } from './metrics.ts'
import { ChatService } from './openai/chat-service.ts'
import { AgentExecutor } from './runner/agent-executor.ts'
import { WarmPool } from './runner/warm-pool.ts'
import { toJobView } from './schemas/job.ts'
import { Tenants } from './tenants/tenants.ts'
import { DiskWatch } from './workspace/disk.ts'
import { GitWorkspaces } from './workspace/git-workspaces.ts'
import { InstanceLock } from './workspace/instance-lock.ts'
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
  /** The tokens accepted and who holds each (AUTH_TOKENS, TENANTS_FILE, METRICS_TOKEN); `reload` on SIGHUP. */
  tenants: Tenants
  /** Where runs are admitted, queued, recorded and followed: memory, or Redis (REDIS_URL). */
  engine: Engine
  jobs: JobService
  chat: ChatService
  webhooks: WebhookSender
  workspaces: WorkspaceProvider
  /** Free space under WORKSPACE_ROOT, for /health. */
  disk: DiskWatch
  /** Checks and maps what a request asks of the agent beyond its prompt. */
  controls: AgentControls
  sandbox: Sandbox
  /** The CLIs started ahead of time (WARM_AGENTS). */
  warm: WarmPool
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
  // First: a bad TENANTS_FILE stops the start-up before anything is touched.
  const tenants = await Tenants.load({ file: config.tenantsFile, authTokens: config.authTokens, metricsToken: config.metricsToken, logger })
  if (config.tenantsFile !== undefined) logger.info({ file: config.tenantsFile, tenants: tenants.names }, 'tenants loaded')
  // Before anything under WORKSPACE_ROOT is touched: a second instance on the same folder would
  // sweep away the first one's workspaces.
  const lock = await InstanceLock.acquire(config.workspaceRoot)
  try {
    return await start(config, deps, logger, lock, tenants)
  } catch (error) {
    await lock.release()
    throw error
  }
}

async function start (config: Config, deps: ServiceDeps, logger: Logger, lock: InstanceLock, tenants: Tenants): Promise<Services> {
  const now = deps.now ?? Date.now
  const folders = new WorkspaceFolders(config.workspaceRoot, { onError: (error, context) => logger.warn({ err: error }, context) })
  const records = new ProcessRecords(folders.pids)
  const survivors = await records.sweep()
  if (survivors.length > 0) logger.warn({ pids: survivors }, 'killed agent processes left running by an earlier run')
  const leftovers = await folders.init()
  if (leftovers.length > 0) logger.warn({ count: leftovers.length, workspaces: leftovers }, 'removed workspaces left by an earlier run')

  const agentEnv = buildAgentEnv(deps.env ?? process.env, config.agentEnvPassthrough)
  const controls = new AgentControls({ mcpProfiles: await McpProfiles.load(config.mcpConfigDir), schemas: new JsonSchemaChecker() })
  if (config.mcpConfigDir !== undefined) logger.info({ dir: config.mcpConfigDir, profiles: controls.mcpProfiles.names }, 'MCP server profiles loaded')
  // The CLI starts the profiles' stdio servers inside the sandbox: their programs, and the
  // absolute paths among their arguments, are visible there (read-only).
  const mcpCommands = controls.mcpProfiles.commands
  const sandbox: Sandbox = config.sandbox === 'off'
    ? new NoSandbox()
    : await Bubblewrap.create({
      cli: config.claudeBin,
      programs: mcpCommands.map(server => server.command),
      env: agentEnv,
      stateDir: folders.sandbox,
      readOnly: [...config.sandboxReadOnly, ...mcpCommands.flatMap(server => server.args.filter(arg => isAbsolute(arg)))],
    })
  if (config.sandbox === 'off') {
    logger.warn('SANDBOX=off: agent runs are not isolated; an agent can read the service\'s environment and files, other runs\' workspaces and the base repository, and leave processes behind')
  } else {
    logger.info({ version: sandbox.info.version }, 'agent runs are sandboxed with bubblewrap')
  }
  // Facts of the CLI (2.1.332): as root it refuses bypassPermissions unless IS_SANDBOX=1. Every job
  // would fail with the CLI's message; say it once, at start-up, instead. In the sandbox the agent
  // is not root, whoever the service runs as.
  if (config.sandbox === 'off' && config.agentPermissionMode === 'bypassPermissions' && process.getuid?.() === 0 && agentEnv.IS_SANDBOX !== '1') {
    throw new ConfigError('AGENT_PERMISSION_MODE=bypassPermissions as root with SANDBOX=off: the Claude Code CLI refuses it unless IS_SANDBOX=1. Use SANDBOX=bwrap (agents then never run as root), run the service as another user, or set IS_SANDBOX=1 if this machine is a sandbox')
  }
  if (config.claudeConfigTemplate !== undefined && !(await isDirectory(config.claudeConfigTemplate))) {
    throw new ConfigError(`CLAUDE_CONFIG_TEMPLATE ${config.claudeConfigTemplate} is not a folder`)
  }
  const workspaces: WorkspaceProvider = config.baseRepo === undefined
    ? new DirectoryWorkspaces(folders)
    : new GitWorkspaces({
      folders,
      repo: config.baseRepo,
      ref: config.baseRef,
      refreshMs: config.baseRefreshSeconds * 1000,
      gitCryptKey: config.gitCryptKey,
      maxDiffBytes: config.maxDiffBytes,
      sandboxed: sandbox.info.isolated,
      logger,
      now,
    })
  const disk = new DiskWatch(config.workspaceRoot, config.workspaceMinFreeBytes).start()
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
  const metrics: Metrics = new Metrics(() => engine.queue.counts, () => engine.health().cluster, { replica: config.instanceId, version: packageJson.version, engine: config.redisUrl === undefined ? 'memory' : 'redis' }, () => pool.describe())
  // Warm processes look like cold ones only where paths inside are fixed: in the sandbox.
  if (config.warmAgents > 0 && !sandbox.info.isolated) logger.warn('WARM_AGENTS is ignored with SANDBOX=off: a warm agent\'s folders would show it was started for another run')
  // Slots are the engine's; until it exists there are none to spare.
  const slots = { free: (): boolean => false }
  const pool = new WarmPool({
    size: sandbox.info.isolated ? config.warmAgents : 0,
    maxIdleMs: config.warmAgentMaxIdleSeconds * 1000,
    // Below WORKSPACE_MIN_FREE_BYTES a warm workspace would take the room a run needs.
    mayStart: () => slots.free() && !disk.low,
    now,
    logger,
    onTake: hit => { metrics.warmTake(hit) },
  })
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
    onSettled: run => {
      metrics.runSettled(run.kind, run.queuedMs, run.runMs)
      pool.kick()
    },
  })
  slots.free = () => {
    const counts = engine.queue.counts
    return !counts.closing && counts.active < counts.capacity
  }
  const chat = new ChatService({
    engine,
    controls,
    timeoutMs: config.jobTimeoutSeconds * 1000,
    storeMs: config.jobTtlSeconds * 1000,
    maxAnswerBytes: config.maxOutputBytes,
    systemPromptMode: config.systemPromptMode,
    models: config.openaiModels,
    permissionMode: config.agentPermissionMode,
    now,
    onFinished: (api, outcome, result, tenant) => metrics.chatFinished(api, outcome, result, tenant),
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
  const executorFor = (provider: WorkspaceProvider, lane: string, defaultSpec?: AgentSpec): AgentExecutor => new AgentExecutor({
    bin: config.claudeBin,
    sandbox,
    records,
    env: agentEnv,
    killGraceMs: config.killGraceSeconds * 1000,
    maxOutputBytes: config.maxOutputBytes,
    workspaces: provider,
    configs: { folders, template: config.claudeConfigTemplate },
    // What continuations start from is kept in the engine: the next run may be on another replica.
    artifacts: (id: string, name: string) => engine.store.artifact(id, name),
    maxResumeBytes: config.maxResumeBytes,
    disk,
    warm: pool.size > 0 ? { pool, lane, defaultSpec } : undefined,
    onError: (error, context) => logger.error({ err: error }, context),
  })
  // A job that names nothing but its prompt: the argument set kept warm before any run is seen.
  const executor = executorFor(workspaces, 'jobs', jobs.specFor({ prompt: '' }))
  // Chat completions run in empty folders, whatever BASE_REPO says: a chat has no repository.
  const chatExecutor = executorFor(new DirectoryWorkspaces(folders), 'chats')
  if (engine.callbacks !== undefined) webhooks.serve(engine.callbacks, id => engine.store.get(id))
  engine.queue.process(createRunWorker({ jobs: executor, chats: chatExecutor, maxAnswerBytes: config.maxOutputBytes, now, logger }))

  let draining: Promise<void> | undefined
  const drain = (): Promise<void> => (draining ??= (async () => {
    // Warm processes are not runs: they go at once, runs get their grace.
    await Promise.all([pool.close(), engine.queue.drain(config.shutdownGraceSeconds * 1000)])
    // Jobs cancelled by the shutdown still tell their callbacks, within a bound.
    await webhooks.close(WEBHOOK_DRAIN_MS)
  })())
  return {
    config,
    tenants,
    engine,
    jobs,
    chat,
    webhooks,
    workspaces,
    disk,
    controls,
    sandbox,
    warm: pool,
    metrics,
    cli: new CliProbe(config.claudeBin, agentEnv, sandbox),
    startedAt: now(),
    version: packageJson.version,
    now,
    drain,
    killAgentsNow: () => {
      executor.killAll()
      chatExecutor.killAll()
      pool.killAll()
    },
    close: async () => {
      await drain()
      await engine.close()
      await workspaces.close()
      await controls.close()
      await folders.close()
      metrics.close()
      disk.close()
      await lock.release()
    },
  }
}

async function isDirectory (path: string): Promise<boolean> {
  return stat(path).then(info => info.isDirectory(), () => false)
}
