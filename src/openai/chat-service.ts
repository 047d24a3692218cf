import { randomBytes } from 'node:crypto'
import type { AgentControls, EffortLevel } from '../agent/agent-controls.ts'
import type { CliResult } from '../agent/stream-json.ts'
import { CHAT_TTL_MS, type Engine, type RunRecord } from '../engine/types.ts'
import { AppError } from '../errors.ts'
import type { Caller } from '../jobs/job-service.ts'
import { createRecord } from '../jobs/job.ts'
import { toAgentPrompt, type ChatMessage } from './transcript.ts'

export interface ChatRequest {
  model: string
  messages: readonly ChatMessage[]
  /** Relay text as it is produced (runs the CLI with --include-partial-messages). */
  stream: boolean
  /**
   * The answer must be an object matching this schema (`response_format`): its JSON text is the
   * content, sent as one delta at the end when streaming (prose before it is not relayed).
   */
  jsonSchema?: Record<string, unknown> | undefined
  effort?: EffortLevel | undefined
}

export interface ChatHandlers {
  /** A piece of the main agent's answer, in order. */
  onDelta?: (text: string, run: ChatRun) => void
}

export interface ChatUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  prompt_tokens_details: { cached_tokens: number }
}

/** A call in flight: what its chunks carry, and its end. */
export interface ChatRun {
  id: string
  created: number
  /** The model as the CLI resolved it once it started (the requested name until then). */
  readonly model: string
  /** The answer; its deltas go to `onDelta` from when this is first read. */
  readonly result: Promise<ChatOutcome>
}

export interface ChatOutcome {
  id: string
  created: number
  model: string
  content: string
  finishReason: 'stop' | 'length'
  usage: ChatUsage
}

export interface ChatServiceOptions {
  engine: Engine
  /** Checks a `response_format` schema the way the CLI will. */
  controls: AgentControls
  timeoutMs: number
  /** The answer is cut here (MAX_OUTPUT_BYTES of UTF-8), the run stopped, and `finish_reason` is `length`. */
  maxAnswerBytes: number
  systemPromptMode: 'append' | 'replace'
  models: readonly string[]
  permissionMode?: string | undefined
  now: () => number
  /** Told how each call ended: the run's status, or `client_gone`. */
  onFinished?: (outcome: string, result: CliResult | null, tenant: string) => void
}

/** A chat completion the client no longer waits for: nothing to answer. */
export class ClientGoneError extends Error {
  override name = 'ClientGoneError'
}

/** What a follower of a chat run gets: the run's answer, in pieces and whole. */
const FEED_BUFFER_BYTES = 64 * 1024 * 1024

/** What the caller of a chat run is told as its events come. */
interface Follower {
  onModel: (model: string) => void
  onDelta: ((text: string) => void) | undefined
  /** A text block of the main agent; `first` for the first one. */
  onText: ((text: string, first: boolean) => void) | undefined
}

/**
 * OpenAI Chat Completions answered by `claude -p`. Every call is one run admitted like a job: it
 * waits for a slot (on whichever replica has one), counts in /health, and its process group dies
 * when the client goes away. Its answer comes back through the run's events.
 */
export class ChatService {
  readonly #options: ChatServiceOptions

  constructor (options: ChatServiceOptions) {
    this.#options = options
  }

  /**
   * Checks the request and admits the run. Rejects when the request is refused (bad messages,
   * unknown model, full queue), before anything is answered; otherwise `result` settles with the
   * answer.
   */
  /** The checks that take time (a response_format schema is compiled off the event loop). */
  async check (request: ChatRequest): Promise<void> {
    this.checkModel(request.model)
    if (request.jsonSchema === undefined) return
    const problem = await this.#options.controls.jsonSchemaProblem(request.jsonSchema)
    if (problem !== undefined) {
      throw new AppError('validation_error', `response_format.json_schema.schema ${problem}`, { details: { field: 'response_format.json_schema.schema' } })
    }
  }

  async submit (request: ChatRequest, caller: Caller, handlers: ChatHandlers, signal: AbortSignal): Promise<ChatRun> {
    const { engine, now } = this.#options
    this.checkModel(request.model)
    const structured = request.jsonSchema !== undefined
    // Structured answers are not relayed as they come: the content must be the object's JSON.
    const relaying = request.stream && !structured
    const { prompt, system } = toAgentPrompt(request.messages)
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`
    const created = Math.floor(now() / 1000)
    const record = createRecord({
      id,
      kind: 'chat',
      tenant: caller.tenant,
      createdAt: now(),
      timeoutMs: this.#options.timeoutMs,
      execute: {
        id,
        spec: {
          prompt,
          model: request.model,
          permissionMode: this.#options.permissionMode,
          includePartialMessages: relaying,
          jsonSchema: request.jsonSchema,
          effort: request.effort,
          ...(system === undefined ? {} : this.#options.systemPromptMode === 'replace' ? { systemPrompt: system } : { appendSystemPrompt: system }),
        },
      },
      request: null,
      idempotency: null,
      callback: false,
    })
    await engine.queue.admit(record, { limits: caller.limits, keepMs: CHAT_TTL_MS })
    const onAbort = (): void => { void engine.queue.cancel(id, 'client_disconnected').catch(() => {}) }
    signal.addEventListener('abort', onAbort, { once: true })
    if (signal.aborted) onAbort()
    let model = request.model
    // The answer is bounded like a job's output: past the bound the run is stopped, and what was
    // said so far is the answer, with finish_reason "length".
    const budget = new AnswerBudget(this.#options.maxAnswerBytes)
    const take = (text: string): string => {
      const piece = budget.take(text)
      if (budget.exhausted) void engine.queue.cancel(id, 'answer_limit').catch(() => {})
      return piece
    }
    const follower: Follower = {
      onModel: found => { model = found },
      // Relayed deltas are counted as they go; otherwise the text blocks are the answer.
      onDelta: relaying ? text => { const piece = take(text); if (piece !== '') handlers.onDelta?.(piece, run) } : undefined,
      onText: relaying || structured ? undefined : (text, first) => { if (!budget.exhausted) content += take(first ? text : `\n\n${text}`) },
    }
    let content = ''
    const start = (): Promise<ChatOutcome> => this.#follow(id, follower, signal)
      .finally(() => { signal.removeEventListener('abort', onAbort) })
      .then(async () => {
        const final = await engine.store.get(id)
        const cut = budget.exhausted && !signal.aborted
        const status = cut ? 'length' : signal.aborted && final?.status === 'cancelled' ? 'client_gone' : (final?.status ?? 'cancelled')
        this.#options.onFinished?.(status, final?.result ?? null, caller.tenant)
        if (final === undefined) throw new AppError('internal_error', `the record of chat run ${id} is gone`)
        if (cut) return { id, created, model, content, finishReason: 'length' as const, usage: usageOf(final.result) }
        const done = answer(signal, final, { id, created, model, content }, structured)
        if (structured && request.stream) handlers.onDelta?.(done.content, run)
        // A final result text, when no text block was kept, is bounded too. (A structured answer
        // and a relayed one are bounded already: the result line is at most MAX_OUTPUT_BYTES,
        // and relayed deltas were counted as they went.)
        if (structured || relaying || done.content === content) return done
        const bounded = budget.take(done.content)
        return budget.exhausted ? { ...done, content: bounded, finishReason: 'length' as const } : done
      })
    let result: Promise<ChatOutcome> | undefined
    const run: ChatRun = {
      id,
      created,
      get model () { return model },
      // Following starts when the caller first asks for the result: it is then ready for the deltas.
      get result () { return (result ??= start()) },
    }
    return run
  }

  /** Follows the run's events to its end: the model it runs, the main agent's deltas and text blocks. */
  async #follow (id: string, follower: Follower, signal: AbortSignal): Promise<void> {
    const relay = follower.onDelta === undefined ? undefined : new DeltaRelay(follower.onDelta)
    let first = true
    const feed = await this.#options.engine.events.follow(id, 0, FEED_BUFFER_BYTES)
    for await (const event of feed) {
      if (event.type !== 'init' && event.type !== 'text' && event.type !== 'text_delta' && event.type !== 'text_block_start') continue
      const data = JSON.parse(event.json) as { model?: string | null, text?: string, parent_tool_use_id?: string | null }
      if (event.type === 'init') {
        if (typeof data.model === 'string') follower.onModel(data.model)
        continue
      }
      if (data.parent_tool_use_id != null) continue
      if (event.type === 'text') {
        follower.onText?.(data.text ?? '', first)
        first = false
      } else if (relay !== undefined && !signal.aborted) {
        relay.push(event.type === 'text_delta' ? { type: 'text_delta', text: data.text ?? '' } : { type: 'text_block_start' })
      }
    }
  }

  /** Listed models and anything that names a Claude model go to the CLI; others are refused. */
  checkModel (model: string): void {
    if (this.#options.models.includes(model) || /claude/i.test(model)) return
    throw new AppError('model_not_found', `The model \`${model}\` does not exist here: use one of ${this.#options.models.join(', ')} or a Claude model id`, { details: { field: 'model' } })
  }
}

/**
 * Relays text deltas of the main agent. An agent that speaks, runs a tool and speaks again
 * produces several text blocks; they are joined with a blank line, as in the non-streamed answer.
 */
class DeltaRelay {
  readonly #onDelta: (text: string) => void
  #sent = false
  #separate = false

  constructor (onDelta: (text: string) => void) {
    this.#onDelta = onDelta
  }

  push (event: { type: 'text_delta', text: string } | { type: 'text_block_start' }): void {
    if (event.type === 'text_block_start') {
      this.#separate = this.#sent
    } else if (event.type === 'text_delta' && event.text !== '') {
      if (this.#separate) this.#onDelta('\n\n')
      this.#separate = false
      this.#sent = true
      this.#onDelta(event.text)
    }
  }
}

/** Bytes of UTF-8 an answer may still take; cuts at a character boundary. */
class AnswerBudget {
  #left: number
  #exhausted = false

  constructor (bytes: number) {
    this.#left = bytes
  }

  get exhausted (): boolean {
    return this.#exhausted
  }

  take (text: string): string {
    if (this.#exhausted) return ''
    const bytes = Buffer.byteLength(text)
    if (bytes <= this.#left) {
      this.#left -= bytes
      return text
    }
    const encoded = Buffer.from(text)
    let end = this.#left
    // Never split a UTF-8 sequence: back up to the start of the character.
    while (end > 0 && (encoded[end]! & 0xc0) === 0x80) end--
    this.#left = 0
    this.#exhausted = true
    return encoded.subarray(0, end).toString('utf8')
  }
}

function answer (signal: AbortSignal, record: RunRecord, partial: { id: string, created: number, model: string, content: string }, structured: boolean): ChatOutcome {
  const { result } = record
  if (record.status === 'cancelled' && signal.aborted) throw new ClientGoneError('the client went away')
  // A structured answer cut short is no answer: its content could not be the object's JSON.
  const cutShort = !structured && (record.error?.code === 'max_turns' || record.error?.code === 'max_budget')
  if (record.status !== 'completed' && !cutShort) throw failure(record)
  if (structured) return { ...partial, content: JSON.stringify(result?.structured_output), finishReason: 'stop', usage: usageOf(result) }
  const content = partial.content !== '' ? partial.content : (typeof result?.result === 'string' ? result.result : '')
  return { ...partial, content, finishReason: cutShort ? 'length' : 'stop', usage: usageOf(result) }
}

/**
 * OpenAI usage from the CLI's: every input token the model read (fresh, read from cache, written
 * to cache) is a prompt token; output tokens are completion tokens.
 */
export function usageOf (result: CliResult | null): ChatUsage {
  const usage = (result?.usage ?? {}) as Record<string, unknown>
  const count = (key: string): number => typeof usage[key] === 'number' ? usage[key] : 0
  const cached = count('cache_read_input_tokens')
  const prompt = count('input_tokens') + cached + count('cache_creation_input_tokens')
  const completion = count('output_tokens')
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, prompt_tokens_details: { cached_tokens: cached } }
}

function failure (outcome: RunRecord): AppError {
  const message = outcome.error?.message ?? 'the agent failed'
  if (outcome.status === 'cancelled' && outcome.cancel?.reason === 'shutdown') return new AppError('shutting_down', 'the service is shutting down; retry against another instance')
  switch (outcome.error?.code) {
    case 'timeout':
      return new AppError('agent_timeout', `Claude Code did not answer in time: ${message}`)
    case 'cancelled':
      return new AppError('shutting_down', message)
    case 'structured_output_missing':
      return new AppError('structured_output_missing', `Claude Code gave no answer matching response_format: ${message}`)
    case 'api_error': {
      const status = outcome.result?.api_error_status ?? null
      if (status === 429) return new AppError('upstream_rate_limited', `the Anthropic API is rate limiting this service: ${message}`)
      if (status === 529 || status === 503) return new AppError('upstream_overloaded', `the Anthropic API is overloaded: ${message}`)
      if (status === 404) return new AppError('model_not_found', message)
      if (status === 400) return new AppError('validation_error', message)
      return new AppError('upstream_error', `the Anthropic API failed${status === null ? '' : ` (${status})`}: ${message}`)
    }
    default:
      return new AppError('agent_failed', `Claude Code failed (${outcome.error?.code ?? outcome.status}): ${message}`)
  }
}
