#!/usr/bin/env node
// claude-runner: the command-line client for CI steps. One file, no dependencies, Node >= 18.
//
//   claude-runner run [PROMPT...] [--file F | -] [--agent A] [--model M] [--ref R] ...
//   claude-runner follow|wait|status|cancel JOB_ID
//
// Server and token: --url / CLAUDE_RUNNER_URL (default http://127.0.0.1:8080), --token /
// CLAUDE_RUNNER_TOKEN. Progress goes to stderr, the agent's answer to stdout. Exit codes below.
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'

const EXIT = {
  completed: 0,
  failed: 1,
  timed_out: 2,
  cancelled: 3,
  /** Bad command line. */
  usage: 64,
  /** The server refused the request (4xx). */
  refused: 65,
  /** The server could not be reached or kept failing (connection refused or dropped, 5xx). */
  unavailable: 69,
  /** `wait --timeout` ran out while the job still runs. */
  pending: 75,
  /** The server no longer knows a job it had accepted: it was restarted (or killed) meanwhile. */
  lost: 76,
}

/** Attempts after the server last answered before giving up: about 90 s of backoff in all. */
const MAX_FAILURES = 10
const backoffMs = failures => Math.min(500 * 2 ** (failures - 1), 15_000)
/** `wait` never asks again sooner than this, whatever the server answers. */
const MIN_POLL_MS = 1000

const HELP = `usage: claude-runner <command> [options]

commands:
  run [PROMPT...]   submit a job and follow it to the end (prompt from the arguments,
                    --file FILE, or standard input)
  follow JOB_ID     follow a job's events to the end
  wait JOB_ID       wait quietly until the job ends (--timeout SECONDS)
  status JOB_ID     print the job's state
  cancel JOB_ID     cancel the job

options:
  --url URL            server (env CLAUDE_RUNNER_URL, default http://127.0.0.1:8080)
  --token TOKEN        bearer token (env CLAUDE_RUNNER_TOKEN)
  --connect-timeout S  keep trying to reach the server for S seconds before giving up
                       (default 0: a refused first connection fails at once)
  -f, --file FILE      read the prompt from FILE ("-" for standard input)
  --agent NAME         run .claude/agents/NAME.md as the main agent
  --model MODEL        model alias or id
  --ref REF            branch, tag or commit to check out
  --push               push the agent's work as branch claude-runner/<job_id>
  --timeout SECONDS    run: the job's execution timeout; wait: how long to wait
  --max-turns N        --max-turns for the CLI
  --max-budget USD     --max-budget-usd for the CLI
  --metadata JSON      free-form JSON object kept with the job
  --callback-url URL   POSTed the job when it ends
  --idempotency-key K  resubmitting with the same key returns the same job (default: one per run)
  --detach             run: print the job id and return without following
  --json               print the job JSON instead of the answer
  -q, --quiet          no progress lines (retries are still reported)
  -h, --help, --version

Once the server has answered, a dropped connection, a refused one or a 502/503/504 is retried
with backoff, ${MAX_FAILURES} times (about 90 s); an event stream that delivered anything starts
the count again.

exit codes: 0 completed, 1 failed, 2 timed out, 3 cancelled, 64 usage, 65 refused by the
server, 69 server unreachable or failing, 75 still running when wait gave up, 76 the server
lost the job (it was restarted while the job ran; resubmit it)`

class CliError extends Error {
  constructor (message, code) {
    super(message)
    this.code = code
  }
}

function options (argv) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      token: { type: 'string' },
      'connect-timeout': { type: 'string' },
      file: { type: 'string', short: 'f' },
      agent: { type: 'string' },
      model: { type: 'string' },
      ref: { type: 'string' },
      push: { type: 'boolean' },
      timeout: { type: 'string' },
      'max-turns': { type: 'string' },
      'max-budget': { type: 'string' },
      metadata: { type: 'string' },
      'callback-url': { type: 'string' },
      'idempotency-key': { type: 'string' },
      detach: { type: 'boolean' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean', short: 'q' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
  })
}

function number (value, name, integer = false) {
  if (value === undefined) return undefined
  const parsed = Number(value)
  if (value.trim() === '' || !Number.isFinite(parsed) || (integer && !Number.isInteger(parsed))) {
    throw new CliError(`--${name} must be a${integer ? 'n integer' : ' number'}, got ${JSON.stringify(value)}`, EXIT.usage)
  }
  return parsed
}

const sleepFor = ms => ms > 0 ? sleep(ms) : Promise.resolve()

/** Why fetch failed, in a few words: `connect ECONNREFUSED 127.0.0.1:9`, `other side closed`. */
const fetchFailure = error => error.cause?.message ?? error.message

/**
 * Failures that mean something took the connection and then dropped it (a server killed while it
 * answered, a proxy), as opposed to nothing being there to connect to.
 */
const AFTER_CONNECT = new Set(['UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
const wasConnected = error => AFTER_CONNECT.has(error.cause?.code) || error.name === 'TimeoutError'

class Client {
  constructor ({ url, token, connectTimeoutMs, progress }) {
    this.url = url.replace(/\/+$/, '')
    this.token = token
    this.progress = progress
    this.connectTimeoutMs = connectTimeoutMs
    this.connectDeadline = Date.now() + connectTimeoutMs
    /** True once the server has answered anything: from then on failures are retried. */
    this.reached = false
    /** Failed attempts since the server last answered (or a stream last delivered). */
    this.failures = 0
    /** Jobs this invocation has seen exist: a 404 for one of them means the server lost it. */
    this.known = new Set()
  }

  /**
   * One request, retried until the server answers with something else than 502/503/504. Before
   * the server ever answered, only within --connect-timeout; after, MAX_FAILURES times.
   */
  async request (method, path, { body, headers = {}, timeoutMs, stream = false } = {}) {
    for (;;) {
      let response
      try {
        response = await fetch(`${this.url}${path}`, {
          method,
          headers: {
            ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
            ...headers,
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs),
        })
      } catch (error) {
        if (wasConnected(error)) this.#reach()
        await this.failed(`${this.reached ? `${method} ${path} failed` : `cannot reach ${this.url}`}: ${fetchFailure(error)}`)
        continue
      }
      this.#reach()
      if (response.status === 502 || response.status === 503 || response.status === 504) {
        const text = await response.text().catch(() => '')
        const retryAfter = Number(response.headers.get('retry-after') ?? '')
        await this.failed(`${method} ${path}: ${response.status} ${errorText(text)}`, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined)
        continue
      }
      // A stream resets the count only once it delivered something (see follow).
      if (!stream) this.failures = 0
      return response
    }
  }

  #reach () {
    if (this.reached) return
    this.reached = true
    this.failures = 0
  }

  /** Counts a failed attempt: waits before the next one, or throws when there is no next one. */
  async failed (message, waitMs) {
    if (!this.reached) {
      const left = this.connectDeadline - Date.now()
      if (left <= 0) {
        throw new CliError(this.connectTimeoutMs > 0 ? `${message} (gave up after --connect-timeout ${this.connectTimeoutMs / 1000}s)` : message, EXIT.unavailable)
      }
      const wait = Math.min(waitMs ?? backoffMs(++this.failures), left)
      this.progress.warn(`${message}; retrying in ${(wait / 1000).toFixed(1)}s (--connect-timeout ${this.connectTimeoutMs / 1000}s)`)
      await sleepFor(wait)
      return
    }
    this.failures++
    if (this.failures > MAX_FAILURES) throw new CliError(`${message}; gave up after ${MAX_FAILURES} attempts`, EXIT.unavailable)
    const wait = waitMs ?? backoffMs(this.failures)
    this.progress.warn(`${message}; retrying in ${(wait / 1000).toFixed(1)}s (attempt ${this.failures}/${MAX_FAILURES})`)
    await sleepFor(wait)
  }

  /** The error for a refused request: `lost` when the server forgot a job it had. */
  refusal (response, text, jobId) {
    let body
    try {
      body = JSON.parse(text)
    } catch {
      body = {}
    }
    if (response.status === 404 && jobId !== undefined && this.known.has(jobId)) {
      return new CliError(`the server no longer has job ${jobId}: it was restarted (or killed) since it accepted the job, or the job was evicted; its outcome is lost, resubmit it`, EXIT.lost)
    }
    const error = new CliError(`${response.status} ${body.error?.code ?? 'error'}: ${body.error?.message ?? text.slice(0, 200)}`,
      response.status >= 500 ? EXIT.unavailable : EXIT.refused)
    error.status = response.status
    error.apiCode = body.error?.code
    error.retryAfter = Number(response.headers.get('retry-after') ?? '')
    return error
  }

  /** A request whose answer is JSON; `job` names the job it is about. */
  async json (method, path, { job, ...init } = {}) {
    for (;;) {
      const response = await this.request(method, path, init)
      let text
      try {
        text = await response.text()
      } catch (error) {
        // The connection dropped mid-answer (a killed server, a proxy): the same as no answer.
        await this.failed(`${method} ${path}: the answer was cut (${fetchFailure(error)})`)
        continue
      }
      if (!response.ok) throw this.refusal(response, text, job)
      try {
        const body = text === '' ? {} : JSON.parse(text)
        if (typeof body.job_id === 'string') this.known.add(body.job_id)
        return body
      } catch {
        throw new CliError(`${method} ${path}: the server answered ${response.status} with something that is not JSON: ${text.slice(0, 200)}`, EXIT.unavailable)
      }
    }
  }
}

function errorText (text) {
  try {
    const body = JSON.parse(text)
    return `${body.error?.code ?? 'error'}: ${body.error?.message ?? ''}`
  } catch {
    return text.slice(0, 200)
  }
}

const exitFor = job => EXIT[job.status] ?? EXIT.failed

class Progress {
  constructor (quiet) {
    this.quiet = quiet
    this.started = Date.now()
  }

  line (text) {
    if (this.quiet) return
    this.#write(text)
  }

  /** Retries and lost connections: said even with --quiet, since they explain a slow step. */
  warn (text) {
    this.#write(`claude-runner: ${text}`)
  }

  #write (text) {
    const elapsed = ((Date.now() - this.started) / 1000).toFixed(1).padStart(6)
    process.stderr.write(`[${elapsed}s] ${text.replace(/\n/g, '\n          ')}\n`)
  }
}

const clip = (text, max = 300) => {
  const value = typeof text === 'string' ? text : JSON.stringify(text)
  return value.length > max ? `${value.slice(0, max)}…` : value
}

const PHASES = { queued: 'queued', preparing: 'preparing the workspace', running: 'agent running', collecting: 'collecting changes' }

function describe (type, data) {
  switch (type) {
    case 'status':
      return data.phase === 'finished' ? `${data.status}${data.error ? ` (${data.error.code}): ${data.error.message}` : ''}` : `→ ${PHASES[data.phase] ?? data.phase}`
    case 'init': return `agent: ${data.model ?? 'default model'} (Claude Code ${data.claude_code_version ?? '?'})`
    case 'text': return `assistant: ${clip(data.text, 1000)}`
    case 'tool_use': return `tool: ${data.name} ${clip(data.input, 200)}`
    case 'tool_result': return `tool result${data.is_error ? ' (error)' : ''}: ${clip(data.summary, 200)}`
    case 'api_retry': return `API retry ${data.attempt}/${data.max_retries} after ${data.error_status ?? data.error} (waiting ${data.retry_delay_ms} ms)`
    case 'model_fallback': return `model fallback: ${data.original_model} → ${data.fallback_model}`
    case 'api_error': return `API error ${data.status ?? ''}: ${data.message}`
    case 'result': return `result: ${data.subtype}${data.num_turns === null ? '' : `, ${data.num_turns} turns`}${data.total_cost_usd === null ? '' : `, $${data.total_cost_usd.toFixed(4)}`}`
    case 'log': return `log: ${clip(data.line)}`
    case 'gap': return `(some early events were dropped from the job's history; continuing from ${data.first_id})`
    default: return `${type}: ${clip(data)}`
  }
}

/** Reads Server-Sent Events; calls onEvent for each, onAlive for anything (comments too). */
async function readEvents (response, onEvent, onAlive) {
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true })
    let boundary = buffer.indexOf('\n\n')
    while (boundary !== -1) {
      const frame = buffer.slice(0, boundary)
      buffer = buffer.slice(boundary + 2)
      onAlive()
      const event = { type: 'message', id: undefined, data: [] }
      for (const line of frame.split('\n')) {
        if (line.startsWith(':')) continue
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'event') event.type = value
        else if (field === 'id') event.id = value
        else if (field === 'data') event.data.push(value)
      }
      if (event.data.length > 0) onEvent(event.type, event.id, JSON.parse(event.data.join('\n')))
      boundary = buffer.indexOf('\n\n')
    }
  }
}

/**
 * Follows a job's events to its end, resuming with Last-Event-ID when the stream is cut. A stream
 * that delivered anything proves the server is there: the failure count starts again.
 */
async function follow (client, jobId, progress) {
  let lastId
  for (;;) {
    const path = `/jobs/${encodeURIComponent(jobId)}/events`
    const response = await client.request('GET', path, {
      headers: { accept: 'text/event-stream', ...(lastId === undefined ? {} : { 'last-event-id': lastId }) },
      stream: true,
    })
    if (!response.ok) throw client.refusal(response, await response.text().catch(() => ''), jobId)
    client.known.add(jobId)
    let job
    let delivered = false
    let cut = 'it ended without the job\'s end'
    try {
      await readEvents(response, (type, id, data) => {
        if (id !== undefined) lastId = id
        if (type === 'end') job = data
        else progress.line(describe(type, data))
      }, () => { delivered = true })
    } catch (error) {
      cut = `it was cut (${fetchFailure(error)})`
    }
    if (job !== undefined) return job
    const where = lastId === undefined ? '' : `; resuming after event ${lastId}`
    if (delivered) {
      client.failures = 0
      progress.warn(`the event stream of job ${jobId} stopped: ${cut}${where}`)
    } else {
      await client.failed(`the event stream of job ${jobId} stopped before any event: ${cut}`)
    }
  }
}

function finish (job, progress, json) {
  if (json) {
    process.stdout.write(JSON.stringify(job, null, 2) + '\n')
  } else {
    const parts = [job.status]
    if (job.run_ms !== null) parts.push(`in ${(job.run_ms / 1000).toFixed(1)}s`)
    if (job.result?.total_cost_usd != null) parts.push(`$${job.result.total_cost_usd.toFixed(4)}`)
    if (job.result?.num_turns != null) parts.push(`${job.result.num_turns} turns`)
    if (job.changes) parts.push(`${job.changes.stats.files_changed} files changed`)
    if (job.changes?.push?.branch) parts.push(`pushed ${job.changes.push.branch}`)
    progress.line(`job ${job.job_id}: ${parts.join(' · ')}`)
    if (job.error) process.stderr.write(`error (${job.error.code}): ${job.error.message}\n`)
    if (job.result?.text) process.stdout.write(job.result.text.endsWith('\n') ? job.result.text : `${job.result.text}\n`)
  }
  return exitFor(job)
}

function readPrompt (values, positionals) {
  if (values.file !== undefined) {
    return readFileSync(values.file === '-' ? 0 : values.file, 'utf8')
  }
  if (positionals.length > 0) return positionals.join(' ')
  if (!process.stdin.isTTY) return readFileSync(0, 'utf8')
  throw new CliError('no prompt: give it as arguments, with --file FILE, or on standard input', EXIT.usage)
}

async function submit (client, values, positionals, progress) {
  const prompt = readPrompt(values, positionals)
  let metadata
  if (values.metadata !== undefined) {
    try {
      metadata = JSON.parse(values.metadata)
    } catch {
      throw new CliError('--metadata must be a JSON object', EXIT.usage)
    }
  }
  const body = Object.fromEntries(Object.entries({
    prompt,
    agent: values.agent,
    model: values.model,
    ref: values.ref,
    push: values.push,
    timeout_seconds: number(values.timeout, 'timeout'),
    max_turns: number(values['max-turns'], 'max-turns', true),
    max_budget_usd: number(values['max-budget'], 'max-budget'),
    metadata,
    callback_url: values['callback-url'],
  }).filter(([, value]) => value !== undefined))
  // One key per invocation: a retry after a lost answer or a full queue can never run the job twice.
  const headers = { 'idempotency-key': values['idempotency-key'] ?? `cli-${randomUUID()}` }
  // A full queue is retried after its Retry-After (the server is there, and says when). A spent
  // budget is not: its Retry-After is midnight UTC, hours a pipeline should not hang for.
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.json('POST', '/execute', { body, headers })
    } catch (error) {
      if (error.status !== 429 || error.apiCode === 'budget_exceeded' || attempt >= 30) throw error
      const wait = Number.isFinite(error.retryAfter) && error.retryAfter > 0 ? error.retryAfter : Math.min(2 ** attempt, 30)
      progress.warn(`${error.message}; retrying in ${wait}s`)
      await sleep(wait * 1000)
    }
  }
}

/**
 * Long-polls until the job ends or `--timeout` runs out. Each poll asks for what is left (never
 * more than the server's 60 s), and polls are at least MIN_POLL_MS apart, so it never spins.
 */
async function wait (client, id, limitSeconds, progress, json) {
  const deadline = limitSeconds === undefined ? Infinity : Date.now() + limitSeconds * 1000
  // Asked at once first: should the server go away during the long-poll, the job is known to
  // have existed, and a 404 afterwards means the server lost it.
  let job = await client.json('GET', `/jobs/${encodeURIComponent(id)}`, { job: id })
  const running = () => ['queued', 'running'].includes(job.status)
  while (running()) {
    const left = deadline - Date.now()
    if (left <= 0) {
      progress.line(`job ${id} is still ${job.status}`)
      return EXIT.pending
    }
    const seconds = Math.max(0, Math.min(60, left / 1000))
    const asked = Date.now()
    job = await client.json('GET', `/jobs/${encodeURIComponent(id)}?wait=${seconds.toFixed(3)}`, { job: id, timeoutMs: (seconds + 30) * 1000 })
    if (running()) await sleepFor(Math.min(MIN_POLL_MS - (Date.now() - asked), deadline - Date.now()))
  }
  return finish(job, progress, json)
}

async function main (argv) {
  let parsed
  try {
    parsed = options(argv)
  } catch (error) {
    throw new CliError(`${error.message}\n\n${HELP}`, EXIT.usage)
  }
  const { values, positionals } = parsed
  if (values.help) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  if (values.version) {
    process.stdout.write('claude-runner client 1\n')
    return 0
  }
  const [command, ...rest] = positionals
  const progress = new Progress(values.quiet === true)
  const connectTimeout = number(values['connect-timeout'], 'connect-timeout') ?? 0
  if (connectTimeout < 0) throw new CliError('--connect-timeout must be 0 or more seconds', EXIT.usage)
  const client = new Client({
    url: values.url ?? process.env.CLAUDE_RUNNER_URL ?? 'http://127.0.0.1:8080',
    token: values.token ?? process.env.CLAUDE_RUNNER_TOKEN,
    connectTimeoutMs: connectTimeout * 1000,
    progress,
  })
  const jobId = () => {
    if (rest.length !== 1) throw new CliError(`${command} takes one job id`, EXIT.usage)
    return rest[0]
  }
  switch (command) {
    case 'run': {
      const job = await submit(client, values, rest, progress)
      progress.line(`job ${job.job_id} accepted (${job.status}${job.queue_position ? `, position ${job.queue_position} in the queue` : ''})`)
      if (values.detach) {
        process.stdout.write(`${job.job_id}\n`)
        return 0
      }
      return finish(await follow(client, job.job_id, progress), progress, values.json)
    }
    case 'follow':
      return finish(await follow(client, jobId(), progress), progress, values.json)
    case 'wait':
      return wait(client, jobId(), number(values.timeout, 'timeout'), progress, values.json)
    case 'status': {
      const id = jobId()
      const job = await client.json('GET', `/jobs/${encodeURIComponent(id)}`, { job: id })
      if (values.json) process.stdout.write(JSON.stringify(job, null, 2) + '\n')
      else process.stdout.write(`${job.job_id} ${job.status} (${job.phase})${job.queue_position ? ` position ${job.queue_position}` : ''}${job.error ? ` ${job.error.code}: ${job.error.message}` : ''}\n`)
      return ['queued', 'running'].includes(job.status) ? 0 : exitFor(job)
    }
    case 'cancel': {
      const id = jobId()
      const job = await client.json('DELETE', `/jobs/${encodeURIComponent(id)}`, { job: id })
      process.stdout.write(`${job.job_id} ${job.status === 'cancelled' ? 'cancelled' : 'cancelling'}\n`)
      return 0
    }
    default:
      throw new CliError(command === undefined ? HELP : `unknown command ${JSON.stringify(command)}\n\n${HELP}`, EXIT.usage)
  }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, error => {
  process.stderr.write(`claude-runner: ${error.message}\n`)
  process.exitCode = error instanceof CliError ? error.code : EXIT.unavailable
})
