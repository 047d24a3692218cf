// The overview: capacity and queue from /health, and the jobs, newest first, polled so the list
// moves without a reload. The service decides which jobs a token sees; the page shows them all.
import { h, link, replace } from './dom.js'
import * as format from './format.js'

/** @typedef {import('./api.js').JobSummary} JobSummary */
/** @typedef {import('./api.js').Health} Health */

const STATUSES = ['queued', 'running', 'completed', 'failed', 'timed_out', 'cancelled']
const POLL_MS = 2000
const PAGE = 25

/**
 * @param {import('./app.js').Context} context
 * @param {URLSearchParams} query `status`, `limit` and `cursor` (of the page shown), `back` (the cursors before it)
 * @returns {import('./app.js').View}
 */
export function overviewView ({ api, navigate }, query) {
  const status = STATUSES.includes(query.get('status') ?? '') ? /** @type {string} */ (query.get('status')) : ''
  const cursor = query.get('cursor')
  const limit = Math.min(200, Math.max(1, Number(query.get('limit')) || PAGE))
  // Where "Newer" goes back to: the cursors of the pages before this one.
  const back = (query.get('back') ?? '').split(',').filter(Boolean)

  const stats = h('section', { class: 'stats', 'aria-label': 'Capacity' })
  const problem = h('p', { class: 'error', role: 'alert' })
  const body = h('tbody')
  const tenantHeader = h('th', { scope: 'col', hidden: true }, 'Tenant')
  const table = h('table', { class: 'jobs' },
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Prompt'),
      h('th', { scope: 'col' }, 'Phase'),
      h('th', { scope: 'col' }, 'Age'),
      h('th', { scope: 'col' }, 'Duration'),
      h('th', { scope: 'col' }, 'Cost'),
      h('th', { scope: 'col' }, 'Model'),
      tenantHeader
    )),
    body
  )
  const empty = h('p', { class: 'empty', hidden: true }, status === '' ? 'No jobs yet.' : `No ${format.words(status)} jobs.`)
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' })

  const filter = h('select', { id: 'status-filter', 'aria-label': 'Status' },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map(value => h('option', { value, selected: value === status }, format.words(value)))
  )
  filter.addEventListener('change', () => navigate(overviewHash({ status: filter.value, limit })))

  const element = h('div', { class: 'overview' },
    stats,
    h('section', { class: 'card' },
      h('div', { class: 'toolbar' },
        h('h1', null, 'Jobs'),
        filter,
        link('#/new', { class: 'button' }, 'New job')
      ),
      problem,
      h('div', { class: 'table-wrap' }, table),
      empty,
      pager
    )
  )

  const controller = new AbortController()
  let lastJobs = ''
  let lastHealth = ''
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer

  async function poll () {
    try {
      const [page, health] = await Promise.all([
        api.jobs({ status, cursor, limit }, controller.signal),
        api.health(controller.signal).catch(() => undefined),
      ])
      replace(problem)
      const jobsJson = JSON.stringify(page)
      if (jobsJson !== lastJobs) {
        lastJobs = jobsJson
        renderJobs(page.jobs, page.next_cursor)
      }
      const healthJson = JSON.stringify(health ?? null)
      if (healthJson !== lastHealth) {
        lastHealth = healthJson
        renderStats(health)
      }
    } catch (error) {
      if (controller.signal.aborted) return
      replace(problem, `Could not load the jobs: ${error instanceof Error ? error.message : String(error)}`)
    }
    tick()
    if (!controller.signal.aborted) timer = setTimeout(() => { void poll() }, POLL_MS)
  }

  /** @param {JobSummary[]} jobs @param {string | null} next */
  function renderJobs (jobs, next) {
    // Every job has a tenant; the column says something only when the list mixes tenants (an admin's).
    const tenants = new Set(jobs.map(job => job.tenant)).size > 1
    tenantHeader.hidden = !tenants
    empty.hidden = jobs.length > 0
    table.hidden = jobs.length === 0
    replace(body, jobs.map(job => row(job, tenants)))
    replace(pager,
      back.length > 0 || cursor !== null
        ? link(overviewHash({ status, limit, cursor: back.at(-1) ?? null, back: back.slice(0, -1) }), { rel: 'prev' }, '← Newer')
        : null,
      next !== null
        ? link(overviewHash({ status, limit, cursor: next, back: cursor === null ? [] : [...back, cursor] }), { rel: 'next' }, 'Older →')
        : null
    )
  }

  /** @param {Health | undefined} health */
  function renderStats (health) {
    if (health === undefined) {
      replace(stats, h('p', { class: 'error' }, 'The service does not answer /health.'))
      return
    }
    // With the Redis engine, /health reports the cluster as well as this replica; MAX_QUEUE_DEPTH
    // bounds the runs the cluster admitted and has not finished.
    const numbers = health.cluster ?? health
    replace(stats,
      health.status === 'draining' ? h('p', { class: 'banner' }, 'This instance is draining for shutdown: it takes no new jobs.') : null,
      stat('Running', h('span', null, h('strong', { id: 'stat-active' }, numbers.active), ` / ${numbers.capacity}`),
        h('meter', { min: 0, max: Math.max(1, numbers.capacity), value: numbers.active, 'aria-label': 'Slots in use' })),
      stat('Queued', h('strong', { id: 'stat-queued' }, numbers.queued), h('span', { class: 'hint' }, `room for ${Math.max(0, health.max_queue_depth - numbers.active - numbers.queued)} more`)),
      health.cluster != null && health.cluster.replicas > 1 ? stat('Replicas', h('strong', { id: 'stat-replicas' }, health.cluster.replicas)) : null,
      stat('Claude Code', h('span', { class: `cli ${health.claude.state}` }, health.claude.state === 'found' ? (health.claude.version ?? 'found') : health.claude.state)),
      health.workspace.kind === 'git'
        ? stat('Repository', h('span', { class: `cli ${health.workspace.state}` }, `${health.workspace.ref ?? 'default branch'} · ${health.workspace.state}`))
        : null
    )
  }

  timer = setTimeout(() => { void poll() }, 0)
  const ticker = setInterval(tick, 1000)
  const onVisible = () => { if (document.visibilityState === 'visible') { clearTimeout(timer); void poll() } }
  document.addEventListener('visibilitychange', onVisible)

  return {
    element,
    stop () {
      controller.abort()
      clearTimeout(timer)
      clearInterval(ticker)
      document.removeEventListener('visibilitychange', onVisible)
    },
  }
}

/**
 * @param {JobSummary} job
 * @param {boolean} tenants
 */
function row (job, tenants) {
  const running = job.started_at !== null && job.finished_at === null
  return h('tr', { class: `job ${job.status}`, dataset: { jobId: job.job_id } },
    h('td', { 'data-label': 'Status' }, h('span', { class: `badge ${job.status}` }, format.words(job.status))),
    h('td', { 'data-label': 'Prompt', class: 'prompt' },
      link(`#/jobs/${encodeURIComponent(job.job_id)}`, null, job.prompt_first_line || '(empty)'),
      job.error !== null ? h('span', { class: 'error-code' }, job.error.code) : null
    ),
    h('td', { 'data-label': 'Phase' }, format.words(job.phase)),
    h('td', { 'data-label': 'Age' }, h('time', { datetime: job.created_at, title: format.time(job.created_at), dataset: { age: job.created_at } })),
    h('td', { 'data-label': 'Duration' }, running
      ? h('span', { dataset: { since: /** @type {string} */ (job.started_at) } })
      : format.duration(job.run_ms)),
    h('td', { 'data-label': 'Cost', class: 'number' }, format.cost(job.total_cost_usd)),
    h('td', { 'data-label': 'Model' }, job.model ?? '—'),
    tenants ? h('td', { 'data-label': 'Tenant' }, job.tenant ?? '—') : null
  )
}

/** Ages and running durations move on between polls. */
function tick () {
  const now = Date.now()
  for (const element of document.querySelectorAll('[data-age]')) element.textContent = format.age(/** @type {HTMLElement} */ (element).dataset.age ?? '', now)
  for (const element of document.querySelectorAll('[data-since]')) element.textContent = format.duration(now - Date.parse(/** @type {HTMLElement} */ (element).dataset.since ?? ''))
}

/**
 * @param {string} title
 * @param {...import('./dom.js').Child} content
 */
function stat (title, ...content) {
  return h('div', { class: 'stat' }, h('span', { class: 'stat-title' }, title), ...content)
}

/** @param {{ status?: string, limit: number, cursor?: string | null, back?: string[] }} query */
function overviewHash ({ status, limit, cursor, back }) {
  const params = new URLSearchParams()
  if (status) params.set('status', status)
  if (limit !== PAGE) params.set('limit', String(limit))
  if (cursor) params.set('cursor', cursor)
  if (back !== undefined && back.length > 0) params.set('back', back.join(','))
  const search = params.toString()
  return search === '' ? '#/' : `#/?${search}`
}
