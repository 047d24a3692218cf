import { connect, type Socket } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import Anthropic from '@anthropic-ai/sdk'
import OpenAI from 'openai'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { AUTH, finished, getJob, listen, makeApp, submit, tempDir, TOKEN } from './helpers/app.ts'
import { AgentProbe, expectAllGone } from './helpers/probe.ts'
import { makeRepo } from './helpers/repos.ts'
import { collectEvents } from './helpers/sse.ts'

const MiB = 1024 * 1024

/** A raw client socket to `base` that sends `request` and records what comes back. */
async function rawClient (base: string, request: string): Promise<{ socket: Socket, received: () => string, closed: Promise<void> }> {
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  onTestFinished(() => { socket.destroy() })
  await new Promise<void>(resolve => socket.once('connect', () => resolve()))
  let received = ''
  socket.setEncoding('utf8').on('data', chunk => { received += chunk })
  socket.on('error', () => {})
  const closed = new Promise<void>(resolve => socket.once('close', () => resolve()))
  socket.write(request)
  return { socket, received: () => received, closed }
}

const openConnections = (app: Awaited<ReturnType<typeof makeApp>>['app']): Promise<number> =>
  new Promise((resolve, reject) => app.server.getConnections((error, count) => error ? reject(error) : resolve(count)))

const metric = async (app: Awaited<ReturnType<typeof makeApp>>['app'], line: string): Promise<boolean> =>
  (await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })).body.split('\n').includes(line)

describe('a streaming chat completion whose client never reads', () => {
  it('is cut off past its buffer, its run cancelled as the client gone, its socket closed, memory bounded', async () => {
    // A 64 MiB answer, far more than the 4 MiB a stream may hold; the answer bound is out of the way.
    const { app } = await makeApp({ maxOutputBytes: 256 * MiB })
    const base = await listen(app)
    // Released from the start: it only records the agent's host pid (its own is its sandbox's).
    const probe = await AgentProbe.start()
    probe.release()
    const body = JSON.stringify({ model: 'haiku', stream: true, messages: [{ role: 'user', content: `${probe.directive} [[fake flood-deltas ${64 * MiB}]]` }] })
    const rssBefore = process.memoryUsage().rss
    const client = await rawClient(base, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    client.socket.pause()
    await vi.waitFor(async () => expect(await metric(app, 'claude_runner_chat_completions_total{tenant="default",api="chat.completions",outcome="client_gone"} 1')).toBe(true), { timeout: 30_000, interval: 100 })
    await expectAllGone([probe.started[0]!.pid])
    expect(app.ctx.engine.queue.counts.active).toBe(0)
    await vi.waitFor(async () => expect(await openConnections(app)).toBe(0))
    // Without the bound the whole answer waits in memory for the client, on top of the run's own
    // output (64 MiB each). With it: measured 37.5 MiB, mostly the run's output kept until the cut.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(64 * MiB)
  })

  it('answers a MAX_OUTPUT_BYTES answer cut there, with finish_reason "length", streamed or not', async () => {
    const { app } = await makeApp({ maxOutputBytes: 256 * 1024 })
    const base = await listen(app)
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const probe = await AgentProbe.start()
    probe.release()
    const whole = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: `${probe.directive} [[fake flood ${4 * MiB}]]` }] })
    expect(whole.choices[0]!.finish_reason).toBe('length')
    const content = whole.choices[0]!.message.content!
    expect(Buffer.byteLength(content)).toBeLessThanOrEqual(256 * 1024)
    expect(Buffer.byteLength(content)).toBeGreaterThan(190 * 1024)
    expect(content).toMatch(/^x+\n\nx+/)

    const stream = await client.chat.completions.create({ model: 'haiku', stream: true, messages: [{ role: 'user', content: `${probe.directive} [[fake flood-deltas ${4 * MiB}]]` }] })
    let streamed = ''
    let reason: string | null = null
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta.content ?? ''
      reason = chunk.choices[0]?.finish_reason ?? reason
    }
    expect(reason).toBe('length')
    expect(Buffer.byteLength(streamed)).toBe(256 * 1024)
    // The runs were stopped at the bound, not left to print the rest.
    await expectAllGone(probe.started.map(start => start.pid))
    expect(probe.started).toHaveLength(2)
    expect(await metric(app, 'claude_runner_chat_completions_total{tenant="default",api="chat.completions",outcome="length"} 2')).toBe(true)
  })

  it('cuts a response and a message there too: incomplete, max_tokens; a stored response reads back as it was answered', async () => {
    const { app } = await makeApp({ maxOutputBytes: 256 * 1024 })
    const base = await listen(app)
    const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const anthropic = new Anthropic({ baseURL: base, authToken: TOKEN, apiKey: null, maxRetries: 0 })
    const probe = await AgentProbe.start()
    probe.release()
    const flood = `${probe.directive} [[fake flood ${4 * MiB}]]`
    const response = await openai.responses.create({ model: 'haiku', input: flood })
    expect(response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } })
    expect(Buffer.byteLength(response.output_text)).toBeGreaterThan(190 * 1024)
    expect(Buffer.byteLength(response.output_text)).toBeLessThanOrEqual(256 * 1024)
    const { output_text: text, ...kept } = await openai.responses.retrieve(response.id)
    const { output_text: answered, ...wire } = response
    expect(kept).toEqual(wire)
    expect(text).toBe(answered)
    const streamed = await openai.responses.stream({ model: 'haiku', input: `${probe.directive} [[fake flood-deltas ${4 * MiB}]]` }).finalResponse()
    expect(streamed.status).toBe('incomplete')
    expect(Buffer.byteLength(streamed.output_text)).toBe(256 * 1024)

    const message = await anthropic.messages.create({ model: 'haiku', max_tokens: 10, messages: [{ role: 'user', content: flood }] })
    expect(message.stop_reason).toBe('max_tokens')
    const final = await anthropic.messages.stream({ model: 'haiku', max_tokens: 10, messages: [{ role: 'user', content: `${probe.directive} [[fake flood-deltas ${4 * MiB}]]` }] }).finalMessage()
    expect(final.stop_reason).toBe('max_tokens')
    expect(Buffer.byteLength((final.content[0] as { text: string }).text)).toBe(256 * 1024)
    await expectAllGone(probe.started.map(start => start.pid))
    expect(probe.started).toHaveLength(4)
    expect(await metric(app, 'claude_runner_chat_completions_total{tenant="default",api="responses",outcome="length"} 2')).toBe(true)
    expect(await metric(app, 'claude_runner_chat_completions_total{tenant="default",api="messages",outcome="length"} 2')).toBe(true)
  })

  it('answers one under the bound whole, with finish_reason "stop", streamed or not', async () => {
    const { app } = await makeApp({ maxOutputBytes: 256 * 1024 })
    const client = new OpenAI({ baseURL: `${await listen(app)}/v1`, apiKey: TOKEN, maxRetries: 0 })
    // 140 KB: more than half the bound, so counting it twice would cut it.
    const text = 'é'.repeat(70_000)
    const answer = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: `[[fake text ${text}]]` }] })
    expect(answer.choices[0]).toMatchObject({ finish_reason: 'stop', message: { content: text } })
    const stream = await client.chat.completions.create({ model: 'haiku', stream: true, messages: [{ role: 'user', content: `[[fake text ${text}]] [[fake deltas 7]]` }] })
    let streamed = ''
    let reason: string | null = null
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta.content ?? ''
      reason = chunk.choices[0]?.finish_reason ?? reason
    }
    expect(reason).toBe('stop')
    expect(streamed).toBe(text)
  })
})

describe('a follower of /jobs/:id/events that never reads', () => {
  it('has its connection closed once the job ended, not kept as an idle keep-alive one', async () => {
    const { app } = await makeApp()
    const base = await listen(app)
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    const client = await rawClient(base, `GET /jobs/${job.job_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`)
    client.socket.pause()
    await vi.waitFor(() => expect(app.ctx.engine.events.followers).toBe(1))
    probe.release()
    await finished(app, job.job_id)
    await vi.waitFor(async () => expect(await openConnections(app)).toBe(0))
  })
})

describe('REQUEST_TIMEOUT_SECONDS', () => {
  const post = (length: number, start: string) => `POST /execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n${start}`

  it('closes a request whose body never comes with a 408 in the API\'s shape, accepting nothing', async () => {
    const { app } = await makeApp({ requestTimeoutSeconds: 0.3 })
    const base = await listen(app)
    const client = await rawClient(base, post(100, '{"prompt": "hi'))
    await client.closed
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/)
    const body = JSON.parse(client.received().split('\r\n\r\n')[1]!)
    expect(body.error).toMatchObject({ code: 'request_timeout', message: expect.stringContaining('REQUEST_TIMEOUT_SECONDS') })
    expect((await app.ctx.engine.store.list({ limit: 10 })).records).toEqual([])
  })

  it('closes a body sent a byte at a time', async () => {
    const { app } = await makeApp({ requestTimeoutSeconds: 0.5 })
    const base = await listen(app)
    const payload = JSON.stringify({ prompt: 'x'.repeat(500) })
    const client = await rawClient(base, post(payload.length, ''))
    let sent = 0
    const drip = setInterval(() => { if (sent < payload.length) client.socket.write(payload[sent++]!) }, 20)
    onTestFinished(() => clearInterval(drip))
    await client.closed
    expect(sent).toBeLessThan(payload.length)
    expect(client.received()).toContain('"code":"request_timeout"')
    expect((await app.ctx.engine.store.list({ limit: 10 })).records).toEqual([])
  })

  it('counts only receiving the request: a long-poll and a stream outlive it', async () => {
    const { app } = await makeApp({ requestTimeoutSeconds: 0.2 })
    const base = await listen(app)
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    // A stream opened first, and a long-poll, both outlive the request timeout several times over.
    const following = collectEvents(base, `/jobs/${job.job_id}/events`)
    await vi.waitFor(() => expect(app.ctx.engine.events.followers).toBe(1))
    const started = performance.now()
    const polled = await fetch(`${base}/jobs/${job.job_id}?wait=0.8`, { headers: AUTH })
    expect(performance.now() - started).toBeGreaterThan(700)
    expect(polled.status).toBe(200)
    expect((await polled.json() as { status: string }).status).toBe('running')
    probe.release()
    expect((await following).events.at(-1)).toMatchObject({ type: 'end', data: { status: 'completed' } })
  })
})

/** `global.gc`, without starting the test process with --expose-gc. */
function collector (): () => void {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

describe('GET /jobs/:id?wait', () => {
  it('releases what a returned long-poll held at once, not when the job ends', async () => {
    const { app } = await makeApp()
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    const gc = collector()
    const polls = async (count: number): Promise<void> => {
      for (let done = 0; done < count; done += 500) {
        const batch = await Promise.all(Array.from({ length: 500 }, () => app.inject({ method: 'GET', url: `/jobs/${job.job_id}?wait=0.001`, headers: AUTH })))
        expect(batch.every(response => response.statusCode === 200)).toBe(true)
      }
    }
    await polls(2000) // warm up: compiled code, pools, caches
    gc()
    const before = process.memoryUsage().heapUsed
    await polls(10_000)
    gc()
    const grown = process.memoryUsage().heapUsed - before
    // Each poll that stayed attached to the running job kept ~300 bytes: 10,000 of them, 3 MB.
    expect(grown).toBeLessThan(MiB)
    probe.release()
    await finished(app, job.job_id)
  })
})

describe('MAX_RETAINED_BYTES', () => {
  it('counts everything a finished job holds, its list of changed files too', async () => {
    const dir = await tempDir()
    const repo = makeRepo(dir)
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, maxDiffBytes: 1024, maxRetainedBytes: 200 * 1024 })
    await app.ctx.workspaces.ready
    // 2,000 new files: a diff cut at 1 KiB, but a file list of ~300 KB.
    const big = await submit(app, { prompt: '[[fake files 2000 generated/reports/quarterly/artifact-with-a-rather-long-descriptive-name-]]' })
    const bigJob = await finished(app, big.job_id)
    expect(bigJob.changes!.files).toHaveLength(2000)
    expect(bigJob.changes!.diff_truncated).toBe(true)
    const small = await submit(app, { prompt: 'hi' })
    await finished(app, small.job_id)
    // The two together are over the budget: the oldest went.
    expect((await app.inject({ method: 'GET', url: `/jobs/${big.job_id}`, headers: AUTH })).statusCode).toBe(404)
    expect((await getJob(app, small.job_id)).status).toBe('completed')
  })
})
