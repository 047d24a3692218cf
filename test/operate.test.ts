import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { ExecuteBody } from '../src/schemas/job.ts'
import { AUTH, finished, makeApp, run, tempDir, TOKEN } from './helpers/app.ts'
import { AgentProbe, descendants, expectAllGone, isRunning } from './helpers/probe.ts'
import { json, post, SERVER, startServer } from './helpers/server.ts'

/** Records callbacks: the only way to see a job's end after the server is gone. */
async function callbackReceiver () {
  const jobs = new Map<string, Record<string, any>>()
  let notify: (() => void) | undefined
  const server = createServer((request, response) => {
    let body = ''
    request.setEncoding('utf8').on('data', chunk => { body += chunk }).on('end', () => {
      const job = JSON.parse(body)
      jobs.set(job.job_id, job)
      response.writeHead(204).end()
      notify?.()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>(resolve => server.close(() => resolve())))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/done`,
    jobs,
    async waitFor (count: number): Promise<void> {
      while (jobs.size < count) await new Promise<void>(resolve => { notify = resolve })
    },
  }
}

describe('shutdown', () => {
  it('drains on SIGTERM: 503 draining, no new work, running jobs finish within the grace, queued ones are cancelled, exit 0', async () => {
    const root = await tempDir()
    const hooks = await callbackReceiver()
    const probe = await AgentProbe.start()
    const server = await startServer({
      WORKSPACE_ROOT: root, MAX_CONCURRENCY: '1', SHUTDOWN_GRACE_SECONDS: '60', WEBHOOK_SECRET: 'whsec_0123456789abcdef', WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
    })
    const running = await json(post(server.url, { prompt: `${probe.directive} [[fake text finished in the grace]]`, callback_url: hooks.url }))
    await probe.waitStarted(1)
    const queued = await json(post(server.url, { prompt: 'never runs', callback_url: hooks.url }))
    expect(queued.status).toBe('queued')

    server.child.kill('SIGTERM')
    await vi.waitFor(async () => expect((await fetch(`${server.url}/health`)).status).toBe(503))
    expect(await json(fetch(`${server.url}/health`))).toMatchObject({ status: 'draining', active: 1, queued: 0 })
    const refused = await post(server.url, { prompt: 'too late' })
    expect(refused.status).toBe(503)
    expect((await json(refused)).error.code).toBe('shutting_down')
    // The queued job ended at once, as cancelled by the shutdown; its callback was sent.
    await hooks.waitFor(1)
    expect(hooks.jobs.get(queued.job_id)).toMatchObject({ status: 'cancelled', cancel: { reason: 'shutdown' }, started_at: null })

    probe.release()
    expect(await server.exited).toBe(0)
    await hooks.waitFor(2)
    expect(hooks.jobs.get(running.job_id)).toMatchObject({ status: 'completed', result: { text: 'finished in the grace' } })
    expect(await readdir(join(root, 'jobs'))).toEqual([])
    expect(server.logs.some(line => line.msg === 'drained; exiting')).toBe(true)
  })

  it('cancels running jobs when the grace runs out, killing their process groups', async () => {
    const root = await tempDir()
    const hooks = await callbackReceiver()
    const probe = await AgentProbe.start()
    const server = await startServer({
      WORKSPACE_ROOT: root, SHUTDOWN_GRACE_SECONDS: '0.5', KILL_GRACE_SECONDS: '0.5', WEBHOOK_SECRET: 'whsec_0123456789abcdef', WEBHOOK_ALLOWED_HOSTS: '127.0.0.1',
    })
    const job = await json(post(server.url, { prompt: `[[fake grandchild]] ${probe.directive}`, callback_url: hooks.url }))
    await probe.waitStarted(1)
    const grandchildren = descendants(probe.started[0]!.pid)
    expect(grandchildren).toHaveLength(1)
    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    await hooks.waitFor(1)
    expect(hooks.jobs.get(job.job_id)).toMatchObject({ status: 'cancelled', cancel: { reason: 'shutdown' }, error: { code: 'cancelled', message: expect.stringContaining('shutting down') } })
    await expectAllGone([probe.started[0]!.pid, ...grandchildren])
    expect(await readdir(join(root, 'jobs'))).toEqual([])
  })

  it('exits at once on a second signal, killing the agents', async () => {
    const root = await tempDir()
    const probe = await AgentProbe.start()
    const server = await startServer({ WORKSPACE_ROOT: root, SHUTDOWN_GRACE_SECONDS: '600' })
    await post(server.url, { prompt: `[[fake ignore-sigterm]] ${probe.directive}` })
    await probe.waitStarted(1)
    server.child.kill('SIGTERM')
    await vi.waitFor(async () => expect((await fetch(`${server.url}/health`)).status).toBe(503))
    server.child.kill('SIGINT')
    expect(await server.exited).toBe(1)
    await expectAllGone([probe.started[0]!.pid])
    expect(server.logs.some(line => String(line.msg).startsWith('second signal'))).toBe(true)
  })

  it('stops at once with a clear message on an invalid configuration', async () => {
    const child = spawn(process.execPath, [SERVER], { env: { PATH: process.env.PATH!, MAX_CONCURRENCY: '-1' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', chunk => { stderr += chunk })
    const code = await new Promise(resolve => child.once('exit', resolve))
    expect(code).toBe(2)
    expect(stderr).toBe('claude-runner: invalid configuration: MAX_CONCURRENCY must be an integer from 1 to 1000, got "-1"\n')
  })
})

describe('start-up', () => {
  it('removes, and logs, workspaces left by a crash', async () => {
    const root = await tempDir()
    mkdirSync(join(root, 'jobs', 'crashed-job', 'src'), { recursive: true })
    writeFileSync(join(root, 'jobs', 'crashed-job', 'src', 'file.txt'), 'left over')
    const lines: Array<Record<string, unknown>> = []
    const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(JSON.parse(String(chunk))); done() } }))
    const { app } = await makeApp({ workspaceRoot: root }, { logger })
    expect(await readdir(join(root, 'jobs'))).toEqual([])
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'removed workspaces left by an earlier run', count: 1, workspaces: ['crashed-job'] }))
    expect((await run(app, { prompt: 'hi' })).status).toBe('completed')
  })

  it('logs the generated token once when AUTH_TOKENS is unset', async () => {
    const root = await tempDir()
    const server = await startServer({ WORKSPACE_ROOT: root, AUTH_TOKENS: '' })
    const generated = server.logs.filter(line => typeof line.token === 'string')
    expect(generated).toHaveLength(1)
    const token = generated[0]!.token as string
    expect((await fetch(`${server.url}/jobs`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200)
    expect((await fetch(`${server.url}/jobs`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(401)
    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
  })
})

describe('GET /metrics', () => {
  it('exposes jobs, queue, runs, cost, tokens and HTTP numbers in Prometheus format', async () => {
    const { app } = await makeApp({ metricsToken: 'metrics-token-0123456789' })
    await run(app, { prompt: '[[fake usage 100 20 5 0]]' })
    await run(app, { prompt: '[[fake is-error]]' })
    await app.inject({ method: 'GET', url: '/health' })
    await app.inject({ method: 'GET', url: '/no-such-route', headers: AUTH })
    await app.inject({ method: 'GET', url: '/v1/no-such-route', headers: AUTH })
    await app.inject({ method: 'GET', url: '/jobs' })
    const probe = await AgentProbe.start()
    const held = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: probe.directive } })
    await probe.waitStarted(1)
    const response = await app.inject({ method: 'GET', url: '/metrics', headers: { authorization: 'Bearer metrics-token-0123456789' } })
    expect(response.statusCode).toBe(200)
    expect(response.headers['content-type']).toContain('text/plain')
    const text = response.body
    expect(text).toContain('claude_runner_jobs_total{tenant="default",status="completed",error=""} 1')
    expect(text).toContain('claude_runner_jobs_total{tenant="default",status="failed",error="agent_error"} 1')
    expect(text).toContain('claude_runner_active_runs 1')
    expect(text).toContain('claude_runner_queue_depth 0')
    expect(text).toContain('claude_runner_capacity 10')
    expect(text).toMatch(/claude_runner_queue_wait_seconds_count\{kind="job"\} 2/)
    expect(text).toMatch(/claude_runner_run_seconds_count\{kind="job"\} 2/)
    expect(text).toMatch(/claude_runner_workspace_prepare_seconds_count 2/)
    expect(text).toContain('claude_runner_cost_usd_total{tenant="default",kind="job"} 0.099728')
    // 100 from the first job, 12406 (the recorded sample's) from the failed one.
    expect(text).toContain('claude_runner_tokens_total{tenant="default",kind="job",type="input"} 12506')
    expect(text).toContain('claude_runner_tokens_total{tenant="default",kind="job",type="cache_read"} 5')
    expect(text).toContain('claude_runner_tokens_total{tenant="default",kind="job",type="output"} 32')
    // Health checks and scrapes are not counted: they are machines polling.
    expect(text).not.toContain('route="/health"')
    expect(text).toContain('claude_runner_http_requests_total{method="POST",route="/execute",status="202"} 3')
    // Unknown routes and refused tokens are counted, in each API.
    expect(text).toContain('claude_runner_http_requests_total{method="GET",route="unmatched",status="404"} 2')
    expect(text).toContain('claude_runner_http_requests_total{method="GET",route="/jobs",status="401"} 1')
    expect(text).toMatch(/process_resident_memory_bytes \d+/)
    expect(text).toContain(`claude_runner_info{replica="${app.ctx.config.instanceId}",version="${app.ctx.version}",engine="memory"} 1`)
    probe.release()
    await finished(app, held.json().job_id)
    // The metrics token opens /metrics only (a valid token elsewhere, without the scope); the job tokens open it too.
    const outside = await app.inject({ method: 'GET', url: '/jobs', headers: { authorization: 'Bearer metrics-token-0123456789' } })
    expect(outside.statusCode).toBe(403)
    expect(outside.json().error).toMatchObject({ code: 'forbidden', scope: 'jobs' })
    expect((await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401)
  })
})

describe('request logs', () => {
  it('have one line per API request, with its id and without the token; none for health checks and scrapes', async () => {
    const lines: Array<Record<string, unknown>> = []
    const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(JSON.parse(String(chunk))); done() } }))
    const { app } = await makeApp({}, { logger })
    const job = await run(app, { prompt: 'hi' })
    lines.length = 0
    await app.inject({ method: 'GET', url: '/health' })
    await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })
    await app.inject({ method: 'GET', url: `/jobs/${job.job_id}`, headers: AUTH })
    await app.inject({ method: 'GET', url: '/v1/models', headers: { authorization: 'Bearer wrong-token-0123456789' } })
    await app.inject({ method: 'GET', url: '/nowhere', headers: AUTH })
    const requests = lines.filter(line => line.msg === 'request')
    expect(requests.map(line => [line.method, line.url, line.status])).toEqual([
      ['GET', `/jobs/${job.job_id}`, 200],
      ['GET', '/v1/models', 401],
      ['GET', '/nowhere', 404],
    ])
    expect(new Set(requests.map(line => line.reqId)).size).toBe(3)
    // The tenant once a token named one: not for a refused token, nor outside the APIs.
    expect(requests.map(line => line.tenant)).toEqual(['default', undefined, undefined])
    expect(JSON.stringify(lines)).not.toContain(TOKEN)
    expect(lines).toEqual(requests)
  })
})

describe('GET /openapi.json', () => {
  it('is generated from the route schemas, so it cannot drift from the validation', async () => {
    const { app } = await makeApp()
    expect((await app.inject({ method: 'GET', url: '/openapi.json' })).statusCode).toBe(401)
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json', headers: AUTH })).json()
    expect(doc.openapi).toBe('3.1.0')
    expect(Object.keys(doc.paths).sort()).toEqual([
      '/execute', '/health', '/jobs', '/jobs/{id}', '/jobs/{id}/events', '/jobs/{id}/output', '/metrics', '/usage', '/v1/chat/completions', '/v1/messages',
      '/v1/messages/count_tokens', '/v1/models', '/v1/models/{model}', '/v1/responses', '/v1/responses/{id}',
    ])
    const body = doc.paths['/execute'].post.requestBody.content['application/json'].schema
    // The document says `additionalProperties: {}` where the schema says `patternProperties: {"^.*$": {}}`: the same thing.
    const expected = JSON.parse(JSON.stringify(ExecuteBody), (_key, value) => {
      if (value?.patternProperties?.['^.*$'] === undefined) return value
      const { patternProperties, ...rest } = value
      return { ...rest, additionalProperties: patternProperties['^.*$'] }
    })
    expect(body).toEqual(expected)
    expect(doc.paths['/health'].get.security).toEqual([])
    expect(doc.security).toEqual([{ bearer: [] }])
    expect(Object.keys(doc.paths['/jobs/{id}'].get.responses)).toEqual(['200', '400', '401', '403', '404'])
  })
})

describe('the service process', () => {
  it('serves /health on its embedded defaults', async () => {
    const root = await tempDir()
    const server = await startServer({ WORKSPACE_ROOT: root, CLAUDE_BIN: 'claude-is-not-installed-here' })
    const health = await json(fetch(`${server.url}/health`))
    expect(health).toMatchObject({ status: 'ok', capacity: 10, max_queue_depth: 110, busy: false })
    expect(isRunning(server.child.pid!)).toBe(true)
    server.child.kill('SIGINT')
    expect(await server.exited).toBe(0)
  })
})
