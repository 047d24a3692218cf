import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import type { Config } from '../src/config.ts'
import { AUTH, agentsTemplate, finished, getJob, listen, appMaker, describeEngines, run, submit, tempDir, TOKEN } from './helpers/app.ts'
import { cli } from './helpers/cli.ts'
import { AgentProbe } from './helpers/probe.ts'
import { collectEvents } from './helpers/sse.ts'

const SECRET = 'whsec_test_0123456789'

describeEngines('following jobs', engine => {
  const makeApp = appMaker(engine)

  describe('GET /jobs/:id/events', () => {
    it('gives a late subscriber the whole history in order, then the end', async () => {
      const { app } = await makeApp()
      const base = await listen(app)
      const job = await run(app, { prompt: '[[fake tool]] [[fake retry 1]] [[fake fallback]] [[fake text all done]]' })
      const { events, status, contentType } = await collectEvents(base, `/jobs/${job.job_id}/events`)
      expect(status).toBe(200)
      expect(contentType).toBe('text/event-stream; charset=utf-8')
      expect(events.map(event => event.type)).toEqual([
        'status', 'status', 'status', 'init', 'tool_use', 'tool_result', 'api_retry', 'model_fallback', 'text', 'result', 'status', 'status', 'end',
      ])
      const ids = events.filter(event => event.id !== undefined).map(event => event.id)
      expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1))
      expect(events.slice(0, 3).map(event => event.data.phase)).toEqual(['queued', 'preparing', 'running'])
      expect(events[4]!.data).toMatchObject({ name: 'Write', input: { content: 'hello from fake model\n' } })
      expect(events[5]!.data.summary).toContain('File created successfully')
      expect(events[6]!.data).toMatchObject({ attempt: 1, max_retries: 2, error_status: 500 })
      expect(events[7]!.data).toMatchObject({ fallback_model: 'claude-sonnet-5-5' })
      expect(events[9]!.data).toMatchObject({ is_error: false, text: 'all done', num_turns: 2 })
      expect(events[11]!.data).toMatchObject({ status: 'completed', phase: 'finished' })
      expect(events.at(-1)!.data).toMatchObject({ job_id: job.job_id, status: 'completed', result: { text: 'all done' } })
    })

    it('resumes with Last-Event-ID mid-run: what was missed, then the live tail, no duplicates', async () => {
      const { app } = await makeApp()
      const base = await listen(app)
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: `[[fake say before the gate]] ${probe.directive} [[fake say after the gate]]` })
      const first = await collectEvents(base, `/jobs/${job.job_id}/events`, { until: event => event.type === 'text' })
      const lastSeen = first.events.at(-1)!.id!
      expect(first.events.at(-1)!.data.text).toBe('before the gate')
      // More happens while nobody listens.
      await probe.waitStarted(1)
      probe.release()
      await finished(app, job.job_id)
      const second = await collectEvents(base, `/jobs/${job.job_id}/events`, { lastEventId: lastSeen })
      const ids = second.events.filter(event => event.id !== undefined).map(event => event.id)
      expect(ids[0]).toBe(lastSeen + 1)
      expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => lastSeen + 1 + i))
      expect(second.events.find(event => event.type === 'text')!.data.text).toBe('after the gate')
      expect(second.events.at(-1)!.type).toBe('end')
    })

    it('streams live to many subscribers; a stalled one slows neither the job nor the others, and is cut off', async () => {
      // Redis followers read the run's log at their own pace: it must hold the whole flood for the
      // fast ones to read every event (in memory they keep up by sharing the event loop).
      const { app } = await makeApp({ sseWriteTimeoutSeconds: 3, ...(engine === 'redis' ? { maxOutputBytes: 128 * 1024 * 1024 } : {}) })
      const base = await listen(app)
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: `${probe.directive} [[fake flood 67108864]] [[fake text flood over]]` })
      await probe.waitStarted(1)
      // A follower that never reads a byte.
      const stalled = connect(Number(new URL(base).port), '127.0.0.1')
      await new Promise<void>(resolve => stalled.once('connect', () => resolve()))
      stalled.pause()
      stalled.write(`GET /jobs/${job.job_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`)
      onTestFinished(() => { stalled.destroy() })
      const { events } = app.ctx.engine
      await vi.waitFor(() => expect(events.followers).toBe(1))
      const followers = [collectEvents(base, `/jobs/${job.job_id}/events`), collectEvents(base, `/jobs/${job.job_id}/events`)]
      await vi.waitFor(() => expect(events.followers).toBe(3))
      probe.release()
      await finished(app, job.job_id)
      expect((await getJob(app, job.job_id)).result!.text).toBe('flood over')
      for (const follower of await Promise.all(followers)) {
        expect(follower.events.at(-1)).toMatchObject({ type: 'end', data: { status: 'completed' } })
        expect(follower.events.filter(event => event.type === 'text').length).toBeGreaterThan(1000)
      }
      // The stalled follower fell more than its buffer behind (memory), or its socket took nothing for
      // the write timeout (either engine): the server dropped its connection.
      await vi.waitFor(async () => {
        const open = await new Promise<number>((resolve, reject) => app.server.getConnections((error, count) => error ? reject(error) : resolve(count)))
        expect(open).toBe(0)
      }, { timeout: 20_000 })
      expect(events.followers).toBe(0)
    })

    it('answers 404 for an unknown job and 401 without a token', async () => {
      const { app } = await makeApp()
      expect((await app.inject({ method: 'GET', url: '/jobs/nope/events', headers: AUTH })).statusCode).toBe(404)
      expect((await app.inject({ method: 'GET', url: '/jobs/nope/events' })).statusCode).toBe(401)
    })
  })

  describe('GET /jobs/:id?wait', () => {
    it('answers as soon as the job ends', async () => {
      const { app } = await makeApp()
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      const waiting = app.inject({ method: 'GET', url: `/jobs/${job.job_id}?wait=60`, headers: AUTH })
      probe.release()
      const response = await waiting
      expect(response.json()).toMatchObject({ status: 'completed', result: { text: 'Hi! (fake model)' } })
    })

    it('answers with the current state when the wait runs out, and refuses waits past the maximum', async () => {
      const { app } = await makeApp()
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      const response = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}?wait=0.2`, headers: AUTH })
      expect(response.json().status).toBe('running')
      const tooLong = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}?wait=61`, headers: AUTH })
      expect(tooLong.statusCode).toBe(400)
      expect(tooLong.json().error.field).toBe('wait')
      probe.release()
      await finished(app, job.job_id)
    })
  })

  describe('GET /jobs', () => {
    it('lists jobs newest first, filtered by status, a page at a time', async () => {
      const { app } = await makeApp({ maxConcurrency: 1 })
      const made = []
      for (const prompt of ['one', '[[fake is-error]]', 'three', '[[fake exit 2]]', 'five']) made.push(await run(app, { prompt, metadata: { prompt } }))
      const ids = made.map(job => job.job_id)
      const page1 = (await app.inject({ method: 'GET', url: '/jobs?limit=2', headers: AUTH })).json()
      expect(page1.jobs.map((job: { job_id: string }) => job.job_id)).toEqual([ids[4], ids[3]])
      expect(page1.jobs[0]).toMatchObject({ status: 'completed', metadata: { prompt: 'five' }, total_cost_usd: 0.049864 })
      expect(page1.jobs[0]).not.toHaveProperty('request')
      const page2 = (await app.inject({ method: 'GET', url: `/jobs?limit=2&cursor=${page1.next_cursor}`, headers: AUTH })).json()
      expect(page2.jobs.map((job: { job_id: string }) => job.job_id)).toEqual([ids[2], ids[1]])
      const page3 = (await app.inject({ method: 'GET', url: `/jobs?limit=2&cursor=${page2.next_cursor}`, headers: AUTH })).json()
      expect(page3).toEqual({ jobs: [expect.objectContaining({ job_id: ids[0] })], next_cursor: null })
      const failed = (await app.inject({ method: 'GET', url: '/jobs?status=failed', headers: AUTH })).json()
      expect(failed.jobs.map((job: { job_id: string }) => job.job_id)).toEqual([ids[3], ids[1]])
      expect((await app.inject({ method: 'GET', url: '/jobs?status=weird', headers: AUTH })).statusCode).toBe(400)
      expect((await app.inject({ method: 'GET', url: '/jobs?limit=1000', headers: AUTH })).statusCode).toBe(400)
    })
  })

  describe('Idempotency-Key', () => {
    it('returns the same job for the same key and body, and 422 for another body', async () => {
      const { app } = await makeApp()
      const probe = await AgentProbe.start()
      const body = { prompt: probe.directive, model: 'haiku', metadata: { a: 1, b: [1, 2] } }
      const headers = { ...AUTH, 'idempotency-key': 'pipeline-42-step-review' }
      const first = await app.inject({ method: 'POST', url: '/execute', headers, payload: body })
      expect(first.statusCode).toBe(202)
      // Same body, keys in another order: the same job.
      const again = await app.inject({ method: 'POST', url: '/execute', headers, payload: { metadata: { b: [1, 2], a: 1 }, model: 'haiku', prompt: probe.directive } })
      expect(again.statusCode).toBe(202)
      expect(again.headers['idempotent-replayed']).toBe('true')
      expect(again.json().job_id).toBe(first.json().job_id)
      const other = await app.inject({ method: 'POST', url: '/execute', headers, payload: { ...body, model: 'opus' } })
      expect(other.statusCode).toBe(422)
      expect(other.json().error).toMatchObject({ code: 'idempotency_conflict', job_id: first.json().job_id })
      await probe.waitStarted(1)
      probe.release()
      await finished(app, first.json().job_id)
      // Still the same job once it is finished, and only one agent ever ran.
      const late = await app.inject({ method: 'POST', url: '/execute', headers, payload: body })
      expect(late.json()).toMatchObject({ job_id: first.json().job_id, status: 'completed' })
      expect(probe.started).toHaveLength(1)
      const bad = await app.inject({ method: 'POST', url: '/execute', headers: { ...AUTH, 'idempotency-key': 'has space' }, payload: body })
      expect(bad.statusCode).toBe(400)
    })
  })

  interface Received { headers: IncomingMessage['headers'], body: string }

  /** A callback receiver on 127.0.0.1 that answers each delivery with the next status of `statuses`. */
  async function receiver (statuses: number[]) {
    const received: Received[] = []
    let notify: (() => void) | undefined
    const server = createServer((request, response) => {
      let body = ''
      request.setEncoding('utf8')
      request.on('data', chunk => { body += chunk })
      request.on('end', () => {
        received.push({ headers: request.headers, body })
        response.writeHead(statuses[Math.min(received.length - 1, statuses.length - 1)]!).end()
        notify?.()
      })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>(resolve => server.close(() => resolve())))
    const { port } = server.address() as AddressInfo
    return {
      url: `http://127.0.0.1:${port}/hook`,
      received,
      async waitFor (count: number): Promise<void> {
        while (received.length < count) await new Promise<void>(resolve => { notify = resolve })
      },
    }
  }

  /** The verification snippet exactly as docs/api.md shows it. */
  async function documentedVerifier (): Promise<(rawBody: string, header: string, secret: string, toleranceSeconds?: number) => boolean> {
    const doc = readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8')
    const snippet = /```js\n(\/\/ verify-callback\.mjs\n[\s\S]*?)```/.exec(doc)?.[1]
    if (snippet === undefined) throw new Error('docs/api.md has no verify-callback.mjs snippet')
    const file = join(await tempDir(), 'verify-callback.mjs')
    writeFileSync(file, snippet)
    return (await import(file)).verifyCallback
  }

  const webhookConfig = (overrides: Partial<Config> = {}): Partial<Config> => ({
    webhookSecret: SECRET, webhookAllowedHosts: ['127.0.0.1'], webhookBackoffSeconds: 0.05, webhookTimeoutSeconds: 5, ...overrides,
  })

  describe('callback_url', () => {
    it('POSTs the finished job, signed so that the documented snippet verifies it', async () => {
      const hook = await receiver([204])
      const { app } = await makeApp(webhookConfig())
      const job = await run(app, { prompt: 'hi', callback_url: hook.url })
      await hook.waitFor(1)
      const [delivery] = hook.received
      expect(delivery!.headers['content-type']).toBe('application/json')
      expect(delivery!.headers['x-claude-runner-event']).toBe('job.finished')
      const payload = JSON.parse(delivery!.body)
      expect(payload).toMatchObject({ job_id: job.job_id, status: 'completed', result: { text: 'Hi! (fake model)' } })
      const verifyCallback = await documentedVerifier()
      const signature = delivery!.headers['x-claude-runner-signature'] as string
      expect(verifyCallback(delivery!.body, signature, SECRET)).toBe(true)
      expect(verifyCallback(delivery!.body.replace('completed', 'failed'), signature, SECRET)).toBe(false)
      expect(verifyCallback(delivery!.body, signature, 'another-secret')).toBe(false)
      // A replay an hour later is refused.
      const stale = `t=${Math.floor(Date.now() / 1000) - 3600},${signature.split(',')[1]}`
      expect(verifyCallback(delivery!.body, stale, SECRET)).toBe(false)
      await vi.waitFor(async () => expect((await getJob(app, job.job_id)).callback!.delivered).toBe(true), { timeout: 20_000 })
      const recorded = await getJob(app, job.job_id)
      expect(recorded.callback).toMatchObject({ delivered: true, attempts: [{ status: 204, error: null }] })
    })

    it('retries after 500s with backoff and records every attempt', async () => {
      const hook = await receiver([500, 503, 200])
      const { app } = await makeApp(webhookConfig())
      const job = await run(app, { prompt: '[[fake is-error]]', callback_url: hook.url })
      await hook.waitFor(3)
      await vi.waitFor(async () => expect((await getJob(app, job.job_id)).callback!.delivered).toBe(true), { timeout: 20_000 })
      const recorded = await getJob(app, job.job_id)
      expect(recorded.callback!.attempts.map(attempt => attempt.status)).toEqual([500, 503, 200])
      expect(new Set(hook.received.map(request => request.headers['x-claude-runner-delivery'])).size).toBe(1)
      expect(hook.received.map(request => request.headers['x-claude-runner-attempt'])).toEqual(['1', '2', '3'])
      expect(JSON.parse(hook.received[2]!.body).status).toBe('failed')
    })

    it('gives up after WEBHOOK_MAX_ATTEMPTS', async () => {
      const hook = await receiver([500])
      const { app } = await makeApp(webhookConfig({ webhookMaxAttempts: 3 }))
      const job = await run(app, { prompt: 'hi', callback_url: hook.url })
      await vi.waitFor(async () => expect((await getJob(app, job.job_id)).callback!.delivered).toBe(false), { timeout: 20_000 })
      expect(hook.received).toHaveLength(3)
      expect((await getJob(app, job.job_id)).callback!.attempts).toHaveLength(3)
    })

    it('refuses hosts that are not allowed, and every callback when none is', async () => {
      const { app } = await makeApp(webhookConfig())
      for (const url of ['http://evil.example.com/hook', 'ftp://127.0.0.1/x', 'http://user:pw@127.0.0.1/x', 'not a url']) {
        const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', callback_url: url } })
        expect(response.statusCode, url).toBe(400)
        expect(response.json().error).toMatchObject({ code: 'callback_not_allowed', field: 'callback_url' })
      }
      const { app: closed } = await makeApp()
      const response = await closed.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', callback_url: 'http://127.0.0.1/x' } })
      expect(response.statusCode).toBe(400)
      expect(response.json().error.message).toContain('WEBHOOK_ALLOWED_HOSTS')
    })
  })

  describe('the claude-runner CLI', () => {
    it('runs a job, streams its progress to stderr, prints the answer and exits 0', async () => {
      const { app } = await makeApp()
      const base = await listen(app)
      const result = await cli(base, ['run', '--model', 'haiku', 'fix it [[fake tool]] [[fake text fixed]]'])
      expect(result.code).toBe(0)
      expect(result.stdout).toBe('fixed\n')
      expect(result.stderr).toContain('accepted')
      expect(result.stderr).toContain('agent: claude-haiku-5-5 (Claude Code 2.1.332)')
      expect(result.stderr).toContain('tool: Write')
      expect(result.stderr).toMatch(/completed · in [\d.]+s · \$0\.\d{4} · 2 turns/)
    })

    it('reads the prompt from stdin or a file', async () => {
      const { app } = await makeApp({ claudeConfigTemplate: await agentsTemplate('reviewer') })
      const base = await listen(app)
      const fromStdin = await cli(base, ['run', '-q'], 'from stdin [[fake echo]]')
      expect(fromStdin.code).toBe(0)
      expect(JSON.parse(fromStdin.stdout).stdin).toBe('from stdin [[fake echo]]')
      const file = join(await tempDir(), 'prompt.md')
      writeFileSync(file, 'from a file [[fake echo]]')
      const fromFile = await cli(base, ['run', '-q', '--file', file, '--agent', 'reviewer'])
      const seen = JSON.parse(fromFile.stdout)
      expect(seen.stdin).toBe('from a file [[fake echo]]')
      expect(seen.argv).toContain('--agent=reviewer')
    })

    it('exits 1 for a failed job, 2 for a timed-out one, 3 for a cancelled one', async () => {
      const { app } = await makeApp({ killGraceSeconds: 0.2 })
      const base = await listen(app)
      const failed = await cli(base, ['run', '[[fake api-error 401]]'])
      expect(failed.code).toBe(1)
      expect(failed.stderr).toContain('error (api_error): API Error: 401 fake 401 error')
      const timedOut = await cli(base, ['run', '--timeout', '0.5', '[[fake hang]]'])
      expect(timedOut.code).toBe(2)

      const probe = await AgentProbe.start()
      const running = cli(base, ['run', probe.directive])
      await probe.waitStarted(1)
      const [job] = (await app.inject({ method: 'GET', url: '/jobs?limit=1', headers: AUTH })).json<{ jobs: Array<{ job_id: string }> }>().jobs.map(summary => ({ id: summary.job_id }))
      const cancelled = await cli(base, ['cancel', job!.id])
      expect(cancelled).toMatchObject({ code: 0, stdout: `${job!.id} cancelling\n` })
      expect((await running).code).toBe(3)
      const status = await cli(base, ['status', job!.id])
      expect(status.stdout).toContain(`${job!.id} cancelled`)
      expect(status.code).toBe(3)
    })

    it('waits for a detached job, and says why a request was refused', async () => {
      const { app } = await makeApp()
      const base = await listen(app)
      const detached = await cli(base, ['run', '--detach', 'hello'])
      expect(detached.code).toBe(0)
      const id = detached.stdout.trim()
      const waited = await cli(base, ['wait', id, '--json'])
      expect(waited.code).toBe(0)
      expect(JSON.parse(waited.stdout)).toMatchObject({ job_id: id, status: 'completed' })
      const refused = await cli(base, ['run', '--agent=-bad', 'x'])
      expect(refused.code).toBe(65)
      expect(refused.stderr).toContain('validation_error')
      const unknown = await cli(base, ['status', 'no-such-job'])
      expect(unknown.code).toBe(65)
      expect(unknown.stderr).toContain('job_not_found')
      const usage = await cli(base, ['frobnicate'])
      expect(usage.code).toBe(64)
      const unreachable = await cli('http://127.0.0.1:9', ['status', id])
      expect(unreachable.code).toBe(69)
    })
  })
})
