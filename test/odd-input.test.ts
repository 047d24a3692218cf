import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { AUTH, finished, makeApp, TOKEN, tempDir } from './helpers/app.ts'
import { makeRepo } from './helpers/repos.ts'

const JSON_HEADERS = { ...AUTH, 'content-type': 'application/json' }

/** `{"a": {"a": ... {} ...}}`, `depth` objects deep. */
const nested = (depth: number): unknown => {
  let value: unknown = {}
  for (let i = 1; i < depth; i++) value = { a: value }
  return value
}

describe('bodies that are not plain UTF-8 JSON', () => {
  it('limits nesting to 64 levels, with a 400 naming the field (jobs and chat)', async () => {
    const { app } = await makeApp()
    // The body is one level, metadata the other 63: allowed.
    const fits = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: JSON.stringify({ prompt: 'hi', metadata: nested(63) }) })
    expect(fits.statusCode).toBe(202)
    await finished(app, fits.json().job_id)
    for (const depth of [64, 4400]) {
      const deep = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: JSON.stringify({ prompt: 'hi', metadata: nested(depth) }) })
      expect(deep.statusCode, `metadata ${depth} deep`).toBe(400)
      expect(deep.json().error).toEqual({ code: 'validation_error', message: 'body.metadata is nested more than 64 levels deep', field: 'metadata' })
    }
    // A million brackets: the parser and the check cope, without recursion.
    const brackets = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: `{"prompt":"hi","metadata":{"x":${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}}}` })
    expect(brackets.statusCode).toBe(400)
    expect(brackets.json().error.field).toBe('metadata')
    const chat = await app.inject({
      method: 'POST',
      url: '/v1/chat/completions',
      headers: JSON_HEADERS,
      payload: JSON.stringify({ model: 'haiku', messages: [{ role: 'assistant', content: 'x', tool_calls: [nested(4400)] }, { role: 'user', content: 'hi' }] }),
    })
    expect(chat.statusCode).toBe(400)
    expect(chat.json().error).toMatchObject({ type: 'invalid_request_error', code: 'validation_error', param: 'messages' })
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
  })

  it('refuses bytes that are not UTF-8 (400) and charsets other than UTF-8 (415), and takes UTF-8 as sent', async () => {
    const { app } = await makeApp()
    const latin1 = Buffer.concat([Buffer.from('{"prompt": "caf'), Buffer.from([0xe9]), Buffer.from('"}')])
    const invalid = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: latin1 })
    expect(invalid.statusCode).toBe(400)
    expect(invalid.json().error).toMatchObject({ code: 'validation_error', field: 'body', message: expect.stringContaining('not valid UTF-8') })
    for (const charset of ['iso-8859-1', 'utf-16', '"windows-1252"']) {
      const other = await app.inject({ method: 'POST', url: '/execute', headers: { ...AUTH, 'content-type': `application/json; charset=${charset}` }, payload: '{"prompt": "hi"}' })
      expect(other.statusCode, charset).toBe(415)
      expect(other.json().error).toMatchObject({ code: 'unsupported_media_type', message: expect.stringContaining(charset.replaceAll('"', '')) })
    }
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    const utf8 = await app.inject({ method: 'POST', url: '/execute', headers: { ...AUTH, 'content-type': 'application/json; charset=UTF-8' }, payload: Buffer.from('{"prompt": "café [[fake echo]]"}') })
    expect(utf8.statusCode).toBe(202)
    await finished(app, utf8.json().job_id)
    const seen = JSON.parse((await app.inject({ method: 'GET', url: `/jobs/${utf8.json().job_id}`, headers: AUTH })).json().result.text)
    expect(seen.stdin).toBe('café [[fake echo]]')
  })

  it('answers a compressed body with 415 naming its Content-Encoding', async () => {
    const { app } = await makeApp()
    for (const encoding of ['gzip', 'br', 'deflate']) {
      const response = await app.inject({ method: 'POST', url: '/execute', headers: { ...JSON_HEADERS, 'content-encoding': encoding }, payload: gzipSync('{"prompt": "hi"}') })
      expect(response.statusCode, encoding).toBe(415)
      expect(response.json().error).toEqual({ code: 'unsupported_encoding', message: `Content-Encoding "${encoding}" is not supported: send the body uncompressed` })
    }
    const identity = await app.inject({ method: 'POST', url: '/execute', headers: { ...JSON_HEADERS, 'content-encoding': 'identity' }, payload: '{"prompt": "hi"}' })
    expect(identity.statusCode).toBe(202)
    await finished(app, identity.json().job_id)
  })

  it('refuses __proto__ and constructor.prototype keys, saying so', async () => {
    const { app } = await makeApp()
    const cases: Array<[string, string, string]> = [
      ['{"prompt": "hi", "__proto__": {"admin": true}}', '__proto__', '"__proto__"'],
      ['{"prompt": "hi", "metadata": {"a": {"__proto__": {}}}}', 'metadata.a.__proto__', '"__proto__"'],
      ['{"prompt": "hi", "metadata": {"constructor": {"prototype": {}}}}', 'metadata.constructor', '"constructor.prototype"'],
    ]
    for (const [payload, field, key] of cases) {
      const response = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload })
      expect(response.statusCode, payload).toBe(400)
      expect(response.json().error).toEqual({ code: 'validation_error', field, message: `body.${field}: a ${key} key is refused (it could change an object's prototype); rename the field` })
    }
    // A field merely called "constructor" is fine.
    const plain = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: '{"prompt": "hi", "metadata": {"constructor": "Ada"}}' })
    expect(plain.statusCode).toBe(202)
    await finished(app, plain.json().job_id)
  })

  it('still answers broken and empty JSON with a 400', async () => {
    const { app } = await makeApp()
    const broken = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: '{"prompt": ' })
    expect(broken.json().error).toMatchObject({ code: 'validation_error', field: 'body', message: expect.stringMatching(/^the body is not valid JSON: /) })
    const empty = await app.inject({ method: 'POST', url: '/execute', headers: JSON_HEADERS, payload: '' })
    expect(empty.json().error).toEqual({ code: 'validation_error', field: 'body', message: 'the body is empty; send a JSON object' })
  })
})

describe('ref', () => {
  it('refuses a full ref name at submit, naming the short form, instead of failing the job later', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    for (const [ref, short] of [['refs/heads/main', 'main'], ['refs/tags/v1.0', 'v1.0']]) {
      const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', ref } })
      expect(response.statusCode, ref).toBe(400)
      expect(response.json().error).toMatchObject({ code: 'invalid_ref', field: 'ref', message: expect.stringContaining(`send "${short}", not "${ref}"`) })
    }
    const other = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', ref: 'refs/pull/1/head' } })
    expect(other.json().error).toMatchObject({ code: 'invalid_ref', message: expect.stringContaining('not a full ref name') })
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
  })
})

describe('Authorization', () => {
  it('takes the Bearer scheme in any case', async () => {
    const { app } = await makeApp()
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      const response = await app.inject({ method: 'GET', url: '/jobs', headers: { authorization: `${scheme} ${TOKEN}` } })
      expect(response.statusCode, scheme).toBe(200)
      const chat = await app.inject({ method: 'GET', url: '/v1/models', headers: { authorization: `${scheme} ${TOKEN}` } })
      expect(chat.statusCode, scheme).toBe(200)
    }
    expect((await app.inject({ method: 'GET', url: '/jobs', headers: { authorization: `Basic ${TOKEN}` } })).statusCode).toBe(401)
    expect((await app.inject({ method: 'GET', url: '/jobs', headers: { authorization: `bearer ${TOKEN}x` } })).statusCode).toBe(401)
  })
})
