/// <reference lib="dom" />
// Code passed to page.evaluate runs in the page: it is typed against the DOM.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser, BrowserContext, Page, PageScreenshotOptions } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest'
import type { Config } from '../src/config.ts'
import * as format from '../ui/format.js'
import { AUTH, engineConfig, finished, listen, makeApp, record, submit, tempDir, TOKEN } from './helpers/app.ts'
import { launchBrowser, signIn, watchedPage, type BrowserName, type PageProblems } from './helpers/browser.ts'
import { AgentProbe } from './helpers/probe.ts'
import { makeRepo } from './helpers/repos.ts'

// The dashboard end to end: real headless Chromium and Firefox (Debian's, driven by playwright-core)
// against the service listening on a port, with the fake CLI. Screenshots of it (Chromium's) go to docs/.
// The screenshots in docs/ are taken by this test. They are written there only when asked
// (UPDATE_SCREENSHOTS=1), so a test run does not leave the working tree changed; otherwise they go
// to a temporary folder, still taken, so the code that takes them keeps working.
const DOCS = process.env.UPDATE_SCREENSHOTS === '1' ? fileURLToPath(new URL('../docs/', import.meta.url)) : `${mkdtempSync(join(tmpdir(), 'cr-screenshots-'))}/`
const DESKTOP = { width: 1280, height: 800 }
const PHONE = { width: 390, height: 844 }

const BROWSERS: readonly BrowserName[] = ['chromium', 'firefox']

interface Session {
  base: string
  page: Page
  problems: PageProblems
  context: BrowserContext
}

async function openIn (browser: Browser, overrides: Partial<Config>, viewport: typeof DESKTOP) {
  const made = await makeApp(overrides)
  if (overrides.baseRepo !== undefined) await made.app.ctx.workspaces.ready
  const base = await listen(made.app)
  const context = await browser.newContext({ viewport, acceptDownloads: true })
  context.setDefaultTimeout(20_000)
  onTestFinished(() => context.close())
  const { page, problems } = await watchedPage(context)
  return { ...made, session: { base, page, problems, context } satisfies Session }
}

/** Waits for what the page shows to come true: the page polls and streams, so it gets there. */
const eventually = <T>(read: () => Promise<T>, options: { timeout?: number } = {}) => expect.poll(read, { timeout: 15_000, interval: 50, ...options })
const row = (page: Page, id: string) => page.locator(`tr[data-job-id="${id}"]`)
const jobIdOf = (page: Page) => decodeURIComponent(/#\/jobs\/(.+)$/.exec(page.url())![1]!)

describe.each(BROWSERS)('the dashboard in %s', name => {
  let browser: Browser
  beforeAll(async () => { browser = await launchBrowser(name) })
  afterAll(async () => { await browser?.close() })
  const open = (overrides: Partial<Config> = {}, viewport = DESKTOP) => openIn(browser, overrides, viewport)
  /**
   * The pictures are Chromium's. In Firefox, Playwright readies a page for a picture by adding an
   * inline <style> through the page, which its CSP refuses (as it should): a violation that is not
   * the dashboard's.
   */
  const screenshot = async (page: Page, file: string, options: PageScreenshotOptions = {}) => {
    if (name === 'chromium') await page.screenshot({ ...options, path: `${DOCS}${file}` })
  }
  /** Chromium logs an answer of 4xx to fetch() as a console error; Firefox does not. */
  const refusedLog = (status: number) => name === 'chromium' ? [expect.stringContaining(`status of ${status}`)] : []

  it('signs in, submits from the form, shows the job queued, running, live, then its answer', async () => {
    const { app, config, session: { base, page, problems } } = await open({ maxConcurrency: 1 })
    const probe = await AgentProbe.start()
    // Jobs that ended already, so the list has history to show.
    await finished(app, (await submit(app, { prompt: 'Summarise the README for the release notes', model: 'haiku', metadata: { pipeline: 118 } })).job_id)
    await finished(app, (await submit(app, { prompt: 'Run the migration check\n[[fake exit 1]]', model: 'sonnet' })).job_id)

    await page.goto(`${base}/ui/`)
    await page.getByLabel('Bearer token').fill('not-the-token-at-all-000')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await eventually(() => page.locator('.sign-in .error').textContent()).toContain('refused')
    expect(problems.all.splice(0)).toEqual(refusedLog(401))
    await page.getByLabel('Bearer token').fill(TOKEN)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.locator('tr.job').nth(1).waitFor()
    expect(await page.evaluate(() => sessionStorage.getItem('claude-runner.token'))).toBe(TOKEN)
    expect(page.url()).not.toContain(TOKEN)

    await page.getByRole('link', { name: 'New job' }).click()
    await page.getByLabel('Prompt').fill(`Review the parser changes\n[[fake say Reading src/parser.ts]] ${probe.directive} [[fake text **Looks good.** Two notes:\\n\\n- \`parse()\` keeps the old error codes\\n- the new test covers empty input]]`)
    await page.getByLabel('Model').fill('haiku')
    await page.getByRole('button', { name: 'Submit' }).click()
    await page.waitForURL(/#\/jobs\//)
    const id = jobIdOf(page)
    await probe.waitStarted(1)

    // The agent is held at the probe: what the page shows now arrived live.
    await page.locator('.event.text', { hasText: 'Reading src/parser.ts' }).waitFor()
    expect((await record(app, id)).status).toBe('running')
    await eventually(() => page.locator('#job-status').textContent()).toBe('running')
    expect(await page.locator('.stream-state').textContent()).toBe('live')
    expect(await page.locator('.step.current .step-name').textContent()).toBe('running')

    const waiting = await submit(app, { prompt: 'Write the release notes', model: 'opus' })
    await page.getByRole('link', { name: '← All jobs' }).click()
    await eventually(() => row(page, id).locator('.badge').textContent()).toBe('running')
    await eventually(() => row(page, waiting.job_id).locator('.badge').textContent()).toBe('queued')
    expect(await page.locator('#stat-active').textContent()).toBe('1')
    expect(await page.locator('#stat-queued').textContent()).toBe('1')
    expect(await page.locator('.stat', { hasText: 'Queued' }).locator('.hint').textContent()).toBe(`room for ${config.maxQueueDepth - 2} more`)
    expect(await row(page, id).locator('td.prompt a').textContent()).toBe('Review the parser changes')
    expect(await page.locator('tr.job').count()).toBe(4)
    await screenshot(page, 'dashboard-overview.png')

    // Released, both jobs run to the end and the list follows without a reload.
    probe.release()
    await eventually(() => row(page, waiting.job_id).locator('.badge').textContent(), { timeout: 20_000 }).toBe('completed')
    expect(await row(page, id).locator('.badge').textContent()).toBe('completed')
    expect(await row(page, id).locator('td[data-label="Cost"]').textContent()).toMatch(/^\$0\.\d+$/)

    await row(page, id).locator('td.prompt a').click()
    await page.locator('#answer strong', { hasText: 'Looks good.' }).waitFor()
    expect(await page.locator('#answer li').allTextContents()).toEqual(['parse() keeps the old error codes', 'the new test covers empty input'])
    expect(await page.locator('.step.end .step-name').textContent()).toBe('completed')
    expect(await page.locator('.stream-state').textContent()).toBe('ended')
    expect(await page.locator('#cancel').count()).toBe(0)
    expect(problems.all).toEqual([])
  })

  it('shows what the agent changed in BASE_REPO as a marked diff, and downloads the raw output', async () => {
    const repo = makeRepo(await tempDir())
    const { app, session: { base, page, problems } } = await open({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    const job = await submit(app, {
      prompt: 'Fix the second line and add notes\n[[fake tool]] [[fake write src/app.txt line 1\\nline two, fixed\\n]] [[fake write notes/todo.md - ship it\\n]] [[fake rm CHANGELOG.md]] [[fake commit fix the second line]] [[fake text Fixed **src/app.txt** and added notes.]]',
      model: 'sonnet',
    })
    const done = await finished(app, job.job_id)
    expect(done.status).toBe('completed')

    await signIn(page, base, TOKEN, `#/jobs/${job.job_id}`)
    await page.locator('#changed-files li').nth(3).waitFor()
    expect((await page.locator('#changed-files li').allTextContents()).sort()).toEqual([
      'added hello.txt', 'added notes/todo.md', 'deleted CHANGELOG.md', 'modified src/app.txt',
    ])
    expect(await page.locator('#diff-stats').textContent()).toContain('4 files changed')
    const added = await page.locator('pre.diff .line.add').allTextContents()
    const removed = await page.locator('pre.diff .line.del').allTextContents()
    expect(added).toEqual(expect.arrayContaining(['+line two, fixed\n', '+- ship it\n']))
    expect(removed).toEqual(expect.arrayContaining(['-line 2\n', '-- second commit\n']))
    expect(added.some(line => line.startsWith('+++'))).toBe(false)
    expect(await page.locator('pre.diff .line.file').count()).toBe(4)
    expect(await page.locator('.commits li').allTextContents()).toEqual([expect.stringMatching(/^[0-9a-f]{12} fix the second line$/)])
    // The tool call shows its input; its result is folded under it.
    const tool = page.locator('.event.tool_use')
    expect(await tool.locator('.event-label').textContent()).toBe('tool · Write')
    expect(await tool.locator('pre.json').textContent()).toContain('"file_path"')
    expect(await tool.locator('details.tool_result').getAttribute('open')).toBeNull()
    // Down to the first lines of the diff: a taller picture than the window, not the whole page.
    await screenshot(page, 'dashboard-job.png', { fullPage: true, clip: { x: 0, y: 0, width: DESKTOP.width, height: 1250 } })

    const raw = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}/output`, headers: AUTH })
    const fetched = page.waitForResponse(response => response.url().endsWith(`/jobs/${job.job_id}/output`))
    // Firefox 153 over WebDriver BiDi reports no download event for a blob: download (measured on
    // a bare page too), and hands Playwright this response's body garbled: there the test sees the
    // page fetch the output with its token, and how much came.
    const downloaded = name === 'chromium' ? page.waitForEvent('download') : undefined
    await page.getByRole('button', { name: 'Download output' }).click()
    const response = await fetched
    expect(response.status()).toBe(200)
    expect(await response.request().headerValue('authorization')).toBe(`Bearer ${TOKEN}`)
    expect(Number(await response.headerValue('content-length'))).toBe(Buffer.byteLength(raw.body))
    if (downloaded !== undefined) {
      const download = await downloaded
      expect(download.suggestedFilename()).toBe(`job-${job.job_id}.ndjson`)
      const saved = readFileSync(await download.path(), 'utf8')
      expect(saved).toBe(raw.body)
      expect(saved.split('\n').filter(Boolean).map(line => JSON.parse(line).type)).toContain('result')
    }
    expect(problems.all).toEqual([])
  })

  it('cancels a running job from its page, after asking', async () => {
    const { app, session: { base, page, problems } } = await open()
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: `Refactor everything ${probe.directive}` })
    await probe.waitStarted(1)
    // A browser clock ten minutes slow: the running step's time is still counted from zero up.
    await page.clock.install({ time: Date.now() - 10 * 60_000 })
    await signIn(page, base, TOKEN, `#/jobs/${job.job_id}`)
    await eventually(() => page.locator('#job-status').textContent()).toBe('running')
    await eventually(() => page.locator('.step.current .step-time').textContent()).toMatch(/^\d+(\.\d)? (ms|s)$/)

    await page.getByRole('button', { name: 'Cancel', exact: true }).click()
    const dialog = page.locator('dialog#confirm')
    await dialog.waitFor({ state: 'visible' })
    await dialog.getByRole('button', { name: 'Keep it running' }).click()
    await dialog.waitFor({ state: 'hidden' })
    expect((await record(app, job.job_id)).cancel).toBeNull()

    await page.getByRole('button', { name: 'Cancel', exact: true }).click()
    await dialog.getByRole('button', { name: 'Cancel the job' }).click()
    await eventually(() => page.locator('#job-status').textContent(), { timeout: 20_000 }).toBe('cancelled')
    const done = await finished(app, job.job_id)
    expect(done).toMatchObject({ status: 'cancelled', cancel: { reason: 'user' }, error: { code: 'cancelled' } })
    expect(await page.locator('#job-error').textContent()).toContain('cancelled')
    expect(await page.locator('#cancel').count()).toBe(0)
    expect(problems.all).toEqual([])
  })

  it('shows an answer holding <script> and <img onerror> as text, and runs nothing', async () => {
    const { app, session: { base, page, problems } } = await open()
    const payload = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [click](javascript:alert(3)) <javascript:alert(4)> ![pixel](https://tracker.example/p.png)'
    const job = await submit(app, { prompt: `Echo this back: ${payload} [[fake say ${payload}]] [[fake text ${payload}]]` })
    await finished(app, job.job_id)

    await signIn(page, base, TOKEN, `#/jobs/${job.job_id}`)
    const answer = page.locator('#answer')
    await answer.waitFor()
    const text = await answer.textContent()
    expect(text).toContain('<script>alert(1)</script>')
    expect(text).toContain('<img src=x onerror="alert(2)">')
    expect(await page.locator('#prompt').textContent()).toContain('<script>alert(1)</script>')
    expect(await page.locator('.event.text').first().textContent()).toContain('<img src=x onerror="alert(2)">')
    const dom = await page.evaluate(() => ({
      scripts: [...document.scripts].map(script => script.getAttribute('src')),
      images: document.images.length,
      hrefs: [...document.querySelectorAll('a')].map(a => a.getAttribute('href')),
      handlers: [...document.querySelectorAll('*')].flatMap(element => element.getAttributeNames().filter(name => name.startsWith('on'))),
    }))
    expect(dom).toEqual({ scripts: ['app.js'], images: 0, hrefs: dom.hrefs, handlers: [] })
    expect(dom.hrefs.filter(href => !/^(#\/|https:\/\/tracker\.example\/p\.png$)/.test(href ?? ''))).toEqual([])
    // The pixel is a link to click, never a request the page makes.
    expect(await answer.locator('a.md-image').textContent()).toBe('[image: pixel]')

    // Even a bug that wrote markup would be stopped: Trusted Types make HTML strings throw.
    const sink = await page.evaluate(() => {
      try {
        document.body.insertAdjacentHTML('beforeend', '<img src=x onerror="alert(5)">')
        return 'written'
      } catch (error) {
        return (error as Error).name
      }
    })
    expect(sink).toBe('TypeError')
    await eventually(async () => problems.violations).toEqual([expect.stringContaining('require-trusted-types-for')])
    expect(problems.dialogs).toEqual([])
    expect(problems.all.filter(problem => !/trusted/i.test(problem))).toEqual([])
  })

  it('renders untrusted Markdown into allowed elements and safe links only', async () => {
    const { session: { base, page, problems } } = await open()
    await signIn(page, base, TOKEN)
    const cases = [
      '<script>alert(1)</script>',
      '<img src=x onerror=alert(1)>',
      '<a href="javascript:alert(1)">x</a>',
      '[x](javascript:alert(1)) [y](JAVASCRIPT:alert(1)) [z](data:text/html,<script>alert(1)</script>) [w](vbscript:x)',
      '<javascript:alert(1)> <https://example.com/ok>',
      '[rel](./relative/path) [proto](//evil.example/x)',
      '![x](javascript:alert(1)) ![y](https://example.com/y.png "t")',
      '<details open ontoggle=alert(1)>x</details>',
      '<svg><script>alert(1)</script></svg>',
      '```html\n<script>alert(1)</script>\n```',
      '| a | b |\n|:-|-:|\n| <b>c</b> | d |',
      '&lt;script&gt; &#x3C;img src=x onerror=alert(1)&#x3E;',
      '1. one\n2. two\n\n5. five\n\n> quote <iframe src=x>',
    ]
    // A string, so that vitest leaves its import() alone: the page's own module, by its URL.
    await page.evaluate("import('/ui/markdown.js').then(module => { window.renderMarkdown = module.renderMarkdown })")
    const rendered = await page.evaluate(sources => {
      const { renderMarkdown } = window as unknown as { renderMarkdown: (source: string) => DocumentFragment }
      return sources.map(source => {
        const box = document.createElement('div')
        box.appendChild(renderMarkdown(source))
        const elements = [...box.querySelectorAll('*')]
        return {
          tags: [...new Set(elements.map(element => element.localName))],
          attributes: [...new Set(elements.flatMap(element => element.getAttributeNames()))],
          hrefs: elements.filter(element => element.localName === 'a').map(element => element.getAttribute('href')),
          text: box.textContent,
        }
      })
    }, cases)
    const allowedTags = new Set(['p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'ul', 'ol', 'li', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'strong', 'em', 's', 'code', 'pre', 'hr', 'br', 'a', 'span'])
    for (const [index, result] of rendered.entries()) {
      expect(result.tags.filter(tag => !allowedTags.has(tag)), cases[index]).toEqual([])
      expect(result.attributes.filter(name => !['href', 'rel', 'target', 'class', 'start'].includes(name)), cases[index]).toEqual([])
      for (const href of result.hrefs) expect(href, cases[index]).toMatch(/^(https?:|mailto:)/)
    }
    expect(rendered[0]!.text).toBe('<script>alert(1)</script>')
    expect(rendered[4]!.hrefs).toEqual(['https://example.com/ok'])
    expect(rendered[5]!.hrefs).toEqual([])
    expect(rendered[6]!.hrefs).toEqual(['https://example.com/y.png'])
    expect(rendered[9]!.tags).toEqual(['pre', 'code'])
    expect(rendered[11]!.text).toBe('<script> <img src=x onerror=alert(1)>')
    expect(rendered[12]!.tags).toEqual(expect.arrayContaining(['ol', 'blockquote']))
    expect(problems.all).toEqual([])
  })

  it('filters by status and pages through the list', async () => {
    const { app, session: { base, page, problems } } = await open()
    const ids = []
    for (const prompt of ['first job', 'second job\n[[fake exit 3]]', 'third job', 'fourth job']) {
      ids.push((await finished(app, (await submit(app, { prompt })).job_id)).job_id)
    }
    await signIn(page, base, TOKEN, '#/?limit=2')
    const prompts = () => page.locator('tr.job td.prompt a').allTextContents()
    await eventually(prompts).toEqual(['fourth job', 'third job'])
    await page.getByRole('link', { name: 'Older →' }).click()
    await eventually(prompts).toEqual(['second job', 'first job'])
    expect(await page.locator('tr.job .error-code').allTextContents()).toEqual(['agent_crashed'])
    await page.getByRole('link', { name: '← Newer' }).click()
    await eventually(prompts).toEqual(['fourth job', 'third job'])

    await page.getByLabel('Status').selectOption('failed')
    await eventually(prompts).toEqual(['second job'])
    expect(page.url()).toContain('status=failed')
    await page.getByLabel('Status').selectOption('cancelled')
    await page.getByText('No cancelled jobs.').waitFor()
    expect(ids).toHaveLength(4)
    expect(problems.all).toEqual([])
  })

  it('signs in with a tenant\'s token: its own jobs only, everyone\'s for an admin; a chat-only token is told why not', async () => {
    const tokens = { a: 'team-a-token-0123456789abcdef', b: 'team-b-token-0123456789abcdef', admin: 'ops-admin-token-0123456789abc', chat: 'chat-only-token-0123456789abc' }
    const file = join(await tempDir(), 'tenants.json')
    writeFileSync(file, JSON.stringify({
      tenants: [
        { name: 'team-a', tokens: [tokens.a] },
        { name: 'team-b', tokens: [tokens.b] },
        { name: 'ops', tokens: [tokens.admin], scopes: ['admin'] },
        { name: 'ide', tokens: [tokens.chat], scopes: ['chat'] },
      ],
    }))
    const { app, session: { base, page, problems } } = await open({ tenantsFile: file })
    const submitAs = async (token: string, prompt: string) => {
      const response = await app.inject({ method: 'POST', url: '/execute', headers: { authorization: `Bearer ${token}` }, payload: { prompt } })
      return (await finished(app, response.json().job_id)).job_id
    }
    const ofA = await submitAs(tokens.a, 'Team A\'s review')
    const ofB = await submitAs(tokens.b, 'Team B\'s release notes')

    await page.goto(`${base}/ui/`)
    await page.getByLabel('Bearer token').fill(tokens.chat)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await eventually(() => page.locator('.sign-in .error').textContent()).toContain('This token is valid but may not see jobs')
    expect(await page.locator('.sign-in .error').textContent()).toContain('lacks the jobs scope')
    expect(await page.evaluate(() => sessionStorage.getItem('claude-runner.token'))).toBeNull()
    expect(problems.all.splice(0)).toEqual(refusedLog(403))

    await page.getByLabel('Bearer token').fill(tokens.a)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await row(page, ofA).waitFor()
    expect(await page.locator('tr.job').count()).toBe(1)
    expect(await page.locator('th', { hasText: 'Tenant' }).isHidden()).toBe(true)
    // Another tenant's job, asked for by its address, is not there.
    await page.goto(`${base}/ui/#/jobs/${ofB}`)
    await page.getByText('or it is another tenant\'s').waitFor()
    expect(problems.all.splice(0)).toEqual(refusedLog(404))

    await page.getByRole('button', { name: 'Sign out' }).click()
    await signIn(page, base, tokens.admin)
    await row(page, ofB).waitFor()
    await row(page, ofA).waitFor()
    expect(await page.locator('th', { hasText: 'Tenant' }).isVisible()).toBe(true)
    expect(await row(page, ofA).locator('td[data-label="Tenant"]').textContent()).toBe('team-a')
    expect(await row(page, ofB).locator('td[data-label="Tenant"]').textContent()).toBe('team-b')
    expect(problems.all).toEqual([])
  })

  it('fits a phone\'s width', async () => {
    const { app, session: { base, page, problems } } = await open({}, PHONE)
    const job = await submit(app, { prompt: 'Check the build on a phone\n[[fake tool]] [[fake text The build is **green**: 412 tests, no warnings.]]', model: 'haiku' })
    await finished(app, job.job_id)
    await signIn(page, base, TOKEN)
    await row(page, job.job_id).waitFor()
    // Against the width inside the scroll bar: Firefox draws a classic one, Chromium's headless overlays.
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
    expect(await overflow()).toBe(0)
    // Each job is a block of labelled fields, not a table to scroll sideways.
    expect(await row(page, job.job_id).evaluate(element => getComputedStyle(element).display)).toBe('grid')

    await row(page, job.job_id).locator('td.prompt a').click()
    await page.locator('#answer').waitFor()
    expect(await overflow()).toBe(0)
    await screenshot(page, 'dashboard-phone.png')
    expect(problems.all).toEqual([])
  })

  it('shows the slots in use against MAX_CONCURRENCY, and each job\'s phase, age and duration as they move', async () => {
    const { app, session: { base, page, problems } } = await open({ maxConcurrency: 2 })
    const probe = await AgentProbe.start()
    const done = await finished(app, (await submit(app, { prompt: 'Ended already\n[[fake sleep 30]]' })).job_id)
    const running = await submit(app, { prompt: `Held at the probe ${probe.directive}` })
    const also = await submit(app, { prompt: `Held too ${probe.directive}` })
    await probe.waitStarted(2)
    const waiting = await submit(app, { prompt: 'Waits for a slot' })
    onTestFinished(() => probe.release())

    // The page's clock ten minutes slow, as a person's machine may be: ages and running times are
    // the service's timestamps against the service's clock, not the browser's.
    await page.clock.install({ time: Date.now() - 10 * 60_000 })
    await signIn(page, base, TOKEN)
    await row(page, waiting.job_id).waitFor()
    const slots = page.locator('.stat', { hasText: 'Running' })
    expect(await slots.locator('span', { has: page.locator('#stat-active') }).textContent()).toBe('2 / 2')
    expect(await slots.locator('meter').evaluate(meter => [(meter as HTMLMeterElement).value, (meter as HTMLMeterElement).max])).toEqual([2, 2])
    const cell = (id: string, label: string) => row(page, id).locator(`td[data-label="${label}"]`)
    expect(await cell(done.job_id, 'Phase').textContent()).toBe('finished')
    expect(await cell(running.job_id, 'Phase').textContent()).toBe('running')
    expect(await cell(also.job_id, 'Phase').textContent()).toBe('running')
    expect(await cell(waiting.job_id, 'Phase').textContent()).toBe('queued')
    expect(done.run_ms).toBeGreaterThanOrEqual(30)
    expect(await cell(done.job_id, 'Duration').textContent()).toBe(format.duration(done.run_ms))
    expect(await cell(waiting.job_id, 'Duration').textContent()).toBe('—')
    expect(await cell(waiting.job_id, 'Age').textContent()).toMatch(/^(just now|\d+ s ago)$/)
    const first = await cell(running.job_id, 'Duration').textContent()
    expect(first).toMatch(/^\d+(\.\d)? (ms|s)$/)

    // Time passes: ages and the running jobs' durations move on without a reload (the list itself
    // has not changed); an ended job's duration does not.
    await eventually(() => cell(done.job_id, 'Age').textContent()).toMatch(/^\d+ s ago$/)
    await eventually(() => cell(running.job_id, 'Duration').textContent()).not.toBe(first)
    expect(await cell(running.job_id, 'Duration').textContent()).toMatch(/^\d+(\.\d)? s$/)
    expect(await cell(done.job_id, 'Duration').textContent()).toBe(format.duration(done.run_ms))
    expect(await cell(waiting.job_id, 'Duration').textContent()).toBe('—')
    expect(await page.locator('#stat-replicas').count()).toBe(0)
    expect(problems.all).toEqual([])
  })

  it.skipIf(inject('redisUrl') === '')('shows the cluster: its replicas and the capacity of them all (Redis engine)', async () => {
    const cluster = engineConfig('redis')
    const { app, session: { base, page, problems } } = await open({ ...cluster, maxConcurrency: 2 })
    await signIn(page, base, TOKEN)
    await eventually(() => page.locator('.stat', { hasText: 'Running' }).textContent()).toBe('Running0 / 2')
    expect(await page.locator('#stat-replicas').count()).toBe(0)

    // A second replica on the same Redis and prefix: the page adds its slots and counts it.
    await makeApp({ ...cluster, maxConcurrency: 3 })
    await eventually(() => page.locator('#stat-replicas').textContent()).toBe('2')
    await eventually(() => page.locator('.stat', { hasText: 'Running' }).textContent()).toBe('Running0 / 5')
    const probe = await AgentProbe.start()
    onTestFinished(() => probe.release())
    await submit(app, { prompt: `Held at the probe ${probe.directive}` })
    await probe.waitStarted(1)
    await eventually(() => page.locator('.stat', { hasText: 'Running' }).textContent()).toBe('Running1 / 5')
    expect(problems.all).toEqual([])
  })

  it('shows a job\'s timeline with its timings, its retries, its cost and tokens, and its structured output', async () => {
    const { app, session: { base, page, problems } } = await open()
    const verdict = { verdict: 'pass', findings: [{ file: 'src/parser.ts', line: 12, note: 'keeps the error codes' }] }
    const schema = {
      type: 'object',
      required: ['verdict', 'findings'],
      properties: { verdict: { enum: ['pass', 'fail'] }, findings: { type: 'array' } },
    }
    const job = await submit(app, {
      prompt: `Review the parser\n[[fake retry 2]] [[fake sleep 40]] [[fake usage 1200 345 5000 600]] [[fake structured ${JSON.stringify(verdict)}]]`,
      json_schema: schema,
    })
    const done = await finished(app, job.job_id)
    expect(done).toMatchObject({ status: 'completed', result: { structured_output: verdict } })

    await signIn(page, base, TOKEN, `#/jobs/${job.job_id}`)
    await page.locator('#structured-output').waitFor()
    expect(await page.locator('#structured-output').textContent()).toBe(JSON.stringify(verdict, null, 2))

    // Each step with how long it took, as the job's JSON measured it.
    const time = (step: string) => page.locator(`.step[data-step="${step}"] .step-time`).textContent()
    expect(await time('queued')).toBe(format.duration(done.queue_wait_ms))
    for (const phase of ['preparing', 'running', 'collecting'] as const) {
      expect(done.phase_ms[phase], phase).toBeTypeOf('number')
      expect(await time(phase), phase).toBe(format.duration(done.phase_ms[phase]))
    }
    expect(done.phase_ms.running).toBeGreaterThanOrEqual(40)
    expect(await time('completed')).toBe(`${format.time(done.finished_at)} · ${format.duration(done.run_ms)} in all`)
    expect(await page.locator('.step').evaluateAll(steps => steps.map(step => step.className))).toEqual([
      'step done', 'step done', 'step done', 'step done', 'step done end completed',
    ])

    // The CLI's retries of a failed API call, as they were logged.
    await page.locator('.event.api_retry').nth(1).waitFor()
    expect(await page.locator('.event.api_retry .event-body').allTextContents()).toEqual([
      'API call failed (500 server_error); attempt 1 of 2 in 569 ms',
      'API call failed (500 server_error); attempt 2 of 2 in 569 ms',
    ])
    expect(await page.locator('.event.api_retry .event-label').first().textContent()).toBe('retry')

    const fields = Object.fromEntries(await page.locator('.result dl.fields > div').evaluateAll(rows => rows.map(div => [div.querySelector('dt')?.textContent, div.querySelector('dd')?.textContent])))
    expect(fields).toMatchObject({
      Cost: format.cost(done.result!.total_cost_usd),
      Turns: '2',
      'Input tokens': '1,200',
      'Output tokens': '345',
      'Cache read': '5,000',
      'Cache write': '600',
      'Agent time': format.duration(done.result!.duration_ms),
      Outcome: expect.stringMatching(/^success/),
    })
    expect(fields.Cost).toMatch(/^\$\d/)
    expect(problems.all).toEqual([])
  })

  it('submits the agent and the ref from the form, and marks the field the service refused', async () => {
    const repo = makeRepo(await tempDir())
    const { app, session: { base, page, problems } } = await open({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    const probe = await AgentProbe.start()
    onTestFinished(() => probe.release())
    await signIn(page, base, TOKEN, '#/new')

    // A ref the service refuses before it accepts anything: the Ref field is marked and says why.
    await page.getByLabel('Prompt').fill('Show the feature')
    await page.getByLabel('Ref').fill('refs/heads/feature')
    await page.getByRole('button', { name: 'Submit' }).click()
    await eventually(() => page.locator('#submit-error').textContent()).toContain('send "feature", not "refs/heads/feature"')
    expect(await page.getByLabel('Ref').getAttribute('aria-invalid')).toBe('true')
    expect(await page.getByLabel('Agent').getAttribute('aria-invalid')).toBeNull()
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('ref-input')
    expect(problems.all.splice(0)).toEqual(refusedLog(400))
    expect((await app.inject({ method: 'GET', url: '/jobs', headers: AUTH })).json().jobs).toEqual([])

    await page.getByLabel('Prompt').fill(`Show the feature ${probe.directive} [[fake check-agent]] [[fake sh cat feature.txt]]`)
    await page.getByLabel('Agent').fill('Explore')
    await page.getByLabel('Ref').fill('feature')
    await page.getByRole('button', { name: 'Submit' }).click()
    await page.waitForURL(/#\/jobs\//)
    const id = jobIdOf(page)
    await probe.waitStarted(1)
    expect(probe.started[0]!.argv).toContain('--agent=Explore')
    probe.release()
    const done = await finished(app, id)
    expect(done).toMatchObject({ status: 'completed', request: { agent: 'Explore', ref: 'feature' } })
    // The agent started from the branch asked for, not from BASE_REF (main has no feature.txt).
    expect(done.changes?.base_commit).toBe(repo.commits.feature)
    expect(done.result?.text).toContain('\nfeature work\n')

    await page.locator('#answer').waitFor()
    const fields = Object.fromEntries(await page.locator('.request dl.fields > div').evaluateAll(rows => rows.map(div => [div.querySelector('dt')?.textContent, div.querySelector('dd')?.textContent])))
    expect(fields).toMatchObject({ Agent: 'Explore', Ref: 'feature' })
    expect(problems.all).toEqual([])
  })
})
