import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { toOpenAIError } from '../http/api-errors.ts'
import { routeMiss } from '../http/route-contract.ts'
import { checkResponseFormat, ChunkEncoder, refuseUnsupported, toChatRequest, toCompletion } from '../openai/chat-completions.ts'
import { ChatCompletion, ChatCompletionBody, OpenAIErrorBody } from '../schemas/openai.ts'
import { answerChat } from './chat-answer.ts'

/** Errors of the scope in OpenAI's shape, so OpenAI clients raise the right error class. */
export function openAIErrors (app: FastifyInstance): void {
  app.setErrorHandler((error, request, reply) => {
    const { statusCode, headers, body } = toOpenAIError(error)
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    void reply.code(statusCode).headers(headers).send(body)
  })
}

export const openaiRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  openAIErrors(app)
  app.setNotFoundHandler(async request => {
    throw routeMiss(app, request, `Unknown request URL: ${request.method} ${request.url.split('?')[0]}`)
  })

  app.post('/chat/completions', {
    preValidation: async request => {
      refuseUnsupported(request.body)
      checkResponseFormat(request.body)
    },
    schema: {
      summary: 'OpenAI Chat Completions, answered by claude -p (streaming with stream: true).',
      body: ChatCompletionBody,
      response: {
        200: {
          description: 'A `chat.completion`; with `stream: true` an event stream of `chat.completion.chunk`s (`data: <json>`), then `data: [DONE]`.',
          content: { 'application/json': { schema: ChatCompletion }, 'text/event-stream': { schema: Type.String() } },
        },
        400: OpenAIErrorBody,
        ...Object.fromEntries([401, 404, 429, 500, 502, 503, 504].map(status => [status, OpenAIErrorBody])),
      },
    },
  }, async (request, reply) => {
    const body = request.body
    return answerChat(ctx, request, reply, toChatRequest(body), {
      json: toCompletion,
      stream: () => new ChunkEncoder({ includeUsage: body.stream_options?.include_usage === true }),
      error: toOpenAIError,
    })
  })
}
