import { AppError } from '../errors.ts'
import { toOpenAIError } from '../http/api-errors.ts'
import type { SseFrame } from '../http/sse.ts'
import type { ResponseCreateBody, ResponseObject } from '../schemas/responses.ts'
import { effortOf, isObject } from './chat-completions.ts'
import type { ChatOutcome, ChatRequest, ChatRun, KeptAnswer, RunUsage } from './chat-service.ts'
import { partsText, toAgentPrompt, unsupportedPart, type Turn } from './transcript.ts'

/*
 * The OpenAI Responses adapter: its request onto a ChatRequest, the answer onto a `response`
 * object, and its deltas onto the API's event sequence (response.created, ...in_progress,
 * output_item.added, content_part.added, output_text.delta..., output_text.done,
 * content_part.done, output_item.done, response.completed), each with its sequence_number.
 */

/** What a response echoes of its request, kept with a stored one so GET answers the same. */
export interface ResponseEcho {
  instructions: string | null
  metadata: Record<string, string>
  format: Record<string, unknown>
  effort: string | null
  toolChoice: string
}

/** What the API can end a response with, and how the response says it. */
type Ending =
  | { status: 'completed' | 'incomplete', text: string, usage: RunUsage }
  | { status: 'failed', text: string | undefined, usage: RunUsage | null, error: { code: string, message: string } }
  | { status: 'queued' | 'in_progress', text: undefined, usage: null }
  | { status: 'cancelled', text: undefined, usage: RunUsage | null }

/**
 * Refuses what the CLI cannot do with a 400 `unsupported` naming the parameter. It runs before
 * the schema (which says the same for the OpenAPI document), on the body as parsed.
 */
export function refuseUnsupported (body: unknown): void {
  if (!isObject(body)) return
  const unsupported = (param: string, what: string): never => {
    throw new AppError('unsupported', `${param}: ${what} is not supported: Claude Code answers with text only and runs its own tools`, { details: { field: param } })
  }
  if (body.tools != null && !(Array.isArray(body.tools) && body.tools.length === 0)) unsupported('tools', 'client-side tool calling')
  if (body.tool_choice != null && body.tool_choice !== 'none' && body.tool_choice !== 'auto') unsupported('tool_choice', 'client-side tool calling')
  if (body.background === true) unsupported('background', 'a background response')
  if (body.conversation != null) unsupported('conversation', 'a conversation kept by the server')
  if (body.prompt != null) unsupported('prompt', 'a prompt template')
  if (isObject(body.reasoning) && body.reasoning.effort === 'none') unsupported('reasoning.effort', '"none" (the lowest effort of Claude Code is "low")')
  const format = isObject(body.text) ? body.text.format : undefined
  if (isObject(format) && typeof format.type === 'string' && !['text', 'json_object', 'json_schema'].includes(format.type)) {
    unsupported('text.format', `the format ${JSON.stringify(format.type)}`)
  }
  if (isObject(format) && format.type === 'json_schema' && !isObject(format.schema)) {
    throw new AppError('validation_error', 'text.format.schema is required: a JSON Schema object (draft-07) the answer must match', { details: { field: 'text.format.schema' } })
  }
  if (!Array.isArray(body.input)) return
  for (const [index, item] of body.input.entries()) {
    if (!isObject(item)) continue
    if (item.type !== undefined && item.type !== 'message') unsupported(`input.${index}`, `an input item of type ${JSON.stringify(item.type)} (only messages are)`)
    if (!Array.isArray(item.content)) continue
    for (const [partIndex, part] of item.content.entries()) {
      if (isObject(part) && typeof part.type === 'string' && !['input_text', 'output_text', 'refusal'].includes(part.type)) {
        throw unsupportedPart(`input.${index}.content.${partIndex}`, part.type)
      }
    }
  }
}

export function toResponseRequest (body: ResponseCreateBody): { request: ChatRequest, echo: ResponseEcho } {
  const turns: Turn[] = []
  if (body.instructions != null) turns.push({ role: 'system', text: body.instructions, field: 'instructions' })
  if (typeof body.input === 'string') {
    turns.push({ role: 'user', text: body.input, field: 'input' })
  } else {
    for (const [index, item] of body.input.entries()) {
      const field = `input.${index}.content`
      const text = typeof item.content === 'string' ? item.content : partsText(item.content, field, ['input_text', 'output_text'])
      turns.push({ role: item.role === 'developer' ? 'system' : item.role, text, field })
    }
  }
  const { prompt, system } = toAgentPrompt(turns, 'input')
  const format = body.text?.format ?? { type: 'text' }
  const jsonSchema = format.type === 'json_schema' ? format.schema : format.type === 'json_object' ? { type: 'object' } : undefined
  const echo: ResponseEcho = {
    instructions: body.instructions ?? null,
    metadata: body.metadata ?? {},
    format: format.type === 'json_schema' ? { strict: false, ...format } : format,
    effort: body.reasoning?.effort ?? null,
    toolChoice: typeof body.tool_choice === 'string' ? body.tool_choice : 'auto',
  }
  return {
    request: {
      api: 'responses',
      model: body.model,
      prompt,
      system,
      stream: body.stream === true,
      jsonSchema,
      jsonSchemaParam: 'text.format.schema',
      effort: effortOf(body.reasoning?.effort),
      store: body.store !== false,
      echo: { ...echo },
    },
    echo,
  }
}

/** The response a finished call answers with. */
export function toResponse (outcome: ChatOutcome, echo: ResponseEcho, store: boolean): ResponseObject {
  return responseObject({ id: outcome.id, created: outcome.created, model: outcome.model }, echo, store, endingOf(outcome))
}

/** A stored response read back, as its call answered it (or as it stands, while it runs). */
export function toKeptResponse (kept: KeptAnswer): ResponseObject {
  const echo = (kept.record.chat?.echo ?? {}) as unknown as ResponseEcho
  switch (kept.state) {
    case 'completed':
      return toResponse(kept.outcome, echo, true)
    case 'failed': {
      const { code, message } = kept.error
      return responseObject(kept, echo, true, { status: 'failed', text: undefined, usage: kept.usage, error: { code, message } })
    }
    case 'cancelled':
      return responseObject(kept, echo, true, { status: 'cancelled', text: undefined, usage: kept.usage })
    default:
      return responseObject(kept, echo, true, { status: kept.state, text: undefined, usage: null })
  }
}

function endingOf (outcome: ChatOutcome): Ending {
  return { status: outcome.finishReason === 'length' ? 'incomplete' : 'completed', text: outcome.content, usage: outcome.usage }
}

/** The id of a response's one message: derived from the response's, so a stored one reads back the same. */
const messageId = (responseId: string): string => `msg_${responseId.slice('resp_'.length)}`

function responseObject (head: { id: string, created: number, model: string }, echo: ResponseEcho, store: boolean, ending: Ending): ResponseObject {
  const itemStatus = ending.status === 'completed' ? 'completed' : ending.status === 'queued' || ending.status === 'in_progress' ? 'in_progress' : 'incomplete'
  return {
    id: head.id,
    object: 'response',
    created_at: head.created,
    status: ending.status,
    background: false,
    error: ending.status === 'failed' ? ending.error : null,
    incomplete_details: ending.status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: echo.instructions ?? null,
    max_output_tokens: null,
    model: head.model,
    output: ending.text === undefined ? [] : [{ type: 'message', id: messageId(head.id), status: itemStatus, role: 'assistant', content: [outputText(ending.text)] }],
    parallel_tool_calls: false,
    previous_response_id: null,
    reasoning: { effort: echo.effort ?? null, summary: null },
    store,
    temperature: null,
    text: { format: echo.format ?? { type: 'text' } },
    tool_choice: echo.toolChoice ?? 'auto',
    tools: [],
    top_p: null,
    truncation: 'disabled',
    usage: ending.usage === null ? null : responseUsage(ending.usage),
    user: null,
    metadata: echo.metadata ?? {},
  }
}

const outputText = (text: string) => ({ type: 'output_text' as const, text, annotations: [], logprobs: [] })

/** The Responses API counts every token the model read as input (cached ones too), like Chat Completions. */
export function responseUsage (usage: RunUsage): NonNullable<ResponseObject['usage']> {
  const input = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: usage.cache_read_input_tokens },
    output_tokens: usage.output_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input + usage.output_tokens,
  }
}

/**
 * The events of one streamed response. The response is announced (created, in_progress, its
 * message and text part) with the first delta or at the end, not before, so a call refused early
 * still gets a plain error with its status.
 */
export class ResponseEventEncoder {
  readonly #echo: ResponseEcho
  readonly #store: boolean
  #sequence = 0
  #started = false
  #text = ''

  constructor (echo: ResponseEcho, store: boolean) {
    this.#echo = echo
    this.#store = store
  }

  delta (run: ChatRun, text: string): SseFrame[] {
    const frames = this.#start(run)
    this.#text += text
    frames.push(this.#event('response.output_text.delta', { ...this.#part(run), delta: text, logprobs: [] }))
    return frames
  }

  finish (run: ChatRun, outcome: ChatOutcome): SseFrame[] {
    // Nothing was relayed (an empty answer, or a result with no deltas): the answer is one delta.
    const frames = this.#text === '' && outcome.content !== '' ? this.delta(run, outcome.content) : this.#start(run)
    const ending = endingOf({ ...outcome, content: this.#text })
    const done = responseObject(run, this.#echo, this.#store, ending)
    const item = done.output[0]!
    frames.push(
      this.#event('response.output_text.done', { ...this.#part(run), text: this.#text, logprobs: [] }),
      this.#event('response.content_part.done', { ...this.#part(run), part: outputText(this.#text) }),
      this.#event('response.output_item.done', { output_index: 0, item }),
      this.#event(ending.status === 'completed' ? 'response.completed' : 'response.incomplete', { response: done })
    )
    return frames
  }

  /** Ends a stream that already started: the response failed, with what was said so far. */
  fail (run: ChatRun, error: unknown): SseFrame[] {
    const frames = this.#start(run)
    const { code, message } = toOpenAIError(error).body.error
    const failed = responseObject(run, this.#echo, this.#store, { status: 'failed', text: this.#text, usage: null, error: { code: code ?? 'server_error', message } })
    frames.push(this.#event('response.failed', { response: failed }))
    return frames
  }

  #start (run: ChatRun): SseFrame[] {
    if (this.#started) return []
    this.#started = true
    const created = responseObject(run, this.#echo, this.#store, { status: 'in_progress', text: undefined, usage: null })
    const item = { type: 'message', id: messageId(run.id), status: 'in_progress', role: 'assistant', content: [] }
    return [
      this.#event('response.created', { response: created }),
      this.#event('response.in_progress', { response: created }),
      this.#event('response.output_item.added', { output_index: 0, item }),
      this.#event('response.content_part.added', { ...this.#part(run), part: outputText('') }),
    ]
  }

  #part (run: ChatRun): { item_id: string, output_index: number, content_index: number } {
    return { item_id: messageId(run.id), output_index: 0, content_index: 0 }
  }

  #event (type: string, fields: Record<string, unknown>): SseFrame {
    return { event: type, data: JSON.stringify({ type, ...fields, sequence_number: this.#sequence++ }) }
  }
}
