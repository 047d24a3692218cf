import { createHash } from 'node:crypto'
import OpenAI, { APIError } from 'openai'
import { describe, expect, it, vi } from 'vitest'
import type { Config } from '../src/config.ts'
import { listen, appMaker, describeEngines, TOKEN } from './helpers/app.ts'
import { AgentProbe, descendants, expectAllGone } from './helpers/probe.ts'

describeEngines('chat completions', engine => {
  const makeApp = appMaker(engine)

  async function openaiApp (overrides: Partial<Config> = {}) {
    const made = await makeApp(overrides)
    const url = await listen(made.app)
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0, timeout: 60_000 })
    return { ...made, url, client }
  }

  const user = (content: string) => [{ role: 'user' as const, content }]
  const echoOf = (content: string) => JSON.parse(content) as { argv: string[], stdin: string | null, stdin_bytes: number, stdin_sha256: string }

  describe('POST /v1/chat/completions', () => {
    it('answers through the openai SDK with usage mapped from the CLI', async () => {
      const { client } = await openaiApp()
      const completion = await client.chat.completions.create({ model: 'haiku', messages: user('say hi [[fake usage 100 20 30 40]]') })
      expect(completion).toMatchObject({
        id: expect.stringMatching(/^chatcmpl-/),
        object: 'chat.completion',
        created: expect.any(Number),
        model: 'claude-haiku-5-5',
        choices: [{ index: 0, message: { role: 'assistant', content: 'Hi! (fake model)' }, finish_reason: 'stop' }],
        // input 100 + cache read 30 + cache creation 40 = 170 prompt tokens
        usage: { prompt_tokens: 170, completion_tokens: 20, total_tokens: 190, prompt_tokens_details: { cached_tokens: 30 } },
      })
    })

    it('streams deltas in order, then the finish chunk, the usage chunk and [DONE]', async () => {
      const { client } = await openaiApp()
      const stream = await client.chat.completions.create({
        model: 'sonnet',
        messages: user('[[fake text Hello streaming world, token by token]] [[fake deltas 6]] [[fake usage 10 7 0 0]]'),
        stream: true,
        stream_options: { include_usage: true },
      })
      const chunks = []
      for await (const chunk of stream) chunks.push(chunk)
      expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' })
      const contentChunks = chunks.filter(chunk => chunk.choices[0]?.delta.content)
      expect(contentChunks.length).toBe(6)
      expect(contentChunks.map(chunk => chunk.choices[0]!.delta.content).join('')).toBe('Hello streaming world, token by token')
      const finish = chunks.at(-2)!
      expect(finish.choices[0]).toMatchObject({ delta: {}, finish_reason: 'stop' })
      const usage = chunks.at(-1)!
      expect(usage.choices).toEqual([])
      expect(usage.usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 7, total_tokens: 17 })
      expect(new Set(chunks.map(chunk => chunk.id)).size).toBe(1)
      expect(chunks.every(chunk => chunk.object === 'chat.completion.chunk' && chunk.model === 'claude-sonnet-5-5')).toBe(true)
    })

    it('relays each delta the moment the CLI prints it', async () => {
      const { client } = await openaiApp()
      const gate = await AgentProbe.start()
      // Headers go out with the first delta (or a keep-alive): create() resolves only then.
      const created = client.chat.completions.create({
        model: 'haiku',
        messages: user(`[[fake text one two three]] [[fake deltas 3]] [[fake delta-probe ${gate.url}]]`),
        stream: true,
      })
      // The fake prints delta k only after the test lets it; the test lets it only after it has
      // received delta k-1. A service that buffered the answer would never deliver and never finish.
      const received: string[] = []
      await gate.waitStarted(1)
      gate.releaseOne()
      const stream = await created
      for await (const chunk of stream) {
        const text = chunk.choices[0]?.delta.content
        if (!text) continue
        received.push(text)
        if (received.length < 3) {
          await gate.waitStarted(received.length + 1)
          gate.releaseOne()
        }
      }
      expect(received.join('')).toBe('one two three')
    })

    it('relays the main agent only, and joins its text blocks with a blank line', async () => {
      const { client } = await openaiApp()
      const prompt = '[[fake say Let me look.]] [[fake subagent subagent chatter]] [[fake text Here it is.]]'
      const completion = await client.chat.completions.create({ model: 'haiku', messages: user(prompt) })
      expect(completion.choices[0]!.message.content).toBe('Let me look.\n\nHere it is.')
      const stream = await client.chat.completions.create({ model: 'haiku', messages: user(prompt), stream: true })
      let streamed = ''
      for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? ''
      expect(streamed).toBe('Let me look.\n\nHere it is.')
    })

    it('kills the agent\'s process group and frees the slot when a stream is aborted', async () => {
      const { client, app } = await openaiApp({ maxConcurrency: 1 })
      const gate = await AgentProbe.start()
      const created = client.chat.completions.create({
        model: 'haiku',
        messages: user(`[[fake grandchild]] [[fake text a b]] [[fake deltas 2]] [[fake delta-probe ${gate.url}]]`),
        stream: true,
      })
      await gate.waitStarted(1)
      const agent = gate.started[0]!.pid
      const grandchildren = descendants(agent)
      expect(grandchildren).toHaveLength(1)
      gate.releaseOne()
      const stream = await created
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta.content) break // leaving the loop aborts the request
      }
      await expectAllGone([agent, ...grandchildren])
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.active).toBe(0))
      // The slot is free: the next call runs.
      const next = await client.chat.completions.create({ model: 'haiku', messages: user('hi') })
      expect(next.choices[0]!.message.content).toBe('Hi! (fake model)')
    })

    it('kills the agent when a non-streaming client goes away', async () => {
      const { url, app } = await openaiApp()
      const probe = await AgentProbe.start()
      const controller = new AbortController()
      const request = fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'haiku', messages: user(`[[fake grandchild]] ${probe.directive}`) }),
        signal: controller.signal,
      })
      await probe.waitStarted(1)
      const grandchildren = descendants(probe.started[0]!.pid)
      expect(grandchildren).toHaveLength(1)
      controller.abort()
      await expect(request).rejects.toThrow()
      await expectAllGone([probe.started[0]!.pid, ...grandchildren])
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.active).toBe(0))
    })

    it('maps agent failures to OpenAI errors the SDK raises as the right class', async () => {
      // Only the hung agent gets a short timeout: on a busy machine a second is not much for the rest.
      const { client: patient } = await openaiApp({ killGraceSeconds: 0.2 })
      const { client: impatient } = await openaiApp({ jobTimeoutSeconds: 1, killGraceSeconds: 0.2 })
      const cases: Array<[string, abstract new (...args: never) => APIError, number, string]> = [
        ['[[fake api-error 429]]', OpenAI.RateLimitError, 429, 'upstream_rate_limited'],
        ['[[fake api-error 529]]', OpenAI.InternalServerError, 503, 'upstream_overloaded'],
        ['[[fake api-error 401]]', OpenAI.InternalServerError, 502, 'upstream_error'],
        ['[[fake exit 3]]', OpenAI.InternalServerError, 500, 'agent_failed'],
        ['[[fake hang]]', OpenAI.InternalServerError, 504, 'agent_timeout'],
      ]
      for (const [prompt, kind, status, code] of cases) {
        for (const stream of [false, true]) {
          const client = prompt === '[[fake hang]]' ? impatient : patient
          const call = async () => {
            const response = await client.chat.completions.create({ model: 'haiku', messages: user(prompt), stream })
            if (stream) for await (const chunk of response as AsyncIterable<unknown>) expect(chunk).toBeDefined()
          }
          const error = await call().then(() => undefined, (e: unknown) => e)
          expect(error, `${prompt} stream=${stream}`).toBeInstanceOf(kind)
          expect((error as APIError).status).toBe(status)
          expect((error as APIError).code).toBe(code)
          expect((error as APIError).type).toBe(status === 429 ? 'rate_limit_error' : 'server_error')
        }
      }
    })

    it('ends a stream that already started with an error event', async () => {
      const { client } = await openaiApp()
      const stream = await client.chat.completions.create({ model: 'haiku', messages: user('[[fake say partial answer]] [[fake exit 3]]'), stream: true })
      let streamed = ''
      const error = await (async () => {
        for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? ''
      })().then(() => undefined, (e: unknown) => e)
      expect(streamed).toBe('partial answer')
      expect(error).toBeInstanceOf(APIError)
      expect((error as APIError).message).toContain('exited with code 3')
    })

    it('reports max turns as finish_reason "length"', async () => {
      const { client } = await openaiApp()
      const completion = await client.chat.completions.create({ model: 'haiku', messages: user('[[fake max-turns]]') })
      expect(completion.choices[0]!.finish_reason).toBe('length')
    })

    it('refuses what it cannot do, with OpenAI-shaped 400s naming the parameter', async () => {
      const { client, app } = await openaiApp()
      const cases: Array<[Record<string, unknown>, string, string]> = [
        [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] }, 'messages.0.content.0', 'unsupported'],
        [{ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: '', format: 'wav' } }] }] }, 'messages.0.content.0', 'unsupported'],
        [{ messages: user('hi'), n: 2 }, 'n', 'unsupported'],
        [{ messages: user('hi'), tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools', 'unsupported'],
        [{ messages: user('hi'), tool_choice: 'required' }, 'tool_choice', 'unsupported'],
        [{ messages: user('hi'), functions: [{ name: 'f' }] }, 'functions', 'unsupported'],
        [{ messages: [] }, 'messages', 'validation_error'],
        [{ messages: [{ role: 'system', content: 'only system' }] }, 'messages', 'validation_error'],
        [{ messages: [{ role: 'wizard', content: 'x' }] }, 'messages.0.role', 'validation_error'],
        [{ messages: [{ role: '', content: 'x' }] }, 'messages.0.role', 'validation_error'],
        [{ messages: user('hi'), logprobs: true }, 'logprobs', 'unsupported'],
        [{ messages: user('hi'), stop: ['\n\nObservation:'] }, 'stop', 'unsupported'],
        [{ messages: user('hi'), stop: 'END' }, 'stop', 'unsupported'],
        [{ messages: user('hi'), reasoning_effort: 'none' }, 'reasoning_effort', 'unsupported'],
        [{ messages: user('hi'), reasoning_effort: 'extreme' }, 'reasoning_effort', 'validation_error'],
        [{ messages: user('hi'), response_format: { type: 'grammar', grammar: 'x' } }, 'response_format', 'unsupported'],
        [{ messages: user('hi'), response_format: { type: 'json_schema', json_schema: { name: 'v', schema: { type: 'string' } } } }, 'response_format.json_schema.schema', 'validation_error'],
        [{ messages: user('hi'), response_format: { type: 'json_schema', json_schema: { name: 'v', schema: { type: 'object', 'x-extra': true } } } }, 'response_format.json_schema.schema', 'validation_error'],
        [{ messages: user('hi'), response_format: { type: 'json_schema', json_schema: { name: 'v' } } }, 'response_format.json_schema.schema', 'validation_error'],
        [{ messages: [{ role: 'system', content: 'a\u0000b' }, { role: 'user', content: 'hi' }] }, 'messages.0.content', 'validation_error'],
      ]
      for (const [body, param, code] of cases) {
        const error = await client.chat.completions.create({ model: 'haiku', ...body } as never).then(() => undefined, (e: unknown) => e)
        expect(error, JSON.stringify(body)).toBeInstanceOf(OpenAI.BadRequestError)
        expect((error as APIError).param).toBe(param)
        expect((error as APIError).code).toBe(code)
        expect((error as APIError).type).toBe('invalid_request_error')
      }
      expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    })

    it('accepts and ignores sampling parameters', async () => {
      const { client } = await openaiApp()
      const completion = await client.chat.completions.create({
        model: 'haiku', messages: user('[[fake echo]]'), temperature: 0.2, top_p: 0.9, max_tokens: 50, stop: [], seed: 1, presence_penalty: 0, user: 'u', response_format: { type: 'text' },
      })
      expect(echoOf(completion.choices[0]!.message.content!).argv).toEqual(['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose', '--model=haiku'])
    })

    it('answers 404 model_not_found for a model that is not Claude, and passes Claude ids through', async () => {
      const { client } = await openaiApp()
      const error = await client.chat.completions.create({ model: 'gpt-4o', messages: user('hi') }).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.NotFoundError)
      expect((error as APIError).code).toBe('model_not_found')
      const completion = await client.chat.completions.create({ model: 'claude-opus-4-1-20250805', messages: user('[[fake echo]]') })
      expect(echoOf(completion.choices[0]!.message.content!).argv).toContain('--model=claude-opus-4-1-20250805')
    })

    it('answers 401 in OpenAI\'s shape for a wrong key', async () => {
      const { url } = await openaiApp()
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'wrong-key-00000000000000', maxRetries: 0 })
      const error = await client.models.list().then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.AuthenticationError)
      expect((error as APIError).code).toBe('invalid_api_key')
    })

    it('answers 429 when the queue is full, never 503 busy', async () => {
      const { client } = await openaiApp({ maxConcurrency: 1, maxQueueDepth: 1 })
      const probe = await AgentProbe.start()
      const first = client.chat.completions.create({ model: 'haiku', messages: user(probe.directive) })
      await probe.waitStarted(1)
      const error = await client.chat.completions.create({ model: 'haiku', messages: user('hi') }).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.RateLimitError)
      expect((error as APIError).code).toBe('queue_full')
      expect((error as APIError).headers?.get('retry-after')).toMatch(/^\d+$/)
      probe.release()
      expect((await first).choices[0]!.message.content).toBe('Hi! (fake model)')
    })
  })

  const VERDICT = {
    type: 'object',
    properties: { verdict: { type: 'string', enum: ['pass', 'fail'] }, reasons: { type: 'array', items: { type: 'string' } } },
    required: ['verdict', 'reasons'],
    additionalProperties: false,
  }
  const verdictFormat = { type: 'json_schema' as const, json_schema: { name: 'verdict', schema: VERDICT, strict: true } }

  describe('response_format and reasoning_effort', () => {
    it('gives chat.completions.parse the object, its JSON the content', async () => {
      const { client } = await openaiApp()
      const completion = await client.chat.completions.parse({
        model: 'haiku',
        messages: user('Review this. [[fake structured {"verdict": "fail", "reasons": ["no tests"]}]]'),
        response_format: verdictFormat,
      })
      const message = completion.choices[0]!.message
      expect(message.parsed).toEqual({ verdict: 'fail', reasons: ['no tests'] })
      expect(JSON.parse(message.content!)).toEqual({ verdict: 'fail', reasons: ['no tests'] })
      expect(completion.choices[0]!.finish_reason).toBe('stop')
    })

    it('streams it as one delta at the end, and the SDK\'s stream helper parses it', async () => {
      const { client } = await openaiApp()
      const stream = client.chat.completions.stream({
        model: 'haiku',
        messages: user('[[fake say Let me look first.]] [[fake structured {"verdict": "pass", "reasons": []}]]'),
        response_format: verdictFormat,
      })
      const deltas: string[] = []
      stream.on('content.delta', ({ delta }) => deltas.push(delta))
      const completion = await stream.finalChatCompletion()
      expect(completion.choices[0]!.message.parsed).toEqual({ verdict: 'pass', reasons: [] })
      // The prose before the object is not part of the answer.
      expect(deltas).toEqual(['{"verdict":"pass","reasons":[]}'])
    })

    it('runs the CLI with --json-schema, the schema as given; json_object asks for any object', async () => {
      const { client } = await openaiApp()
      const argvOf = async (body: Record<string, unknown>): Promise<string[]> => {
        const probe = await AgentProbe.start()
        probe.release()
        await client.chat.completions.create({ model: 'haiku', messages: user(`${probe.directive} [[fake structured {"verdict": "pass", "reasons": []}]]`), ...body } as never)
        return probe.started[0]!.argv
      }
      expect(await argvOf({ response_format: verdictFormat })).toContain(`--json-schema=${JSON.stringify(VERDICT)}`)
      expect(await argvOf({ response_format: { type: 'json_object' } })).toContain('--json-schema={"type":"object"}')
      const streamed = await argvOf({ response_format: { type: 'json_object' }, stream: true })
      expect(streamed).toContain('--json-schema={"type":"object"}')
      // Nothing is relayed before the object, so no deltas are asked for.
      expect(streamed).not.toContain('--include-partial-messages')
    })

    it('answers 502 structured_output_missing when the agent gives no object, streaming or not', async () => {
      const { client } = await openaiApp()
      for (const stream of [false, true]) {
        const call = async () => {
          const response = await client.chat.completions.create({ model: 'haiku', messages: user('[[fake text It looks fine.]]'), response_format: verdictFormat, stream })
          if (stream) for await (const chunk of response as AsyncIterable<unknown>) expect(chunk).toBeDefined()
        }
        const error = await call().then(() => undefined, (e: unknown) => e)
        expect(error, `stream=${stream}`).toBeInstanceOf(OpenAI.InternalServerError)
        expect((error as APIError).status).toBe(502)
        expect((error as APIError).code).toBe('structured_output_missing')
        expect((error as APIError).message).toContain('It looks fine.')
      }
    })

    it('passes reasoning_effort as --effort, minimal as low', async () => {
      const { client } = await openaiApp()
      for (const [effort, flag] of [['high', '--effort=high'], ['minimal', '--effort=low'], ['xhigh', '--effort=xhigh']] as const) {
        const completion = await client.chat.completions.create({ model: 'haiku', messages: user('[[fake echo]]'), reasoning_effort: effort as 'high' })
        expect(echoOf(completion.choices[0]!.message.content!).argv).toContain(flag)
      }
    })

    it('documents the request as strictly as it handles it', async () => {
      const { app } = await openaiApp()
      const document = (await app.inject({ method: 'GET', url: '/openapi.json', headers: { authorization: `Bearer ${TOKEN}` } })).json()
      const body = document.paths['/v1/chat/completions'].post.requestBody.content['application/json'].schema
      expect(body.properties.messages.items.properties.role.enum).toEqual(['system', 'developer', 'user', 'assistant', 'tool', 'function'])
      expect(body.properties.logprobs.anyOf).toEqual([{ type: 'null' }, { enum: [false] }])
      expect(body.properties.n.maximum).toBe(1)
      expect(body.properties.reasoning_effort.enum).toEqual(['minimal', 'low', 'medium', 'high', 'xhigh', 'max'])
      expect(JSON.stringify(body.properties.response_format)).toContain('json_schema')
    })
  })

  describe('chat completions share the runner with jobs (seed)', () => {
    it('runs two chat completions at the same time, counted on /health', async () => {
      const { client, app } = await openaiApp()
      const probe = await AgentProbe.start()
      const calls = [client.chat.completions.create({ model: 'haiku', messages: user(probe.directive) }), client.chat.completions.create({ model: 'haiku', messages: user(probe.directive) })]
      await probe.waitStarted(2)
      expect((await app.inject({ method: 'GET', url: '/health' })).json()).toMatchObject({ active: 2, queued: 0 })
      probe.release()
      const answers = await Promise.all(calls)
      expect(answers.map(answer => answer.choices[0]!.message.content)).toEqual(['Hi! (fake model)', 'Hi! (fake model)'])
    })

    it('with capacity 1, the second call waits for the slot and then succeeds', async () => {
      const { client, app } = await openaiApp({ maxConcurrency: 1 })
      const probe = await AgentProbe.start()
      const first = client.chat.completions.create({ model: 'haiku', messages: user(probe.directive) })
      await probe.waitStarted(1)
      const second = client.chat.completions.create({ model: 'haiku', messages: user('second') })
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.queued).toBe(1))
      expect(probe.started).toHaveLength(1)
      probe.release()
      const [a, b] = await Promise.all([first, second])
      expect(a.choices[0]!.message.content).toBe('Hi! (fake model)')
      expect(b.choices[0]!.message.content).toBe('Hi! (fake model)')
    })
  })

  describe('the conversation', () => {
    it('goes to the CLI as a transcript keeping every role in order, system messages as the system prompt', async () => {
      const { client } = await openaiApp()
      const completion = await client.chat.completions.create({
        model: 'haiku',
        messages: [
          { role: 'system', content: 'Be terse.' },
          { role: 'developer', content: 'Answer in English.' },
          { role: 'user', content: 'What is 2+2?', name: 'ann' },
          { role: 'assistant', content: '4' },
          { role: 'tool', content: 'tool output', tool_call_id: 'call_1' },
          { role: 'user', content: [{ type: 'text', text: 'And 3+3?' }, { type: 'text', text: '[[fake echo]]' }] },
        ],
      })
      const seen = echoOf(completion.choices[0]!.message.content!)
      expect(seen.argv).toContain('--append-system-prompt=Be terse.\n\nAnswer in English.')
      const stdin = seen.stdin!
      const order = ['<user name="ann">\nWhat is 2+2?\n</user>', '<assistant>\n4\n</assistant>', '<tool_result tool_call_id="call_1">\ntool output\n</tool_result>', '<user>\nAnd 3+3?\n[[fake echo]]\n</user>']
      let at = -1
      for (const part of order) {
        const next = stdin.indexOf(part)
        expect(next, part).toBeGreaterThan(at)
        at = next
      }
      expect(stdin.trimEnd().endsWith('</user>')).toBe(true)
      expect(stdin).not.toContain('Be terse.')
    })

    it('sends a single user message as it is', async () => {
      const { client } = await openaiApp({ systemPromptMode: 'replace' })
      const completion = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'just this [[fake echo]]' }] })
      const seen = echoOf(completion.choices[0]!.message.content!)
      expect(seen.stdin).toBe('just this [[fake echo]]')
      expect(seen.argv).toContain('--system-prompt=You are terse.')
    })

    it('handles a 500 KiB conversation and a system prompt too long for argv', async () => {
      const { client } = await openaiApp()
      const messages = []
      for (let i = 0; i < 50; i++) {
        messages.push({ role: 'user' as const, content: `question ${i} ${'q'.repeat(5 * 1024)}` })
        messages.push({ role: 'assistant' as const, content: `answer ${i} ${'a'.repeat(5 * 1024)}` })
      }
      messages.push({ role: 'user' as const, content: 'last [[fake echo]]' })
      const system = 's'.repeat(150 * 1024)
      const completion = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'system', content: system }, ...messages] })
      const seen = echoOf(completion.choices[0]!.message.content!)
      expect(seen.stdin_bytes).toBeGreaterThan(500 * 1024)
      expect(seen.argv.some(arg => arg.startsWith('--append-system-prompt-file='))).toBe(true)
      expect(seen.argv.some(arg => arg.startsWith('--append-system-prompt='))).toBe(false)
      expect(seen.stdin_sha256).toMatch(/^[0-9a-f]{64}$/)
      expect(createHash('sha256').update('x').digest('hex')).not.toBe(seen.stdin_sha256)
    })
  })

  describe('GET /v1/models', () => {
    it('lists the configured models', async () => {
      const { client } = await openaiApp({ openaiModels: ['haiku', 'sonnet', 'opus', 'claude-opus-4-1'] })
      const page = await client.models.list()
      expect(page.data.map(model => model.id)).toEqual(['haiku', 'sonnet', 'opus', 'claude-opus-4-1'])
      expect(page.data[0]).toMatchObject({ object: 'model', owned_by: 'anthropic', created: expect.any(Number) })
      expect(await client.models.retrieve('sonnet')).toMatchObject({ id: 'sonnet', object: 'model' })
      await expect(client.models.retrieve('gpt-4o')).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    })
  })

  describe('raw SSE', () => {
    it('frames every event as data: <json> and ends with [DONE]', async () => {
      const { url } = await openaiApp({ sseKeepAliveSeconds: 0.1 })
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'haiku', messages: user('[[fake sleep 600]] [[fake deltas 2]]'), stream: true }),
      })
      expect(response.status).toBe(200)
      expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8')
      expect(response.headers.get('cache-control')).toContain('no-cache')
      const body = await response.text()
      expect(body.endsWith('\n\n')).toBe(true)
      const events = body.slice(0, -2).split('\n\n')
      // A silent agent (600 ms, keep-alive every 100 ms) gets SSE comments first.
      expect(events[0]).toBe(': keep-alive')
      const data = events.filter(event => !event.startsWith(':'))
      expect(data.at(-1)).toBe('data: [DONE]')
      for (const event of data.slice(0, -1)) {
        expect(event).toMatch(/^data: \{.*\}$/)
        expect(JSON.parse(event.slice('data: '.length)).object).toBe('chat.completion.chunk')
      }
      expect(data.length).toBe(2 + 2 + 1) // role chunk, two deltas, finish chunk, [DONE]
    })

    it('answers a refusal that comes before any output with a plain JSON error and its status', async () => {
      const { url } = await openaiApp()
      const response = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'haiku', messages: user('[[fake api-error 429]]'), stream: true }),
      })
      expect(response.status).toBe(429)
      expect(response.headers.get('content-type')).toMatch(/^application\/json/)
      expect(((await response.json()) as { error: unknown }).error).toMatchObject({ type: 'rate_limit_error', code: 'upstream_rate_limited' })
    })
  })
})
