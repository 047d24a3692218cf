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
  /** The server could not be reached or failed (5xx). */
  unavailable: 69,
  /** `wait --timeout` ran out while the job still runs. */
  pending: 75,
}

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
  -q, --quiet          no progress lines
  -h, --help, --version

exit codes: 0 completed, 1 failed, 2 timed out, 3 cancelled, 64 usage, 65 refused by the
server, 69 server unreachable or failing, 75 still running when wait gave up`

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

class Client {
  constructor ({ url, token }) {
    this.url = url.replace(/\/+$/, '')
    this.token = token
  }

  async request (method, path, { body, headers = {}, signal } = {}) {
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
        signal,
      })
    } catch (error) {
      throw new CliError(`cannot reach ${this.url}: ${error.cause?.message ?? error.message}`, EXIT.unavailable)
    }
    return response
  }

  async json (method, path, init) {
    const response = await this.request(method, path, init)
    const text = await response.text()
    let body
    try {
      body = text === '' ? {} : JSON.parse(text)
    } catch {
      body = { error: { code: 'bad_response', message: text.slice(0, 200) } }
    }
    if (!response.ok) {
      const error = new CliError(`${response.status} ${body.error?.code ?? 'error'}: ${body.error?.message ?? text.slice(0, 200)}`,
        response.status >= 500 ? EXIT.unavailable : EXIT.refused)
      error.status = response.status
      error.retryAfter = Number(response.headers.get('retry-after') ?? '')
      throw error
    }
    return body
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

/** Reads Server-Sent Events; calls onEvent for each, returns when the stream ends. */
async function readEvents (response, onEvent) {
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const chunk of response.body) {
    buffer += decoder.decode(chunk, { stream: true })
    let boundary = buffer.indexOf('\n\n')
    while (boundary !== -1) {
      const frame = buffer.slice(0, boundary)
      buffer = buffer.slice(boundary + 2)
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

/** Follows a job's events to its end, resuming with Last-Event-ID when the connection drops. */
async function follow (client, jobId, progress) {
  let lastId
  let job
  for (let attempt = 0; job === undefined; attempt++) {
    let response
    try {
      response = await client.request('GET', `/jobs/${encodeURIComponent(jobId)}/events`, {
        headers: { accept: 'text/event-stream', ...(lastId === undefined ? {} : { 'last-event-id': lastId }) },
      })
    } catch (error) {
      if (attempt >= 10) throw error
      progress.line(`connection lost (${error.message}); retrying`)
      await sleep(Math.min(1000 * 2 ** attempt, 15_000))
      continue
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}))
      throw new CliError(`${response.status} ${body.error?.code ?? 'error'}: ${body.error?.message ?? ''}`, response.status >= 500 ? EXIT.unavailable : EXIT.refused)
    }
    try {
      await readEvents(response, (type, id, data) => {
        if (id !== undefined) lastId = id
        if (type === 'end') job = data
        else progress.line(describe(type, data))
      })
    } catch (error) {
      if (attempt >= 10) throw new CliError(`lost the event stream: ${error.message}`, EXIT.unavailable)
    }
    if (job === undefined) await sleep(Math.min(500 * 2 ** attempt, 15_000))
  }
  return job
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
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.json('POST', '/execute', { body, headers })
    } catch (error) {
      const retriable = error.status === 429 || error.status === 503 || (error.code === EXIT.unavailable && error.status === undefined)
      if (!retriable || attempt >= 30) throw error
      const wait = Number.isFinite(error.retryAfter) && error.retryAfter > 0 ? error.retryAfter : Math.min(2 ** attempt, 30)
      progress.line(`${error.message}; retrying in ${wait}s`)
      await sleep(wait * 1000)
    }
  }
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
  const client = new Client({
    url: values.url ?? process.env.CLAUDE_RUNNER_URL ?? 'http://127.0.0.1:8080',
    token: values.token ?? process.env.CLAUDE_RUNNER_TOKEN,
  })
  const progress = new Progress(values.quiet === true)
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
    case 'wait': {
      const id = jobId()
      const limit = number(values.timeout, 'timeout')
      const deadline = limit === undefined ? Infinity : Date.now() + limit * 1000
      for (;;) {
        const left = Math.max(0, Math.min(60, (deadline - Date.now()) / 1000))
        const job = await client.json('GET', `/jobs/${encodeURIComponent(id)}?wait=${Math.floor(left)}`)
        if (!['queued', 'running'].includes(job.status)) return finish(job, progress, values.json)
        if (Date.now() >= deadline) {
          progress.line(`job ${id} is still ${job.status}`)
          return EXIT.pending
        }
      }
    }
    case 'status': {
      const job = await client.json('GET', `/jobs/${encodeURIComponent(jobId())}`)
      if (values.json) process.stdout.write(JSON.stringify(job, null, 2) + '\n')
      else process.stdout.write(`${job.job_id} ${job.status} (${job.phase})${job.queue_position ? ` position ${job.queue_position}` : ''}${job.error ? ` ${job.error.code}: ${job.error.message}` : ''}\n`)
      return ['queued', 'running'].includes(job.status) ? 0 : exitFor(job)
    }
    case 'cancel': {
      const job = await client.json('DELETE', `/jobs/${encodeURIComponent(jobId())}`)
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
