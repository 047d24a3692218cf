import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createAnthropic } from '@ai-sdk/anthropic'
import Anthropic, { APIError } from '@anthropic-ai/sdk'
import { generateText, streamText } from 'ai'
import { describe, expect, it, vi } from 'vitest'
import type { Config } from '../src/config.ts'
import { listen, appMaker, describeEngines, tempDir, TOKEN } from './helpers/app.ts'
import { abortAtFirst, AgentProbe, descendants, expectAllGone, heldAgentGroup } from './helpers/probe.ts'

const echoOf = (text: string) => JSON.parse(text) as { argv: string[], stdin: string | null }
const user = (content: string) => [{ role: 'user' as const, content }]
const textOf = (message: Anthropic.Message): string => message.content.map(block => block.type === 'text' ? block.text : '').join('')

describeEngines('Anthropic Messages', engine => {
  const makeApp = appMaker(engine)

  async function messagesApp (overrides: Partial<Config> = {}) {
    const made = await makeApp(overrides)
    const url = await listen(made.app)
    // authToken: the SDK sends `Authorization: Bearer`.
    const client = new Anthropic({ baseURL: url, authToken: TOKEN, apiKey: null, maxRetries: 0, timeout: 60_000 })
    return { ...made, url, client }
  }

  describe('POST /v1/messages', () => {
    it('answers messages.create with the text and the CLI\'s usage as it is', async () => {
      const { client } = await messagesApp()
      const message = await client.messages.create({ model: 'haiku', max_tokens: 1024, messages: user('say hi [[fake usage 100 20 30 40]]') })
      expect(message).toEqual({
        id: expect.stringMatching(/^msg_[0-9a-f]{48}$/),
        type: 'message',
        role: 'assistant',
        model: 'claude-haiku-5-5',
        content: [{ type: 'text', text: 'Hi! (fake model)' }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: { input_tokens: 100, output_tokens: 20, cache_read_input_tokens: 30, cache_creation_input_tokens: 40 },
      })
    })

    it('puts system in the system prompt and the conversation on stdin, blocks or strings', async () => {
      const { client } = await messagesApp()
      const message = await client.messages.create({
        model: 'haiku',
        max_tokens: 100,
        system: [{ type: 'text', text: 'Be terse.' }, { type: 'text', text: 'Answer in English.' }],
        messages: [
          { role: 'user', content: 'What is 2+2?' },
          { role: 'assistant', content: [{ type: 'text', text: '4' }] },
          { role: 'user', content: [{ type: 'text', text: 'And 3+3?' }, { type: 'text', text: '[[fake echo]]' }] },
        ],
      })
      const seen = echoOf(textOf(message))
      expect(seen.argv).toContain('--append-system-prompt=Be terse.\nAnswer in English.')
      expect(seen.stdin).toMatch(/<user>\nWhat is 2\+2\?\n<\/user>\n<assistant>\n4\n<\/assistant>\n<user>\nAnd 3\+3\?\n\[\[fake echo\]\]\n<\/user>$/)
    })

    it('streams the API\'s events, which messages.stream assembles into the final message with usage', async () => {
      const { client } = await messagesApp()
      const stream = client.messages.stream({ model: 'sonnet', max_tokens: 1024, messages: user('[[fake text Hello streaming world]] [[fake deltas 3]] [[fake usage 10 7 2 1]]') })
      const types: string[] = []
      const deltas: string[] = []
      stream.on('streamEvent', event => types.push(event.type))
      stream.on('text', delta => deltas.push(delta))
      const message = await stream.finalMessage()
      expect(types).toEqual(['message_start', 'content_block_start', 'content_block_delta', 'content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'])
      expect(deltas.join('')).toBe('Hello streaming world')
      expect(message).toMatchObject({
        id: expect.stringMatching(/^msg_/),
        model: 'claude-sonnet-5-5',
        content: [{ type: 'text', text: 'Hello streaming world' }],
        stop_reason: 'end_turn',
        usage: { input_tokens: 10, output_tokens: 7, cache_read_input_tokens: 2, cache_creation_input_tokens: 1 },
      })
      expect(await stream.finalText()).toBe('Hello streaming world')
    })

    it('frames every event as event: and data:, with a ping after the first block starts', async () => {
      const { url } = await messagesApp()
      const response = await fetch(`${url}/v1/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'haiku', max_tokens: 10, messages: user('[[fake deltas 2]]'), stream: true }),
      })
      expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8')
      const frames = (await response.text()).trim().split('\n\n').map(frame => {
        const [event, data] = frame.split('\n')
        return { event: event!.replace(/^event: /, ''), data: JSON.parse(data!.replace(/^data: /, '')) as { type: string } }
      })
      expect(frames.map(frame => frame.event)).toEqual(['message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'])
      for (const frame of frames) expect(frame.data.type).toBe(frame.event)
    })

    it('relays the main agent only, and joins its text blocks with a blank line', async () => {
      const { client } = await messagesApp()
      const prompt = '[[fake say Let me look.]] [[fake subagent subagent chatter]] [[fake text Here it is.]]'
      expect(textOf(await client.messages.create({ model: 'haiku', max_tokens: 10, messages: user(prompt) }))).toBe('Let me look.\n\nHere it is.')
      expect(await client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user(prompt) }).finalText()).toBe('Let me look.\n\nHere it is.')
    })

    it('answers output_config.format with the object\'s JSON and passes output_config.effort as --effort', async () => {
      const { client } = await messagesApp()
      const schema = { type: 'object', properties: { verdict: { type: 'string' } }, required: ['verdict'], additionalProperties: false }
      const prompt = '[[fake say Let me look first.]] [[fake structured {"verdict": "pass"}]]'
      const message = await client.messages.create({ model: 'haiku', max_tokens: 10, messages: user(prompt), output_config: { format: { type: 'json_schema', schema } } })
      expect(JSON.parse(textOf(message))).toEqual({ verdict: 'pass' })
      const streamed = await client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user(prompt), output_config: { format: { type: 'json_schema', schema } } }).finalText()
      expect(JSON.parse(streamed)).toEqual({ verdict: 'pass' })
      const effort = await client.messages.create({ model: 'haiku', max_tokens: 10, messages: user('[[fake echo]]'), output_config: { effort: 'high' } })
      expect(echoOf(textOf(effort)).argv).toContain('--effort=high')
    })

    it('accepts and ignores max_tokens, stop_sequences, temperature, top_p, top_k and metadata', async () => {
      const { client } = await messagesApp()
      // This SDK's types no longer list the sampling parameters; older clients still send them.
      const message = await client.messages.create({
        model: 'haiku', max_tokens: 5, messages: user('[[fake echo]]'), stop_sequences: ['\n\nHuman:'], temperature: 0.1, top_p: 0.9, top_k: 5, metadata: { user_id: 'u-1' }, tools: [], tool_choice: { type: 'auto' },
      } as Anthropic.MessageCreateParamsNonStreaming)
      expect(echoOf(textOf(message)).argv).toEqual(['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose', '--model=haiku'])
    })

    it('reports max turns as stop_reason max_tokens', async () => {
      const { client } = await messagesApp()
      expect((await client.messages.create({ model: 'haiku', max_tokens: 10, messages: user('[[fake max-turns]]') })).stop_reason).toBe('max_tokens')
      expect((await client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user('[[fake max-turns]]') }).finalMessage()).stop_reason).toBe('max_tokens')
    })

    it('refuses images, documents and client tools with 400 invalid_request_error naming them', async () => {
      const { client, app } = await messagesApp()
      const image = { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }
      const cases: Array<[Record<string, unknown>, string, string]> = [
        [{ messages: [{ role: 'user', content: [{ type: 'text', text: 'look' }, image] }] }, 'messages[0].content[1]', 'unsupported'],
        [{ messages: [{ role: 'user', content: [{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } }] }] }, 'messages[0].content[0]', 'unsupported'],
        [{ messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 't', content: 'x' }] }] }, 'messages[0].content[0]', 'unsupported'],
        [{ messages: user('hi'), tools: [{ name: 'f', input_schema: { type: 'object' } }] }, 'tools', 'unsupported'],
        [{ messages: user('hi'), tool_choice: { type: 'any' } }, 'tool_choice', 'unsupported'],
        [{ messages: user('hi'), system: [{ type: 'image', source: {} }] }, 'system[0]', 'unsupported'],
        [{ messages: user('hi'), output_config: { format: { type: 'json_schema', schema: { type: 'string' } } } }, 'output_config.format.schema', 'validation_error'],
        [{ messages: [] }, 'messages', 'validation_error'],
        [{ messages: [{ role: 'system', content: 'x' }] }, 'messages.0.role', 'validation_error'],
        [{ messages: user('hi'), max_tokens: 0 }, 'max_tokens', 'validation_error'],
        [{ messages: user('hi'), system: 'a\u0000b' }, 'system', 'validation_error'],
      ]
      for (const [body, named, code] of cases) {
        const error = await client.messages.create({ model: 'haiku', max_tokens: 10, ...body } as never).then(() => undefined, (e: unknown) => e)
        expect(error, JSON.stringify(body)).toBeInstanceOf(Anthropic.BadRequestError)
        const { error: detail } = (error as APIError).error as { error: { type: string, message: string, code: string } }
        expect(detail.type).toBe('invalid_request_error')
        expect(detail.code, JSON.stringify(body)).toBe(code)
        expect(detail.message, JSON.stringify(body)).toContain(named)
      }
      expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    })
  })

  describe('errors the SDK raises as its own classes', () => {
    it('401 for a wrong token, 404 for a model that is not Claude, 429 with retry-after when the queue is full', async () => {
      const { client, url } = await messagesApp({ maxConcurrency: 1, maxQueueDepth: 1 })
      const stranger = new Anthropic({ baseURL: url, authToken: 'wrong-token-0000000000000', apiKey: null, maxRetries: 0 })
      const unauthorized = await stranger.messages.create({ model: 'haiku', max_tokens: 10, messages: user('hi') }).then(() => undefined, (e: unknown) => e)
      expect(unauthorized).toBeInstanceOf(Anthropic.AuthenticationError)
      expect((unauthorized as APIError).type).toBe('authentication_error')

      const missing = await client.messages.create({ model: 'gpt-4o', max_tokens: 10, messages: user('hi') }).then(() => undefined, (e: unknown) => e)
      expect(missing).toBeInstanceOf(Anthropic.NotFoundError)
      expect((missing as APIError).type).toBe('not_found_error')

      const probe = await AgentProbe.start()
      const first = client.messages.create({ model: 'haiku', max_tokens: 10, messages: user(probe.directive) })
      await probe.waitStarted(1)
      const full = await client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user('hi') }).finalMessage().then(() => undefined, (e: unknown) => e)
      expect(full).toBeInstanceOf(Anthropic.RateLimitError)
      expect((full as APIError).type).toBe('rate_limit_error')
      expect((full as APIError).headers?.get('retry-after')).toMatch(/^\d+$/)
      probe.release()
      expect(textOf(await first)).toBe('Hi! (fake model)')
    })

    it('maps the agent\'s failures to Anthropic\'s statuses, streamed or not; a failure mid-stream is an error event', async () => {
      const { client } = await messagesApp({ killGraceSeconds: 0.2 })
      const cases: Array<[string, abstract new (...args: never) => APIError, number, string]> = [
        ['[[fake api-error 429]]', Anthropic.RateLimitError, 429, 'rate_limit_error'],
        ['[[fake api-error 529]]', Anthropic.InternalServerError, 529, 'overloaded_error'],
        ['[[fake api-error 401]]', Anthropic.InternalServerError, 500, 'api_error'],
        ['[[fake exit 3]]', Anthropic.InternalServerError, 500, 'api_error'],
      ]
      for (const [prompt, kind, status, type] of cases) {
        for (const stream of [false, true]) {
          const call = stream
            ? client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user(prompt) }).finalMessage()
            : client.messages.create({ model: 'haiku', max_tokens: 10, messages: user(prompt) })
          const error = await call.then(() => undefined, (e: unknown) => e)
          expect(error, `${prompt} stream=${stream}`).toBeInstanceOf(kind)
          expect((error as APIError).status, `${prompt} stream=${stream}`).toBe(status)
          expect((error as APIError).type).toBe(type)
        }
      }
      const stream = client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user('[[fake say partial answer]] [[fake exit 3]]') })
      const deltas: string[] = []
      stream.on('text', delta => deltas.push(delta))
      const error = await stream.finalMessage().then(() => undefined, (e: unknown) => e)
      expect(deltas.join('')).toBe('partial answer')
      expect(error).toBeInstanceOf(APIError)
      expect((error as APIError).type).toBe('api_error')
      expect((error as APIError).message).toContain('exited with code 3')
    })

    it('kills the agent\'s process group and frees the slot when the client aborts', async () => {
      const { client, app } = await messagesApp({ maxConcurrency: 1 })
      const gate = await AgentProbe.start()
      const stream = client.messages.stream({ model: 'haiku', max_tokens: 10, messages: user(`[[fake grandchild]] [[fake text a b]] [[fake deltas 2]] [[fake delta-probe ${gate.url}]]`) })
      const group = await heldAgentGroup(gate)
      await abortAtFirst(gate, stream, 'text')
      await expectAllGone(group)
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.active).toBe(0))

      const probe = await AgentProbe.start()
      const controller = new AbortController()
      const call = client.messages.create({ model: 'haiku', max_tokens: 10, messages: user(`[[fake grandchild]] ${probe.directive}`) }, { signal: controller.signal })
      await probe.waitStarted(1)
      const others = descendants(probe.started[0]!.pid)
      controller.abort()
      await expect(call).rejects.toBeInstanceOf(Anthropic.APIUserAbortError)
      await expectAllGone([probe.started[0]!.pid, ...others])
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.active).toBe(0))
    })

    it('authenticates with x-api-key, as Anthropic\'s clients do by default; a token without the chat scope is a 403', async () => {
      const file = join(await tempDir(), 'tenants.json')
      const JOBS = 'jobs-only-token-0123456789abc'
      await writeFile(file, JSON.stringify({ tenants: [{ name: 'ci', tokens: [JOBS], scopes: ['jobs'] }] }))
      const { url } = await messagesApp({ tenantsFile: file })
      const client = new Anthropic({ baseURL: url, apiKey: TOKEN, maxRetries: 0 })
      expect(textOf(await client.messages.create({ model: 'haiku', max_tokens: 10, messages: user('hi') }))).toBe('Hi! (fake model)')
      expect((await client.models.list()).data.length).toBeGreaterThan(0)
      const anthropic = createAnthropic({ baseURL: `${url}/v1`, apiKey: TOKEN })
      expect((await generateText({ model: anthropic('sonnet'), prompt: 'hi', maxOutputTokens: 1024, maxRetries: 0 })).text).toBe('Hi! (fake model)')

      const wrong = await new Anthropic({ baseURL: url, apiKey: 'not-a-token-0123456789', maxRetries: 0 }).messages.create({ model: 'haiku', max_tokens: 10, messages: user('hi') }).then(() => undefined, (e: unknown) => e)
      expect(wrong).toBeInstanceOf(Anthropic.AuthenticationError)
      expect((wrong as APIError).type).toBe('authentication_error')
      const jobsOnly = await new Anthropic({ baseURL: url, apiKey: JOBS, maxRetries: 0 }).messages.create({ model: 'haiku', max_tokens: 10, messages: user('hi') }).then(() => undefined, (e: unknown) => e)
      expect(jobsOnly).toBeInstanceOf(Anthropic.PermissionDeniedError)
      expect((jobsOnly as APIError).type).toBe('permission_error')
      await expect(new Anthropic({ baseURL: url, apiKey: JOBS, maxRetries: 0 }).models.list()).rejects.toBeInstanceOf(Anthropic.PermissionDeniedError)
    })

    it('answers 401 in Anthropic\'s shape to a request without a token', async () => {
      const { url } = await messagesApp()
      const response = await fetch(`${url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
      expect(response.status).toBe(401)
      expect(await response.json()).toEqual({ type: 'error', error: { type: 'authentication_error', code: 'unauthorized', message: expect.any(String) } })
    })
  })

  describe('count_tokens and models', () => {
    it('estimates the input tokens of the request\'s own text', async () => {
      const { client } = await messagesApp()
      const counted = await client.messages.countTokens({ model: 'haiku', system: 'x'.repeat(40), messages: user('y'.repeat(400)) })
      expect(counted).toEqual({ input_tokens: 110 })
      await expect(client.messages.countTokens({ model: 'gpt-4o', messages: user('hi') })).rejects.toBeInstanceOf(Anthropic.NotFoundError)
    })

    it('lists the models in Anthropic\'s shape for Anthropic\'s clients, in OpenAI\'s otherwise', async () => {
      const { client, url } = await messagesApp({ openaiModels: ['haiku', 'sonnet'] })
      const page = await client.models.list()
      expect(page.data.map(model => model.id)).toEqual(['haiku', 'sonnet'])
      expect(page.data[0]).toMatchObject({ type: 'model', id: 'haiku', display_name: 'haiku', created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) })
      expect(page.has_more).toBe(false)
      expect(await client.models.retrieve('sonnet')).toMatchObject({ type: 'model', id: 'sonnet' })
      const missing = await client.models.retrieve('gpt-4o').then(() => undefined, (e: unknown) => e)
      expect(missing).toBeInstanceOf(Anthropic.NotFoundError)
      expect((missing as APIError).type).toBe('not_found_error')
      const openai = await (await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()
      expect(openai).toMatchObject({ object: 'list', data: [{ id: 'haiku', object: 'model' }, { id: 'sonnet', object: 'model' }] })
    })
  })

  describe('the Vercel AI SDK\'s Anthropic provider', () => {
    it('generateText and streamText get the text, usage and finish reason', async () => {
      const { url } = await messagesApp()
      const anthropic = createAnthropic({ baseURL: `${url}/v1`, authToken: TOKEN })
      const generated = await generateText({ model: anthropic('sonnet'), system: 'Be terse.', prompt: 'say hi [[fake usage 100 20 30 40]]', maxOutputTokens: 1024, maxRetries: 0 })
      expect(generated.text).toBe('Hi! (fake model)')
      expect(generated.finishReason).toBe('stop')
      expect(generated.usage).toMatchObject({ inputTokens: 170, outputTokens: 20 })

      const errors: unknown[] = []
      const streamed = streamText({ model: anthropic('sonnet'), prompt: '[[fake text Hello streaming world]] [[fake deltas 3]] [[fake usage 10 7 0 0]]', maxOutputTokens: 1024, maxRetries: 0, onError: ({ error }) => { errors.push(error) } })
      const chunks: string[] = []
      for await (const chunk of streamed.textStream) chunks.push(chunk)
      expect(errors).toEqual([])
      expect(chunks.join('')).toBe('Hello streaming world')
      expect(await streamed.finishReason).toBe('stop')
      expect(await streamed.usage).toMatchObject({ inputTokens: 10, outputTokens: 7 })
    })
  })
})
