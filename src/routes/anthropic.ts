import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { estimateTokens, MessageEventEncoder, refuseUnsupported, toMessage, toMessageRequest } from '../anthropic/messages.ts'
import { toAnthropicError } from '../http/api-errors.ts'
import { AnthropicErrorBody, AnthropicMessage, MessageCountTokensBody, MessageCreateBody, TokenCount } from '../schemas/anthropic.ts'
import { answerChat } from './chat-answer.ts'

/** Every status an Anthropic-shaped error comes with (toAnthropicError), documented with its body. */
const errors = (statuses: number[]) => Object.fromEntries(statuses.map(status => [status, AnthropicErrorBody]))

/**
 * Anthropic's Messages API. Its errors, the authentication's 401 included, are in Anthropic's
 * shape and statuses: this scope's error handler formats whatever its routes and hooks throw.
 */
export const anthropicRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  app.setErrorHandler((error, request, reply) => {
    const { statusCode, headers, body } = toAnthropicError(error)
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    void reply.code(statusCode).headers(headers).send(body)
  })

  app.post('/messages', {
    preValidation: async request => { refuseUnsupported(request.body) },
    schema: {
      summary: 'Anthropic Messages, answered by claude -p (streaming with stream: true). `anthropic-version` is accepted, whatever it says.',
      body: MessageCreateBody,
      response: {
        200: {
          description: 'A `message`; with `stream: true` an event stream (`event: <type>`, `data: <json>`) from `message_start` to `message_stop`, or to an `error` event.',
          content: { 'application/json': { schema: AnthropicMessage }, 'text/event-stream': { schema: Type.String() } },
        },
        ...errors([400, 401, 403, 404, 413, 415, 429, 500, 504, 529]),
      },
    },
  }, async (request, reply) => {
    return answerChat(ctx, request, reply, toMessageRequest(request.body), {
      json: toMessage,
      stream: () => new MessageEventEncoder(),
      error: toAnthropicError,
    })
  })

  app.post('/messages/count_tokens', {
    preValidation: async request => { refuseUnsupported(request.body) },
    schema: {
      summary: 'An estimate of the input tokens of the request\'s own text (about 4 bytes a token), not a count: Claude Code adds its own system prompt and tools.',
      body: MessageCountTokensBody,
      response: { 200: TokenCount, ...errors([400, 401, 403, 404, 413, 415]) },
    },
  }, async request => {
    ctx.chat.checkModel(request.body.model)
    return { input_tokens: estimateTokens(request.body) }
  })
}
