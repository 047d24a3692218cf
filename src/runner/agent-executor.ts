import { cp, mkdir } from 'node:fs/promises'
import { runAgent, type AgentOutcome, type RunError } from '../agent/agent-run.ts'
import type { AgentSpec } from '../agent/cli-args.ts'
import type { AgentEvent } from '../agent/stream-json.ts'
import { RunCancelledError, RunTimeoutError } from '../errors.ts'
import type { ExecutionPhase } from '../engine/types.ts'
import { WorkspaceError, type WorkspaceChanges, type WorkspaceFolders, type WorkspaceProvider } from '../workspace/workspace.ts'

export interface ExecuteRequest {
  /** Names the workspace; unique among runs in flight. */
  id: string
  spec: AgentSpec
  ref?: string | undefined
  push?: boolean | undefined
}

export interface ExecuteHooks {
  onPhase?: (phase: ExecutionPhase) => void
  onEvent?: (event: AgentEvent) => void
  onSpawn?: (pid: number) => void
  /** Awaited just before the agent is started; a rejection means it must not be (see RunHandle.claimSpawn). */
  beforeSpawn?: () => Promise<void>
}

export interface ExecuteOutcome extends AgentOutcome {
  changes: WorkspaceChanges | null
}

export interface AgentExecutorOptions {
  bin: string
  /** The agent's whole environment (already filtered: see agent-env.ts). */
  env: Readonly<Record<string, string>>
  /**
   * Each run gets a Claude Code configuration folder of its own (CLAUDE_CONFIG_DIR), copied from
   * `template` when there is one, and removed with the workspace: concurrent runs never share
   * ~/.claude.json, and session transcripts never pile up in a shared home.
   */
  configs: { folders: WorkspaceFolders, template?: string | undefined }
  killGraceMs: number
  maxOutputBytes: number
  workspaces: WorkspaceProvider
  onError?: (error: unknown, context: string) => void
}

const COLLECT_AFTER_ABORT_MS = 60_000

const emptyOutput = (): AgentOutcome['output'] => ({ lines: [], bytes: 0, keptBytes: 0, truncated: false, stderrTail: '' })

/**
 * One run from start to end: make the workspace, run the agent in it, collect what it changed,
 * remove the workspace. Whatever happens, it resolves with an outcome and leaves nothing behind.
 */
export class AgentExecutor {
  readonly #options: AgentExecutorOptions
  /** Process groups of the agents running now. */
  readonly #live = new Set<number>()

  constructor (options: AgentExecutorOptions) {
    this.#options = options
  }

  async execute (request: ExecuteRequest, hooks: ExecuteHooks, signal: AbortSignal): Promise<ExecuteOutcome> {
    hooks.onPhase?.('preparing')
    const { folders, template } = this.#options.configs
    const configDir = folders.configPathFor(request.id)
    let workspace
    try {
      await mkdir(configDir, { mode: 0o700 })
      if (template !== undefined) await cp(template, configDir, { recursive: true })
      workspace = await this.#options.workspaces.prepare(request.id, { ref: request.ref, signal })
    } catch (error) {
      await folders.discard(configDir)
      if (signal.aborted) return stopped(signal)
      const failure: RunError = error instanceof WorkspaceError
        ? { code: error.code, message: error.message }
        : { code: 'workspace_error', message: `could not prepare the workspace: ${(error as Error).message}` }
      return { status: 'failed', error: failure, result: null, exit: null, output: emptyOutput(), init: null, changes: null }
    }

    let agentPid: number | undefined
    try {
      if (signal.aborted) return stopped(signal)
      await hooks.beforeSpawn?.()
      hooks.onPhase?.('running')
      const outcome = await runAgent(request.spec, {
        bin: this.#options.bin,
        cwd: workspace.path,
        env: { ...this.#options.env, CLAUDE_CONFIG_DIR: configDir },
        killGraceMs: this.#options.killGraceMs,
        maxOutputBytes: this.#options.maxOutputBytes,
        signal,
        ...(hooks.onEvent ? { onEvent: hooks.onEvent } : {}),
        onSpawn: pid => {
          agentPid = pid
          this.#live.add(pid)
          hooks.onSpawn?.(pid)
        },
      })
      if (agentPid !== undefined) this.#live.delete(agentPid)
      hooks.onPhase?.('collecting')
      try {
        // The timeout covers collecting too; but a run that already timed out or was cancelled
        // still gets its changes collected, within a bound of their own.
        const collectSignal = signal.aborted ? AbortSignal.timeout(COLLECT_AFTER_ABORT_MS) : signal
        const changes = await workspace.collect({ push: request.push === true && outcome.status === 'completed', jobId: request.id, signal: collectSignal })
        if (changes?.push != null && 'error' in changes.push) {
          return { ...outcome, status: 'failed', error: { code: 'push_failed', message: `the agent finished but its changes could not be pushed: ${changes.push.error}` }, changes }
        }
        return { ...outcome, changes }
      } catch (error) {
        this.#options.onError?.(error, 'collecting the workspace changes')
        if (outcome.status !== 'completed') return { ...outcome, changes: null }
        return { ...outcome, status: 'failed', error: { code: 'workspace_error', message: `the agent finished but its changes could not be collected: ${(error as Error).message}` }, changes: null }
      }
    } finally {
      if (agentPid !== undefined) this.#live.delete(agentPid)
      await workspace.dispose()
      await folders.discard(configDir)
    }
  }

  /** SIGKILLs the process group of every agent running now: for a forced exit only. */
  killAll (): void {
    for (const pid of this.#live) {
      try {
        process.kill(-pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
  }
}

function stopped (signal: AbortSignal): ExecuteOutcome {
  const reason: unknown = signal.reason
  const base = { result: null, exit: null, output: emptyOutput(), init: null, changes: null }
  if (reason instanceof RunTimeoutError) return { ...base, status: 'timed_out', error: { code: 'timeout', message: reason.message } }
  return { ...base, status: 'cancelled', error: { code: 'cancelled', message: reason instanceof RunCancelledError ? reason.message : 'the run was cancelled' } }
}
