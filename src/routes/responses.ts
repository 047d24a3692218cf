import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { AppError } from '../errors.ts'
import { toOpenAIError } from '../http/api-errors.ts'
import type { Caller } from '../jobs/job-service.ts'
import { refuseUnsupported, ResponseEventEncoder, toKeptResponse, toResponse, toResponseRequest } from '../openai/responses.ts'
import { ResponseCreateBody, ResponseDeleted, ResponseObject } from '../schemas/responses.ts'
import { OpenAIErrorBody } from '../schemas/openai.ts'
import { answerChat } from './chat-answer.ts'
import { openAIErrors } from './openai.ts'

const ResponseId = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) })

export const responsesRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  openAIErrors(app)

  const notFound = (id: string): AppError => new AppError('response_not_found', `No response with id '${id}' is kept: it was made with store: false, by another tenant, deleted, or it expired after JOB_TTL_SECONDS`, { details: { field: 'id' } })

  /**
   * `previous_response_id` would continue that response's conversation by resuming its Claude Code
   * session; until runs can resume a finished run's session, a kept one is refused, naming it.
   */
  const continuing = async (id: string, caller: Caller): Promise<never> => {
    if (await ctx.chat.kept(id, 'responses', caller) === undefined) {
      throw new AppError('previous_response_not_found', `Previous response with id '${id}' not found: it was made with store: false, by another tenant, deleted, or it expired after JOB_TTL_SECONDS`, { details: { field: 'previous_response_id' } })
    }
    throw new AppError('unsupported', `previous_response_id: continuing response ${id} is not supported yet; send the whole conversation as input instead`, { details: { field: 'previous_response_id' } })
  }

  app.post('/responses', {
    preValidation: async request => { refuseUnsupported(request.body) },
    schema: {
      summary: 'OpenAI Responses, answered by claude -p (streaming with stream: true).',
      body: ResponseCreateBody,
      response: {
        200: {
          description: 'A `response`; with `stream: true` an event stream (`event: <type>`, `data: <json>` with `sequence_number`) from `response.created` to `response.completed`, `response.incomplete` or `response.failed`.',
          content: { 'application/json': { schema: ResponseObject }, 'text/event-stream': { schema: Type.String() } },
        },
        ...Object.fromEntries([400, 401, 404, 429, 500, 502, 503, 504].map(status => [status, OpenAIErrorBody])),
      },
    },
  }, async (request, reply) => {
    const { request: chat, echo } = toResponseRequest(request.body)
    if (request.body.previous_response_id != null) await continuing(request.body.previous_response_id, request.caller)
    const store = chat.store === true
    return answerChat(ctx, request, reply, chat, {
      json: outcome => toResponse(outcome, echo, store),
      stream: () => new ResponseEventEncoder(echo, store),
      error: toOpenAIError,
    })
  })

  app.get('/responses/:id', {
    schema: {
      summary: 'A stored response (store: true, the default), kept for JOB_TTL_SECONDS: as it was answered, or as it stands while it runs.',
      params: ResponseId,
      response: { 200: ResponseObject },
    },
  }, async request => {
    const kept = await ctx.chat.kept(request.params.id, 'responses', request.caller)
    if (kept === undefined) throw notFound(request.params.id)
    return toKeptResponse(kept)
  })

  app.delete('/responses/:id', {
    schema: {
      summary: 'Deletes a stored response (one still running cannot be: 409).',
      params: ResponseId,
      response: { 200: ResponseDeleted, 409: OpenAIErrorBody },
    },
  }, async request => {
    const { id } = request.params
    switch (await ctx.chat.forget(id, 'responses', request.caller)) {
      case 'removed':
        return { id, object: 'response' as const, deleted: true as const }
      case 'unfinished':
        throw new AppError('response_in_progress', `Response ${id} is still running; it can be deleted once it has ended`, { details: { field: 'id' } })
      default:
        throw notFound(id)
    }
  })
}
