// A job's page: its request, timeline, live events, answer, cost, changes; cancel and download.
// The events come from GET /jobs/:id/events (SSE over fetch, resumed with Last-Event-ID); the
// rest from the job JSON, fetched again whenever its status changes.
import { jobPath } from './api.js'
import { renderDiff } from './diff.js'
import { h, link, replace } from './dom.js'
import * as format from './format.js'
import { renderMarkdown } from './markdown.js'
import { followEvents, StreamRefused } from './sse.js'

/** @typedef {import('./api.js').Job} Job */

const TERMINAL = new Set(['completed', 'failed', 'timed_out', 'cancelled'])
const PHASES = /** @type {const} */ (['preparing', 'running', 'collecting'])

/**
 * @param {import('./app.js').Context} context
 * @param {string} id
 * @returns {import('./app.js').View}
 */
export function jobView ({ api, confirm }, id) {
  const controller = new AbortController()
  const header = h('header', { class: 'job-header' }, h('h1', null, 'Job ', h('code', null, id)))
  const notice = h('p', { class: 'error', role: 'alert' })
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Timeline' })
  const request = h('section', { class: 'card request' })
  const result = h('section', { class: 'card result', hidden: true })
  const changes = h('section', { class: 'card changes', hidden: true })
  const events = h('ol', { class: 'events', 'aria-live': 'polite' })
  const streamState = h('span', { class: 'stream-state' })
  const element = h('div', { class: 'job-page' },
    link('#/', { class: 'back' }, '← All jobs'),
    header,
    notice,
    h('section', { class: 'card' }, h('h2', null, 'Timeline'), timeline),
    result,
    changes,
    request,
    h('section', { class: 'card' }, h('h2', null, 'Events ', streamState), events)
  )
  /** @type {Job | undefined} */
  let job
  let refreshing = false
  let again = false

  /** @param {Job} next */
  function render (next) {
    // An answer that left before the job ended may arrive after its `end` event: never go back.
    if (job !== undefined && TERMINAL.has(job.status) && !TERMINAL.has(next.status)) return
    job = next
    renderHeader(next)
    replace(timeline, timelineSteps(next))
    renderRequest(request, next)
    renderResult(result, next)
    renderChanges(changes, next)
    tick()
  }

  /** @param {Job} current */
  function renderHeader (current) {
    const running = !TERMINAL.has(current.status)
    const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel' }, current.cancel !== null && running ? 'Cancelling…' : 'Cancel')
    cancel.disabled = current.cancel !== null
    cancel.addEventListener('click', () => { void onCancel(cancel) })
    const download = h('button', { type: 'button', id: 'download' }, 'Download output')
    download.addEventListener('click', () => { void onDownload(download) })
    replace(header,
      h('h1', null, 'Job ', h('code', null, current.job_id)),
      h('div', { class: 'job-status' },
        h('span', { class: `badge ${current.status}`, id: 'job-status' }, format.words(current.status)),
        running ? h('span', { class: 'phase' }, format.words(current.phase)) : null,
        current.queue_position !== null ? h('span', { class: 'phase' }, `#${current.queue_position} in the queue`) : null
      ),
      h('div', { class: 'actions' },
        running ? cancel : null,
        current.output !== null ? download : null
      )
    )
  }

  /** @param {HTMLButtonElement} button */
  async function onCancel (button) {
    if (!await confirm('Cancel this job? A running agent is stopped (SIGTERM, then SIGKILL); its changes are still collected.')) return
    button.disabled = true
    try {
      render(await api.cancel(id))
    } catch (error) {
      showError(error)
      void refresh()
    }
  }

  /** @param {HTMLButtonElement} button */
  async function onDownload (button) {
    button.disabled = true
    try {
      const blob = await api.output(id)
      const url = URL.createObjectURL(blob)
      const a = h('a', { download: `job-${id}.ndjson`, hidden: true })
      a.href = url
      document.body.appendChild(a)
      a.click()
      a.remove()
      setTimeout(() => URL.revokeObjectURL(url), 60_000)
    } catch (error) {
      showError(error)
    } finally {
      button.disabled = false
    }
  }

  /** @param {unknown} error */
  function showError (error) {
    replace(notice, error instanceof Error ? error.message : String(error))
  }

  /** The job JSON again; status events can come faster than answers, so at most one at a time. */
  async function refresh () {
    if (refreshing) { again = true; return }
    refreshing = true
    try {
      do {
        again = false
        render(await api.job(id, controller.signal))
      } while (again)
    } catch (error) {
      if (!controller.signal.aborted) showError(error)
    } finally {
      refreshing = false
    }
  }

  /** @param {import('./sse.js').SseEvent} event */
  function onEvent (event) {
    if (event.type === 'end') {
      render(JSON.parse(event.data))
      return
    }
    const item = eventItem(event)
    if (event.type === 'tool_result') {
      const useId = JSON.parse(event.data).tool_use_id
      const use = useId === null ? null : events.querySelector(`[data-tool-use-id="${CSS.escape(String(useId))}"]`)
      if (use !== null) {
        use.appendChild(item)
        return
      }
    }
    events.appendChild(item)
    if (event.type === 'status') void refresh()
  }

  async function follow () {
    try {
      render(await api.job(id, controller.signal))
    } catch (error) {
      if (controller.signal.aborted) return
      if (/** @type {{ code?: string }} */ (error).code === 'job_not_found') {
        replace(element, link('#/', { class: 'back' }, '← All jobs'), h('p', { class: 'card error' }, `No job ${id}: it never existed, it ended more than JOB_TTL_SECONDS ago, or it is another tenant's.`))
      } else {
        showError(error)
      }
      return
    }
    replace(streamState, 'live')
    try {
      await followEvents(`${jobPath(id)}/events`, {
        token: api.token,
        signal: controller.signal,
        onEvent,
        onState: (state, detail) => replace(streamState, state === 'open' ? 'live' : `reconnecting in ${format.duration(detail?.delayMs)}…`),
      })
      replace(streamState, 'ended')
    } catch (error) {
      if (controller.signal.aborted) return
      replace(streamState, 'stopped')
      if (error instanceof StreamRefused && error.status === 401) return api.refused()
      showError(error)
    }
  }

  function tick () {
    if (job === undefined) return
    const now = Date.now()
    for (const element of timeline.querySelectorAll('[data-since]')) {
      element.textContent = format.duration(now - Date.parse(/** @type {HTMLElement} */ (element).dataset.since ?? ''))
    }
  }

  void follow()
  const ticker = setInterval(tick, 1000)
  return {
    element,
    stop () {
      controller.abort()
      clearInterval(ticker)
    },
  }
}

/**
 * queued → preparing → running → collecting → the end, each with how long it took.
 * @param {Job} job
 */
function timelineSteps (job) {
  const terminal = TERMINAL.has(job.status)
  const current = job.phase
  /** @param {string} name @param {string} state @param {import('./dom.js').Child} detail */
  const step = (name, state, detail) => h('li', { class: `step ${state}`, dataset: { step: name } },
    h('span', { class: 'step-name' }, format.words(name)),
    h('span', { class: 'step-time' }, detail)
  )
  const queued = job.started_at === null
    ? step('queued', terminal ? 'done' : 'current', terminal ? format.duration(Date.parse(job.finished_at ?? '') - Date.parse(job.created_at)) : h('span', { dataset: { since: job.created_at } }))
    : step('queued', 'done', format.duration(job.queue_wait_ms))
  const phases = PHASES.map(phase => {
    const ms = job.phase_ms[phase]
    if (current === phase) return step(phase, 'current', h('span', { dataset: { since: phaseStart(job) } }))
    if (ms !== undefined) return step(phase, 'done', format.duration(ms))
    return step(phase, terminal ? 'skipped' : 'pending', terminal ? 'skipped' : '')
  })
  const end = terminal
    ? step(job.status, `done end ${job.status}`, h('span', null, format.time(job.finished_at), job.run_ms !== null ? ` · ${format.duration(job.run_ms)} in all` : ''))
    : step('end', 'pending', '')
  return [queued, ...phases, end]
}

/**
 * When the current phase began: phases follow each other without a gap, and phase_ms holds the
 * ones that ended.
 * @param {Job} job
 */
function phaseStart (job) {
  const ended = Object.values(job.phase_ms).reduce((sum, ms) => sum + (ms ?? 0), 0)
  return new Date(Date.parse(job.started_at ?? job.created_at) + ended).toISOString()
}

/** @param {HTMLElement} section @param {Job} job */
function renderRequest (section, job) {
  const { request } = job
  /** @type {Array<[string, import('./dom.js').Child]>} */
  const fields = [
    ['Created', format.time(job.created_at)],
    ['Tenant', job.tenant],
    ['Agent', request.agent],
    ['Model', request.model ?? null],
    ['Resolved model', job.agent?.model],
    ['Ref', request.ref],
    ['Push', request.push ? 'yes' : null],
    ['Timeout', `${format.duration(job.timeout_seconds * 1000)}${request.timeout_seconds === null ? ' (default)' : ''}`],
    ['Max turns', request.max_turns],
    ['Max budget', request.max_budget_usd === null ? null : format.cost(request.max_budget_usd)],
    ['Metadata', request.metadata === null ? null : h('pre', { class: 'json' }, JSON.stringify(request.metadata, null, 2))],
    ['Callback', request.callback_url],
    ['Claude Code', job.agent?.claude_code_version],
  ]
  replace(section,
    h('h2', null, 'Request'),
    h('pre', { class: 'prompt', id: 'prompt' }, request.prompt),
    definitions(fields)
  )
}

/** @param {HTMLElement} section @param {Job} job */
function renderResult (section, job) {
  const { result, error } = job
  section.hidden = result === null && error === null
  if (section.hidden) return
  const usage = /** @type {Record<string, number | undefined> | null} */ (result?.usage ?? null)
  replace(section,
    h('h2', null, 'Result'),
    error !== null
      ? h('div', { class: 'failure', id: 'job-error' }, h('strong', null, error.code), ': ', error.message)
      : null,
    result?.text
      ? h('div', { class: `markdown${result.is_error ? ' is-error' : ''}`, id: 'answer' }, renderMarkdown(result.text))
      : null,
    result?.structured_output !== undefined && result.structured_output !== null
      ? h('div', null, h('h3', null, 'Structured output'), h('pre', { class: 'json', id: 'structured-output' }, JSON.stringify(result.structured_output, null, 2)))
      : null,
    result !== null
      ? definitions([
        ['Cost', format.cost(result.total_cost_usd)],
        ['Turns', result.num_turns],
        ['Input tokens', format.count(usage?.input_tokens)],
        ['Output tokens', format.count(usage?.output_tokens)],
        ['Cache read', usage?.cache_read_input_tokens ? format.count(usage.cache_read_input_tokens) : null],
        ['Cache write', usage?.cache_creation_input_tokens ? format.count(usage.cache_creation_input_tokens) : null],
        ['Agent time', format.duration(result.duration_ms)],
        ['API time', format.duration(result.duration_api_ms)],
        ['Outcome', `${result.subtype}${result.terminal_reason ? ` (${result.terminal_reason})` : ''}`],
        ['Errors', result.errors.length > 0 ? result.errors.join('\n') : null],
      ])
      : null,
    job.exit !== null && (job.exit.code !== 0 || job.exit.signal !== null)
      ? definitions([['Exit', job.exit.signal ?? `code ${job.exit.code}`]])
      : null,
    job.output !== null && job.output.stderr_tail !== ''
      ? h('details', null, h('summary', null, 'stderr (last 16 KiB)'), h('pre', null, job.output.stderr_tail))
      : null,
    job.output !== null
      ? h('p', { class: 'hint' }, `Output: ${format.bytes(job.output.bytes)} in ${job.output.lines} lines${job.output.truncated ? `, cut at ${format.bytes(job.output.kept_bytes)}` : ''}.`)
      : null
  )
}

/** @param {HTMLElement} section @param {Job} job */
function renderChanges (section, job) {
  const { changes } = job
  section.hidden = changes === null
  if (changes === null) return
  replace(section,
    h('h2', null, 'Changes'),
    h('p', { id: 'diff-stats' }, `${changes.stats.files_changed} files changed, `,
      h('span', { class: 'plus' }, `+${changes.stats.insertions}`), ' ',
      h('span', { class: 'minus' }, `−${changes.stats.deletions}`),
      h('span', { class: 'hint' }, ` · from ${changes.base_commit.slice(0, 12)} to ${changes.head_commit.slice(0, 12)}`)),
    changes.commits.length > 0
      ? h('ul', { class: 'commits' }, changes.commits.map(commit => h('li', null, h('code', null, commit.sha.slice(0, 12)), ' ', commit.subject)))
      : null,
    h('ul', { class: 'files', id: 'changed-files' }, changes.files.map(file => h('li', null,
      h('span', { class: `file-status ${file.status}` }, format.words(file.status)), ' ',
      h('code', null, file.old_path !== undefined ? `${file.old_path} → ${file.path}` : file.path)
    ))),
    changes.push !== null
      ? h('p', { class: changes.push.error !== undefined ? 'failure' : 'hint' }, changes.push.error ?? `Pushed ${changes.push.branch ?? ''} (${(changes.push.commit ?? '').slice(0, 12)})`)
      : null,
    changes.diff !== '' ? renderDiff(changes.diff) : null,
    changes.diff_truncated ? h('p', { class: 'hint' }, 'The diff was cut at MAX_DIFF_BYTES.') : null
  )
}

/**
 * One event of the agent's, as text.
 * @param {import('./sse.js').SseEvent} event
 */
function eventItem (event) {
  /** @type {Record<string, any>} */
  const data = JSON.parse(event.data)
  const sub = typeof data.parent_tool_use_id === 'string'
  /** @param {string} label @param {...(import('./dom.js').Child | import('./dom.js').Child[])} content */
  const item = (label, ...content) => h('li', { class: `event ${event.type}${sub ? ' sub' : ''}`, dataset: { eventId: event.id, type: event.type } },
    h('span', { class: 'event-label' }, sub ? `${label} (subagent)` : label),
    h('div', { class: 'event-body' }, ...content)
  )
  switch (event.type) {
    case 'status':
      return item('status', format.words(data.status), data.phase !== data.status && data.phase !== 'finished' ? ` · ${format.words(data.phase)}` : '',
        data.error ? ` · ${data.error.code}: ${data.error.message}` : '')
    case 'init':
      return item('start', [`Claude Code ${data.claude_code_version ?? '?'}`, data.model, data.permission_mode && `permissions ${data.permission_mode}`].filter(Boolean).join(' · '))
    case 'text':
      return item('text', h('p', { class: 'text' }, data.text))
    case 'tool_use': {
      const use = item(`tool · ${data.name}`, h('pre', { class: 'json' }, typeof data.input === 'string' ? data.input : JSON.stringify(data.input, null, 2)))
      if (typeof data.id === 'string') use.dataset.toolUseId = data.id
      return use
    }
    case 'tool_result':
      return h('details', { class: `event tool_result${data.is_error ? ' is-error' : ''}`, dataset: { eventId: event.id, type: event.type } },
        h('summary', null, data.is_error ? 'tool error' : 'tool result'),
        h('pre', null, data.summary))
    case 'api_retry':
      return item('retry', `API call failed${data.error_status ? ` (${data.error_status}${data.error ? ` ${data.error}` : ''})` : ''}; attempt ${data.attempt ?? '?'} of ${data.max_retries ?? '?'} in ${format.duration(data.retry_delay_ms)}`)
    case 'model_fallback':
      return item('fallback', `${data.original_model ?? '?'} → ${data.fallback_model ?? '?'}${data.message ? `: ${data.message}` : ''}`)
    case 'api_error':
      return item('API error', `${data.status ?? ''} ${data.message}`)
    case 'result':
      return item('result', `${data.is_error ? 'error' : data.subtype} · ${data.num_turns ?? '?'} turns · ${format.cost(data.total_cost_usd)}`)
    case 'log':
      return item('output', h('pre', null, data.line))
    case 'gap':
      return item('gap', `Events before #${data.first_id} were dropped from the history (it is bounded).`)
    default:
      return item(event.type, h('pre', { class: 'json' }, JSON.stringify(data, null, 2)))
  }
}

/** @param {Array<[string, import('./dom.js').Child]>} fields */
function definitions (fields) {
  return h('dl', { class: 'fields' }, fields
    .filter(([, value]) => value !== null && value !== undefined && value !== '')
    .map(([name, value]) => h('div', null, h('dt', null, name), h('dd', null, value))))
}
