import { randomBytes } from 'node:crypto'
import type { Writable } from 'node:stream'
import { RunCancelledError, RunTimeoutError } from '../errors.ts'
import { runProcess, type ProcessExit } from './agent-process.ts'
import { buildCliArgs, type AgentSpec } from './cli-args.ts'
import { RunInputs, type Mount, type RunPaths, type Sandbox } from './sandbox.ts'
import { initializeRequest, LineSplitter, parseHandshake, parseLine, userMessage, type AgentEvent, type CliResult, type Handshake } from './stream-json.ts'

export type RunStatus = 'completed' | 'failed' | 'timed_out' | 'cancelled'

/** Stable codes for why a run did not complete; they appear as `error.code` on a job. */
export type RunErrorCode =
  | 'agent_not_found' | 'agent_spawn_failed' | 'agent_error' | 'api_error' | 'max_turns' | 'max_budget'
  | 'agent_crashed' | 'no_result' | 'timeout' | 'cancelled' | 'workspace_error' | 'ref_not_found' | 'push_failed'
  | 'structured_output_missing'
  /** A continuation whose earlier job (and what it kept) was evicted before it started. */
  | 'not_resumable'
  /** `agent` names no agent the CLI found (its workspace's, its configuration folder's, the built-in ones). */
  | 'unknown_agent'
  /** Redis engine: the replica running the agent died (no heartbeat for REPLICA_TIMEOUT_SECONDS). */
  | 'worker_lost'
  /** The disk under WORKSPACE_ROOT is full: the message says how much is free. */
  | 'workspace_full'
  /** BASE_REPO could not be fetched to look for the job's ref. */
  | 'fetch_failed'

export interface RunError {
  code: RunErrorCode
  message: string
}

export interface AgentOutput {
  /** Raw stream-json lines kept, oldest first, at most `maxOutputBytes` of them. */
  lines: string[]
  /** Everything the agent printed on stdout, kept or not. */
  bytes: number
  keptBytes: number
  truncated: boolean
  stderrTail: string
}

export interface AgentOutcome {
  status: RunStatus
  error: RunError | null
  result: CliResult | null
  exit: { code: number | null, signal: string | null } | null
  output: AgentOutput
  init: Extract<AgentEvent, { type: 'init' }> | null
}

export interface AgentStartOptions {
  bin: string
  sandbox: Sandbox
  /** The run's own folders on the host (workspace, configuration folder, HOME, /tmp, inputs). */
  paths: RunPaths
  /** Read-only binds the workspace needs. */
  mounts?: readonly Mount[] | undefined
  /** The agent's environment (allowlisted); the sandbox adds HOME, TMPDIR, CLAUDE_CONFIG_DIR. */
  env: Readonly<Record<string, string>>
  killGraceMs: number
  maxOutputBytes: number
  onSpawn?: (pid: number) => void
}

export interface AgentRunOptions {
  signal: AbortSignal
  onEvent?: (event: AgentEvent) => void
}

export type RunAgentOptions = AgentStartOptions & AgentRunOptions

/**
 * A CLI started with everything but its prompt (see startAgent), waiting on stdin. Whether it
 * was started a moment ago for this run or minutes ago for whichever run would match it, its run
 * is the same: nothing of the run reaches it before `run`.
 */
export interface StartedAgent {
  /** The host pid (of the sandbox), once spawned. */
  readonly pid: number | undefined
  /** Resolves true once the CLI has answered the handshake and waits for its prompt; false if it ended (or could not start) first. */
  readonly ready: Promise<boolean>
  /** True while its process has not exited. */
  readonly alive: boolean
  /** Resolves once the process has exited (its group is then killed: nothing it started survives). */
  readonly exited: Promise<void>
  /** Gives it the prompt and follows the run to its end; resolves, never throws. Once only. */
  run (spec: AgentSpec, options: AgentRunOptions): Promise<AgentOutcome>
  /** Stops a CLI that will not be given a prompt: SIGTERM, then SIGKILL after the grace. */
  stop (): void
}

const STDERR_TAIL_BYTES = 16 * 1024
/** Linux caps one argv element at 128 KiB (MAX_ARG_STRLEN); longer system prompts go in a file. */
const MAX_ARG_BYTES = 100 * 1024

/**
 * Every file the CLI is told to read is staged here, into the run's inputs folder, and the spec
 * rewritten to the path the CLI sees (inside the sandbox, the host's paths do not exist): system
 * prompts too long for one argv element, the MCP profiles asked for. A flag that names another
 * host file adds a line: `fitted.file = await inputs.copy(spec.file)`.
 */
async function stageInputs (spec: AgentSpec, inputs: RunInputs): Promise<AgentSpec> {
  const long = (text: string | undefined): boolean => text !== undefined && Buffer.byteLength(text) > MAX_ARG_BYTES
  const fitted: AgentSpec = { ...spec }
  if (long(spec.systemPrompt)) {
    fitted.systemPromptFile = await inputs.write('system-prompt.txt', spec.systemPrompt!)
    fitted.systemPrompt = undefined
  }
  if (long(spec.appendSystemPrompt)) {
    fitted.appendSystemPromptFile = await inputs.write('append-system-prompt.txt', spec.appendSystemPrompt!)
    fitted.appendSystemPrompt = undefined
  }
  if (spec.mcpConfigFiles !== undefined && spec.mcpConfigFiles.length > 0) {
    const staged: string[] = []
    for (const file of spec.mcpConfigFiles) staged.push(await inputs.copy(file))
    fitted.mcpConfigFiles = staged
  }
  return fitted
}

/**
 * Starts the CLI for `spec` (its argv, its staged inputs: everything but the prompt) and opens the
 * stream-json handshake. `run` hands it the prompt; until then it waits, printing nothing.
 */
export function startAgent (spec: AgentSpec, options: AgentStartOptions): StartedAgent {
  return new AgentProcess(spec, options)
}

/** Runs `claude -p` once and says how it went, in every case: it resolves, it never throws. */
export async function runAgent (spec: AgentSpec, options: RunAgentOptions): Promise<AgentOutcome> {
  return startAgent(spec, options).run(spec, options)
}

class AgentProcess implements StartedAgent {
  readonly #options: AgentStartOptions
  readonly #requestId = `claude-runner-${randomBytes(6).toString('hex')}`
  /** Stops the process; a run's own signal is relayed to it. */
  readonly #controller = new AbortController()
  readonly #exit: Promise<ProcessExit>
  readonly #splitter: LineSplitter
  readonly ready: Promise<boolean>
  readonly exited: Promise<void>
  #setReady!: (ready: boolean) => void
  #pid: number | undefined
  #alive = true
  #stdin: Writable | undefined
  #handshake: Handshake | undefined
  /** Bytes of stdout, and of it the handshake's: the rest is the run's output. */
  #stdoutBytes = 0
  #protocolBytes = 0
  #stderr = Buffer.alloc(0)
  /** Where lines go once a run has the process; until then they are held for it. */
  #sink: { line: (line: string, bytes: number) => void, overflow: () => void } | undefined
  readonly #held: Array<{ line: string, bytes: number } | null> = []
  #heldBytes = 0
  #taken = false

  constructor (spec: AgentSpec, options: AgentStartOptions) {
    this.#options = options
    this.ready = new Promise(resolve => { this.#setReady = resolve })
    this.#splitter = new LineSplitter({
      maxLineBytes: options.maxOutputBytes,
      onLine: (line, bytes) => { this.#line(line, bytes) },
      onOverflow: () => { this.#deliver(null) },
    })
    this.#exit = this.#launch(spec).then(exit => {
      this.#alive = false
      this.#splitter.end()
      this.#setReady(false)
      return exit
    })
    this.exited = this.#exit.then(() => {})
  }

  get pid (): number | undefined {
    return this.#pid
  }

  get alive (): boolean {
    return this.#alive
  }

  stop (): void {
    this.#controller.abort(new Error('stopped before it was given a prompt'))
  }

  async #launch (spec: AgentSpec): Promise<ProcessExit> {
    const options = this.#options
    let command
    try {
      const inputs = new RunInputs(options.paths.inputs, options.sandbox.view(options.paths).inputs)
      command = await options.sandbox.command({
        paths: options.paths,
        mounts: options.mounts ?? [],
        bin: options.bin,
        args: buildCliArgs(await stageInputs(spec, inputs)),
        env: options.env,
      })
    } catch (error) {
      return { exitCode: null, signal: null, spawnError: { code: 'EINPUTS', message: `its input files could not be staged: ${(error as Error).message}` }, forceKilled: false }
    }
    if ('error' in command) return { exitCode: null, signal: null, spawnError: command.error, forceKilled: false }
    if (this.#controller.signal.aborted) return { exitCode: null, signal: null, spawnError: { code: 'ECANCELED', message: 'stopped before it started' }, forceKilled: false }
    return runProcess({
      command,
      input: stdin => {
        this.#stdin = stdin
        // A CLI that died has closed its end: a late write must not become an error of the service.
        stdin.on('error', () => {})
        stdin.write(initializeRequest(this.#requestId))
      },
      signal: this.#controller.signal,
      killGraceMs: options.killGraceMs,
      onSpawn: pid => {
        this.#pid = pid
        options.onSpawn?.(pid)
      },
      onStdout: chunk => {
        this.#stdoutBytes += chunk.length
        this.#splitter.push(chunk)
      },
      onStderr: chunk => {
        this.#stderr = Buffer.concat([this.#stderr, chunk])
        if (this.#stderr.length > STDERR_TAIL_BYTES) this.#stderr = this.#stderr.subarray(this.#stderr.length - STDERR_TAIL_BYTES)
      },
    })
  }

  #line (line: string, bytes: number): void {
    if (this.#handshake === undefined) {
      const handshake = parseHandshake(line, this.#requestId)
      if (handshake !== undefined) {
        this.#handshake = handshake
        this.#protocolBytes += bytes + 1
        this.#setReady(true)
        return
      }
    }
    this.#deliver({ line, bytes })
  }

  #deliver (line: { line: string, bytes: number } | null): void {
    const sink = this.#sink
    if (sink !== undefined) {
      if (line === null) sink.overflow()
      else sink.line(line.line, line.bytes)
      return
    }
    // Nothing is expected before the prompt; what comes is kept for the run, within the output bound.
    this.#held.push(line)
    this.#heldBytes += line === null ? 0 : line.bytes + 1
    if (this.#heldBytes > this.#options.maxOutputBytes) this.stop()
  }

  async run (spec: AgentSpec, options: AgentRunOptions): Promise<AgentOutcome> {
    if (this.#taken) throw new Error('a started CLI runs one prompt')
    this.#taken = true
    const { maxOutputBytes } = this.#options
    const output: AgentOutput = { lines: [], bytes: 0, keptBytes: 0, truncated: false, stderrTail: '' }
    let result: CliResult | null = null
    let init: AgentOutcome['init'] = null
    let apiError: Extract<AgentEvent, { type: 'api_error' }> | null = null
    let overflowedLines = 0

    const emit = (event: AgentEvent): void => {
      if (event.type === 'result') result = event.result
      else if (event.type === 'init') init = event
      else if (event.type === 'api_error') apiError = event
      try {
        options.onEvent?.(event)
      } catch {
        // A follower's bug must not break the run.
      }
    }
    this.#sink = {
      line: (line, bytes) => {
        if (output.keptBytes + bytes + 1 <= maxOutputBytes) {
          output.lines.push(line)
          output.keptBytes += bytes + 1
        } else {
          output.truncated = true
        }
        for (const event of parseLine(line)) emit(event)
      },
      overflow: () => {
        overflowedLines++
        output.truncated = true
      },
    }
    for (const held of this.#held.splice(0)) this.#deliver(held)

    const { signal } = options
    const relay = (): void => { this.#controller.abort(signal.reason) }
    if (signal.aborted) relay()
    else signal.addEventListener('abort', relay, { once: true })

    let unknownAgent: { name: string, known: string[] } | undefined
    if (await this.ready && !signal.aborted) {
      const known = this.#handshake?.agents
      if (spec.agent !== undefined && known !== undefined && !known.includes(spec.agent)) {
        // With stream-json input the CLI runs its default agent in place of one it cannot find
        // (with text input it refused); so the service refuses, and the model is never called.
        unknownAgent = { name: spec.agent, known }
        this.#stdin?.end()
      } else {
        this.#stdin?.end(userMessage(spec.prompt))
      }
    }
    const exit = await this.#exit
    signal.removeEventListener('abort', relay)
    output.bytes = this.#stdoutBytes - this.#protocolBytes
    output.stderrTail = this.#stderr.toString('utf8')
    return outcomeOf(spec, { exit, result, init, apiError, output, overflowedLines, unknownAgent, signal, bin: this.#options.bin })
  }
}

interface Ending {
  exit: ProcessExit
  result: CliResult | null
  init: AgentOutcome['init']
  apiError: Extract<AgentEvent, { type: 'api_error' }> | null
  output: AgentOutput
  overflowedLines: number
  unknownAgent: { name: string, known: string[] } | undefined
  signal: AbortSignal
  bin: string
}

function outcomeOf (spec: AgentSpec, { exit, result, init, apiError, output, overflowedLines, unknownAgent, signal, bin }: Ending): AgentOutcome {
  const base = { result, init, output, exit: exit.spawnError ? null : { code: exit.exitCode, signal: exit.signal } }
  const finalResult = result

  if (exit.spawnError) {
    if (signal.aborted) return { ...base, ...stoppedBy(signal) }
    const notFound = exit.spawnError.code === 'ENOENT'
    return {
      ...base,
      status: 'failed',
      error: {
        code: notFound ? 'agent_not_found' : 'agent_spawn_failed',
        message: notFound
          ? `the Claude Code CLI was not found: CLAUDE_BIN is ${JSON.stringify(bin)} (${exit.spawnError.code}); install @anthropic-ai/claude-code or point CLAUDE_BIN at it`
          : `the Claude Code CLI could not be started (${exit.spawnError.code}): ${exit.spawnError.message}`,
      },
    }
  }

  if (unknownAgent !== undefined) {
    return { ...base, status: 'failed', error: { code: 'unknown_agent', message: `agent '${unknownAgent.name}' not found. Available agents: ${unknownAgent.known.join(', ')}` } }
  }

  // A run that really finished keeps its success even if a cancel arrived as it exited.
  if (exit.exitCode === 0 && finalResult !== null && !finalResult.is_error) {
    // Asked for structured output, a model that answers in prose twice still ends the run with
    // `subtype: "success"` (measured): without the object the run did not do what was asked.
    if (spec.jsonSchema !== undefined && !isObject(finalResult.structured_output)) {
      const said = typeof finalResult.result === 'string' && finalResult.result !== '' ? `; it answered: ${preview(finalResult.result)}` : ''
      return { ...base, status: 'failed', error: { code: 'structured_output_missing', message: `the run ended without structured output: the agent never gave an object matching json_schema (it did not call the StructuredOutput tool)${said}` } }
    }
    return { ...base, status: 'completed', error: null }
  }

  if (signal.aborted) return { ...base, ...stoppedBy(signal) }

  if (finalResult !== null && finalResult.is_error) {
    return { ...base, status: 'failed', error: resultError(finalResult) }
  }

  const stderrLine = lastLines(output.stderrTail)
  const how = exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.exitCode}`
  if (finalResult !== null) {
    // is_error false but a non-zero exit: trust the exit code.
    return { ...base, status: 'failed', error: { code: 'agent_crashed', message: `the CLI reported success but ${how}${stderrLine ? `: ${stderrLine}` : ''}` } }
  }
  if (apiError !== null) {
    return { ...base, status: 'failed', error: { code: 'api_error', message: apiError.message } }
  }
  if (exit.exitCode !== 0) {
    return { ...base, status: 'failed', error: { code: 'agent_crashed', message: `the CLI ${how} without a result${stderrLine ? `: ${stderrLine}` : ''}` } }
  }
  const why = overflowedLines > 0
    ? ` (${overflowedLines} line(s) longer than MAX_OUTPUT_BYTES were dropped; the result may have been one of them)`
    : ''
  return { ...base, status: 'failed', error: { code: 'no_result', message: `the CLI exited 0 without a result message${why}${stderrLine ? `: ${stderrLine}` : ''}` } }
}

/** How a run ends when its signal aborted it: timed out, or cancelled (and who asked). */
export function stoppedBy (signal: AbortSignal): Pick<AgentOutcome, 'status' | 'error'> {
  const reason: unknown = signal.reason
  if (reason instanceof RunTimeoutError) return { status: 'timed_out', error: { code: 'timeout', message: reason.message } }
  const message = reason instanceof RunCancelledError ? reason.message : 'the run was cancelled'
  return { status: 'cancelled', error: { code: 'cancelled', message } }
}

function resultError (result: CliResult): RunError {
  const errors = Array.isArray(result.errors) ? result.errors.filter(error => typeof error === 'string' && error !== '') : []
  const text = typeof result.result === 'string' && result.result !== '' ? result.result : ''
  const message = errors.length > 0 ? errors.join('; ') : text !== '' ? text : `the agent failed (${result.subtype})`
  if (result.subtype === 'error_max_turns') return { code: 'max_turns', message }
  if (result.subtype === 'error_max_budget_usd') return { code: 'max_budget', message }
  if (result.subtype === 'error_max_structured_output_retries') return { code: 'structured_output_missing', message }
  if (typeof result.api_error_status === 'number') {
    const status = String(result.api_error_status)
    return { code: 'api_error', message: message.includes(status) ? message : `${message} (API status ${status})` }
  }
  return { code: 'agent_error', message }
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

function preview (text: string, maxChars = 500): string {
  return JSON.stringify(text.length > maxChars ? `${text.slice(0, maxChars)}…` : text)
}

function lastLines (text: string, maxChars = 500): string {
  const lines = text.split('\n').map(line => line.trim()).filter(line => line !== '')
  const tail = lines.slice(-3).join(' | ')
  return tail.length > maxChars ? `…${tail.slice(-maxChars)}` : tail
}
