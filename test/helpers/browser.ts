/// <reference lib="dom" />
// Code passed to page.evaluate runs in the page: it is typed against the DOM.
import { fileURLToPath } from 'node:url'
import { chromium, firefox, type Browser, type BrowserContext, type Page } from 'playwright-core'

/** Debian's Chromium (apt, installed by ./dev test); playwright-core never downloads a browser. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
/** Debian's Firefox ESR (apt, installed by ./dev test), started through the relay in firefox-bidi.mjs. */
export const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr'
const FIREFOX_BIDI = fileURLToPath(new URL('./firefox-bidi.mjs', import.meta.url))

export type BrowserName = 'chromium' | 'firefox'

/**
 * Headless, with the background traffic of a desktop browser off: this machine reaches no network
 * but loopback, and refused connections at every start slow it down.
 */
export function launchChromium (): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-extensions'],
  })
}

/**
 * Stock Firefox, driven over WebDriver BiDi (playwright-core's `moz-firefox` channel): Playwright's
 * own `firefox` needs its patched build, which this machine cannot download.
 */
export function launchFirefox (): Promise<Browser> {
  return firefox.launch({
    channel: 'moz-firefox',
    executablePath: FIREFOX_BIDI,
    headless: true,
  })
}

export function launchBrowser (name: BrowserName): Promise<Browser> {
  return name === 'chromium' ? launchChromium() : launchFirefox()
}

export interface PageProblems {
  /** console.error lines, uncaught exceptions, failed requests, CSP violations, dialogs opened. */
  all: string[]
  dialogs: string[]
  violations: string[]
}

/** How Chromium and Firefox name a request the page itself abandoned. */
const ABORTED = new Set(['net::ERR_ABORTED', 'NS_BINDING_ABORTED'])

/**
 * A page whose every problem is recorded: anything the page logs as an error, throws, fails to
 * load, any Content-Security-Policy violation (seen by a listener the browser adds before the
 * page's own scripts, outside its CSP) and any dialog (dismissed at once: alert(1) must never run).
 */
export async function watchedPage (context: BrowserContext): Promise<{ page: Page, problems: PageProblems }> {
  const problems: PageProblems = { all: [], dialogs: [], violations: [] }
  await context.exposeBinding('__reportViolation', (_source, text: string) => {
    problems.violations.push(text)
    problems.all.push(`csp: ${text}`)
  })
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', event => {
      void (window as unknown as { __reportViolation: (text: string) => Promise<void> }).__reportViolation(`${event.violatedDirective} blocked ${event.blockedURI} at ${event.sourceFile}:${event.lineNumber}`)
    })
  })
  const page = await context.newPage()
  page.on('console', message => { if (message.type() === 'error') problems.all.push(`console: ${message.text()}`) })
  page.on('pageerror', error => problems.all.push(`pageerror: ${error.message}`))
  page.on('requestfailed', request => {
    // A page left while its event stream is open aborts that request; that is no problem.
    if (!ABORTED.has(request.failure()?.errorText ?? '')) problems.all.push(`requestfailed: ${request.url()} ${request.failure()?.errorText}`)
  })
  page.on('dialog', dialog => {
    problems.dialogs.push(`${dialog.type()}: ${dialog.message()}`)
    problems.all.push(`dialog: ${dialog.type()} ${dialog.message()}`)
    void dialog.dismiss()
  })
  return { page, problems }
}

/** Signs in through the form, as a person would. */
export async function signIn (page: Page, base: string, token: string, hash = '#/'): Promise<void> {
  await page.goto(`${base}/ui/${hash}`)
  await page.getByLabel('Bearer token').fill(token)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.locator('#nav').waitFor({ state: 'visible' })
}
