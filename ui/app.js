// The dashboard: a single page with hash routes (#/, #/jobs/ID, #/new). Nothing in these files is
// data: every job, count and answer comes from the API, with the token the person signed in with.
import { Api, session } from './api.js'
import { h, replace } from './dom.js'
import { jobView } from './job.js'
import { overviewView } from './overview.js'
import { submitView } from './submit.js'

/**
 * @typedef {{ element: HTMLElement, stop?: () => void }} View
 * @typedef {{ api: Api, navigate: (hash: string) => void, confirm: (text: string) => Promise<boolean> }} Context
 */

function start () {
  const main = /** @type {HTMLElement} */ (document.getElementById('main'))
  const nav = /** @type {HTMLElement} */ (document.getElementById('nav'))
  /** @type {View | undefined} */
  let view

  /** @param {string} [notice] */
  const signOut = notice => {
    session.signOut()
    show(notice)
  }
  /** @type {Context['confirm']} */
  const confirm = text => confirmDialog(text)
  /** @type {Context['navigate']} */
  const navigate = hash => {
    if (location.hash === hash) show()
    else location.hash = hash
  }

  /** @param {string} [notice] */
  function show (notice) {
    view?.stop?.()
    view = undefined
    const token = session.token
    nav.hidden = token === null
    if (token === null) {
      view = signInView(notice, show)
    } else {
      const api = new Api(token, () => signOut('The service refused the token: sign in again.'))
      const context = { api, navigate, confirm }
      const route = parseRoute(location.hash)
      view = route.name === 'job'
        ? jobView(context, route.id)
        : route.name === 'new'
          ? submitView(context)
          : overviewView(context, route.query)
    }
    replace(main, view.element)
  }

  /** @type {HTMLElement} */ (document.getElementById('sign-out')).addEventListener('click', () => signOut())
  window.addEventListener('hashchange', () => show())
  show()
}

/**
 * @param {string} hash
 * @returns {{ name: 'overview', query: URLSearchParams } | { name: 'job', id: string } | { name: 'new' }}
 */
export function parseRoute (hash) {
  const [path = '', search = ''] = hash.replace(/^#/, '').split('?', 2)
  const job = /^\/jobs\/([^/]+)$/.exec(path)
  if (job !== null) {
    try {
      return { name: 'job', id: decodeURIComponent(/** @type {string} */ (job[1])) }
    } catch {}
  }
  if (path === '/new') return { name: 'new' }
  return { name: 'overview', query: new URLSearchParams(search) }
}

/**
 * Sign in: the token is checked against the API before it is kept.
 * @param {string | undefined} notice
 * @param {() => void} done
 * @returns {View}
 */
function signInView (notice, done) {
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', required: true, spellcheck: 'false', 'aria-describedby': 'token-help' })
  const message = h('p', { class: 'error', role: 'alert' }, notice)
  const button = h('button', { type: 'submit' }, 'Sign in')
  const form = h('form', { class: 'card sign-in', novalidate: true },
    h('h1', null, 'Sign in'),
    h('label', { for: 'token' }, 'Bearer token'),
    input,
    h('p', { class: 'hint', id: 'token-help' }, 'A token of the service (AUTH_TOKENS or TENANTS_FILE) with the jobs scope: you see your tenant\'s jobs, an admin everyone\'s. It is kept in this tab only (sessionStorage) and sent as an Authorization header.'),
    message,
    button
  )
  form.addEventListener('submit', async event => {
    event.preventDefault()
    const token = input.value.trim()
    if (token === '') {
      replace(message, 'Enter a token.')
      return
    }
    button.disabled = true
    replace(message)
    try {
      await new Api(token, () => {}).jobs({ limit: 1 })
      session.signIn(token)
      done()
    } catch (error) {
      replace(message, signInProblem(error))
    } finally {
      button.disabled = false
    }
  })
  queueMicrotask(() => input.focus())
  return { element: form }
}

/**
 * Why signing in failed, for people: a token the service does not know, one it knows that may not
 * see jobs (a chat-only or metrics-only token: the dashboard shows jobs), or no answer.
 * @param {unknown} error
 */
export function signInProblem (error) {
  const { status } = /** @type {{ status?: number }} */ (error)
  if (status === 401) return 'The service refused this token.'
  if (status === 403) {
    return `This token is valid but may not see jobs, which is what the dashboard shows (a chat-only or metrics-only token?): ${error instanceof Error ? error.message : ''}`
  }
  return `Could not reach the service: ${error instanceof Error ? error.message : String(error)}`
}

/** @param {string} text @returns {Promise<boolean>} */
function confirmDialog (text) {
  const dialog = /** @type {HTMLDialogElement} */ (document.getElementById('confirm'))
  replace(/** @type {HTMLElement} */ (document.getElementById('confirm-text')), text)
  dialog.returnValue = ''
  dialog.showModal()
  return new Promise(resolve => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true })
  })
}

if (typeof document !== 'undefined') start()
