import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from 'typebox'
import type { CliInfo } from '../agent/cli-info.ts'
import type { AppContext } from '../app.ts'
import { Nullable, StringEnum } from '../schemas/common.ts'
import type { EngineHealth } from '../engine/types.ts'
import type { WarmInfo } from '../runner/warm-pool.ts'
import type { DiskInfo } from '../workspace/disk.ts'
import type { WorkspaceInfo } from '../workspace/workspace.ts'

const Workspace = Type.Object({
  kind: StringEnum(['git', 'directory'], { description: '`git` with BASE_REPO: each run gets a clone of it; else an empty folder.' }),
  repo: Type.Optional(Type.String({ description: 'BASE_REPO, without credentials.' })),
  state: Type.Optional(StringEnum(['initialising', 'ready', 'error'], { description: 'Of the warm base repository.' })),
  ref: Type.Optional(Nullable(Type.String({ description: 'BASE_REF, or the remote default branch.' }))),
  commit: Type.Optional(Nullable(Type.String({ description: 'What the default ref points at, as of the last fetch.' }))),
  git_crypt: Type.Optional(StringEnum(['unlocked', 'no key'])),
  fetches: Type.Optional(Type.Integer({ description: 'Fetches into the base since start-up.' })),
  last_fetch_at: Type.Optional(Nullable(Type.String({ description: 'ISO 8601 time' }))),
  last_error: Type.Optional(Nullable(Type.String())),
})

const Engine = Type.Object({
  kind: StringEnum(['memory', 'redis'], { description: '`redis` with REDIS_URL: replicas share one queue; else this process alone.' }),
  instance: Type.String({ description: 'INSTANCE_ID of this replica.' }),
  redis: Nullable(Type.Object({
    state: StringEnum(['connected', 'disconnected']),
    last_error: Nullable(Type.String()),
  })),
})

const Cluster = Type.Object({
  replicas: Type.Integer({ description: 'Replicas alive (heartbeat within REPLICA_TIMEOUT_SECONDS).' }),
  active: Type.Integer({ description: 'Runs executing on any replica.' }),
  queued: Type.Integer({ description: 'Runs waiting for a slot anywhere.' }),
  capacity: Type.Integer({ description: 'The sum of the MAX_CONCURRENCY of replicas taking work.' }),
}, { description: 'Redis engine: the whole cluster, refreshed in the background (about every second).' })

const HealthBody = Type.Object({
  status: StringEnum(['ok', 'degraded', 'draining', 'unavailable'], { description: '`degraded` (200): jobs are likely to fail, `reasons` says why; `unavailable` (503): Redis cannot be reached; `draining` (503): shutting down.' }),
  reasons: Type.Array(Type.String(), { description: 'Why the status is not `ok` (empty when it is).' }),
  busy: Type.Boolean({ description: 'True when every slot of this replica is taken.' }),
  active: Type.Integer({ description: 'Agent runs in progress on this replica (jobs and chat completions).' }),
  queued: Type.Integer({ description: 'Runs waiting for a slot (with Redis: anywhere in the cluster).' }),
  capacity: Type.Integer({ description: 'MAX_CONCURRENCY of this replica.' }),
  max_queue_depth: Type.Integer(),
  version: Type.String(),
  uptime_seconds: Type.Integer(),
  claude: Type.Object({
    bin: Type.String(),
    state: StringEnum(['checking', 'found', 'missing']),
    version: Nullable(Type.String()),
    error: Nullable(Type.String()),
  }),
  workspace: Workspace,
  disk: Type.Object({
    free_bytes: Nullable(Type.Integer({ description: 'Free under WORKSPACE_ROOT (to unprivileged users), measured every 5 s.' })),
    total_bytes: Nullable(Type.Integer()),
    min_free_bytes: Type.Integer({ description: 'WORKSPACE_MIN_FREE_BYTES: below it, `degraded`.' }),
    error: Nullable(Type.String({ description: 'Why the disk could not be measured.' })),
  }),
  engine: Engine,
  cluster: Nullable(Cluster),
  warm: Type.Object({
    ready: Type.Integer({ description: 'CLIs started ahead of time, waiting for a prompt (WARM_AGENTS); not runs, not in active or capacity.' }),
    starting: Type.Integer({ description: 'CLIs being started ahead of time (workspace, sandbox, CLI start-up).' }),
    hits: Type.Integer({ description: 'Runs since start-up that took a warm CLI.' }),
    misses: Type.Integer({ description: 'Runs since start-up that started cold while WARM_AGENTS > 0.' }),
  }, { description: 'This replica\'s warm starts.' }),
  sandbox: Type.Object({
    mode: StringEnum(['bwrap', 'off'], { description: 'SANDBOX.' }),
    isolated: Type.Boolean({ description: 'False with SANDBOX=off: agents can reach the service, each other and the base repository.' }),
    version: Nullable(Type.String({ description: 'Of bubblewrap.' })),
  }),
})
type HealthBody = Static<typeof HealthBody>

/**
 * GET /health is polled by load balancers and probes, often several times a second per instance.
 * Its answer changes only with what it reports, so it is serialised once per change (and once a
 * second, for the uptime) and sent as is in between. Every input is compared by value or, for the
 * CLI, workspace and warm-pool descriptions (objects replaced on change, never changed in place), by identity.
 */
export const healthRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const { engine, cli, workspaces, disk, warm } = ctx
  let last: { closing: boolean, active: number, queued: number, uptime: number, info: CliInfo, workspace: WorkspaceInfo, engine: EngineHealth, disk: DiskInfo, warm: WarmInfo, json: string } | undefined

  app.get('/health', {
    schema: {
      summary: 'Capacity and state, for load balancers and ops. Needs no token.',
      security: [],
      response: { 200: HealthBody, 503: HealthBody },
    },
  }, (_request, reply) => {
    const counts = engine.queue.counts
    const closing = counts.closing
    const active = counts.active
    const queued = counts.queued
    const uptime = Math.floor((ctx.now() - ctx.startedAt) / 1000)
    const info = cli.info
    const workspace = workspaces.describe()
    const health = engine.health()
    const space = disk.info
    const warmInfo = warm.describe()
    if (closing || !health.connected) void reply.code(503)
    let answer = last
    if (answer === undefined || answer.closing !== closing || answer.active !== active || answer.queued !== queued ||
      answer.uptime !== uptime || answer.info !== info || answer.workspace !== workspace || answer.engine !== health || answer.disk !== space ||
      answer.warm !== warmInfo) {
      const reasons = degradedBy(info, workspace, space)
      const body: HealthBody = {
        status: closing ? 'draining' : !health.connected ? 'unavailable' : reasons.length > 0 ? 'degraded' : 'ok',
        reasons: health.connected ? reasons : [`Redis cannot be reached${health.lastError === null ? '' : `: ${health.lastError}`}`, ...reasons],
        busy: active >= counts.capacity,
        active,
        queued,
        capacity: counts.capacity,
        max_queue_depth: ctx.config.maxQueueDepth,
        version: ctx.version,
        uptime_seconds: uptime,
        claude: {
          bin: info.bin,
          state: info.state,
          version: info.state === 'found' ? info.version : null,
          error: info.state === 'missing' ? info.error : null,
        },
        workspace,
        disk: space,
        engine: {
          kind: health.kind,
          instance: engine.instance,
          redis: health.kind === 'redis' ? { state: health.connected ? 'connected' : 'disconnected', last_error: health.lastError } : null,
        },
        cluster: health.cluster,
        warm: warmInfo,
        sandbox: ctx.sandbox.info,
      }
      // The route's own serializer (from HealthBody), the same for 200 and 503.
      answer = last = { closing, active, queued, uptime, info, workspace, engine: health, disk: space, warm: warmInfo, json: reply.serialize(body) as string }
    }
    // A string is sent as it is: serialised above, by the same schema.
    void reply.type('application/json; charset=utf-8').send(answer.json as unknown as HealthBody)
  })
}

/** Why jobs are likely to fail, while the service still takes them (200 `degraded`). */
function degradedBy (cli: CliInfo, workspace: WorkspaceInfo, disk: DiskInfo): string[] {
  const reasons: string[] = []
  if (cli.state === 'missing') reasons.push(`the Claude Code CLI cannot run (CLAUDE_BIN ${cli.bin}): ${cli.error}`)
  if (disk.free_bytes !== null && disk.free_bytes < disk.min_free_bytes) {
    reasons.push(`${(disk.free_bytes / 2 ** 20).toFixed(1)} MiB free under WORKSPACE_ROOT, less than WORKSPACE_MIN_FREE_BYTES (${(disk.min_free_bytes / 2 ** 20).toFixed(1)} MiB)`)
  }
  if (workspace.state === 'error') reasons.push(`the base repository is not ready: ${workspace.last_error ?? 'unknown error'}`)
  return reasons
}
