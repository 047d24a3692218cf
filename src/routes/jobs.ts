import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { AppError } from '../errors.ts'
import { jobNotFound } from '../jobs/job-service.ts'
import type { Job } from '../jobs/job.ts'
import { ErrorBody } from '../schemas/common.ts'
import { ExecuteBody, JobView, MAX_METADATA_BYTES, MAX_PROMPT_BYTES, toJobView } from '../schemas/job.ts'
import { refProblem } from '../workspace/refs.ts'

export const MAX_WAIT_SECONDS = 60

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
  const view = (job: Job) => toJobView(job, jobs.position(job))
  const find = (id: string): Job => {
    const job = jobs.get(id)
    if (job === undefined) throw jobNotFound(id)
    return job
  }

  app.post('/execute', {
    schema: {
      summary: 'Submit a job. It is accepted at once and runs when a slot is free.',
      body: ExecuteBody,
      response: { 202: JobView, 400: ErrorBody, 429: ErrorBody, 503: ErrorBody },
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
    const job = jobs.submit(body)
    void reply.code(202).header('location', `/jobs/${job.id}`)
    return view(job)
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
    const job = find(request.params.id)
    const wait = request.query.wait
    if (wait !== undefined && !job.terminal) {
      const closed = new AbortController()
      const onClose = (): void => closed.abort()
      request.raw.once('close', onClose)
      await jobs.wait(job, wait * 1000, closed.signal)
      request.raw.off('close', onClose)
    }
    return view(job)
  })

  app.delete('/jobs/:id', {
    schema: {
      summary: 'Cancel a job. 200 when it is cancelled at once (it was queued), 202 while its agent is being stopped.',
      params: JobParams,
      response: { 200: JobView, 202: JobView, 404: ErrorBody, 409: ErrorBody },
    },
  }, async (request, reply) => {
    const job = jobs.cancel(request.params.id)
    void reply.code(job.terminal ? 200 : 202)
    return view(job)
  })

  app.get('/jobs/:id/output', {
    schema: {
      summary: 'The raw stream-json lines the agent printed (at most MAX_OUTPUT_BYTES), as NDJSON.',
      params: JobParams,
      response: { 200: Type.String(), 404: ErrorBody },
    },
  }, async (request, reply) => {
    const job = find(request.params.id)
    const lines = job.output?.lines ?? []
    void reply
      .header('content-type', 'application/x-ndjson; charset=utf-8')
      .header('x-output-truncated', String(job.output?.truncated ?? false))
    return lines.length === 0 ? '' : lines.join('\n') + '\n'
  })
}
