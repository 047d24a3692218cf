import type { Writable } from 'node:stream'
import { RunCancelledError, RunTimeoutError } from '../errors.ts'
import { runProcess, type ProcessExit } from './agent-process.ts'
import { buildCliArgs, type AgentSpec } from './cli-args.ts'
import { RunInputs, type Mount, type RunPaths, type Sandbox } from './sandbox.ts'
import { LineSplitter, parseLine, type AgentEvent, type CliResult } from './stream-json.ts'

export type RunStatus = 'completed' | 'failed' | 'timed_out' | 'cancelled'

/** Stable codes for why a run did not complete; they appear as `error.code` on a job. */
export type RunErrorCode =
  | 'agent_not_found' | 'agent_spawn_failed' | 'agent_error' | 'api_error' | 'max_turns' | 'max_budget'
  | 'agent_crashed' | 'no_result' | 'timeout' | 'cancelled' | 'workspace_error' | 'ref_not_found' | 'push_failed'
  | 'structured_output_missing'
  /** A continuation whose earlier job (and what it kept) was evicted before it started. */
  | 'not_resumable'
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

export interface RunAgentOptions {
  bin: string
  sandbox: Sandbox
  /** The run's own folders on the host (workspace, configuration folder, HOME, /tmp, inputs). */
  paths: RunPaths
  /** Read-only binds the workspace needs. */
  mounts?: readonly Mount[] | undefined
  /** The agent's environment (allowlisted); the sandbox adds HOME, TMPDIR, CLAUDE_CONFIG_DIR. */
  env: Readonly<Record<string, string>>
  /**
   * Feeds the prompt. Default: the spec's prompt is written to stdin, which is then closed. A
   * caller that starts the CLI before it has the prompt (stream-json input) passes its own.
   */
  stdin?: ((stdin: Writable) => void) | undefined
  killGraceMs: number
  maxOutputBytes: number
  signal: AbortSignal
  onEvent?: (event: AgentEvent) => void
  onSpawn?: (pid: number) => void
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

/** Runs `claude -p` once and says how it went, in every case: it resolves, it never throws. */
export async function runAgent (spec: AgentSpec, options: RunAgentOptions): Promise<AgentOutcome> {
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

  const splitter = new LineSplitter({
    maxLineBytes: options.maxOutputBytes,
    onLine: (line, bytes) => {
      if (output.keptBytes + bytes + 1 <= options.maxOutputBytes) {
        output.lines.push(line)
        output.keptBytes += bytes + 1
      } else {
        output.truncated = true
      }
      for (const event of parseLine(line)) emit(event)
    },
    onOverflow: () => {
      overflowedLines++
      output.truncated = true
    },
  })

  let stderr = Buffer.alloc(0)
  const inputs = new RunInputs(options.paths.inputs, options.sandbox.view(options.paths).inputs)
  const command = await options.sandbox.command({
    paths: options.paths,
    mounts: options.mounts ?? [],
    bin: options.bin,
    args: buildCliArgs(await stageInputs(spec, inputs)),
    env: options.env,
  })
  const exit: ProcessExit = 'error' in command
    ? { exitCode: null, signal: null, spawnError: command.error, forceKilled: false }
    : await runProcess({
      command,
      input: options.stdin ?? spec.prompt,
      signal: options.signal,
      killGraceMs: options.killGraceMs,
      ...(options.onSpawn ? { onSpawn: options.onSpawn } : {}),
      onStdout: chunk => {
        output.bytes += chunk.length
        splitter.push(chunk)
      },
      onStderr: chunk => {
        stderr = Buffer.concat([stderr, chunk])
        if (stderr.length > STDERR_TAIL_BYTES) stderr = stderr.subarray(stderr.length - STDERR_TAIL_BYTES)
      },
    })
  splitter.end()
  output.stderrTail = stderr.toString('utf8')

  const base = { result, init, output, exit: exit.spawnError ? null : { code: exit.exitCode, signal: exit.signal } }
  const finalResult = result as CliResult | null

  if (exit.spawnError) {
    const notFound = exit.spawnError.code === 'ENOENT'
    return {
      ...base,
      status: 'failed',
      error: {
        code: notFound ? 'agent_not_found' : 'agent_spawn_failed',
        message: notFound
          ? `the Claude Code CLI was not found: CLAUDE_BIN is ${JSON.stringify(options.bin)} (${exit.spawnError.code}); install @anthropic-ai/claude-code or point CLAUDE_BIN at it`
          : `the Claude Code CLI could not be started (${exit.spawnError.code}): ${exit.spawnError.message}`,
      },
    }
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

  if (options.signal.aborted) {
    const reason: unknown = options.signal.reason
    if (reason instanceof RunTimeoutError) return { ...base, status: 'timed_out', error: { code: 'timeout', message: reason.message } }
    const message = reason instanceof RunCancelledError ? reason.message : 'the run was cancelled'
    return { ...base, status: 'cancelled', error: { code: 'cancelled', message } }
  }

  if (finalResult !== null && finalResult.is_error) {
    return { ...base, status: 'failed', error: resultError(finalResult) }
  }

  const stderrLine = lastLines(output.stderrTail)
  const how = exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${exit.exitCode}`
  if (finalResult !== null) {
    // is_error false but a non-zero exit: trust the exit code.
    return { ...base, status: 'failed', error: { code: 'agent_crashed', message: `the CLI reported success but ${how}${stderrLine ? `: ${stderrLine}` : ''}` } }
  }
  const recordedApiError = apiError as Extract<AgentEvent, { type: 'api_error' }> | null
  if (recordedApiError !== null) {
    return { ...base, status: 'failed', error: { code: 'api_error', message: recordedApiError.message } }
  }
  if (exit.exitCode !== 0) {
    return { ...base, status: 'failed', error: { code: 'agent_crashed', message: `the CLI ${how} without a result${stderrLine ? `: ${stderrLine}` : ''}` } }
  }
  const why = overflowedLines > 0
    ? ` (${overflowedLines} line(s) longer than MAX_OUTPUT_BYTES were dropped; the result may have been one of them)`
    : ''
  return { ...base, status: 'failed', error: { code: 'no_result', message: `the CLI exited 0 without a result message${why}${stderrLine ? `: ${stderrLine}` : ''}` } }
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
