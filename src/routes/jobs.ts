import { createHash } from 'node:crypto'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { AppError } from '../errors.ts'
import type { RunRecord } from '../engine/types.ts'
import type { JobStatus } from '../jobs/job.ts'
import { isTerminal } from '../jobs/job.ts'
import { SseStream } from '../http/sse.ts'
import { ErrorBody, Nullable, TENANT_PATTERN } from '../schemas/common.ts'
import { ExecuteBody, JobStatusSchema, JobSummary, JobView, MAX_METADATA_BYTES, MAX_PROMPT_BYTES, toJobSummary, toJobView } from '../schemas/job.ts'
import { refProblem } from '../workspace/refs.ts'

export const MAX_WAIT_SECONDS = 60
const MAX_PAGE = 200
/** What a slow event follower may fall behind by before it is cut off. */
const SUBSCRIBER_BUFFER_BYTES = 4 * 1024 * 1024

/** The Idempotency-Key header and a fingerprint of the body it was sent with. */
function idempotencyOf (header: string | string[] | undefined, body: ExecuteBody): { key: string, fingerprint: string } | undefined {
  if (header === undefined) return undefined
  const key = Array.isArray(header) ? header[0] : header
  if (key === undefined || !/^[\x21-\x7e]{1,255}$/.test(key)) {
    throw new AppError('validation_error', 'the Idempotency-Key header must be 1 to 255 printable ASCII characters without spaces', { details: { field: 'Idempotency-Key' } })
  }
  return { key, fingerprint: createHash('sha256').update(canonicalJson(body)).digest('hex') }
}

/** JSON with object keys sorted, so the same body always has the same fingerprint. */
function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map(key => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`).join(',')}}`
  }
  return JSON.stringify(value)
}

function checkWorkspaceFields (body: ExecuteBody, { config }: AppContext): void {
  if (body.ref !== undefined) {
    if (config.baseRepo === undefined) {
      throw new AppError('invalid_ref', 'body.ref needs a repository: the service has no BASE_REPO', { details: { field: 'ref' } })
    }
    const problem = refProblem(body.ref)
    if (problem !== undefined) throw new AppError('invalid_ref', `body.ref ${problem}`, { details: { field: 'ref' } })
  }
  if (body.push === true) {
    if (!config.allowPush) throw new AppError('push_not_allowed', 'body.push is not allowed here: the service runs without ALLOW_PUSH', { details: { field: 'push' } })
    if (config.baseRepo === undefined) throw new AppError('push_not_allowed', 'body.push needs a repository: the service has no BASE_REPO', { details: { field: 'push' } })
  }
}

const JobParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) })

export const jobRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  const { jobs } = ctx
  const view = async (record: RunRecord) => toJobView(record, await jobs.position(record))

  app.post('/execute', {
    schema: {
      summary: 'Submit a job. It is accepted at once and runs when a slot is free.',
      body: ExecuteBody,
      headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ description: 'Retrying with the same key and body returns the same job (within JOB_TTL_SECONDS).' })) }),
      response: { 202: JobView, 400: ErrorBody, 422: ErrorBody, 429: ErrorBody, 503: ErrorBody },
    },
  }, async (request, reply) => {
    const body = request.body
    if (Buffer.byteLength(body.prompt) > MAX_PROMPT_BYTES) {
      throw new AppError('validation_error', `body.prompt is ${Buffer.byteLength(body.prompt)} bytes; the limit is ${MAX_PROMPT_BYTES} (1 MiB)`, { details: { field: 'prompt' } })
    }
    if (body.metadata !== undefined && Buffer.byteLength(JSON.stringify(body.metadata)) > MAX_METADATA_BYTES) {
      throw new AppError('validation_error', `body.metadata is larger than ${MAX_METADATA_BYTES} bytes of JSON`, { details: { field: 'metadata' } })
    }
    checkWorkspaceFields(body, ctx)
    await ctx.controls.check(body)
    if (body.callback_url !== undefined) ctx.webhooks.check(body.callback_url)
    const idempotency = idempotencyOf(request.headers['idempotency-key'], body)
    const { record, replayed } = await jobs.submit(body, request.caller, { idempotency })
    void reply.code(202).header('location', `/jobs/${record.id}`)
    if (replayed) void reply.header('idempotent-replayed', 'true')
    return view(record)
  })

  app.get('/jobs', {
    schema: {
      summary: 'The caller\'s jobs (an admin\'s: every tenant\'s), newest first.',
      querystring: Type.Object({
        status: Type.Optional(JobStatusSchema),
        tenant: Type.Optional(Type.String({ pattern: TENANT_PATTERN, description: 'Only this tenant\'s jobs. Needs the admin scope (else 403).' })),
        limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 50 })),
        cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'next_cursor of the previous page.' })),
      }),
      response: { 200: Type.Object({ jobs: Type.Array(JobSummary), next_cursor: Nullable(Type.String()) }) },
    },
  }, async request => {
    const { status, tenant, limit = 50, cursor } = request.query
    const page = await jobs.list({ status: status as JobStatus | undefined, tenant, limit, before: cursor === undefined ? undefined : Number(cursor) }, request.caller)
    return { jobs: page.records.map(toJobSummary), next_cursor: page.next === undefined ? null : String(page.next) }
  })

  app.get('/jobs/:id/events', {
    // HEAD would hold the connection open for a stream it never shows.
    exposeHeadRoute: false,
    schema: {
      summary: 'Server-Sent Events of the job: status changes and what the agent does, then `end` with the job. Resume with Last-Event-ID.',
      params: JobParams,
      headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })) }),
      querystring: Type.Object({ after: Type.Optional(Type.Integer({ minimum: 0, description: 'Like Last-Event-ID, for clients that cannot set headers.' })) }),
      response: {
        200: {
          description: 'An event stream: `id`, `event` and `data` (JSON) per event, every id above the one resumed after; `end` (the job JSON) comes last. See docs/api.md.',
          content: { 'text/event-stream': { schema: Type.String() } },
        },
        404: ErrorBody,
      },
    },
  }, async (request, reply) => {
    const record = await jobs.find(request.params.id, request.caller)
    const header = request.headers['last-event-id']
    const after = header !== undefined ? Number(header) : (request.query.after ?? 0)
    const feed = await ctx.engine.events.follow(record.id, after, SUBSCRIBER_BUFFER_BYTES)
    const sse = new SseStream(reply.raw, { keepAliveMs: ctx.config.sseKeepAliveSeconds * 1000, writeTimeoutMs: ctx.config.sseWriteTimeoutSeconds * 1000 })
    // A follower too slow to keep up is cut off at once (it resumes from its last id), never waited for.
    feed.onEnd = () => { if (feed.overflowed) reply.raw.destroy() }
    reply.raw.once('close', () => { feed.close() })
    reply.hijack()
    sse.start()
    sse.watch()
    // Every event has an id above the one asked for, so a follower that resumes after any id it
    // got never sees an event twice: `gap` takes the id just before the oldest event kept, `end`
    // the one after the last.
    let lastId = after
    if (feed.missed) {
      lastId = feed.firstId - 1
      sse.send(JSON.stringify({ first_id: feed.firstId }), { event: 'gap', id: lastId })
    }
    for await (const event of feed) {
      if (event.id <= lastId) continue
      lastId = event.id
      if (!sse.send(event.json, { event: event.type, id: event.id })) await sse.drained()
      if (sse.closed) break
    }
    if (!feed.overflowed && !sse.closed) {
      const final = await jobs.get(record.id, request.caller)
      if (final !== undefined && isTerminal(final.status)) sse.send(JSON.stringify(await view(final)), { event: 'end', id: lastId + 1 })
    }
    sse.end()
    return reply
  })

  app.get('/jobs/:id', {
    schema: {
      summary: 'A job: its state, and when it is over, the agent\'s result and what it changed.',
      params: JobParams,
      querystring: Type.Object({
        wait: Type.Optional(Type.Number({ minimum: 0, maximum: MAX_WAIT_SECONDS, description: `Long-poll: answer as soon as the job is terminal, or after this many seconds (at most ${MAX_WAIT_SECONDS}).` })),
      }),
      response: { 200: JobView, 404: ErrorBody },
    },
  }, async (request) => {
    let record = await jobs.find(request.params.id, request.caller)
    const wait = request.query.wait
    if (wait !== undefined && !isTerminal(record.status)) {
      const closed = new AbortController()
      const onClose = (): void => closed.abort()
      request.raw.once('close', onClose)
      record = await jobs.wait(record, wait * 1000, closed.signal)
      request.raw.off('close', onClose)
    }
    return view(record)
  })

  app.delete('/jobs/:id', {
    schema: {
      summary: 'Cancel a job. 200 when it is cancelled at once (it was queued), 202 while its agent is being stopped.',
      params: JobParams,
      response: { 200: JobView, 202: JobView, 404: ErrorBody, 409: ErrorBody },
    },
  }, async (request, reply) => {
    const record = await jobs.cancel(request.params.id, request.caller)
    void reply.code(isTerminal(record.status) ? 200 : 202)
    return view(record)
  })

  app.get('/jobs/:id/output', {
    schema: {
      summary: 'The raw stream-json lines the agent printed (at most MAX_OUTPUT_BYTES), as NDJSON.',
      params: JobParams,
      response: {
        200: {
          description: 'One JSON value per line; `X-Output-Truncated: true` when lines were dropped past MAX_OUTPUT_BYTES.',
          content: { 'application/x-ndjson': { schema: Type.String() } },
        },
        404: ErrorBody,
      },
    },
  }, async (request, reply) => {
    const record = await jobs.find(request.params.id, request.caller)
    const lines = await jobs.output(record)
    void reply
      .header('content-type', 'application/x-ndjson; charset=utf-8')
      .header('x-output-truncated', String(record.output?.truncated ?? false))
    return lines.length === 0 ? '' : lines.join('\n') + '\n'
  })
}
