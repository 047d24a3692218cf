/**
 * The CLI's `--output-format stream-json --verbose` protocol: one JSON object per line. Shapes are
 * taken from the recorded output of Claude Code 2.1.332 (test/fixtures/cli-samples/); only the
 * fields this service reads are typed, everything else passes through untouched.
 */

/** The final `result` line. NB: API errors arrive as `subtype: "success"` with `is_error: true`. */
export interface CliResult {
  type: 'result'
  subtype: string
  is_error: boolean
  result?: string | null
  errors?: string[]
  num_turns?: number
  total_cost_usd?: number
  usage?: Record<string, unknown>
  modelUsage?: Record<string, unknown>
  session_id?: string
  duration_ms?: number
  duration_api_ms?: number
  terminal_reason?: string
  stop_reason?: string | null
  api_error_status?: number | null
  permission_denials?: unknown[]
  /** With `--json-schema`: the object the model gave, checked by the CLI against the schema. */
  structured_output?: unknown
}

interface ContentBlock {
  type: string
  text?: string
  id?: string
  name?: string
  input?: unknown
  tool_use_id?: string
  content?: unknown
  is_error?: boolean
}

/** What the service makes of each line: the facts a job's followers and the OpenAI relay need. */
export type AgentEvent =
  | { type: 'init', session_id: string | null, model: string | null, cwd: string | null, claude_code_version: string | null, permission_mode: string | null, tools: string[] }
  | { type: 'text', text: string, parent_tool_use_id: string | null }
  | { type: 'text_delta', text: string, parent_tool_use_id: string | null }
  /** A new text block starts streaming (partial messages only): where deltas of one block end. */
  | { type: 'text_block_start', parent_tool_use_id: string | null }
  | { type: 'tool_use', id: string | null, name: string, input: unknown, parent_tool_use_id: string | null }
  | { type: 'tool_result', tool_use_id: string | null, is_error: boolean, summary: string, parent_tool_use_id: string | null }
  | { type: 'api_retry', attempt: number | null, max_retries: number | null, retry_delay_ms: number | null, error_status: number | null, error: string | null }
  | { type: 'model_fallback', original_model: string | null, fallback_model: string | null, message: string | null }
  | { type: 'api_error', status: number | null, message: string }
  | { type: 'result', result: CliResult }
  | { type: 'log', line: string }

const SUMMARY_CHARS = 500

const str = (value: unknown): string | null => typeof value === 'string' ? value : null
const num = (value: unknown): number | null => typeof value === 'number' && Number.isFinite(value) ? value : null
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

/** Parses one line into events; a line that is not a JSON object is kept as a `log` event, never thrown. */
export function parseLine (line: string): AgentEvent[] {
  const trimmed = line.trim()
  if (trimmed === '') return []
  let message: unknown
  try {
    message = JSON.parse(trimmed)
  } catch {
    return [{ type: 'log', line: trimmed }]
  }
  if (!isObject(message)) return [{ type: 'log', line: trimmed }]
  return toEvents(message)
}

function toEvents (message: Record<string, unknown>): AgentEvent[] {
  const parent = str(message.parent_tool_use_id)
  switch (message.type) {
    case 'system':
      return systemEvents(message)
    case 'assistant': {
      const inner = isObject(message.message) ? message.message : {}
      const blocks = Array.isArray(inner.content) ? inner.content as ContentBlock[] : []
      const events: AgentEvent[] = []
      if (message.is_api_error_message === true) {
        const text = blocks.map(block => block.text ?? '').join('')
        return [{ type: 'api_error', status: num(message.api_error_status), message: text }]
      }
      for (const block of blocks) {
        if (block.type === 'text' && typeof block.text === 'string') {
          events.push({ type: 'text', text: block.text, parent_tool_use_id: parent })
        } else if (block.type === 'tool_use') {
          events.push({ type: 'tool_use', id: str(block.id), name: block.name ?? 'unknown', input: block.input ?? null, parent_tool_use_id: parent })
        }
      }
      return events
    }
    case 'user': {
      const inner = isObject(message.message) ? message.message : {}
      const blocks = Array.isArray(inner.content) ? inner.content as ContentBlock[] : []
      return blocks
        .filter(block => block.type === 'tool_result')
        .map(block => ({
          type: 'tool_result' as const,
          tool_use_id: str(block.tool_use_id),
          is_error: block.is_error === true,
          summary: summarise(block.content),
          parent_tool_use_id: parent,
        }))
    }
    case 'stream_event': {
      const event = isObject(message.event) ? message.event : {}
      const delta = isObject(event.delta) ? event.delta : {}
      if (event.type === 'content_block_delta' && delta.type === 'text_delta' && typeof delta.text === 'string') {
        return [{ type: 'text_delta', text: delta.text, parent_tool_use_id: parent }]
      }
      const block = isObject(event.content_block) ? event.content_block : {}
      if (event.type === 'content_block_start' && block.type === 'text') {
        return [{ type: 'text_block_start', parent_tool_use_id: parent }]
      }
      return []
    }
    case 'result':
      return isResult(message) ? [{ type: 'result', result: message }] : [{ type: 'log', line: JSON.stringify(message) }]
    default:
      return []
  }
}

function systemEvents (message: Record<string, unknown>): AgentEvent[] {
  switch (message.subtype) {
    case 'init':
      return [{
        type: 'init',
        session_id: str(message.session_id),
        model: str(message.model),
        cwd: str(message.cwd),
        claude_code_version: str(message.claude_code_version),
        permission_mode: str(message.permissionMode),
        tools: Array.isArray(message.tools) ? message.tools.filter(tool => typeof tool === 'string') : [],
      }]
    case 'api_retry':
      return [{
        type: 'api_retry',
        attempt: num(message.attempt),
        max_retries: num(message.max_retries),
        retry_delay_ms: num(message.retry_delay_ms),
        error_status: num(message.error_status),
        error: str(message.error),
      }]
    case 'model_fallback':
      return [{
        type: 'model_fallback',
        original_model: str(message.original_model),
        fallback_model: str(message.fallback_model),
        message: str(message.content),
      }]
    default:
      return []
  }
}

function isResult (message: Record<string, unknown>): message is Record<string, unknown> & CliResult {
  return typeof message.is_error === 'boolean' && typeof message.subtype === 'string'
}

function summarise (content: unknown): string {
  let text: string
  if (typeof content === 'string') {
    text = content
  } else if (Array.isArray(content)) {
    text = content.map(part => isObject(part) && typeof part.text === 'string' ? part.text : '').join('')
  } else {
    text = ''
  }
  return text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS)}…` : text
}

/**
 * What the service writes to the CLI's stdin (`--input-format stream-json`), as measured with
 * 2.1.332 (test/fixtures/cli-samples/README.md): a `control_request` of subtype `initialize`, which
 * the CLI answers with one `control_response` line once it is up (listing the agents it found), and
 * then one `user` message, the prompt; EOF after it ends the run once its result is out. Until the
 * user message the CLI prints nothing but that answer and makes no API call.
 */
export function initializeRequest (requestId: string): string {
  return `${JSON.stringify({ type: 'control_request', request_id: requestId, request: { subtype: 'initialize' } })}\n`
}

/** The prompt as one stream-json user message (a plain string content: the API request is the same as with text input). */
export function userMessage (prompt: string): string {
  return `${JSON.stringify({ type: 'user', message: { role: 'user', content: prompt }, parent_tool_use_id: null, session_id: '' })}\n`
}

/** The CLI's answer to `initialize`: it is up, and these are the agents `--agent` may name. */
export interface Handshake {
  /** Undefined when the CLI did not say (an error answer). */
  agents: string[] | undefined
}

/** The answer to the `initialize` request `requestId`, or undefined when `line` is something else. */
export function parseHandshake (line: string, requestId: string): Handshake | undefined {
  if (!line.includes('"control_response"')) return undefined
  let message: unknown
  try {
    message = JSON.parse(line)
  } catch {
    return undefined
  }
  if (!isObject(message) || message.type !== 'control_response' || !isObject(message.response)) return undefined
  const { response } = message
  if (response.request_id !== requestId) return undefined
  const body = isObject(response.response) ? response.response : {}
  const agents = response.subtype === 'success' && Array.isArray(body.agents)
    ? body.agents.flatMap(agent => isObject(agent) && typeof agent.name === 'string' ? [agent.name] : [])
    : undefined
  return { agents }
}

/**
 * Splits a byte stream into lines as it arrives. Lines may be split across chunks; a line longer
 * than `maxLineBytes` is dropped (reported through `onOverflow`) instead of growing memory without
 * bound. Splitting on the 0x0A byte is safe for UTF-8: no multi-byte sequence contains it.
 */
export class LineSplitter {
  readonly #maxLineBytes: number
  readonly #onLine: (line: string, bytes: number) => void
  readonly #onOverflow: (bytes: number) => void
  #pending: Buffer[] = []
  #pendingBytes = 0
  #overflowing = false

  constructor (options: { maxLineBytes: number, onLine: (line: string, bytes: number) => void, onOverflow: (bytes: number) => void }) {
    this.#maxLineBytes = options.maxLineBytes
    this.#onLine = options.onLine
    this.#onOverflow = options.onOverflow
  }

  push (chunk: Buffer): void {
    let start = 0
    let newline = chunk.indexOf(0x0a, start)
    while (newline !== -1) {
      this.#append(chunk.subarray(start, newline))
      this.#flush()
      start = newline + 1
      newline = chunk.indexOf(0x0a, start)
    }
    if (start < chunk.length) this.#append(chunk.subarray(start))
  }

  /** Flushes a last line that had no newline. */
  end (): void {
    if (this.#pendingBytes > 0 || this.#overflowing) this.#flush()
  }

  #append (piece: Buffer): void {
    if (piece.length === 0) return
    this.#pendingBytes += piece.length
    if (this.#overflowing) return
    if (this.#pendingBytes > this.#maxLineBytes) {
      this.#overflowing = true
      this.#pending = []
      return
    }
    // Copy: the chunk's memory belongs to the stream and may be reused.
    this.#pending.push(Buffer.from(piece))
  }

  #flush (): void {
    const bytes = this.#pendingBytes
    if (this.#overflowing) {
      this.#onOverflow(bytes)
    } else {
      const line = this.#pending.length === 1 ? this.#pending[0]!.toString('utf8') : Buffer.concat(this.#pending).toString('utf8')
      this.#onLine(line, bytes)
    }
    this.#pending = []
    this.#pendingBytes = 0
    this.#overflowing = false
  }
}
