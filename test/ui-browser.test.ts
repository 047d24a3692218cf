/// <reference lib="dom" />
// Code passed to page.evaluate runs in the page: it is typed against the DOM.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { Config } from '../src/config.ts'
import { AUTH, finished, listen, makeApp, record, submit, tempDir, TOKEN } from './helpers/app.ts'
import { launchChromium, signIn, watchedPage, type PageProblems } from './helpers/browser.ts'
import { AgentProbe } from './helpers/probe.ts'
import { makeRepo } from './helpers/repos.ts'

// The dashboard end to end: real headless Chromium (Debian's, driven by playwright-core) against
// the service listening on a port, with the fake CLI. Screenshots of it go to docs/.
// The screenshots in docs/ are taken by this test. They are written there only when asked
// (UPDATE_SCREENSHOTS=1), so a test run does not leave the working tree changed; otherwise they go
// to a temporary folder, still taken, so the code that takes them keeps working.
const DOCS = process.env.UPDATE_SCREENSHOTS === '1' ? fileURLToPath(new URL('../docs/', import.meta.url)) : `${mkdtempSync(join(tmpdir(), 'cr-screenshots-'))}/`
const DESKTOP = { width: 1280, height: 800 }
const PHONE = { width: 390, height: 844 }

let browser: Browser
beforeAll(async () => { browser = await launchChromium() })
afterAll(async () => { await browser?.close() })

interface Session {
  base: string
  page: Page
  problems: PageProblems
  context: BrowserContext
}

async function open (overrides: Partial<Config> = {}, viewport = DESKTOP) {
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

describe('the dashboard in Chromium', () => {
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
    expect(problems.all.splice(0)).toEqual([expect.stringContaining('status of 401')])
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
    await page.screenshot({ path: `${DOCS}dashboard-overview.png` })

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
    await page.screenshot({ path: `${DOCS}dashboard-job.png`, fullPage: true, clip: { x: 0, y: 0, width: DESKTOP.width, height: 1250 } })

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download output' }).click()])
    expect(download.suggestedFilename()).toBe(`job-${job.job_id}.ndjson`)
    const saved = readFileSync(await download.path(), 'utf8')
    const raw = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}/output`, headers: AUTH })
    expect(saved).toBe(raw.body)
    expect(saved.split('\n').filter(Boolean).map(line => JSON.parse(line).type)).toContain('result')
    expect(problems.all).toEqual([])
  })

  it('cancels a running job from its page, after asking', async () => {
    const { app, session: { base, page, problems } } = await open()
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: `Refactor everything ${probe.directive}` })
    await probe.waitStarted(1)
    await signIn(page, base, TOKEN, `#/jobs/${job.job_id}`)
    await eventually(() => page.locator('#job-status').textContent()).toBe('running')

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
    expect(problems.all.splice(0)).toEqual([expect.stringContaining('status of 403')])

    await page.getByLabel('Bearer token').fill(tokens.a)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await row(page, ofA).waitFor()
    expect(await page.locator('tr.job').count()).toBe(1)
    expect(await page.locator('th', { hasText: 'Tenant' }).isHidden()).toBe(true)
    // Another tenant's job, asked for by its address, is not there.
    await page.goto(`${base}/ui/#/jobs/${ofB}`)
    await page.getByText('or it is another tenant\'s').waitFor()
    expect(problems.all.splice(0)).toEqual([expect.stringContaining('status of 404')])

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
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
    expect(await overflow()).toBe(0)
    // Each job is a block of labelled fields, not a table to scroll sideways.
    expect(await row(page, job.job_id).evaluate(element => getComputedStyle(element).display)).toBe('grid')

    await row(page, job.job_id).locator('td.prompt a').click()
    await page.locator('#answer').waitFor()
    expect(await overflow()).toBe(0)
    await page.screenshot({ path: `${DOCS}dashboard-phone.png` })
    expect(problems.all).toEqual([])
  })
})
