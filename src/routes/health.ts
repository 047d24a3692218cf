import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { AnyObject, NullableScalar } from '../schemas/common.ts'

const HealthBody = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('draining')]),
  busy: Type.Boolean({ description: 'True when every slot is taken: a new job will wait in the queue.' }),
  active: Type.Integer({ description: 'Agent runs in progress (jobs and chat completions).' }),
  queued: Type.Integer({ description: 'Runs waiting for a slot.' }),
  capacity: Type.Integer({ description: 'MAX_CONCURRENCY.' }),
  max_queue_depth: Type.Integer(),
  version: Type.String(),
  uptime_seconds: Type.Number(),
  claude: Type.Object({
    bin: Type.String(),
    state: Type.Union([Type.Literal('checking'), Type.Literal('found'), Type.Literal('missing')]),
    version: NullableScalar(Type.String()),
    error: NullableScalar(Type.String()),
  }),
  workspace: AnyObject,
})

export const healthRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  app.get('/health', {
    schema: {
      summary: 'Capacity and state, for load balancers and ops. Needs no token.',
      security: [],
      response: { 200: HealthBody, 503: HealthBody },
    },
  }, async (_request, reply) => {
    const { runner, cli, workspaces } = ctx
    const info = cli.info
    const draining = runner.closing
    if (draining) void reply.code(503)
    return {
      status: draining ? 'draining' as const : 'ok' as const,
      busy: runner.active >= runner.capacity,
      active: runner.active,
      queued: runner.queued,
      capacity: runner.capacity,
      max_queue_depth: runner.maxQueueDepth,
      version: ctx.version,
      uptime_seconds: Math.round((ctx.now() - ctx.startedAt) / 1000),
      claude: {
        bin: info.bin,
        state: info.state,
        version: info.state === 'found' ? info.version : null,
        error: info.state === 'missing' ? info.error : null,
      },
      workspace: workspaces.describe(),
    }
  })
}
