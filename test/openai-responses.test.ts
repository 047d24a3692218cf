import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createOpenAI } from '@ai-sdk/openai'
import { generateText, streamText } from 'ai'
import OpenAI, { APIError } from 'openai'
import { describe, expect, it, vi } from 'vitest'
import type { Config } from '../src/config.ts'
import type { AppDeps } from '../src/app.ts'
import { listen, appMaker, describeEngines, tempDir, TOKEN, makeApp as makeAnyApp } from './helpers/app.ts'
import { abortAtFirst, AgentProbe, expectAllGone, heldAgentGroup } from './helpers/probe.ts'

const echoOf = (text: string) => JSON.parse(text) as { argv: string[], stdin: string | null }

/** What `[[fake recall]]` answered: the session resumed and its prompts so far. */
function recalled (text: string): { resumed: string | null, session_id: string, prompts: string[] } {
  const line = text.split('\n').find(entry => entry.startsWith('recall '))
  if (line === undefined) throw new Error(`no recall in ${JSON.stringify(text)}`)
  return JSON.parse(line.slice('recall '.length))
}

/** A stored response whose agent waits before its second delta: in progress until `gate` lets it go. */
async function inProgress (client: OpenAI) {
  const gate = await AgentProbe.start()
  const stream = client.responses.stream({ model: 'haiku', input: `[[fake text a b]] [[fake deltas 2]] [[fake delta-probe ${gate.url}]]` })
  const created = new Promise<string>(resolve => stream.once('response.created', event => resolve(event.response.id)))
  await gate.waitStarted(1)
  gate.releaseOne()
  const id = await created
  await gate.waitStarted(2)
  return { gate, id, stream }
}

describeEngines('OpenAI Responses', engine => {
  const makeApp = appMaker(engine)

  async function responsesApp (overrides: Partial<Config> = {}, deps: AppDeps = {}) {
    const made = await makeApp(overrides, deps)
    const url = await listen(made.app)
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0, timeout: 60_000 })
    return { ...made, url, client }
  }

  describe('POST /v1/responses', () => {
    it('answers responses.create with the output text and usage mapped from the CLI', async () => {
      const { client } = await responsesApp()
      const response = await client.responses.create({ model: 'haiku', input: 'say hi [[fake usage 100 20 30 40]]', metadata: { ticket: 'T-1' } })
      expect(response).toMatchObject({
        id: expect.stringMatching(/^resp_[0-9a-f]{48}$/),
        object: 'response',
        created_at: expect.any(Number),
        status: 'completed',
        error: null,
        incomplete_details: null,
        model: 'claude-haiku-5-5',
        output: [{ type: 'message', id: expect.stringMatching(/^msg_/), role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'Hi! (fake model)', annotations: [] }] }],
        // input 100 + cache read 30 + cache creation 40 = 170 input tokens, 30 of them cached
        usage: { input_tokens: 170, input_tokens_details: { cached_tokens: 30 }, output_tokens: 20, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 190 },
        metadata: { ticket: 'T-1' },
        store: true,
      })
      // The SDK's own convenience field, from the output.
      expect(response.output_text).toBe('Hi! (fake model)')
    })

    it('puts instructions, system and developer messages in the system prompt, the conversation on stdin', async () => {
      const { client } = await responsesApp()
      const response = await client.responses.create({
        model: 'haiku',
        instructions: 'Be terse.',
        input: [
          { role: 'developer', content: 'Answer in English.' },
          { role: 'user', content: [{ type: 'input_text', text: 'What is 2+2?' }] },
          { role: 'assistant', content: [{ type: 'output_text', text: '4', annotations: [] }] },
          { type: 'message', role: 'user', content: 'And 3+3? [[fake echo]]' },
        ] as never,
      })
      const seen = echoOf(response.output_text)
      expect(seen.argv).toContain('--append-system-prompt=Be terse.\n\nAnswer in English.')
      const stdin = seen.stdin!
      const order = ['<user>\nWhat is 2+2?\n</user>', '<assistant>\n4\n</assistant>', '<user>\nAnd 3+3? [[fake echo]]\n</user>']
      let at = -1
      for (const part of order) {
        const next = stdin.indexOf(part)
        expect(next, part).toBeGreaterThan(at)
        at = next
      }
      expect(stdin).not.toContain('Be terse.')
      // A lone string is the prompt as it is.
      expect(echoOf((await client.responses.create({ model: 'haiku', input: 'just this [[fake echo]]' })).output_text).stdin).toBe('just this [[fake echo]]')
    })

    it('streams the API\'s event sequence, numbered, ending with response.completed and its usage', async () => {
      const { client } = await responsesApp()
      const stream = await client.responses.create({ model: 'sonnet', input: '[[fake text Hello streaming world]] [[fake deltas 3]] [[fake usage 10 7 0 0]]', stream: true })
      const events = []
      for await (const event of stream) events.push(event)
      const types = events.map(event => event.type)
      expect(types).toEqual([
        'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
        'response.output_text.delta', 'response.output_text.delta', 'response.output_text.delta',
        'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
      ])
      expect(events.map(event => event.sequence_number)).toEqual(events.map((_, i) => i))
      const deltas = events.flatMap(event => event.type === 'response.output_text.delta' ? [event.delta] : [])
      expect(deltas.join('')).toBe('Hello streaming world')
      const done = events.at(-1)!
      if (done.type !== 'response.completed') throw new Error(done.type)
      expect(done.response).toMatchObject({ status: 'completed', model: 'claude-sonnet-5-5', usage: { input_tokens: 10, output_tokens: 7, total_tokens: 17 } })
      expect(done.response.output[0]).toMatchObject({ type: 'message', status: 'completed', content: [{ type: 'output_text', text: 'Hello streaming world' }] })
      // One response, one message: every event names the same ones.
      expect(new Set(events.flatMap(event => 'response' in event ? [event.response.id] : []))).toEqual(new Set([done.response.id]))
      expect(new Set(events.flatMap(event => 'item_id' in event ? [event.item_id] : []))).toEqual(new Set([done.response.output[0]!.id]))
    })

    it('gives the responses.stream helper what it needs to assemble the final response', async () => {
      const { client } = await responsesApp()
      const stream = client.responses.stream({ model: 'haiku', input: '[[fake say Let me look.]] [[fake subagent subagent chatter]] [[fake text Here it is.]]' })
      const deltas: string[] = []
      stream.on('response.output_text.delta', event => deltas.push(event.delta))
      const final = await stream.finalResponse()
      expect(final.output_text).toBe('Let me look.\n\nHere it is.')
      expect(deltas.join('')).toBe('Let me look.\n\nHere it is.')
      expect(final.status).toBe('completed')
      expect(final.usage?.total_tokens).toBeGreaterThan(0)
    })

    it('answers text.format json_schema with the object\'s JSON, streamed as one delta', async () => {
      const { client } = await responsesApp()
      const schema = { type: 'object', properties: { verdict: { type: 'string', enum: ['pass', 'fail'] } }, required: ['verdict'], additionalProperties: false }
      const format = { type: 'json_schema' as const, name: 'verdict', schema, strict: true }
      const prompt = '[[fake say Let me look first.]] [[fake structured {"verdict": "fail"}]]'
      const response = await client.responses.create({ model: 'haiku', input: prompt, text: { format } })
      expect(JSON.parse(response.output_text)).toEqual({ verdict: 'fail' })
      expect(response.text?.format).toMatchObject({ type: 'json_schema', name: 'verdict', schema })
      const stream = client.responses.stream({ model: 'haiku', input: prompt, text: { format } })
      const deltas: string[] = []
      stream.on('response.output_text.delta', event => deltas.push(event.delta))
      expect(JSON.parse((await stream.finalResponse()).output_text)).toEqual({ verdict: 'fail' })
      expect(deltas).toEqual(['{"verdict":"fail"}'])
    })

    it('passes reasoning.effort as --effort, minimal as low', async () => {
      const { client } = await responsesApp()
      for (const [effort, flag] of [['high', '--effort=high'], ['minimal', '--effort=low']] as const) {
        const response = await client.responses.create({ model: 'haiku', input: '[[fake echo]]', reasoning: { effort } })
        expect(echoOf(response.output_text).argv).toContain(flag)
        expect(response.reasoning?.effort).toBe(effort)
      }
    })

    it('accepts and ignores max_output_tokens, temperature and top_p', async () => {
      const { client } = await responsesApp()
      const response = await client.responses.create({ model: 'haiku', input: '[[fake echo]]', max_output_tokens: 16, temperature: 0.2, top_p: 0.5, tools: [], tool_choice: 'auto', store: false })
      expect(echoOf(response.output_text).argv).toEqual(['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose', '--model=haiku'])
    })

    it('refuses tools, images, files and other items with 400 unsupported naming the parameter', async () => {
      const { client, app } = await responsesApp()
      const cases: Array<[Record<string, unknown>, string, string]> = [
        [{ input: 'hi', tools: [{ type: 'function', name: 'f', parameters: {} }] }, 'tools', 'unsupported'],
        [{ input: 'hi', tool_choice: 'required' }, 'tool_choice', 'unsupported'],
        [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] }, 'input.0.content.0', 'unsupported'],
        [{ input: [{ role: 'user', content: [{ type: 'input_text', text: 'a' }, { type: 'input_file', file_id: 'f' }] }] }, 'input.0.content.1', 'unsupported'],
        [{ input: [{ role: 'user', content: 'hi' }, { type: 'function_call_output', call_id: 'c', output: 'x' }] }, 'input.1', 'unsupported'],
        [{ input: 'hi', background: true }, 'background', 'unsupported'],
        [{ input: 'hi', conversation: 'conv_1' }, 'conversation', 'unsupported'],
        [{ input: 'hi', reasoning: { effort: 'none' } }, 'reasoning.effort', 'unsupported'],
        [{ input: 'hi', text: { format: { type: 'grammar' } } }, 'text.format', 'unsupported'],
        [{ input: 'hi', text: { format: { type: 'json_schema', name: 'v' } } }, 'text.format.schema', 'validation_error'],
        [{ input: 'hi', text: { format: { type: 'json_schema', name: 'v', schema: { type: 'string' } } } }, 'text.format.schema', 'validation_error'],
        [{ input: [{ role: 'system', content: 'only the system' }] }, 'input', 'validation_error'],
        [{ input: [{ role: 'wizard', content: 'x' }] }, 'input.0.role', 'validation_error'],
        [{ input: 'hi', instructions: 'a\u0000b' }, 'instructions', 'validation_error'],
      ]
      for (const [body, param, code] of cases) {
        const error = await client.responses.create({ model: 'haiku', ...body } as never).then(() => undefined, (e: unknown) => e)
        expect(error, JSON.stringify(body)).toBeInstanceOf(OpenAI.BadRequestError)
        expect((error as APIError).param, JSON.stringify(body)).toBe(param)
        expect((error as APIError).code, JSON.stringify(body)).toBe(code)
      }
      expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    })

    it('answers 404 for a model that is not Claude, 429 when the queue is full', async () => {
      const { client } = await responsesApp({ maxConcurrency: 1, maxQueueDepth: 1 })
      const missing = await client.responses.create({ model: 'gpt-4o', input: 'hi' }).then(() => undefined, (e: unknown) => e)
      expect(missing).toBeInstanceOf(OpenAI.NotFoundError)
      expect((missing as APIError).code).toBe('model_not_found')
      const probe = await AgentProbe.start()
      const first = client.responses.create({ model: 'haiku', input: probe.directive })
      await probe.waitStarted(1)
      const full = await client.responses.create({ model: 'haiku', input: 'hi', stream: true }).then(() => undefined, (e: unknown) => e)
      expect(full).toBeInstanceOf(OpenAI.RateLimitError)
      expect((full as APIError).code).toBe('queue_full')
      expect((full as APIError).headers?.get('retry-after')).toMatch(/^\d+$/)
      probe.release()
      expect((await first).output_text).toBe('Hi! (fake model)')
    })

    it('maps agent failures to the right error class, and ends a stream already started with response.failed', async () => {
      const { client } = await responsesApp()
      const refused = await client.responses.create({ model: 'haiku', input: '[[fake api-error 429]]', stream: true }).then(() => undefined, (e: unknown) => e)
      expect(refused).toBeInstanceOf(OpenAI.RateLimitError)
      expect((refused as APIError).code).toBe('upstream_rate_limited')
      const crashed = await client.responses.create({ model: 'haiku', input: '[[fake exit 3]]' }).then(() => undefined, (e: unknown) => e)
      expect(crashed).toBeInstanceOf(OpenAI.InternalServerError)
      expect((crashed as APIError).code).toBe('agent_failed')

      const stream = await client.responses.create({ model: 'haiku', input: '[[fake say partial answer]] [[fake exit 3]]', stream: true })
      const events = []
      for await (const event of stream) events.push(event)
      const failed = events.at(-1)!
      if (failed.type !== 'response.failed') throw new Error(`ended with ${failed.type}`)
      expect(failed.response).toMatchObject({ status: 'failed', error: { code: 'agent_failed', message: expect.stringContaining('exited with code 3') } })
      expect(failed.response.output[0]).toMatchObject({ type: 'message', status: 'incomplete', content: [{ text: 'partial answer' }] })
      expect(events.map(event => event.sequence_number)).toEqual(events.map((_, i) => i))
    })

    it('reports max turns as an incomplete response', async () => {
      const { client } = await responsesApp()
      const response = await client.responses.create({ model: 'haiku', input: '[[fake max-turns]]' })
      expect(response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } })
      const stream = client.responses.stream({ model: 'haiku', input: '[[fake max-turns]]' })
      const types: string[] = []
      stream.on('event', event => types.push(event.type))
      expect((await stream.finalResponse()).status).toBe('incomplete')
      expect(types.at(-1)).toBe('response.incomplete')
    })

    it('kills the agent\'s process group and frees the slot when the stream is aborted', async () => {
      const { client, app } = await responsesApp({ maxConcurrency: 1 })
      const gate = await AgentProbe.start()
      const stream = client.responses.stream({ model: 'haiku', input: `[[fake grandchild]] [[fake text a b]] [[fake deltas 2]] [[fake delta-probe ${gate.url}]]` })
      const group = await heldAgentGroup(gate)
      await abortAtFirst(gate, stream, 'response.output_text.delta')
      await expectAllGone(group)
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.active).toBe(0))
      expect((await client.responses.create({ model: 'haiku', input: 'hi' })).output_text).toBe('Hi! (fake model)')
    })
  })

  describe('stored responses', () => {
    it('GET returns a stored response as it was answered, streamed or not; DELETE removes it', async () => {
      const { client } = await responsesApp()
      const answered = await client.responses.create({ model: 'haiku', input: 'say hi [[fake usage 5 6 0 0]]', instructions: 'Be brief.', metadata: { a: 'b' } })
      expect(await client.responses.retrieve(answered.id)).toEqual(answered)
      let streamed: OpenAI.Responses.Response | undefined
      for await (const event of await client.responses.create({ model: 'haiku', input: '[[fake text one two]] [[fake deltas 2]]', stream: true })) {
        if (event.type === 'response.completed') streamed = event.response
      }
      // The SDK adds output_text to what it retrieves.
      const { output_text: text, ...retrieved } = await client.responses.retrieve(streamed!.id)
      expect(retrieved).toEqual(streamed)
      expect(text).toBe('one two')

      const deleted = await fetch(`${client.baseURL}/responses/${answered.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } })
      expect(await deleted.json()).toEqual({ id: answered.id, object: 'response', deleted: true })
      const gone = await client.responses.retrieve(answered.id).then(() => undefined, (e: unknown) => e)
      expect(gone).toBeInstanceOf(OpenAI.NotFoundError)
      expect((gone as APIError).code).toBe('response_not_found')
      await expect(client.responses.delete(answered.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
      await client.responses.delete(streamed!.id)
      await expect(client.responses.retrieve(streamed!.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
    })

    it('is only its tenant\'s (and an admin\'s) to read, delete or continue', async () => {
      const file = join(await tempDir(), 'tenants.json')
      const [A, B, ADMIN] = ['team-a-token-0123456789abcdef', 'team-b-token-0123456789abcdef', 'ops-admin-token-0123456789abc']
      await writeFile(file, JSON.stringify({ tenants: [{ name: 'team-a', tokens: [A] }, { name: 'team-b', tokens: [B] }, { name: 'ops', tokens: [ADMIN], scopes: ['admin', 'chat'] }] }))
      const { url } = await responsesApp({ tenantsFile: file })
      const as = (token: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: token, maxRetries: 0 })
      const response = await as(A).responses.create({ model: 'haiku', input: 'hi' })
      for (const call of [() => as(B).responses.retrieve(response.id), () => as(B).responses.delete(response.id), () => as(B).responses.create({ model: 'haiku', input: 'hi', previous_response_id: response.id })]) {
        const error = await call().then(() => undefined, (e: unknown) => e)
        expect(error).toBeInstanceOf(OpenAI.NotFoundError)
        expect((error as APIError).code).toMatch(/^(previous_)?response_not_found$/)
      }
      expect((await as(ADMIN).responses.retrieve(response.id)).id).toBe(response.id)
      expect((await as(A).responses.retrieve(response.id)).output_text).toBe('Hi! (fake model)')
    })

    it('keeps nothing to read back with store: false', async () => {
      const { client } = await responsesApp()
      const response = await client.responses.create({ model: 'haiku', input: 'hi', store: false })
      expect(response).toMatchObject({ store: false })
      const error = await client.responses.retrieve(response.id).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.NotFoundError)
      expect((error as APIError).code).toBe('response_not_found')
    })

    it('shows a stored response in progress, which cannot be deleted until it ends', async () => {
      const { client } = await responsesApp()
      const { gate, id, stream } = await inProgress(client)
      expect(await client.responses.retrieve(id)).toMatchObject({ id, status: 'in_progress', output: [], usage: null })
      const refused = await client.responses.delete(id).then(() => undefined, (e: unknown) => e)
      expect(refused).toBeInstanceOf(APIError)
      expect((refused as APIError).status).toBe(409)
      expect((refused as APIError).code).toBe('response_in_progress')
      gate.release()
      expect((await stream.finalResponse()).id).toBe(id)
      expect(await client.responses.retrieve(id)).toMatchObject({ status: 'completed', output: [{ content: [{ text: 'a b' }] }] })
    })

    it('outlives the minute chat runs are kept, until JOB_TTL_SECONDS', async () => {
      let now = Date.now()
      const { client } = await responsesApp({ jobTtlSeconds: 300 }, { now: () => now })
      const stored = await client.responses.create({ model: 'haiku', input: 'hi' })
      const brief = await client.responses.create({ model: 'haiku', input: 'hi', store: false })
      now += 120_000
      expect((await client.responses.retrieve(stored.id)).output_text).toBe('Hi! (fake model)')
      expect(await client.responses.retrieve(brief.id).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError)
      now += 200_000
      expect(await client.responses.retrieve(stored.id).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError)
    })

    it('carries on a stored response with previous_response_id: its session resumed, the new input its next prompt', async () => {
      const { client } = await responsesApp()
      const first = await client.responses.create({ model: 'haiku', instructions: 'Be terse.', input: 'remember the word PELICAN' })
      expect(first.previous_response_id).toBeNull()
      const second = await client.responses.create({ model: 'haiku', input: 'which word? [[fake recall]]', previous_response_id: first.id })
      expect(second).toMatchObject({ status: 'completed', previous_response_id: first.id, store: true })
      const { resumed, session_id: session, prompts } = recalled(second.output_text)
      expect(resumed).toBe(session)
      expect(prompts).toEqual(['remember the word PELICAN', 'which word? [[fake recall]]'])
      // Read back, it says what it continued.
      expect(await client.responses.retrieve(second.id)).toMatchObject({ previous_response_id: first.id })
      // Streamed, through the SDK's helper; and a chain goes on, with this call's system prompt only.
      const stream = client.responses.stream({ model: 'haiku', input: 'and now? [[fake recall]]', previous_response_id: second.id })
      const third = await stream.finalResponse()
      expect(third).toMatchObject({ status: 'completed', previous_response_id: second.id })
      expect(recalled(third.output_text)).toEqual({ resumed: session, session_id: session, prompts: [...prompts, 'and now? [[fake recall]]'] })
      const echoed = echoOf((await client.responses.create({ model: 'haiku', input: '[[fake echo]]', previous_response_id: third.id })).output_text)
      expect(echoed.argv).toEqual(expect.arrayContaining([`--resume=${session}`, '--system-prompt-snapshot=off']))
      expect(echoed.argv.join(' ')).not.toContain('Be terse.')
      // A response can be carried on more than once: each from where it was.
      expect(recalled((await client.responses.create({ model: 'haiku', input: 'again [[fake recall]]', previous_response_id: first.id })).output_text).prompts)
        .toEqual(['remember the word PELICAN', 'again [[fake recall]]'])
    })

    it('answers previous_response_id with 404 for none kept, 409 while it runs, 400 when it kept no session, refusing before any run', async () => {
      let now = Date.now()
      const { client, app } = await responsesApp({ jobTtlSeconds: 300 }, { now: () => now })
      const refusal = async (previous: string): Promise<APIError> => {
        const error = await client.responses.create({ model: 'haiku', input: 'go on', previous_response_id: previous }).then(() => undefined, (e: unknown) => e)
        expect(error, previous).toBeInstanceOf(APIError)
        expect((error as APIError).param).toBe('previous_response_id')
        return error as APIError
      }
      const notFound = async (previous: string): Promise<void> => {
        const error = await refusal(previous)
        expect(error).toBeInstanceOf(OpenAI.NotFoundError)
        expect(error.code).toBe('previous_response_not_found')
      }
      await notFound('resp_nope')
      await notFound((await client.responses.create({ model: 'haiku', input: 'hi', store: false })).id)
      const deleted = await client.responses.create({ model: 'haiku', input: 'hi' })
      await client.responses.delete(deleted.id)
      await notFound(deleted.id)
      const expiring = await client.responses.create({ model: 'haiku', input: 'hi' })
      now += 301_000
      await notFound(expiring.id)
      // A chat completion is no response to carry on.
      const chat = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi' }] })
      await notFound(chat.id)

      // The agent of a streamed response waits before its second delta.
      const { gate, id, stream } = await inProgress(client)
      const busy = await refusal(id)
      expect(busy.status).toBe(409)
      expect(busy.code).toBe('response_in_progress')
      gate.release()
      await stream.finalResponse()

      const { client: off } = await responsesApp({ maxResumeBytes: 0 })
      const unkept = await off.responses.create({ model: 'haiku', input: 'hi' })
      const error = await off.responses.create({ model: 'haiku', input: 'go on', previous_response_id: unkept.id }).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(OpenAI.BadRequestError)
      expect((error as APIError).code).toBe('not_resumable')
      expect((error as APIError).message).toContain('MAX_RESUME_BYTES is 0')
      expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    })

    it('fails a continuation whose previous response was evicted while it waited for a slot, with 404', async () => {
      const { client, app } = await responsesApp({ maxConcurrency: 1, maxFinishedJobs: 1 })
      const first = await client.responses.create({ model: 'haiku', input: 'first' })
      const probe = await AgentProbe.start()
      const blocker = client.responses.create({ model: 'haiku', input: probe.directive, store: false })
      await probe.waitStarted(1)
      const waiting = client.responses.create({ model: 'haiku', input: 'go on', previous_response_id: first.id }).then(() => undefined, (e: unknown) => e)
      await vi.waitFor(() => expect(app.ctx.engine.queue.counts.queued).toBe(1))
      // The blocker ending makes two finished runs: the oldest, the one to carry on, goes.
      probe.release()
      await blocker
      const error = await waiting
      expect(error).toBeInstanceOf(OpenAI.NotFoundError)
      expect((error as APIError).code).toBe('previous_response_not_found')
      expect((error as APIError).message).toContain(`Previous response with id '${first.id}' is gone`)
    })

    if (engine === 'redis') {
      it('is answered by any replica, and deleted for all of them', async () => {
        const { client, config } = await responsesApp()
        const other = await responsesApp({ redisUrl: config.redisUrl, redisPrefix: config.redisPrefix })
        const response = await client.responses.create({ model: 'haiku', input: 'hi' })
        expect(await other.client.responses.retrieve(response.id)).toEqual(response)
        await other.client.responses.delete(response.id)
        await expect(client.responses.retrieve(response.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError)
      })
    }
  })

  describe('the Vercel AI SDK\'s default OpenAI provider', () => {
    it('generateText gets the text, usage and finish reason', async () => {
      const { url } = await responsesApp()
      const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN })
      const result = await generateText({ model: openai('sonnet'), system: 'Be terse.', prompt: 'say hi [[fake usage 100 20 30 40]]', maxRetries: 0 })
      expect(result.text).toBe('Hi! (fake model)')
      expect(result.finishReason).toBe('stop')
      expect(result.usage).toMatchObject({ inputTokens: 170, outputTokens: 20, totalTokens: 190 })
    })

    it('streamText yields the deltas, then the usage and finish reason', async () => {
      const { url } = await responsesApp()
      const openai = createOpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN })
      const errors: unknown[] = []
      const result = streamText({ model: openai('sonnet'), prompt: '[[fake text Hello streaming world]] [[fake deltas 3]] [[fake usage 10 7 0 0]]', maxRetries: 0, onError: ({ error }) => { errors.push(error) } })
      const chunks: string[] = []
      for await (const chunk of result.textStream) chunks.push(chunk)
      expect(errors).toEqual([])
      expect(chunks.join('')).toBe('Hello streaming world')
      expect(chunks.length).toBeGreaterThanOrEqual(3)
      expect(await result.finishReason).toBe('stop')
      expect(await result.usage).toMatchObject({ inputTokens: 10, outputTokens: 7, totalTokens: 17 })
    })
  })
})

describe('/v1/responses documentation', () => {
  it('documents the request as strictly as it handles it', async () => {
    const { app } = await makeAnyApp()
    const document = (await app.inject({ method: 'GET', url: '/openapi.json', headers: { authorization: `Bearer ${TOKEN}` } })).json()
    const create = document.paths['/v1/responses'].post
    expect(Object.keys(create.responses['200'].content)).toEqual(['application/json', 'text/event-stream'])
    expect(create.requestBody.content['application/json'].schema.properties.input.anyOf).toHaveLength(2)
    expect(document.paths['/v1/responses/{id}'].get.responses['404']).toBeDefined()
    expect(document.paths['/v1/responses/{id}'].delete.responses['409']).toBeDefined()
  })
})
