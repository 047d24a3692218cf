import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { onTestFinished } from 'vitest'

/** One call to POST /v1/messages, as the real CLI made it. */
export interface MessagesCall {
  url: string
  headers: IncomingMessage['headers']
  body: {
    model: string
    stream?: boolean
    system?: string | Array<{ type: string, text: string }>
    messages: Array<{ role: string, content: string | Array<Record<string, any>> }>
    tools?: Array<{ name: string, input_schema?: Record<string, unknown> }>
    [key: string]: unknown
  }
}

/** What the stand-in answers a call with. */
export type Reply =
  | { text: string, chunks?: number }
  | { toolUse: { name: string, input: Record<string, unknown> }, text?: string }
  /** An error answer; the CLI retries it only when `retry` is set (the `x-should-retry` header). */
  | { status: number, errorType: string, message: string, retry?: boolean }
  /** Never answers (until the client goes away). */
  | { hang: true }

export type Script = (call: MessagesCall, index: number) => Reply

/**
 * A local stand-in for the Anthropic Messages API, enough for the real Claude Code CLI: every
 * model call is `POST /v1/messages?beta=true` with `stream: true`, answered with the streaming
 * events (message_start, content_block_start/delta/stop, message_delta with usage, message_stop).
 * It tolerates whatever else the request carries. Each test scripts its answers.
 */
export class AnthropicStub {
  readonly calls: MessagesCall[] = []
  /** Requests to anything but /v1/messages (the CLI should make none). */
  readonly otherRequests: string[] = []
  readonly url: string
  readonly #close: () => Promise<void>
  #waiters: Array<{ count: number, resolve: () => void }> = []

  private constructor (url: string, close: () => Promise<void>) {
    this.url = url
    this.#close = close
  }

  static async start (script: Script): Promise<AnthropicStub> {
    const holder: { stub?: AnthropicStub } = {}
    const server = createServer((request, response) => {
      let raw = ''
      request.setEncoding('utf8')
      request.on('data', chunk => { raw += chunk })
      request.on('end', () => { holder.stub!.#handle(request, response, raw, script) })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    const stub = holder.stub = new AnthropicStub(`http://127.0.0.1:${port}`, async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    })
    onTestFinished(() => stub.#close())
    return stub
  }

  /** Resolves once `count` model calls have arrived. */
  waitForCalls (count: number): Promise<void> {
    if (this.calls.length >= count) return Promise.resolve()
    return new Promise(resolve => this.#waiters.push({ count, resolve }))
  }

  #handle (request: IncomingMessage, response: ServerResponse, raw: string, script: Script): void {
    const url = request.url ?? ''
    if (request.method !== 'POST' || !url.startsWith('/v1/messages') || url.startsWith('/v1/messages/')) {
      this.otherRequests.push(`${request.method} ${url}`)
      response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: `no ${url} here` } }))
      return
    }
    const call: MessagesCall = { url, headers: request.headers, body: JSON.parse(raw) }
    const index = this.calls.push(call) - 1
    for (const waiter of [...this.#waiters]) {
      if (this.calls.length >= waiter.count) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
        waiter.resolve()
      }
    }
    let reply: Reply
    try {
      reply = script(call, index)
    } catch (error) {
      reply = { status: 500, errorType: 'api_error', message: `stub script failed: ${(error as Error).message}` }
    }
    if ('hang' in reply) return
    if ('status' in reply) {
      response.writeHead(reply.status, { 'content-type': 'application/json', 'request-id': `req_${randomBytes(6).toString('hex')}`, 'x-should-retry': String(reply.retry === true) })
        .end(JSON.stringify({ type: 'error', error: { type: reply.errorType, message: reply.message } }))
      return
    }
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'request-id': `req_${randomBytes(6).toString('hex')}` })
    const send = (type: string, data: Record<string, unknown>): void => {
      response.write(`event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`)
    }
    const inputTokens = 100 + Math.round(raw.length / 40)
    send('message_start', {
      message: {
        id: `msg_${randomBytes(12).toString('hex')}`,
        type: 'message',
        role: 'assistant',
        model: call.body.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: inputTokens, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
      },
    })
    let index2 = 0
    let outputTokens = 1
    const text = 'text' in reply ? reply.text : undefined
    if (text !== undefined && text !== '') {
      send('content_block_start', { index: index2, content_block: { type: 'text', text: '' } })
      const chunks = 'chunks' in reply && reply.chunks !== undefined ? reply.chunks : 3
      const size = Math.max(1, Math.ceil(text.length / chunks))
      for (let i = 0; i < text.length; i += size) send('content_block_delta', { index: index2, delta: { type: 'text_delta', text: text.slice(i, i + size) } })
      send('content_block_stop', { index: index2 })
      index2++
      outputTokens += Math.ceil(text.length / 4)
    }
    if ('toolUse' in reply) {
      send('content_block_start', { index: index2, content_block: { type: 'tool_use', id: `toolu_${randomBytes(12).toString('hex')}`, name: reply.toolUse.name, input: {} } })
      send('content_block_delta', { index: index2, delta: { type: 'input_json_delta', partial_json: JSON.stringify(reply.toolUse.input) } })
      send('content_block_stop', { index: index2 })
      outputTokens += 20
    }
    send('message_delta', { delta: { stop_reason: 'toolUse' in reply ? 'tool_use' : 'end_turn', stop_sequence: null }, usage: { output_tokens: outputTokens } })
    send('message_stop', {})
    response.end()
  }
}

/** The text of the last user turn of a call: what the CLI sent the model last. */
export function lastUserText (call: MessagesCall): string {
  const last = [...call.body.messages].reverse().find(message => message.role === 'user')
  if (last === undefined) return ''
  if (typeof last.content === 'string') return last.content
  return last.content.map(block => block.type === 'text' ? block.text : block.type === 'tool_result' ? JSON.stringify(block.content) : '').join('\n')
}

/** The system prompt of a call, as one string. */
export function systemText (call: MessagesCall): string {
  const { system } = call.body
  if (system === undefined) return ''
  return typeof system === 'string' ? system : system.map(block => block.text).join('\n')
}

/** The tool results the conversation carries so far (the CLI ran the tools asked for), as text. */
export function toolResults (call: MessagesCall): string[] {
  const results: string[] = []
  for (const message of call.body.messages) {
    if (!Array.isArray(message.content)) continue
    for (const block of message.content) {
      if (block.type !== 'tool_result') continue
      results.push(typeof block.content === 'string' ? block.content : JSON.stringify(block.content))
    }
  }
  return results
}

export const hasToolResult = (call: MessagesCall): boolean => toolResults(call).length > 0

/** A tool the CLI offered the model in this call, by name. */
export function toolNamed (call: MessagesCall, name: string): { name: string, input_schema?: Record<string, unknown> } | undefined {
  return call.body.tools?.find(tool => tool.name === name)
}

/**
 * How the API answers a model asked for structured output: the CLI (with `--json-schema`) offers
 * a `StructuredOutput` tool whose input_schema is the schema, and the model calls it with the
 * object. Without that tool, the model can only answer in prose.
 */
export function structuredReply (call: MessagesCall, output: Record<string, unknown>): Reply {
  return toolNamed(call, 'StructuredOutput') === undefined
    ? { text: 'There is no StructuredOutput tool, so here is prose.' }
    : { toolUse: { name: 'StructuredOutput', input: output } }
}
