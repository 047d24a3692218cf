import { connect } from 'node:net'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { AUTH, finished, listen, makeApp, run, submit, TOKEN } from './helpers/app.ts'
import { probesFor, ResponseChecker, type OpenApiDocument } from './helpers/openapi.ts'
import { AgentProbe } from './helpers/probe.ts'
import { collectEvents } from './helpers/sse.ts'

/** Sends `request` as it is on a fresh connection and returns everything the server answered. */
async function rawExchange (base: string, request: string | Buffer): Promise<{ status: number, headers: string, body: string }> {
  const socket = connect(Number(new URL(base).port), '127.0.0.1')
  onTestFinished(() => { socket.destroy() })
  let received = ''
  socket.setEncoding('utf8').on('data', chunk => {
    received += chunk
    const split = received.indexOf('\r\n\r\n')
    const length = /content-length: (\d+)/i.exec(received.slice(0, split))
    if (split !== -1 && length !== null && Buffer.byteLength(received.slice(split + 4)) >= Number(length[1])) socket.end()
  })
  socket.on('error', () => {})
  await new Promise<void>(resolve => socket.once('connect', () => resolve()))
  socket.write(request)
  await new Promise<void>(resolve => socket.once('close', () => resolve()))
  const split = received.indexOf('\r\n\r\n')
  return { status: Number(received.slice(9, 12)), headers: received.slice(0, split), body: received.slice(split + 4) }
}

const ERROR_SHAPE = { error: { code: expect.any(String), message: expect.any(String) } }

describe('errors before any route', () => {
  it('come in the API\'s shape: a bad URL, a parameter too long, headers too large, not HTTP at all', async () => {
    const { app } = await makeApp()
    const base = await listen(app)
    const auth = `Authorization: Bearer ${TOKEN}\r\n`
    const cases: Array<[string, string | Buffer, number, string]> = [
      ['a path that does not decode', `GET /jobs/%zz HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 400, 'bad_request'],
      ['a path parameter past 1024 characters', `GET /jobs/${'a'.repeat(1100)} HTTP/1.1\r\nHost: x\r\n${auth}\r\n`, 414, 'uri_too_long'],
      ['headers past 16 KiB', `GET /jobs HTTP/1.1\r\nHost: x\r\n${auth}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'headers_too_large'],
      ['a URL past 16 KiB', `GET /jobs?${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431, 'headers_too_large'],
      ['not HTTP', 'HELLO THERE\r\n\r\n', 400, 'bad_request'],
      ['a Content-Length that is not a number', `POST /execute HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ten\r\n\r\n{}`, 400, 'bad_request'],
    ]
    for (const [what, request, status, code] of cases) {
      const response = await rawExchange(base, request)
      expect(response.status, what).toBe(status)
      expect(response.headers, what).toMatch(/content-type: application\/json/i)
      const body = JSON.parse(response.body)
      expect(body, what).toMatchObject(ERROR_SHAPE)
      expect(body.error.code, what).toBe(code)
    }
  })

  it('never answers 414 to an id of up to 128 characters; a longer one is a 400 naming it', async () => {
    const { app } = await makeApp()
    for (const path of ['', '/events', '/output']) {
      const longest = await app.inject({ method: 'GET', url: `/jobs/${'a'.repeat(128)}${path}`, headers: AUTH })
      expect(longest.statusCode, path).toBe(404)
      expect(longest.json().error.code).toBe('job_not_found')
      const over = await app.inject({ method: 'GET', url: `/jobs/${'a'.repeat(129)}${path}`, headers: AUTH })
      expect(over.statusCode, path).toBe(400)
      expect(over.json().error).toMatchObject({ code: 'validation_error', field: 'id' })
    }
  })

  it('answers a method a path does not take with 405 and Allow, in each API\'s shape', async () => {
    const { app } = await makeApp()
    const cases: Array<[string, string, string]> = [
      ['PUT', '/jobs/abc', 'GET, HEAD, DELETE'],
      ['POST', '/jobs/abc/events', 'GET'],
      ['DELETE', '/jobs', 'GET, HEAD'],
      ['GET', '/execute', 'POST'],
      ['POST', '/health', 'GET, HEAD'],
      ['GET', '/v1/chat/completions', 'POST'],
      ['POST', '/v1/models', 'GET, HEAD'],
      // Routes of other scopes too: the dashboard's static files.
      ['POST', '/ui/app.js', 'GET, HEAD'],
    ]
    for (const [method, url, allow] of cases) {
      const response = await app.inject({ method: method as 'GET', url, headers: AUTH })
      expect(response.statusCode, `${method} ${url}`).toBe(405)
      expect(response.headers.allow, `${method} ${url}`).toBe(allow)
      expect(response.json().error).toMatchObject({ code: 'method_not_allowed', message: `${method} is not allowed on ${url}: use ${allow}` })
      if (url.startsWith('/v1/')) expect(response.json().error).toMatchObject({ type: 'invalid_request_error', param: null })
    }
    expect((await app.inject({ method: 'GET', url: '/nowhere', headers: AUTH })).statusCode).toBe(404)
    // A route of the method asked for that finds nothing is a 404, even where other methods exist.
    expect((await app.inject({ method: 'GET', url: '/ui/nope.js' })).statusCode).toBe(404)
    expect((await app.inject({ method: 'GET', url: '/v1/nowhere', headers: AUTH })).json().error.code).toBe('not_found')
  })

  it('refuses unknown query parameters on the job API, and ignores them on /v1 and /health', async () => {
    const { app } = await makeApp()
    const typo = await app.inject({ method: 'GET', url: '/jobs/abc?wiat=30', headers: AUTH })
    expect(typo.statusCode).toBe(400)
    expect(typo.json().error).toEqual({ code: 'validation_error', field: 'wiat', message: 'querystring.wiat is not a known field' })
    expect((await app.inject({ method: 'GET', url: '/jobs?status=failed&limit=5&sort=asc', headers: AUTH })).json().error.field).toBe('sort')
    expect((await app.inject({ method: 'GET', url: '/v1/models?api-version=2024-01-01', headers: AUTH })).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/health?probe=lb' })).statusCode).toBe(200)
  })
})

describe('GET /jobs/:id/events ids', () => {
  it('never delivers an id at or below Last-Event-ID, even past the end of the log; end has the next id', async () => {
    const { app } = await makeApp()
    const base = await listen(app)
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: `${probe.directive} [[fake say one]] [[fake say two]]` })
    await probe.waitStarted(1)
    const lastId = async (): Promise<number> => (await app.ctx.engine.events.since(job.job_id, 0)).at(-1)!.id
    // A follower that claims to have seen more than the job has logged yet (a lost server state, a
    // client bug): the events the job logs next, up to the id it names, are not for it.
    const claimed = await lastId() + 3
    const ahead = collectEvents(base, `/jobs/${job.job_id}/events`, { lastEventId: claimed })
    const behind = collectEvents(base, `/jobs/${job.job_id}/events`, { lastEventId: 2 })
    await vi.waitFor(() => expect(app.ctx.engine.events.followers).toBe(2))
    probe.release()
    await finished(app, job.job_id)
    const last = await lastId()
    expect(last).toBeGreaterThan(claimed)
    const seenAhead = (await ahead).events
    expect(seenAhead.map(event => event.id)).toEqual([...Array.from({ length: last - claimed }, (_, i) => claimed + 1 + i), last + 1])
    expect(seenAhead.at(-1)).toMatchObject({ type: 'end', id: last + 1, data: { status: 'completed' } })
    const seenBehind = (await behind).events
    expect(seenBehind.map(event => event.id)).toEqual([...Array.from({ length: last - 2 }, (_, i) => 3 + i), last + 1])
    // Past the end of a finished job: nothing but the end, still above the id asked for.
    const after = (await collectEvents(base, `/jobs/${job.job_id}/events`, { lastEventId: 1000 })).events
    expect(after).toEqual([expect.objectContaining({ type: 'end', id: 1001 })])
  })

  it('gives the gap an id too, just before the oldest event kept', async () => {
    const { app } = await makeApp({ maxOutputBytes: 256 * 1024 })
    const base = await listen(app)
    const job = await run(app, { prompt: '[[fake flood 2097152]]' })
    const { events } = await collectEvents(base, `/jobs/${job.job_id}/events`)
    const first = (await app.ctx.engine.events.since(job.job_id, 0))[0]!.id
    expect(first).toBeGreaterThan(1)
    expect(events[0]).toMatchObject({ type: 'gap', id: first - 1, data: { first_id: first } })
    expect(events.every(event => event.id !== undefined)).toBe(true)
    const ids = events.map(event => event.id!)
    expect(ids).toEqual([...ids].sort((a, b) => a - b))
    expect(new Set(ids).size).toBe(ids.length)
  })
})

describe('/openapi.json', () => {
  it('documents every response each route really gives: requests made from the document itself', async () => {
    const { app } = await makeApp({ maxConcurrency: 2, metricsToken: 'metrics-token-0123456789abcd' })
    const base = await listen(app)
    const done = await run(app, { prompt: 'hi [[fake tool]]', metadata: { from: 'contract' } })
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json', headers: AUTH })).json<OpenApiDocument>()
    const checker = new ResponseChecker()
    const fixtures = {
      params: { id: done.job_id, model: 'haiku' },
      auth: { authorization: `Bearer ${TOKEN}` },
      narrowAuth: { authorization: 'Bearer metrics-token-0123456789abcd' },
      bodies: {
        'POST /execute': [{ prompt: 'hi', model: 'haiku', metadata: { a: [1, { b: null }] } }],
        'POST /v1/chat/completions': [
          { model: 'haiku', messages: [{ role: 'user', content: 'hi' }] },
          { model: 'haiku', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } },
          { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
        ],
        'POST /v1/responses': [
          { model: 'haiku', input: 'hi' },
          { model: 'haiku', input: [{ role: 'user', content: [{ type: 'input_text', text: 'hi' }] }], stream: true, store: false },
          { model: 'haiku', input: 'hi', previous_response_id: 'resp_unknown' },
        ],
        'POST /v1/messages': [
          { model: 'haiku', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] },
          { model: 'haiku', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }], stream: true },
          { model: 'haiku', max_tokens: 10, messages: [{ role: 'user', content: [{ type: 'image', source: {} }] }] },
        ],
        'POST /v1/messages/count_tokens': [{ model: 'haiku', messages: [{ role: 'user', content: 'hi' }] }],
      },
    }
    const problems: string[] = []
    let requests = 0
    const statuses = new Set<string>()
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const method of Object.keys(operations)) {
        for (const probe of probesFor(doc, path, method, fixtures)) {
          const response = await fetch(`${base}${probe.url}`, {
            method: probe.method,
            headers: probe.headers,
            ...(probe.body === undefined ? {} : { body: JSON.stringify(probe.body) }),
          })
          const body = await response.text()
          requests++
          statuses.add(`${probe.method} ${path} ${response.status}`)
          for (const problem of checker.problems(operations[method]!, response.status, response.headers.get('content-type'), body)) {
            problems.push(`${probe.method} ${path} with ${probe.what}: ${problem}`)
          }
        }
      }
    }
    expect(problems).toEqual([])
    expect(requests).toBeGreaterThan(80)
    // The walk reached the interesting answers, not only refusals.
    for (const expected of ['POST /execute 202', 'GET /jobs/{id} 200', 'GET /jobs/{id}/events 200', 'GET /jobs/{id}/output 200', 'DELETE /jobs/{id} 409',
      'POST /v1/chat/completions 200', 'POST /v1/chat/completions 404', 'GET /jobs 401', 'GET /jobs 400', 'GET /metrics 200', 'GET /health 200',
      'GET /jobs 403', 'POST /execute 403', 'POST /v1/chat/completions 403', 'GET /usage 200', 'GET /usage 403',
      'POST /v1/responses 200', 'POST /v1/responses 404', 'GET /v1/responses/{id} 404', 'DELETE /v1/responses/{id} 404',
      'POST /v1/messages 200', 'POST /v1/messages 400', 'POST /v1/messages 401', 'POST /v1/messages 403', 'POST /v1/messages/count_tokens 200']) {
      expect(statuses, expected).toContain(expected)
    }
  })

  it('says where a token is needed, and which content types come back', async () => {
    const { app } = await makeApp()
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json', headers: AUTH })).json<OpenApiDocument>()
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        if (path === '/health') expect(operation.responses['401']).toBeUndefined()
        else expect(operation.responses['401'], `${method} ${path}`).toBeDefined()
      }
    }
    expect(Object.keys(doc.paths['/jobs/{id}/events']!.get!.responses['200']!.content!)).toEqual(['text/event-stream'])
    expect(Object.keys(doc.paths['/jobs/{id}/output']!.get!.responses['200']!.content!)).toEqual(['application/x-ndjson'])
    expect(Object.keys(doc.paths['/v1/chat/completions']!.post!.responses['200']!.content!)).toEqual(['application/json', 'text/event-stream'])
    expect(Object.keys(doc.paths['/execute']!.post!.responses).sort()).toEqual(['202', '400', '401', '403', '413', '415', '422', '429', '503'])
  })
})
