import { AppError } from '../errors.ts'
import { toAnthropicError } from '../http/api-errors.ts'
import type { SseFrame } from '../http/sse.ts'
import { isObject } from '../openai/chat-completions.ts'
import type { ChatOutcome, ChatRequest, ChatRun, RunUsage } from '../openai/chat-service.ts'
import { partsText, toAgentPrompt, unsupportedPart, type Turn } from '../openai/transcript.ts'
import type { AnthropicMessage, MessageCountTokensBody, MessageCreateBody } from '../schemas/anthropic.ts'

/*
 * The Anthropic Messages adapter: its request onto a ChatRequest, the answer onto a `message`,
 * and its deltas onto the API's events (message_start, content_block_start, ping,
 * content_block_delta..., content_block_stop, message_delta, message_stop).
 */

/**
 * Refuses what the CLI cannot do with a 400 `unsupported` naming it. It runs before the schema
 * (which says the same for the OpenAPI document), on the body as parsed.
 */
export function refuseUnsupported (body: unknown): void {
  if (!isObject(body)) return
  const unsupported = (param: string, what: string): never => {
    throw new AppError('unsupported', `${param}: ${what} is not supported: Claude Code answers with text only and runs its own tools`, { details: { field: param } })
  }
  if (body.tools != null && !(Array.isArray(body.tools) && body.tools.length === 0)) unsupported('tools', 'client tools')
  if (isObject(body.tool_choice) && body.tool_choice.type !== 'auto' && body.tool_choice.type !== 'none') unsupported('tool_choice', 'client tools')
  if (Array.isArray(body.mcp_servers) && body.mcp_servers.length > 0) unsupported('mcp_servers', 'MCP servers named by the request')
  const format = isObject(body.output_config) ? body.output_config.format : undefined
  if (isObject(format) && format.type !== 'json_schema') unsupported('output_config.format', `the format ${JSON.stringify(format.type)}`)
  if (isObject(format) && !isObject(format.schema)) {
    throw new AppError('validation_error', 'output_config.format.schema is required: a JSON Schema object (draft-07) the answer must match', { details: { field: 'output_config.format.schema' } })
  }
  const textOnly = (blocks: unknown, field: string): void => {
    if (!Array.isArray(blocks)) return
    for (const [index, block] of blocks.entries()) {
      if (isObject(block) && typeof block.type === 'string' && block.type !== 'text') throw unsupportedPart(`${field}.${index}`, block.type)
    }
  }
  textOnly(body.system, 'system')
  if (!Array.isArray(body.messages)) return
  for (const [index, message] of body.messages.entries()) {
    if (isObject(message)) textOnly(message.content, `messages.${index}.content`)
  }
}

function turnsOf (body: MessageCountTokensBody): Turn[] {
  const turns: Turn[] = []
  if (body.system !== undefined) {
    turns.push({ role: 'system', text: typeof body.system === 'string' ? body.system : partsText(body.system, 'system', ['text']), field: 'system' })
  }
  for (const [index, message] of body.messages.entries()) {
    const field = `messages.${index}.content`
    turns.push({ role: message.role, text: typeof message.content === 'string' ? message.content : partsText(message.content, field, ['text']), field })
  }
  return turns
}

export function toMessageRequest (body: MessageCreateBody): ChatRequest {
  const { prompt, system } = toAgentPrompt(turnsOf(body), 'messages')
  return {
    api: 'messages',
    model: body.model,
    prompt,
    system,
    stream: body.stream === true,
    jsonSchema: body.output_config?.format?.schema,
    jsonSchemaParam: 'output_config.format.schema',
    effort: body.output_config?.effort ?? undefined,
  }
}

/**
 * An estimate of the input tokens of the request's own text (about 4 bytes of UTF-8 a token), not
 * a count: Claude Code adds its own system prompt and tools, which this does not see.
 */
export function estimateTokens (body: MessageCountTokensBody): number {
  const turns = turnsOf(body)
  // Refused as the same request to /v1/messages would be.
  toAgentPrompt(turns, 'messages')
  const bytes = turns.reduce((sum, turn) => sum + Buffer.byteLength(turn.text), 0)
  return Math.max(1, Math.ceil(bytes / 4))
}

const usageOf = (usage: RunUsage): AnthropicMessage['usage'] => ({
  input_tokens: usage.input_tokens,
  output_tokens: usage.output_tokens,
  cache_creation_input_tokens: usage.cache_creation_input_tokens,
  cache_read_input_tokens: usage.cache_read_input_tokens,
})

const stopReason = (outcome: ChatOutcome): AnthropicMessage['stop_reason'] => outcome.finishReason === 'length' ? 'max_tokens' : 'end_turn'

export function toMessage (outcome: ChatOutcome): AnthropicMessage {
  return {
    id: outcome.id,
    type: 'message',
    role: 'assistant',
    model: outcome.model,
    content: [{ type: 'text', text: outcome.content }],
    stop_reason: stopReason(outcome),
    stop_sequence: null,
    usage: usageOf(outcome.usage),
  }
}

/**
 * The events of one streamed message: one text block, joined from the agent's text blocks as in
 * the answer. The message starts with the first delta or at the end, so a call refused early still
 * gets a plain error with its status; the usage comes with message_delta (the CLI reports it at
 * the end), which Anthropic's clients read as the whole message's.
 */
export class MessageEventEncoder {
  #started = false
  #sent = false

  delta (run: ChatRun, text: string): SseFrame[] {
    this.#sent = true
    return [...this.#start(run), event('content_block_delta', { index: 0, delta: { type: 'text_delta', text } })]
  }

  finish (run: ChatRun, outcome: ChatOutcome): SseFrame[] {
    const frames = !this.#sent && outcome.content !== '' ? this.delta(run, outcome.content) : this.#start(run)
    frames.push(
      event('content_block_stop', { index: 0 }),
      event('message_delta', { delta: { stop_reason: stopReason(outcome), stop_sequence: null }, usage: usageOf(outcome.usage) }),
      event('message_stop', {})
    )
    return frames
  }

  /** Ends a stream that already started: an `error` event, which Anthropic's clients raise. */
  fail (_run: ChatRun, error: unknown): SseFrame[] {
    return [{ event: 'error', data: JSON.stringify(toAnthropicError(error).body) }]
  }

  #start (run: ChatRun): SseFrame[] {
    if (this.#started) return []
    this.#started = true
    const message = { id: run.id, type: 'message', role: 'assistant', model: run.model, content: [], stop_reason: null, stop_sequence: null, usage: usageOf({ input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 }) }
    return [
      event('message_start', { message }),
      event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      event('ping', {}),
    ]
  }
}

function event (type: string, fields: Record<string, unknown>): SseFrame {
  return { event: type, data: JSON.stringify({ type, ...fields }) }
}
