import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import type { AppContext } from '../app.ts'
import { AppError, RunCancelledError } from '../errors.ts'
import { toHttpError } from '../http/errors.ts'
import { routeMiss } from '../http/route-contract.ts'
import { SseStream } from '../http/sse.ts'
import { ClientGoneError, type ChatOutcome, type ChatRequest, type ChatRun } from '../openai/chat-service.ts'
import { ChatCompletion, ChatCompletionBody, ModelList, ModelObject, OpenAIErrorBody } from '../schemas/openai.ts'

/** Errors in OpenAI's shape, so OpenAI clients raise the right error class. */
export function toOpenAIError (error: unknown): { statusCode: number, headers: Record<string, string>, body: { error: { message: string, type: string, param: string | null, code: string | null } } } {
  const http = toHttpError(error)
  const type = http.statusCode === 429
    ? 'rate_limit_error'
    : http.statusCode >= 500 ? 'server_error' : http.statusCode === 401 ? 'authentication_error' : 'invalid_request_error'
  const code = http.code === 'unauthorized' ? 'invalid_api_key' : http.code
  const param = typeof http.details.field === 'string' ? http.details.field : null
  return { statusCode: http.statusCode, headers: http.headers, body: { error: { message: http.message, type, param, code } } }
}

/**
 * Refuses what the CLI cannot do with a 400 `unsupported` naming the parameter and saying why. It
 * runs before schema validation (which says the same for the OpenAPI document), on the body as
 * parsed, so it checks every type it reads.
 */
function refuseUnsupported (body: unknown): void {
  if (!isObject(body)) return
  const unsupported = (param: string, what: string): never => {
    throw new AppError('unsupported', `${param}: ${what} is not supported: Claude Code answers with text only, one choice, and runs its own tools`, { details: { field: param } })
  }
  if (typeof body.n === 'number' && body.n > 1) unsupported('n', 'more than one choice')
  for (const param of ['tools', 'functions'] as const) {
    const value = body[param]
    if (value != null && !(Array.isArray(value) && value.length === 0)) unsupported(param, 'client-side tool calling')
  }
  for (const param of ['tool_choice', 'function_call'] as const) {
    const value = body[param]
    if (value != null && value !== 'none') unsupported(param, 'client-side tool calling')
  }
  if (body.audio != null || (Array.isArray(body.modalities) && body.modalities.includes('audio'))) unsupported('modalities', 'audio output')
  if (body.logprobs === true) unsupported('logprobs', 'log probabilities')
  // The CLI cannot stop the model at a sequence, and cutting the answer afterwards would hide
  // that the agent went on (and ran tools) past it.
  if (body.stop != null && !(Array.isArray(body.stop) && body.stop.length === 0)) unsupported('stop', 'stopping at a sequence')
  if (body.reasoning_effort === 'none') unsupported('reasoning_effort', '"none" (the lowest effort of Claude Code is "low")')
  const format = body.response_format
  if (isObject(format) && typeof format.type === 'string' && !['text', 'json_object', 'json_schema'].includes(format.type)) {
    unsupported('response_format', `the response format ${JSON.stringify(format.type)}`)
  }
  if (!Array.isArray(body.messages)) return
  for (const [index, message] of body.messages.entries()) {
    if (!isObject(message) || !Array.isArray(message.content)) continue
    for (const [partIndex, part] of message.content.entries()) {
      if (isObject(part) && typeof part.type === 'string' && part.type !== 'text' && part.type !== 'refusal') {
        throw new AppError('unsupported', `messages[${index}].content[${partIndex}] is of type ${JSON.stringify(part.type)}: only text content is supported (no images, audio or files)`, { details: { field: `messages.${index}.content.${partIndex}` } })
      }
    }
  }
}

/** A json_schema format without its schema: said plainly, not as the schema's failed `anyOf` of formats. */
function checkResponseFormat (body: unknown): void {
  if (!isObject(body) || !isObject(body.response_format) || body.response_format.type !== 'json_schema') return
  const { json_schema: format } = body.response_format
  if (!isObject(format) || !isObject(format.schema)) {
    throw new AppError('validation_error', 'response_format.json_schema.schema is required: a JSON Schema object (draft-07) the answer must match', { details: { field: 'response_format.json_schema.schema' } })
  }
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

/** What the request asks of the run beyond its messages: the answer's shape and the effort. */
function runOptions (body: ChatCompletionBody): Pick<ChatRequest, 'jsonSchema' | 'effort'> {
  const format = body.response_format
  const jsonSchema = format?.type === 'json_schema'
    ? format.json_schema.schema
    : format?.type === 'json_object' ? { type: 'object' } : undefined
  const effort = body.reasoning_effort == null ? undefined : body.reasoning_effort === 'minimal' ? 'low' : body.reasoning_effort
  return { jsonSchema, effort }
}

export const openaiRoutes: FastifyPluginAsyncTypebox<{ ctx: AppContext }> = async (app, { ctx }) => {
  app.setErrorHandler((error, request, reply) => {
    const { statusCode, headers, body } = toOpenAIError(error)
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    void reply.code(statusCode).headers(headers).send(body)
  })
  app.setNotFoundHandler(async request => {
    throw routeMiss(app, request, `Unknown request URL: ${request.method} ${request.url.split('?')[0]}`)
  })

  const created = Math.floor(ctx.startedAt / 1000)
  const model = (id: string) => ({ id, object: 'model' as const, created, owned_by: 'anthropic' })

  app.get('/models', {
    schema: { summary: 'The models this service offers (OPENAI_MODELS).', response: { 200: ModelList, 401: OpenAIErrorBody } },
  }, async () => ({ object: 'list' as const, data: ctx.config.openaiModels.map(model) }))

  app.get('/models/:model', {
    schema: { params: Type.Object({ model: Type.String() }), response: { 200: ModelObject, 404: OpenAIErrorBody } },
  }, async request => {
    if (!ctx.config.openaiModels.includes(request.params.model)) {
      throw new AppError('model_not_found', `The model \`${request.params.model}\` does not exist`, { details: { field: 'model' } })
    }
    return model(request.params.model)
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
    const chatRequest: ChatRequest = { model: body.model, messages: body.messages, stream: body.stream === true, ...runOptions(body) }
    await ctx.chat.check(chatRequest)
    const client = new AbortController()
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) client.abort(new RunCancelledError('client_disconnected'))
    })

    if (body.stream !== true) {
      const run = await ctx.chat.submit(chatRequest, request.caller, {}, client.signal)
      try {
        return toCompletion(await run.result)
      } catch (error) {
        if (error instanceof ClientGoneError) return reply
        throw error
      }
    }

    const includeUsage = body.stream_options?.include_usage === true
    // A client that does not read is cut off past the stream's buffer (or its write timeout): its
    // close cancels the run as the client gone, so the answer is never held whole in memory.
    const sse = new SseStream(reply.raw, { keepAliveMs: ctx.config.sseKeepAliveSeconds * 1000, writeTimeoutMs: ctx.config.sseWriteTimeoutSeconds * 1000 })
    let roleSent = false
    const chunk = (run: ChatRun, delta: Record<string, string>, finishReason: string | null): string => JSON.stringify({
      id: run.id,
      object: 'chat.completion.chunk',
      created: run.created,
      model: run.model,
      system_fingerprint: null,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      ...(includeUsage ? { usage: null } : {}),
    })
    const sendRole = (run: ChatRun): void => {
      if (roleSent) return
      roleSent = true
      sse.send(chunk(run, { role: 'assistant', content: '' }, null))
    }
    // Refusals (bad messages, unknown model, full queue) throw here, before anything is streamed.
    const run = await ctx.chat.submit(chatRequest, request.caller, {
      onDelta: (text, run) => {
        sendRole(run)
        sse.send(chunk(run, { content: text }, null))
      },
    }, client.signal)
    reply.hijack()
    sse.watch()
    try {
      const outcome = await run.result
      sendRole(run)
      sse.send(chunk(run, {}, outcome.finishReason))
      if (includeUsage) {
        sse.send(JSON.stringify({ id: run.id, object: 'chat.completion.chunk', created: run.created, model: run.model, system_fingerprint: null, choices: [], usage: outcome.usage }))
      }
      sse.send('[DONE]')
    } catch (error) {
      if (!(error instanceof ClientGoneError)) {
        const failure = toOpenAIError(error)
        if (failure.statusCode >= 500) request.log.error({ err: error }, 'chat completion failed')
        // Nothing streamed yet: a plain error with its status. Otherwise an error event ends the stream.
        if (!sse.fail(failure.statusCode, failure.body)) sse.send(JSON.stringify(failure.body))
      }
    } finally {
      sse.end()
    }
    return reply
  })
}

function toCompletion (outcome: ChatOutcome): ChatCompletion {
  return {
    id: outcome.id,
    object: 'chat.completion',
    created: outcome.created,
    model: outcome.model,
    system_fingerprint: null,
    choices: [{ index: 0, message: { role: 'assistant', content: outcome.content, refusal: null }, logprobs: null, finish_reason: outcome.finishReason }],
    usage: outcome.usage,
  }
}
