import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { DATE_PATTERN, ErrorBody } from '../schemas/common.ts'
import { usageRange, usageReport } from '../tenants/usage-report.ts'

const DATE = { pattern: DATE_PATTERN, description: 'A UTC day, YYYY-MM-DD.' }
const Count = Type.Integer({ minimum: 0 })

const UsageDay = Type.Object({
  date: Type.String(DATE),
  runs: Type.Object({ completed: Count, failed: Count, timed_out: Count, cancelled: Count }, { description: 'Runs (jobs and chat completions) that ended that day, by status.' }),
  total_cost_usd: Type.Number({ description: 'The sum of the CLI\'s total_cost_usd.' }),
  input_tokens: Count,
  output_tokens: Count,
  cache_read_input_tokens: Count,
  cache_creation_input_tokens: Count,
  agent_seconds: Type.Number({ description: 'Time runs held a slot (from start to end), in seconds.' }),
})

const UsageBody = Type.Object({
  tenants: Type.Array(Type.Object({ tenant: Type.String(), days: Type.Array(UsageDay) })),
})

export const usageRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  app.get('/usage', {
    // Chat-only tenants have usage too; only a metrics-only token has none to read.
    config: { scopes: ['jobs', 'chat'] },
    schema: {
      summary: 'Usage per UTC day: the caller\'s tenant, or every tenant for an admin. Kept 90 days.',
      querystring: Type.Object({
        from: Type.Optional(Type.String({ ...DATE, description: 'First day (default: 6 days before `to`).' })),
        to: Type.Optional(Type.String({ ...DATE, description: 'Last day, inclusive (default: today, UTC). At most 90 days from `from`.' })),
      }),
      response: { 200: UsageBody, 400: ErrorBody },
    },
  }, async request => {
    const range = usageRange(request.query, ctx.now())
    return { tenants: await usageReport(ctx.engine.usage, request.caller, ctx.tenants.names, range) }
  })
}
