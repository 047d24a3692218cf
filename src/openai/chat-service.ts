import { randomBytes } from 'node:crypto'
import type { AgentControls, EffortLevel } from '../agent/agent-controls.ts'
import type { CliResult } from '../agent/stream-json.ts'
import { CHAT_TTL_MS, isTerminal, type Engine, type RunRecord } from '../engine/types.ts'
import { AppError } from '../errors.ts'
import type { Caller } from '../jobs/job-service.ts'
import { AnswerBudget } from '../jobs/answer-text.ts'
import { createRecord } from '../jobs/job.ts'

/** The wire protocols chats come in by; each has an adapter that maps it onto a ChatRequest. */
export type ChatApi = 'chat.completions' | 'responses' | 'messages'

const ID_PREFIX: Record<ChatApi, string> = { 'chat.completions': 'chatcmpl-', responses: 'resp_', messages: 'msg_' }

/** One question to the agent, whichever protocol it came in by. */
export interface ChatRequest {
  api: ChatApi
  model: string
  /** What goes to the CLI on stdin (see transcript.ts). */
  prompt: string
  /** System turns: appended to Claude Code's system prompt, or replacing it (OPENAI_SYSTEM_PROMPT_MODE). */
  system?: string | undefined
  /** Relay text as it is produced (runs the CLI with --include-partial-messages). */
  stream: boolean
  /**
   * The answer must be an object matching this schema: its JSON text is the content, sent as one
   * delta at the end when streaming (prose before it is not relayed).
   */
  jsonSchema?: Record<string, unknown> | undefined
  /** The request's parameter that carried `jsonSchema`, named when the schema is refused. */
  jsonSchemaParam?: string | undefined
  effort?: EffortLevel | undefined
  /** Keep the answer to be read back (`kept`) for JOB_TTL_SECONDS; otherwise it is kept a minute. */
  store?: boolean | undefined
  /** Plain JSON kept with a stored answer, for the adapter that reads it back. */
  echo?: Record<string, unknown> | undefined
}

export interface ChatHandlers {
  /** A piece of the main agent's answer, in order. */
  onDelta?: (text: string, run: ChatRun) => void
}

/** Token counts as the CLI reports them (Anthropic's meaning: `input_tokens` excludes the cache). */
export interface RunUsage {
  input_tokens: number
  output_tokens: number
  cache_read_input_tokens: number
  cache_creation_input_tokens: number
}

/** A call in flight: what its chunks carry, and its end. */
export interface ChatRun {
  id: string
  /** Unix seconds. */
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
  /** `length`: cut at MAX_OUTPUT_BYTES, or the CLI stopped at its turn or budget limit. */
  finishReason: 'stop' | 'length'
  usage: RunUsage
}

/** A stored answer read back: still to come, or how it ended. */
export type KeptAnswer =
  | { state: 'queued' | 'in_progress', record: RunRecord, id: string, created: number, model: string }
  | { state: 'completed', record: RunRecord, outcome: ChatOutcome }
  | { state: 'failed', record: RunRecord, id: string, created: number, model: string, error: AppError, usage: RunUsage }
  | { state: 'cancelled', record: RunRecord, id: string, created: number, model: string, usage: RunUsage }

export interface ChatServiceOptions {
  engine: Engine
  /** Checks a response schema the way the CLI will. */
  controls: AgentControls
  timeoutMs: number
  /** How long a stored answer is kept (JOB_TTL_SECONDS). */
  storeMs: number
  /** The answer is cut here (MAX_OUTPUT_BYTES of UTF-8), the run stopped, and `finish_reason` is `length`. */
  maxAnswerBytes: number
  systemPromptMode: 'append' | 'replace'
  models: readonly string[]
  permissionMode?: string | undefined
  now: () => number
  /** Told how each call ended: the run's status, or `client_gone`, or `length`. */
  onFinished?: (api: ChatApi, outcome: string, result: CliResult | null, tenant: string) => void
}

/** A chat the client no longer waits for: nothing to answer. */
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
 * Chats answered by `claude -p`, whichever protocol they came in by (the adapters in openai/ and
 * anthropic/ map theirs onto a ChatRequest). Every call is one run admitted like a job: it waits
 * for a slot (on whichever replica has one), counts in /health, and its process group dies when
 * the client goes away. Its answer comes back through the run's events; a stored one is read
 * back from the run's record and events, on any replica, while the engine keeps them.
 */
export class ChatService {
  readonly #options: ChatServiceOptions

  constructor (options: ChatServiceOptions) {
    this.#options = options
  }

  /** The checks that take time (a response schema is compiled off the event loop). */
  async check (request: ChatRequest): Promise<void> {
    this.checkModel(request.model)
    if (request.jsonSchema === undefined) return
    const problem = await this.#options.controls.jsonSchemaProblem(request.jsonSchema)
    if (problem !== undefined) {
      const param = request.jsonSchemaParam ?? 'json_schema'
      throw new AppError('validation_error', `${param} ${problem}`, { details: { field: param } })
    }
  }

  /**
   * Admits the run. Rejects when the request is refused (unknown model, full queue), before
   * anything is answered; otherwise `result` settles with the answer.
   */
  async submit (request: ChatRequest, caller: Caller, handlers: ChatHandlers, signal: AbortSignal): Promise<ChatRun> {
    const { engine, now } = this.#options
    this.checkModel(request.model)
    const structured = request.jsonSchema !== undefined
    // Structured answers are not relayed as they come: the content must be the object's JSON.
    const relaying = request.stream && !structured
    const id = `${ID_PREFIX[request.api]}${randomBytes(24).toString('hex')}`
    const created = Math.floor(now() / 1000)
    const { system } = request
    const record = createRecord({
      id,
      kind: 'chat',
      tenant: caller.tenant,
      createdAt: now(),
      timeoutMs: this.#options.timeoutMs,
      execute: {
        id,
        spec: {
          prompt: request.prompt,
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
    const stored = request.store === true
    record.chat = { api: request.api, stored, echo: stored ? request.echo ?? null : null }
    await engine.queue.admit(record, { limits: caller.limits, keepMs: stored ? this.#options.storeMs : CHAT_TTL_MS })
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
        this.#options.onFinished?.(request.api, status, final?.result ?? null, caller.tenant)
        if (final === undefined) throw new AppError('internal_error', `the record of chat run ${id} is gone`)
        if (final.status === 'cancelled' && signal.aborted) throw new ClientGoneError('the client went away')
        const done = outcomeOf(final, { id, created, model, content }, { structured, cut })
        if (structured && request.stream) handlers.onDelta?.(done.content, run)
        // A final result text, when no text block was kept, is bounded too. (A structured answer
        // and a relayed one are bounded already: the result line is at most MAX_OUTPUT_BYTES,
        // and relayed deltas were counted as they went.)
        if (cut || structured || relaying || done.content === content) return done
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

  /**
   * A stored answer of `api` the caller may see, rebuilt from its run's record as the call itself
   * answered it; undefined when there is none (never stored, expired, deleted, or another
   * tenant's).
   */
  async kept (id: string, api: ChatApi, caller: Caller): Promise<KeptAnswer | undefined> {
    const { engine } = this.#options
    const record = await engine.store.get(id)
    if (record === undefined || record.kind !== 'chat' || record.chat?.api !== api || record.chat.stored !== true) return undefined
    if (!caller.admin && record.tenant !== caller.tenant) return undefined
    const model = record.agent?.model ?? record.execute.spec.model ?? ''
    const created = Math.floor(record.createdAt / 1000)
    const base = { record, id, created, model }
    if (!isTerminal(record.status)) return { ...base, state: record.status === 'queued' ? 'queued' : 'in_progress' }
    const usage = usageOf(record.result)
    if (record.status === 'cancelled' && record.cancel?.reason === 'client_disconnected') return { ...base, state: 'cancelled', usage }
    const structured = record.execute.spec.jsonSchema !== undefined
    // The answer as the call assembled it, written by the replica that ran it (see run-worker.ts).
    const answer = record.chat.answer ?? { text: '', cut: false }
    const content = structured ? '' : answer.text
    try {
      const outcome = outcomeOf(record, { id, created, model, content }, { structured, cut: answer.cut })
      if (outcome.content === content || structured) return { state: 'completed', record, outcome }
      const budget = new AnswerBudget(this.#options.maxAnswerBytes)
      const bounded = budget.take(outcome.content)
      return { state: 'completed', record, outcome: budget.exhausted ? { ...outcome, content: bounded, finishReason: 'length' } : outcome }
    } catch (error) {
      if (error instanceof AppError) return { ...base, state: 'failed', error, usage }
      throw error
    }
  }

  /** Forgets a stored answer now: 'unfinished' while its run has not ended. */
  async forget (id: string, api: ChatApi, caller: Caller): Promise<'removed' | 'unfinished' | 'unknown'> {
    const found = await this.kept(id, api, caller)
    if (found === undefined) return 'unknown'
    return this.#options.engine.store.remove(id)
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

/**
 * The answer a finished run gives, or the error it ends with. `content` is the main agent's text
 * as collected (empty when it was relayed); `cut` when it was stopped at MAX_OUTPUT_BYTES.
 */
function outcomeOf (record: RunRecord, partial: { id: string, created: number, model: string, content: string }, options: { structured: boolean, cut: boolean }): ChatOutcome {
  const { result } = record
  // Stopped at the bound: what was said so far (usage is zero unless the CLI reported it first).
  if (options.cut) return { ...partial, finishReason: 'length', usage: usageOf(result) }
  // A structured answer cut short is no answer: its content could not be the object's JSON.
  const cutShort = !options.structured && (record.error?.code === 'max_turns' || record.error?.code === 'max_budget')
  if (record.status !== 'completed' && !cutShort) throw failure(record)
  if (options.structured) return { ...partial, content: JSON.stringify(result?.structured_output), finishReason: 'stop', usage: usageOf(result) }
  const content = partial.content !== '' ? partial.content : (typeof result?.result === 'string' ? result.result : '')
  return { ...partial, content, finishReason: cutShort ? 'length' : 'stop', usage: usageOf(result) }
}

/** The CLI's token counts, zero where it reported none. */
export function usageOf (result: CliResult | null): RunUsage {
  const usage = (result?.usage ?? {}) as Record<string, unknown>
  const count = (key: string): number => typeof usage[key] === 'number' ? usage[key] : 0
  return {
    input_tokens: count('input_tokens'),
    output_tokens: count('output_tokens'),
    cache_read_input_tokens: count('cache_read_input_tokens'),
    cache_creation_input_tokens: count('cache_creation_input_tokens'),
  }
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
      return new AppError('structured_output_missing', `Claude Code gave no answer matching the requested format: ${message}`)
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
