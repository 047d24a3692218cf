import { describe, expect, it } from 'vitest'
import { AUTH, finished, makeApp, TOKEN } from './helpers/app.ts'

describe('authentication', () => {
  // The one exception, the dashboard's static files (/ui/, and / sending there), hold no data:
  // test/ui-server.test.ts asks every route of the API without a token and finds none.
  it('every API route but /health needs a valid bearer token; only the dashboard\'s static files load without one', async () => {
    const { app } = await makeApp()
    const cases = [
      { method: 'POST' as const, url: '/execute', payload: { prompt: 'hi' } },
      { method: 'GET' as const, url: '/jobs' },
      { method: 'GET' as const, url: '/jobs/abc' },
      { method: 'DELETE' as const, url: '/jobs/abc' },
      { method: 'GET' as const, url: '/jobs/abc/output' },
      { method: 'GET' as const, url: '/jobs/abc/events' },
      { method: 'GET' as const, url: '/openapi.json' },
    ]
    for (const headers of [{}, { authorization: 'Bearer wrong-token-000000000' }, { authorization: `Basic ${TOKEN}` }, { authorization: TOKEN }]) {
      for (const request of cases) {
        const response = await app.inject({ ...request, headers })
        expect(response.statusCode, `${request.method} ${request.url} with ${JSON.stringify(headers)}`).toBe(401)
        expect(response.headers['www-authenticate']).toBe('Bearer')
        expect(response.json()).toEqual({ error: { code: 'unauthorized', message: expect.stringContaining('Authorization: Bearer') } })
      }
    }
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    expect((await app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200)
    for (const url of ['/ui/', '/ui/app.js']) expect((await app.inject({ method: 'GET', url })).statusCode, url).toBe(200)
  })

  it('accepts any of several tokens', async () => {
    const other = 'second-token-abcdefghijklmnop'
    const { app } = await makeApp({ authTokens: [TOKEN, other] })
    for (const token of [TOKEN, other]) {
      const response = await app.inject({ method: 'GET', url: '/jobs/none', headers: { authorization: `Bearer ${token}` } })
      expect(response.statusCode).toBe(404)
    }
  })

  it('answers unknown routes with a JSON 404', async () => {
    const { app } = await makeApp()
    const response = await app.inject({ method: 'GET', url: '/nope', headers: AUTH })
    expect(response.statusCode).toBe(404)
    expect(response.json().error.code).toBe('not_found')
  })
})

describe('POST /execute validation', () => {
  const bad: Array<[string, unknown, string]> = [
    ['no prompt', { agent: 'x' }, 'prompt'],
    ['empty prompt', { prompt: '' }, 'prompt'],
    ['prompt not a string', { prompt: 42 }, 'prompt'],
    ['unknown field', { prompt: 'hi', promt: 'typo' }, 'promt'],
    ['agent that looks like an option', { prompt: 'hi', agent: '--dangerously-skip-permissions' }, 'agent'],
    ['agent with a space', { prompt: 'hi', agent: 'a b' }, 'agent'],
    ['agent with a slash', { prompt: 'hi', agent: '../etc' }, 'agent'],
    ['model too long', { prompt: 'hi', model: 'm'.repeat(129) }, 'model'],
    ['timeout as a string', { prompt: 'hi', timeout_seconds: '5' }, 'timeout_seconds'],
    ['negative timeout', { prompt: 'hi', timeout_seconds: -1 }, 'timeout_seconds'],
    ['zero max turns', { prompt: 'hi', max_turns: 0 }, 'max_turns'],
    ['fractional max turns', { prompt: 'hi', max_turns: 1.5 }, 'max_turns'],
    ['zero budget', { prompt: 'hi', max_budget_usd: 0 }, 'max_budget_usd'],
    ['metadata not an object', { prompt: 'hi', metadata: [1, 2] }, 'metadata'],
    ['metadata too large', { prompt: 'hi', metadata: { blob: 'x'.repeat(17 * 1024) } }, 'metadata'],
    ['prompt over 1 MiB of UTF-8', { prompt: 'é'.repeat(600_000) }, 'prompt'],
  ]

  for (const [name, payload, field] of bad) {
    it(`rejects ${name} with 400 naming ${field}`, async () => {
      const { app } = await makeApp()
      const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: payload as Record<string, unknown> })
      expect(response.statusCode).toBe(400)
      const { error } = response.json()
      expect(error.code).toBe('validation_error')
      expect(error.field).toBe(field)
      expect(error.message).toContain(field)
      expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    })
  }

  it('rejects a body that is not JSON, or empty', async () => {
    const { app } = await makeApp()
    const broken = await app.inject({ method: 'POST', url: '/execute', headers: { ...AUTH, 'content-type': 'application/json' }, payload: '{"prompt": ' })
    expect(broken.statusCode).toBe(400)
    expect(broken.json().error.code).toBe('validation_error')
    const empty = await app.inject({ method: 'POST', url: '/execute', headers: { ...AUTH, 'content-type': 'application/json' }, payload: '' })
    expect(empty.statusCode).toBe(400)
    const text = await app.inject({ method: 'POST', url: '/execute', headers: { ...AUTH, 'content-type': 'text/plain' }, payload: 'hi' })
    expect(text.statusCode).toBe(415)
    expect(text.json().error.code).toBe('unsupported_media_type')
  })

  it('answers 413 to a body far over the limit', async () => {
    const { app } = await makeApp()
    const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'x'.repeat(9 * 1024 * 1024) } })
    expect(response.statusCode).toBe(413)
    expect(response.json().error.code).toBe('payload_too_large')
  })

  it('accepts names with dots, colons, dashes and underscores', async () => {
    const { app } = await makeApp()
    const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', agent: 'code_reviewer-2', model: 'us.anthropic.claude-opus-4-1-20250805-v1:0' } })
    expect(response.statusCode).toBe(202)
    await finished(app, response.json().job_id)
  })
})
