import type { EffortLevel } from '../agent/agent-controls.ts'
import { AppError } from '../errors.ts'
import { toOpenAIError } from '../http/api-errors.ts'
import type { SseFrame } from '../http/sse.ts'
import type { ChatCompletion, ChatCompletionBody } from '../schemas/openai.ts'
import type { ChatOutcome, ChatRequest, ChatRun, RunUsage } from './chat-service.ts'
import { partsText, toAgentPrompt, unsupportedPart, type Turn } from './transcript.ts'

/*
 * The OpenAI Chat Completions adapter: its request onto a ChatRequest, the answer and its deltas
 * onto `chat.completion` and `chat.completion.chunk`s.
 */

/** A Chat Completions message, as validated by the route's schema. */
export interface ChatMessage {
  role: string
  content?: string | Array<{ type: string, text?: unknown, refusal?: unknown }> | null | undefined
  name?: string | undefined
  tool_call_id?: string | undefined
  tool_calls?: unknown[] | null | undefined
  refusal?: string | null | undefined
}

export const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * Refuses what the CLI cannot do with a 400 `unsupported` naming the parameter and saying why. It
 * runs before schema validation (which says the same for the OpenAPI document), on the body as
 * parsed, so it checks every type it reads.
 */
export function refuseUnsupported (body: unknown): void {
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
        throw unsupportedPart(`messages.${index}.content.${partIndex}`, part.type)
      }
    }
  }
}

/** A json_schema format without its schema: said plainly, not as the schema's failed `anyOf` of formats. */
export function checkResponseFormat (body: unknown): void {
  if (!isObject(body) || !isObject(body.response_format) || body.response_format.type !== 'json_schema') return
  const { json_schema: format } = body.response_format
  if (!isObject(format) || !isObject(format.schema)) {
    throw new AppError('validation_error', 'response_format.json_schema.schema is required: a JSON Schema object (draft-07) the answer must match', { details: { field: 'response_format.json_schema.schema' } })
  }
}

/** OpenAI's effort levels onto Claude Code's: `minimal` runs as `low` (`none` is refused before). */
export function effortOf (effort: string | null | undefined): EffortLevel | undefined {
  if (effort == null) return undefined
  return (effort === 'minimal' ? 'low' : effort) as EffortLevel
}

export function toChatRequest (body: ChatCompletionBody): ChatRequest {
  const { prompt, system } = toAgentPrompt(body.messages.map(toTurn), 'messages')
  const format = body.response_format
  const jsonSchema = format?.type === 'json_schema'
    ? format.json_schema.schema
    : format?.type === 'json_object' ? { type: 'object' } : undefined
  return {
    api: 'chat.completions',
    model: body.model,
    prompt,
    system,
    stream: body.stream === true,
    jsonSchema,
    jsonSchemaParam: 'response_format.json_schema.schema',
    effort: effortOf(body.reasoning_effort),
  }
}

function toTurn (message: ChatMessage, index: number): Turn {
  const field = `messages.${index}.content`
  const { content } = message
  const text = content === undefined || content === null
    ? message.refusal ?? ''
    : typeof content === 'string' ? content : partsText(content, field, ['text'])
  switch (message.role) {
    case 'system':
    case 'developer':
      return { role: 'system', text, field }
    case 'user':
      return { role: 'user', text, field, name: message.name }
    case 'assistant': {
      const calls = (message.tool_calls ?? []).map(call => `(called a tool: ${JSON.stringify(call)})`)
      return { role: 'assistant', text: [text, ...calls].filter(part => part !== '').join('\n'), field, name: message.name }
    }
    case 'tool':
    case 'function':
      return { role: 'tool', text, field, name: message.name, toolCallId: message.tool_call_id }
    default:
      throw new AppError('validation_error', `messages[${index}].role ${JSON.stringify(message.role)} is not one of system, developer, user, assistant, tool`, { details: { field: `messages.${index}.role` } })
  }
}

export interface ChatUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details: { cached_tokens: number }
}

/**
 * OpenAI usage from the CLI's: every input token the model read (fresh, read from cache, written
 * to cache) is a prompt token; output tokens are completion tokens.
 */
export function chatUsage (usage: RunUsage): ChatUsage {
  const prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
  return { prompt_tokens: prompt, completion_tokens: usage.output_tokens, total_tokens: prompt + usage.output_tokens, prompt_tokens_details: { cached_tokens: usage.cache_read_input_tokens } }
}

export function toCompletion (outcome: ChatOutcome): ChatCompletion {
  return {
    id: outcome.id,
    object: 'chat.completion',
    created: outcome.created,
    model: outcome.model,
    system_fingerprint: null,
    choices: [{ index: 0, message: { role: 'assistant', content: outcome.content, refusal: null }, logprobs: null, finish_reason: outcome.finishReason }],
    usage: chatUsage(outcome.usage),
  }
}

/**
 * The `chat.completion.chunk`s of a streamed answer: a role chunk before the first delta, the
 * deltas, then the finish chunk (and a usage chunk when asked for).
 */
export class ChunkEncoder {
  readonly #includeUsage: boolean
  #roleSent = false

  constructor (options: { includeUsage: boolean }) {
    this.#includeUsage = options.includeUsage
  }

  delta (run: ChatRun, text: string): SseFrame[] {
    return [...this.#role(run), this.#chunk(run, { content: text }, null)]
  }

  finish (run: ChatRun, outcome: ChatOutcome): SseFrame[] {
    const chunks = [...this.#role(run), this.#chunk(run, {}, outcome.finishReason)]
    if (this.#includeUsage) {
      chunks.push({ data: JSON.stringify({ id: run.id, object: 'chat.completion.chunk', created: run.created, model: run.model, system_fingerprint: null, choices: [], usage: chatUsage(outcome.usage) }) })
    }
    chunks.push({ data: '[DONE]' })
    return chunks
  }

  /** Ends a stream that already started: an error event, which OpenAI's clients raise. */
  fail (_run: ChatRun, error: unknown): SseFrame[] {
    return [{ data: JSON.stringify(toOpenAIError(error).body) }]
  }

  #role (run: ChatRun): SseFrame[] {
    if (this.#roleSent) return []
    this.#roleSent = true
    return [this.#chunk(run, { role: 'assistant', content: '' }, null)]
  }

  #chunk (run: ChatRun, delta: Record<string, string>, finishReason: string | null): SseFrame {
    return {
      data: JSON.stringify({
        id: run.id,
        object: 'chat.completion.chunk',
        created: run.created,
        model: run.model,
        system_fingerprint: null,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
        ...(this.#includeUsage ? { usage: null } : {}),
      })
    }
  }
}
