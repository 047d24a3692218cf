import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import OpenAI, { PermissionDeniedError } from 'openai'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { Config } from '../src/config.ts'
import { appMaker, describeEngines, listen, makeApp, tempDir, TOKEN } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'

/*
 * Tenants over real HTTP, with a TENANTS_FILE of two teams, an admin, and tokens of narrower
 * scopes: what each may see and do, their limits, their usage. Both engines where the behaviour
 * lives in the engine.
 */

const A = 'team-a-token-0123456789abcdef'
const B = 'team-b-token-0123456789abcdef'
const ADMIN = 'ops-admin-token-0123456789abc'
const CHAT = 'chat-only-token-0123456789abc'
const JOBS = 'jobs-only-token-0123456789abc'
const METRICS = 'metrics-token-0123456789abcd'

/** The fake CLI's recorded result reports this cost for every run. */
const FAKE_COST = 0.049864

type Limits = { max_running?: number, max_queued?: number, budget_usd_per_day?: number }

async function tenantsFile (limits: { a?: Limits, b?: Limits } = {}): Promise<string> {
  const file = join(await tempDir(), 'tenants.json')
  await writeFile(file, JSON.stringify({
    tenants: [
      { name: 'team-a', tokens: [A], ...limits.a },
      { name: 'team-b', tokens: [B], scopes: ['jobs', 'chat'], ...limits.b },
      { name: 'ops', tokens: [ADMIN], scopes: ['admin', 'metrics'] },
      { name: 'ide', tokens: [CHAT], scopes: ['chat'] },
      { name: 'ci', tokens: [JOBS], scopes: ['jobs'] },
    ],
  }))
  return file
}

interface Client {
  url: string
  as: (token: string) => {
    get: (path: string) => Promise<Response>
    del: (path: string) => Promise<Response>
    submit: (body: Record<string, unknown>, headers?: Record<string, string>) => Promise<Response>
    job: (body: Record<string, unknown>) => Promise<Record<string, any>>
  }
}

/** An app on `engine` with the tenants, listening on a port; requests as one token or another. */
async function tenantApp (make: typeof makeApp, limits: { a?: Limits, b?: Limits } = {}, overrides: Partial<Config> = {}) {
  const made = await make({ tenantsFile: await tenantsFile(limits), authTokens: [TOKEN], metricsToken: METRICS, ...overrides })
  const url = await listen(made.app)
  const as: Client['as'] = token => {
    const headers = { authorization: `Bearer ${token}` }
    const submit = (body: Record<string, unknown>, extra: Record<string, string> = {}) => fetch(`${url}/execute`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json', ...extra }, body: JSON.stringify(body) })
    return {
      get: path => fetch(`${url}${path}`, { headers }),
      del: path => fetch(`${url}${path}`, { method: 'DELETE', headers }),
      submit,
      job: async body => {
        const response = await submit(body)
        if (response.status !== 202) throw new Error(`submit failed: ${response.status} ${await response.text()}`)
        return response.json()
      },
    }
  }
  const finished = async (id: string) => {
    await made.app.ctx.engine.events.waitTerminal(id, 60_000)
    return (await as(ADMIN).get(`/jobs/${id}`)).json()
  }
  return { ...made, url, as, finished }
}

/** Status, content type and body of an answer, with `id` written as `ID`: two 404s compared whole. */
async function answer (response: Response, id: string): Promise<{ status: number, type: string | null, length: number, body: string }> {
  const body = await response.text()
  return { status: response.status, type: response.headers.get('content-type'), length: Buffer.byteLength(body), body: body.replaceAll(id, 'ID') }
}

describeEngines('tenants', engine => {
  const make = appMaker(engine)

  it('keeps each tenant to its own jobs: another\'s id answers exactly like an unknown one, everywhere; an admin sees all', async () => {
    const { as, finished } = await tenantApp(make)
    const done = await as(A).job({ prompt: 'hi [[fake usage 10 2 0 0]]' })
    await finished(done.job_id)
    const probe = await AgentProbe.start()
    const running = await as(A).job({ prompt: probe.directive })
    await probe.waitStarted(1)
    const theirs = await as(B).job({ prompt: 'hi' })
    expect(done.tenant).toBe('team-a')
    expect(theirs.tenant).toBe('team-b')

    // A random UUID has the length of a job id: the bodies, lengths included, can be compared whole.
    const unknown = randomUUID()
    const requests: Array<[string, (client: ReturnType<Client['as']>, id: string) => Promise<Response>]> = [
      ['GET', (client, id) => client.get(`/jobs/${id}`)],
      ['GET ?wait=', (client, id) => client.get(`/jobs/${id}?wait=30`)],
      ['GET /events', (client, id) => client.get(`/jobs/${id}/events`)],
      ['GET /output', (client, id) => client.get(`/jobs/${id}/output`)],
      ['DELETE', (client, id) => client.del(`/jobs/${id}`)],
    ]
    for (const [what, request] of requests) {
      const expected = await answer(await request(as(B), unknown), unknown)
      expect(expected.status, what).toBe(404)
      expect(JSON.parse(expected.body).error.code, what).toBe('job_not_found')
      for (const id of [done.job_id, running.job_id]) {
        expect(await answer(await request(as(B), id), id), `${what} of team-a's job`).toEqual(expected)
      }
    }
    // B's DELETE did nothing: the job still runs.
    expect((await (await as(A).get(`/jobs/${running.job_id}`)).json()).status).toBe('running')

    const list = async (token: string, query = '') => ((await (await as(token).get(`/jobs${query}`)).json()).jobs as Array<{ job_id: string, tenant: string }>).map(job => job.job_id)
    expect(await list(A)).toEqual([running.job_id, done.job_id])
    expect(await list(B)).toEqual([theirs.job_id])
    expect(await list(ADMIN)).toEqual([theirs.job_id, running.job_id, done.job_id])
    expect(await list(ADMIN, '?tenant=team-a')).toEqual([running.job_id, done.job_id])
    expect(await list(ADMIN, '?tenant=nobody')).toEqual([])
    const filtered = await as(A).get('/jobs?tenant=team-b')
    expect(filtered.status).toBe(403)
    expect((await filtered.json()).error).toMatchObject({ code: 'forbidden', scope: 'admin' })

    // The admin reads, follows and cancels team-a's jobs.
    expect((await (await as(ADMIN).get(`/jobs/${done.job_id}`)).json()).tenant).toBe('team-a')
    const output = await as(ADMIN).get(`/jobs/${done.job_id}/output`)
    expect(output.status).toBe(200)
    expect(await output.text()).toContain('"type":"result"')
    const events = await as(ADMIN).get(`/jobs/${done.job_id}/events`)
    expect(events.headers.get('content-type')).toContain('text/event-stream')
    expect(await events.text()).toContain('event: end')
    const cancel = await as(ADMIN).del(`/jobs/${running.job_id}`)
    expect(cancel.status).toBe(202)
    expect((await finished(running.job_id)).status).toBe('cancelled')
  })

  it('keeps Idempotency-Keys per tenant: the same key from two tenants makes two jobs', async () => {
    const { as, finished } = await tenantApp(make)
    const key = { 'idempotency-key': 'pipeline-42-review' }
    const first = await as(A).submit({ prompt: 'hi' }, key)
    const again = await as(A).submit({ prompt: 'hi' }, key)
    const other = await as(B).submit({ prompt: 'hi' }, key)
    expect([first.status, again.status, other.status]).toEqual([202, 202, 202])
    const [a, replay, b] = await Promise.all([first.json(), again.json(), other.json()])
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect(replay.job_id).toBe(a.job_id)
    expect(b.job_id).not.toBe(a.job_id)
    expect(b.tenant).toBe('team-b')
    await finished(a.job_id)
    await finished(b.job_id)
  })

  it('max_running: a tenant at its cap waits while another tenant\'s later job starts', async () => {
    const { as, finished } = await tenantApp(make, { a: { max_running: 1 } }, { maxConcurrency: 3 })
    const [first, second, third] = [await AgentProbe.start(), await AgentProbe.start(), await AgentProbe.start()]
    const a1 = await as(A).job({ prompt: first.directive })
    await first.waitStarted(1)
    const a2 = await as(A).job({ prompt: second.directive })
    const b1 = await as(B).job({ prompt: third.directive })
    // B's job, submitted after A's second, starts while A's waits, a slot free all along.
    await third.waitStarted(1)
    const status = async (id: string) => (await (await as(ADMIN).get(`/jobs/${id}`)).json()).status
    expect(await status(a2.job_id)).toBe('queued')
    expect(await status(b1.job_id)).toBe('running')
    expect(second.started).toHaveLength(0)
    // A's first ends: its second starts.
    first.release()
    expect((await finished(a1.job_id)).status).toBe('completed')
    await second.waitStarted(1)
    second.release()
    third.release()
    expect((await finished(a2.job_id)).status).toBe('completed')
    expect((await finished(b1.job_id)).status).toBe('completed')
  })

  it('max_queued: past it a tenant gets 429 tenant_queue_full while other tenants are accepted', async () => {
    const { as, finished } = await tenantApp(make, { a: { max_running: 1, max_queued: 1 } })
    const probe = await AgentProbe.start()
    const a1 = await as(A).job({ prompt: probe.directive })
    await probe.waitStarted(1)
    const a2 = await as(A).job({ prompt: 'hi' })
    const refused = await as(A).submit({ prompt: 'one too many' })
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect((await refused.json()).error).toMatchObject({ code: 'tenant_queue_full', tenant: 'team-a', queued: 1, max_queued: 1 })
    const b1 = await as(B).job({ prompt: 'hi' })
    expect((await finished(b1.job_id)).status).toBe('completed')
    probe.release()
    for (const id of [a1.job_id, a2.job_id]) expect((await finished(id)).status).toBe('completed')
    // Nothing of the refused submission was kept.
    expect((await (await as(A).get('/jobs')).json()).jobs).toHaveLength(2)
  })

  it('budget_usd_per_day: once the CLI\'s reported cost reaches it, 429 budget_exceeded until midnight UTC, jobs and chats; running jobs go on', async () => {
    // One fake run costs FAKE_COST, more than the budget: the first to end spends it.
    const { as, finished, url } = await tenantApp(make, { a: { budget_usd_per_day: 0.04 } })
    const [first, second] = [await AgentProbe.start(), await AgentProbe.start()]
    const a1 = await as(A).job({ prompt: first.directive })
    const a2 = await as(A).job({ prompt: second.directive })
    await first.waitStarted(1)
    await second.waitStarted(1)
    first.release()
    expect((await finished(a1.job_id)).result.total_cost_usd).toBe(FAKE_COST)

    const refused = await as(A).submit({ prompt: 'over budget' })
    const before = Date.now()
    expect(refused.status).toBe(429)
    const midnight = new Date(before)
    midnight.setUTCHours(24, 0, 0, 0)
    const retryAfter = Number(refused.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(Math.abs(retryAfter - (midnight.getTime() - before) / 1000)).toBeLessThan(5)
    expect((await refused.json()).error).toMatchObject({ code: 'budget_exceeded', tenant: 'team-a', budget_usd_per_day: 0.04 })
    // A chat completion counts like a job.
    const chat = new OpenAI({ baseURL: `${url}/v1`, apiKey: A, maxRetries: 0 })
    await expect(chat.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status: 429, code: 'budget_exceeded', type: 'rate_limit_error' })
    // The running job was not killed, and the other tenant is not limited.
    second.release()
    expect((await finished(a2.job_id)).status).toBe('completed')
    const b1 = await as(B).job({ prompt: 'hi' })
    expect((await finished(b1.job_id)).status).toBe('completed')
  })

  it('GET /usage: per UTC day, sums equal to the runs that ended; the caller\'s tenant, every tenant for an admin', async () => {
    const { as, finished, url } = await tenantApp(make)
    const jobs = [
      await as(A).job({ prompt: 'hi [[fake usage 100 20 30 40]]' }),
      await as(A).job({ prompt: 'again [[fake usage 7 3 0 1]]' }),
      await as(A).job({ prompt: '[[fake is-error]]' }),
      await as(B).job({ prompt: 'hi [[fake usage 5 5 5 5]]' }),
    ]
    const ended = await Promise.all(jobs.map(job => finished(job.job_id)))
    const chat = await new OpenAI({ baseURL: `${url}/v1`, apiKey: A, maxRetries: 0 }).chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi [[fake usage 11 1 0 0]]' }] })
    expect(chat.usage?.completion_tokens).toBe(1)

    const today = new Date().toISOString().slice(0, 10)
    const usage = async (token: string, query = '') => {
      const response = await as(token).get(`/usage${query}`)
      expect(response.status, await response.clone().text()).toBe(200)
      return (await response.json()).tenants as Array<{ tenant: string, days: Array<Record<string, any>> }>
    }
    const mine = await usage(A)
    expect(mine.map(entry => entry.tenant)).toEqual(['team-a'])
    const days = mine[0]!.days
    expect(days).toHaveLength(7)
    expect(days.at(-1)!.date).toBe(today)
    expect(days.slice(0, -1).every(day => day.total_cost_usd === 0 && day.runs.completed === 0)).toBe(true)
    const day = days.at(-1)!
    const teamA = ended.filter(job => job.tenant === 'team-a')
    const sum = (read: (job: Record<string, any>) => number) => teamA.reduce((total, job) => total + read(job), 0)
    // Three jobs and the chat completion (not in the job list: a chat's usage is what it answered).
    expect(day.runs).toEqual({ completed: 3, failed: 1, timed_out: 0, cancelled: 0 })
    expect(day.total_cost_usd).toBeCloseTo(sum(job => job.result.total_cost_usd) + FAKE_COST, 9)
    expect(day.input_tokens).toBe(sum(job => job.result.usage.input_tokens) + 11)
    expect(day.output_tokens).toBe(sum(job => job.result.usage.output_tokens) + 1)
    expect(day.cache_read_input_tokens).toBe(sum(job => job.result.usage.cache_read_input_tokens))
    expect(day.cache_creation_input_tokens).toBe(sum(job => job.result.usage.cache_creation_input_tokens))
    expect(day.agent_seconds).toBeGreaterThanOrEqual(sum(job => job.run_ms) / 1000)

    const everyone = await usage(ADMIN, `?from=${today}&to=${today}`)
    expect(everyone.map(entry => entry.tenant)).toEqual(['ci', 'default', 'ide', 'ops', 'team-a', 'team-b'])
    const b = everyone.find(entry => entry.tenant === 'team-b')!.days
    expect(b).toEqual([expect.objectContaining({ date: today, runs: { completed: 1, failed: 0, timed_out: 0, cancelled: 0 }, input_tokens: 5, output_tokens: 5, cache_read_input_tokens: 5, cache_creation_input_tokens: 5 })])
    expect(everyone.find(entry => entry.tenant === 'team-a')!.days).toEqual([day])
    // A chat-only tenant reads its own usage; a metrics-only token has none to read.
    expect((await usage(CHAT)).map(entry => entry.tenant)).toEqual(['ide'])
    const metricsOnly = await as(METRICS).get('/usage')
    expect(metricsOnly.status).toBe(403)
    expect((await metricsOnly.json()).error).toMatchObject({ code: 'forbidden', scope: 'jobs' })
  })
})

describe('tenants: GET /usage validation', () => {
  it('refuses a bad date, from after to, and more than 90 days, naming the field', async () => {
    const { as } = await tenantApp(makeApp)
    const cases: Array<[string, string, string]> = [
      ['?from=2026-02-30', 'from', 'must be a date YYYY-MM-DD'],
      ['?to=yesterday', 'to', 'must be a date YYYY-MM-DD'],
      ['?from=2026-1-5&to=2026-01-09', 'from', 'must be a date YYYY-MM-DD'],
      ['?from=2026-03-02&to=2026-03-01', 'from', 'is after querystring.to'],
      ['?from=2026-01-01&to=2026-04-01', 'from', 'is 91 days; ask for at most 90'],
    ]
    for (const [query, field, message] of cases) {
      const response = await as(A).get(`/usage${query}`)
      expect(response.status, query).toBe(400)
      expect((await response.json()).error, query).toMatchObject({ code: 'validation_error', field, message: expect.stringContaining(message) })
    }
    const ninety = await (await as(A).get('/usage?from=2026-01-01&to=2026-03-31')).json()
    expect(ninety.tenants[0].days).toHaveLength(90)
    expect(ninety.tenants[0].days[0].date).toBe('2026-01-01')
    expect(ninety.tenants[0].days[89].date).toBe('2026-03-31')
    const unknown = await as(A).get('/usage?tenant=team-b')
    expect(unknown.status).toBe(400)
  })
})

describe('tenants: scopes', () => {
  it('a chat-only token cannot touch jobs, a jobs-only token cannot use /v1: 403 naming the scope, in each API\'s shape', async () => {
    const { as, url, finished } = await tenantApp(makeApp)
    for (const [path, method] of [['/execute', 'POST'], ['/jobs', 'GET'], [`/jobs/${randomUUID()}`, 'GET'], ['/metrics', 'GET']] as const) {
      const response = method === 'POST' ? await as(CHAT).submit({ prompt: 'hi' }) : await as(CHAT).get(path)
      expect(response.status, path).toBe(403)
      const scope = path === '/metrics' ? 'metrics' : 'jobs'
      expect((await response.json()).error, path).toEqual({ code: 'forbidden', scope, message: expect.stringContaining(`lacks the ${scope} scope`) })
    }
    expect((await as(A).get('/metrics')).status).toBe(403)
    expect((await as(JOBS).get('/jobs')).status).toBe(200)

    // The /v1 API, with the official SDK: the chat token works, the jobs-only one is refused.
    const chat = new OpenAI({ baseURL: `${url}/v1`, apiKey: CHAT, maxRetries: 0 })
    const completion = await chat.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi' }] })
    expect(completion.choices[0]!.message.content).toBe('Hi! (fake model)')
    const jobsOnly = new OpenAI({ baseURL: `${url}/v1`, apiKey: JOBS, maxRetries: 0 })
    const refused = await jobsOnly.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi' }] }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(PermissionDeniedError)
    expect((refused as PermissionDeniedError).error).toEqual({ message: expect.stringContaining('lacks the chat scope'), type: 'invalid_request_error', param: null, code: 'forbidden' })
    await expect(jobsOnly.models.list()).rejects.toBeInstanceOf(PermissionDeniedError)

    // x-api-key (how Anthropic's SDK authenticates) opens /v1, and only /v1.
    const models = await fetch(`${url}/v1/models`, { headers: { 'x-api-key': CHAT } })
    expect(models.status).toBe(200)
    expect((await fetch(`${url}/v1/models`, { headers: { 'x-api-key': JOBS } })).status).toBe(403)
    const wrong = await fetch(`${url}/v1/models`, { headers: { 'x-api-key': 'not-a-token-0123456789' } })
    expect(wrong.status).toBe(401)
    // An x-api-key request is taken for Anthropic's client, and answered in Anthropic's shape.
    expect((await wrong.json()).error).toMatchObject({ type: 'authentication_error', code: 'unauthorized', message: expect.stringContaining('x-api-key') })
    expect((await fetch(`${url}/jobs`, { headers: { 'x-api-key': A } })).status).toBe(401)

    // AUTH_TOKENS are the tenant `default` with every scope; METRICS_TOKEN opens /metrics only.
    const everything = await as(TOKEN).job({ prompt: 'hi' })
    expect(everything.tenant).toBe('default')
    await finished(everything.job_id)
    expect((await as(TOKEN).get('/metrics')).status).toBe(200)
    expect((await as(TOKEN).get('/jobs?tenant=team-a')).status).toBe(200)
    expect((await as(METRICS).get('/metrics')).status).toBe(200)
    expect((await as(METRICS).get('/jobs')).status).toBe(403)
    expect((await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${METRICS}` } })).status).toBe(403)
    // The OpenAPI document is open to any valid token.
    expect((await as(CHAT).get('/openapi.json')).status).toBe(200)
  })

  it('/metrics labels jobs, cost and tokens by tenant', async () => {
    const { as, url, finished } = await tenantApp(makeApp)
    await finished((await as(A).job({ prompt: 'hi [[fake usage 100 20 30 40]]' })).job_id)
    await finished((await as(B).job({ prompt: '[[fake is-error]]' })).job_id)
    await new OpenAI({ baseURL: `${url}/v1`, apiKey: CHAT, maxRetries: 0 }).chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi [[fake usage 9 1 0 0]]' }] })
    const text = await (await as(ADMIN).get('/metrics')).text()
    expect(text).toContain('claude_runner_jobs_total{tenant="team-a",status="completed",error=""} 1')
    expect(text).toContain('claude_runner_jobs_total{tenant="team-b",status="failed",error="agent_error"} 1')
    expect(text).toContain(`claude_runner_cost_usd_total{tenant="team-a",kind="job"} ${FAKE_COST}`)
    expect(text).toContain(`claude_runner_cost_usd_total{tenant="ide",kind="chat"} ${FAKE_COST}`)
    expect(text).toContain('claude_runner_tokens_total{tenant="team-a",kind="job",type="input"} 100')
    expect(text).toContain('claude_runner_tokens_total{tenant="ide",kind="chat",type="input"} 9')
    expect(text).toContain('claude_runner_chat_completions_total{tenant="ide",api="chat.completions",outcome="completed"} 1')
  })

  it('puts the tenant in the webhook body', async () => {
    const received: Array<{ headers: IncomingMessage['headers'], body: string }> = []
    const { promise: delivered, resolve } = Promise.withResolvers<void>()
    const server = createServer((request, response) => {
      let body = ''
      request.setEncoding('utf8').on('data', chunk => { body += chunk }).on('end', () => {
        received.push({ headers: request.headers, body })
        response.writeHead(204).end()
        resolve()
      })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>(resolve => server.close(() => resolve())))
    const hook = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`
    const { as } = await tenantApp(makeApp, {}, { webhookSecret: 'a-webhook-secret-0123456789', webhookAllowedHosts: ['127.0.0.1'] })
    const job = await as(B).job({ prompt: 'hi', callback_url: hook })
    await delivered
    expect(JSON.parse(received[0]!.body)).toMatchObject({ job_id: job.job_id, tenant: 'team-b', status: 'completed' })
  })
})
