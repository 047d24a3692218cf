import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { UI_ROOT } from '../src/routes/ui.ts'
import { makeApp, run, submit, TOKEN } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'

// The dashboard's server side: its static files, their headers, and that nothing but those files
// (and /health) answers without a token.

const SERVED = ['.html', '.css', '.js', '.svg']
const uiFiles = readdirSync(UI_ROOT, { recursive: true, encoding: 'utf8' })
  .filter(file => SERVED.some(ext => file.endsWith(ext)))
  .sort()
const MARKDOWN_IT = readFileSync(join(import.meta.dirname, '../node_modules/markdown-it/dist/browser/markdown-it.esm.min.mjs'))

describe('the dashboard\'s files', () => {
  it('are the files in ui/ as they are, with a strict CSP, to anyone without a token', async () => {
    const { app } = await makeApp()
    expect(uiFiles).toEqual(expect.arrayContaining(['index.html', 'app.js', 'app.css', 'markdown.js', 'sse.js']))
    for (const file of [...uiFiles, 'vendor/markdown-it.mjs', '']) {
      const response = await app.inject({ method: 'GET', url: `/ui/${file}` })
      expect(response.statusCode, file).toBe(200)
      expect(response.rawPayload.equals(file === 'vendor/markdown-it.mjs' ? MARKDOWN_IT : readFileSync(join(UI_ROOT, file || 'index.html'))), file).toBe(true)
      const csp = String(response.headers['content-security-policy'])
      for (const directive of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "form-action 'none'", "base-uri 'none'", "require-trusted-types-for 'script'"]) {
        expect(csp, `${file}: ${directive}`).toContain(directive)
      }
      expect(csp).not.toContain('unsafe')
      expect(response.headers).toMatchObject({ 'x-content-type-options': 'nosniff', 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer', 'cache-control': 'no-cache' })
      expect(response.headers.etag).toEqual(expect.any(String))
    }
    const types = Object.fromEntries(await Promise.all(['', 'app.js', 'app.css', 'vendor/markdown-it.mjs', 'favicon.svg'].map(async file =>
      [file, (await app.inject({ method: 'GET', url: `/ui/${file}` })).headers['content-type']])))
    expect(types).toEqual({
      '': 'text/html; charset=utf-8',
      'app.js': 'application/javascript; charset=utf-8',
      'app.css': 'text/css; charset=utf-8',
      'vendor/markdown-it.mjs': 'application/javascript; charset=utf-8',
      'favicon.svg': 'image/svg+xml',
    })
  })

  it('hold no inline script or style, nothing the CSP would block', () => {
    const html = readFileSync(join(UI_ROOT, 'index.html'), 'utf8')
    expect([...html.matchAll(/<script\b[^>]*>/g)].map(m => m[0])).toEqual(['<script type="module" src="app.js">'])
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=|javascript:/i)
    for (const file of uiFiles.filter(name => name.endsWith('.js'))) {
      const source = readFileSync(join(UI_ROOT, file), 'utf8')
      expect(source, file).not.toMatch(/\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function/)
    }
  })

  it('are only those: a path out of ui/, a file not served, a directory answer 404', async () => {
    const { app } = await makeApp()
    for (const url of ['/ui/tsconfig.json', '/ui/vendor/markdown-it.d.mts', '/ui/../package.json', '/ui/%2e%2e/package.json', '/ui/..%2fpackage.json',
      '/ui/%2e%2e/%2e%2e/etc/passwd', '/ui/vendor/', '/ui/nope.js', '/ui/.hidden.js', '/ui//app.js', '/ui/vendor/../../src/config.ts']) {
      const response = await app.inject({ method: 'GET', url })
      expect(response.statusCode, url).toBe(404)
      expect(response.json(), url).toEqual({ error: { code: 'not_found', message: expect.any(String) } })
      expect(response.body, url).not.toContain('"name"')
    }
    const slash = await app.inject({ method: 'GET', url: '/ui' })
    expect([slash.statusCode, slash.headers.location]).toEqual([301, '/ui/'])
    const root = await app.inject({ method: 'GET', url: '/' })
    expect([root.statusCode, root.headers.location]).toEqual([302, '/ui/'])
  })

  it('are the only answers, with /health, that need no token: no job data leaves without one', async () => {
    const { app } = await makeApp()
    const marker = 'MARKER-7f3a9-secret-prompt'
    const probe = await AgentProbe.start()
    const done = await run(app, { prompt: `${marker} [[fake text ${marker} answer]]` })
    const running = await submit(app, { prompt: `${marker} running ${probe.directive}` })
    await probe.waitStarted(1)
    const ids = [done.job_id, running.job_id]

    // Every route the API documents, and the one it hides, asked without a token.
    const spec = app.swagger() as { paths: Record<string, Record<string, unknown>> }
    const routes = Object.entries(spec.paths).flatMap(([path, methods]) => Object.keys(methods).map(method => ({ method: method.toUpperCase(), path })))
    routes.push({ method: 'GET', path: '/openapi.json' })
    expect(routes.length).toBeGreaterThanOrEqual(12)
    const answers: string[] = []
    for (const { method, path } of routes) {
      for (const id of ids) {
        const url = path.replace('{id}', id).replace('{model}', 'haiku')
        const response = await app.inject({ method: method as 'GET', url, ...(method === 'POST' ? { payload: { prompt: 'hi', model: 'haiku', messages: [{ role: 'user', content: 'hi' }] } } : {}) })
        answers.push(response.body)
        if (path === '/health') {
          expect(response.statusCode).toBe(200)
        } else {
          expect(response.statusCode, `${method} ${url}`).toBe(401)
        }
      }
    }
    for (const file of [...uiFiles, 'vendor/markdown-it.mjs', '']) answers.push((await app.inject({ method: 'GET', url: `/ui/${file}` })).body)
    for (const body of answers) {
      expect(body).not.toContain(marker)
      for (const id of ids) expect(body).not.toContain(id)
      expect(body).not.toContain(TOKEN)
    }
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(1)
    probe.release()
  })
})
