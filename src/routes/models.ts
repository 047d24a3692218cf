import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyRequest } from 'fastify'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { AppError } from '../errors.ts'
import { toAnthropicError, toOpenAIError } from '../http/api-errors.ts'
import { AnthropicErrorBody, AnthropicModel, AnthropicModelList } from '../schemas/anthropic.ts'
import { ModelList, ModelObject, OpenAIErrorBody } from '../schemas/openai.ts'

/** Anthropic's clients send `anthropic-version` (and `x-api-key`) on every request; OpenAI's never do. */
const fromAnthropic = (request: FastifyRequest): boolean => request.headers['anthropic-version'] !== undefined || request.headers['x-api-key'] !== undefined

const Either = (openai: object, anthropic: object, description: string) => ({
  description,
  content: { 'application/json': { schema: Type.Union([openai as never, anthropic as never]) } },
})
const errors = (description: string) => Either(OpenAIErrorBody, AnthropicErrorBody, description)

/** `GET /v1/models`: OPENAI_MODELS, in OpenAI's shape or, for Anthropic's clients, in Anthropic's. */
export const modelsRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  app.setErrorHandler((error, request, reply) => {
    const { statusCode, headers, body } = fromAnthropic(request) ? toAnthropicError(error) : toOpenAIError(error)
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    void reply.code(statusCode).headers(headers).send(body)
  })

  const created = Math.floor(ctx.startedAt / 1000)
  const createdAt = new Date(ctx.startedAt).toISOString()
  const openai = (id: string) => ({ id, object: 'model' as const, created, owned_by: 'anthropic' })
  const anthropic = (id: string) => ({ type: 'model' as const, id, display_name: id, created_at: createdAt })
  const known = (id: string): string => {
    if (ctx.config.openaiModels.includes(id)) return id
    throw new AppError('model_not_found', `The model \`${id}\` does not exist`, { details: { field: 'model' } })
  }

  app.get('/models', {
    schema: {
      summary: 'The models this service offers (OPENAI_MODELS); in Anthropic\'s shape when the request has `anthropic-version` or `x-api-key`.',
      response: { 200: Either(ModelList, AnthropicModelList, 'The model list.'), 401: errors('No or a wrong token.'), 403: errors('The token lacks the scope.') },
    },
  }, async request => {
    const ids = ctx.config.openaiModels
    if (!fromAnthropic(request)) return { object: 'list' as const, data: ids.map(openai) }
    return { data: ids.map(anthropic), has_more: false, first_id: ids[0] ?? null, last_id: ids.at(-1) ?? null }
  })

  app.get('/models/:model', {
    schema: {
      params: Type.Object({ model: Type.String() }),
      response: {
        200: Either(ModelObject, AnthropicModel, 'The model.'),
        ...Object.fromEntries([[400, 'A parameter is invalid.'], [401, 'No or a wrong token.'], [403, 'The token lacks the scope.'], [404, 'No such model.']].map(([status, text]) => [status, errors(text as string)])),
      },
    },
  }, async request => {
    const id = known(request.params.model)
    return fromAnthropic(request) ? anthropic(id) : openai(id)
  })
}
