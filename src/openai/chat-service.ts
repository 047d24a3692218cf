import { randomBytes } from 'node:crypto'
import type { AgentControls, EffortLevel } from '../agent/agent-controls.ts'
import type { AgentEvent, CliResult } from '../agent/stream-json.ts'
import { AppError, RunCancelledError } from '../errors.ts'
import type { AgentExecutor, ExecuteOutcome } from '../runner/agent-executor.ts'
import type { Runner } from '../runner/runner.ts'
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
  onDelta?: (text: string) => void
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
  result: Promise<ChatOutcome>
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
  runner: Runner
  /** An executor whose workspaces are empty folders: a chat call has no repository. */
  executor: AgentExecutor
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
  onFinished?: (outcome: string, result: CliResult | null) => void
}

/** A chat completion the client no longer waits for: nothing to answer. */
export class ClientGoneError extends Error {
  override name = 'ClientGoneError'
}

/** Why a run was stopped once its answer reached MAX_OUTPUT_BYTES (an abort reason). */
class AnswerLimitError extends Error {
  override name = 'AnswerLimitError'
}

/**
 * OpenAI Chat Completions answered by `claude -p`. Every call is one run on the shared runner: it
 * waits for a slot like a job, counts in /health, and its process group dies with the request.
 */
export class ChatService {
  readonly #options: ChatServiceOptions

  constructor (options: ChatServiceOptions) {
    this.#options = options
  }

  /**
   * Checks the request and queues the run. Throws at once when the request is refused (bad
   * messages, unknown model, full queue); otherwise the promise settles with the answer.
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

  submit (request: ChatRequest, handlers: ChatHandlers, signal: AbortSignal): ChatRun {
    this.checkModel(request.model)
    const { prompt, system } = toAgentPrompt(request.messages)
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`
    const created = Math.floor(this.#options.now() / 1000)
    // The answer is bounded like a job's output: past the bound the run is stopped, and what was
    // said so far is the answer, with finish_reason "length".
    const budget = new AnswerBudget(this.#options.maxAnswerBytes)
    const limit = new AbortController()
    const take = (text: string): string => {
      const piece = budget.take(text)
      if (budget.exhausted && !limit.signal.aborted) limit.abort(new AnswerLimitError('the answer reached MAX_OUTPUT_BYTES'))
      return piece
    }
    const { onDelta } = handlers
    const relay = new DeltaRelay(onDelta && (text => {
      const piece = take(text)
      if (piece !== '') onDelta(piece)
    }))
    // Only a non-streamed answer is kept: a streamed one is relayed as it comes.
    let content = ''
    let model = request.model
    const structured = request.jsonSchema !== undefined
    // Structured answers are not relayed as they come: the content must be the object's JSON.
    const relaying = request.stream && !structured
    const onEvent = (event: AgentEvent): void => {
      if (event.type === 'init' && event.model !== null) model = event.model
      if ('parent_tool_use_id' in event && event.parent_tool_use_id !== null) return
      if (event.type === 'text') {
        // The text blocks are the answer unless it is relayed as deltas, or structured.
        if (!relaying && !structured && !budget.exhausted) content += take(content === '' ? event.text : `\n\n${event.text}`)
      } else if (relaying) {
        relay.push(event)
      }
    }
    const stop = AbortSignal.any([signal, limit.signal])
    const run = this.#options.runner.schedule(id, runSignal => this.#options.executor.execute({
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
    }, { onEvent }, runSignal), { signal: stop, timeoutMs: this.#options.timeoutMs, kind: 'chat' })
    const finished = this.#options.onFinished
    const result = run.then(
      outcome => {
        const cut = limit.signal.aborted && !signal.aborted
        finished?.(cut ? 'length' : outcome.status === 'cancelled' && signal.aborted ? 'client_gone' : outcome.status, outcome.result)
        if (cut) return { id, created, model, content, finishReason: 'length' as const, usage: usageOf(outcome.result) }
        const done = answer(signal, outcome, { id, created, model, content }, structured)
        if (structured && request.stream) handlers.onDelta?.(done.content)
        // A final result text, when no text block was kept, is bounded too. (A structured answer
        // and a relayed one are bounded already: the result line is at most MAX_OUTPUT_BYTES,
        // and relayed deltas were counted as they went.)
        if (structured || relaying || done.content === content) return done
        const bounded = take(done.content)
        return budget.exhausted ? { ...done, content: bounded, finishReason: 'length' as const } : done
      },
      (error: unknown) => {
        finished?.(signal.aborted ? 'client_gone' : 'cancelled', null)
        if (error instanceof RunCancelledError && error.reason === 'client_disconnected') throw new ClientGoneError(error.message)
        if (error instanceof RunCancelledError) throw new AppError('shutting_down', 'the service is shutting down; retry against another instance')
        throw error
      })
    return { id, created, get model () { return model }, result }
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
  readonly #onDelta: ((text: string) => void) | undefined
  #sent = false
  #separate = false

  constructor (onDelta: ((text: string) => void) | undefined) {
    this.#onDelta = onDelta
  }

  push (event: AgentEvent): void {
    if (this.#onDelta === undefined) return
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

/** What is left of MAX_OUTPUT_BYTES for the answer; a piece that does not fit is cut at a character boundary. */
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

function answer (signal: AbortSignal, outcome: ExecuteOutcome, partial: { id: string, created: number, model: string, content: string }, structured: boolean): ChatOutcome {
  const { result } = outcome
  if (outcome.status === 'cancelled' && signal.aborted) throw new ClientGoneError('the client went away')
  // A structured answer cut short is no answer: its content could not be the object's JSON.
  const cutShort = !structured && (outcome.error?.code === 'max_turns' || outcome.error?.code === 'max_budget')
  if (outcome.status !== 'completed' && !cutShort) throw failure(outcome)
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

function failure (outcome: ExecuteOutcome): AppError {
  const message = outcome.error?.message ?? 'the agent failed'
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
