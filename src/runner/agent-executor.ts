import { cp, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { runAgent, type AgentOutcome, type RunError } from '../agent/agent-run.ts'
import type { AgentSpec } from '../agent/cli-args.ts'
import type { ProcessRecords } from '../agent/process-records.ts'
import type { RunPaths, Sandbox } from '../agent/sandbox.ts'
import type { AgentEvent } from '../agent/stream-json.ts'
import { RunCancelledError, RunTimeoutError } from '../errors.ts'
import type { ExecutionPhase } from '../engine/types.ts'
import type { DiskWatch } from '../workspace/disk.ts'
import { WorkspaceError, type Collected, type Workspace, type WorkspaceChanges, type WorkspaceFolders, type WorkspaceProvider } from '../workspace/workspace.ts'
import { keepForContinuation, loadResume, restoreTranscript, ResumeError, type ArtifactReader, type Kept, type ResumeFrom } from './continuation.ts'

export interface ExecuteRequest {
  /** Names the workspace; unique among runs in flight. */
  id: string
  spec: AgentSpec
  ref?: string | undefined
  push?: boolean | undefined
  /** Keep what continuing this run needs (its session transcript, its final tree): see continuation.ts. */
  keep?: boolean | undefined
  /** Continue a finished run: resume its session, in a workspace that starts where it left off. */
  resume?: ResumeFrom | undefined
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
  /** With `keep`: what a continuation needs (to be put in the engine), or why the run cannot be continued. */
  kept: Kept | null
}

export interface AgentExecutorOptions {
  bin: string
  /** How every agent process is confined (see agent/sandbox.ts). */
  sandbox: Sandbox
  /** Where the agent processes running are written down, for the start-up sweep after a crash. */
  records: ProcessRecords
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
  /** What earlier runs kept in the engine (JobStore.artifact): what continuations start from. */
  artifacts?: ArtifactReader | undefined
  /** MAX_RESUME_BYTES: what a run with `keep` may keep for its continuations; 0 (the default) keeps nothing. */
  maxResumeBytes?: number | undefined
  /** The disk under WORKSPACE_ROOT: a run that failed on a full one ends `workspace_full`. */
  disk?: DiskWatch | undefined
  onError?: (error: unknown, context: string) => void
}

const COLLECT_AFTER_ABORT_MS = 60_000

const emptyOutput = (): AgentOutcome['output'] => ({ lines: [], bytes: 0, keptBytes: 0, truncated: false, stderrTail: '' })

/**
 * One run from start to end: make the workspace, run the agent in it, collect what it changed,
 * remove the workspace. Whatever happens, it resolves with an outcome and leaves nothing behind.
 */
/** How a run fails when the disk fills under it: git errors, a CLI that crashed or wrote no result. */
const DISK_FAILURES: ReadonlySet<string> = new Set(['workspace_error', 'fetch_failed', 'agent_crashed', 'agent_spawn_failed', 'no_result'])

export class AgentExecutor {
  readonly #options: AgentExecutorOptions
  /** Process groups of the agents running now. */
  readonly #live = new Set<number>()

  constructor (options: AgentExecutorOptions) {
    this.#options = options
  }

  async execute (request: ExecuteRequest, hooks: ExecuteHooks, signal: AbortSignal): Promise<ExecuteOutcome> {
    const outcome = await this.#execute(request, hooks, signal)
    // A run that failed on a full disk says so, with the free space, whatever git or the CLI said.
    const disk = this.#options.disk
    if (disk === undefined || outcome.status !== 'failed' || outcome.error === null || !DISK_FAILURES.has(outcome.error.code)) return outcome
    const full = await disk.full(outcome.error.message)
    return full === undefined ? outcome : { ...outcome, error: { code: 'workspace_full', message: full } }
  }

  async #execute (request: ExecuteRequest, hooks: ExecuteHooks, signal: AbortSignal): Promise<ExecuteOutcome> {
    hooks.onPhase?.('preparing')
    const { folders, template } = this.#options.configs
    const configDir = folders.configPathFor(request.id)
    const runDir = folders.runPathFor(request.id)
    const discardRun = async (): Promise<void> => {
      await Promise.all([folders.discard(configDir), folders.discard(runDir)])
    }
    const { resume } = request
    let workspace: Workspace | undefined
    let paths: RunPaths
    try {
      await mkdir(configDir, { mode: 0o700 })
      if (template !== undefined) await cp(template, configDir, { recursive: true })
      await mkdir(runDir, { mode: 0o700 })
      for (const name of ['home', 'tmp', 'inputs']) await mkdir(join(runDir, name), { mode: 0o700 })
      const restored = resume === undefined ? undefined : await this.#loadResume(resume)
      workspace = await this.#options.workspaces.prepare(request.id, {
        ref: request.ref,
        signal,
        restore: restored === undefined || resume?.tree == null ? undefined : { tree: resume.tree, bundle: restored.bundle },
      })
      paths = { workspace: workspace.path, config: configDir, home: join(runDir, 'home'), tmp: join(runDir, 'tmp'), inputs: join(runDir, 'inputs') }
      if (resume !== undefined && restored !== undefined) await restoreTranscript(resume, restored.transcript, configDir, this.#options.sandbox.view(paths).workspace)
    } catch (error) {
      await Promise.all([workspace?.dispose(), discardRun()])
      if (signal.aborted) return stopped(signal)
      const failure: RunError = error instanceof WorkspaceError || error instanceof ResumeError
        ? { code: error.code, message: error.message }
        : { code: 'workspace_error', message: `could not prepare the workspace: ${(error as Error).message}` }
      return { status: 'failed', error: failure, result: null, exit: null, output: emptyOutput(), init: null, changes: null, kept: null }
    }

    let agentPid: number | undefined
    try {
      if (signal.aborted) return stopped(signal)
      await hooks.beforeSpawn?.()
      hooks.onPhase?.('running')
      const outcome = await runAgent(resume === undefined ? request.spec : { ...request.spec, resume: resume.session_id }, {
        bin: this.#options.bin,
        sandbox: this.#options.sandbox,
        paths,
        mounts: workspace.mounts,
        env: this.#options.env,
        killGraceMs: this.#options.killGraceMs,
        maxOutputBytes: this.#options.maxOutputBytes,
        signal,
        ...(hooks.onEvent ? { onEvent: hooks.onEvent } : {}),
        onSpawn: pid => {
          agentPid = pid
          this.#live.add(pid)
          this.#options.records.record(request.id, pid)
          hooks.onSpawn?.(pid)
        },
      })
      if (agentPid !== undefined) this.#live.delete(agentPid)
      await this.#options.records.forget(request.id)
      hooks.onPhase?.('collecting')
      // The timeout covers collecting too; but a run that already timed out or was cancelled
      // still gets its changes collected, within a bound of their own.
      const abortedBefore = signal.aborted
      const collectSignal = abortedBefore ? AbortSignal.timeout(COLLECT_AFTER_ABORT_MS) : signal
      const maxResumeBytes = this.#options.maxResumeBytes ?? 0
      const keep = request.keep === true && maxResumeBytes > 0 ? { maxBytes: maxResumeBytes } : undefined
      let ended: Omit<ExecuteOutcome, 'kept'>
      let tree: Collected['kept']
      try {
        const collected = await workspace.collect({ push: request.push === true && outcome.status === 'completed', jobId: request.id, signal: collectSignal, keep })
        const { changes } = collected
        tree = collected.kept
        // Stopped during the push (git's abort comes back as a push error) or after collect's last
        // git command: the job ends cancelled or timed out all the same, never push_failed.
        ended = !abortedBefore && signal.aborted
          ? { ...outcome, ...stoppedStatus(signal), changes }
          : changes?.push != null && 'error' in changes.push
            ? { ...outcome, status: 'failed', error: { code: 'push_failed', message: `the agent finished but its changes could not be pushed: ${changes.push.error}` }, changes }
            : { ...outcome, changes }
      } catch (error) {
        tree = { reason: 'its workspace could not be collected' }
        if (!abortedBefore && signal.aborted) {
          // Cancelled or timed out while collecting: the job ends so, with the agent's result and exit.
          ended = { ...outcome, ...stoppedStatus(signal), changes: null }
        } else {
          this.#options.onError?.(error, 'collecting the workspace changes')
          ended = outcome.status !== 'completed'
            ? { ...outcome, changes: null }
            : { ...outcome, status: 'failed', error: { code: 'workspace_error', message: `the agent finished but its changes could not be collected: ${(error as Error).message}` }, changes: null }
        }
      }
      if (request.keep !== true) return { ...ended, kept: null }
      const kept = await keepForContinuation({ outcome, tree, configDir, cwd: this.#options.sandbox.view(paths).workspace, maxBytes: maxResumeBytes })
        .catch((error: unknown): Kept => {
          this.#options.onError?.(error, 'keeping what continuing the run needs')
          return { state: { resumable: false, reason: `what continuing it needs could not be kept: ${(error as Error).message}` }, artifacts: [] }
        })
      return { ...ended, kept }
    } finally {
      if (agentPid !== undefined) this.#live.delete(agentPid)
      await workspace.dispose()
      await discardRun()
    }
  }

  async #loadResume (resume: ResumeFrom): Promise<Awaited<ReturnType<typeof loadResume>>> {
    const read = this.#options.artifacts
    if (read === undefined) throw new ResumeError('this executor cannot continue runs: it reads no artifacts')
    return loadResume(resume, read)
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

function stoppedStatus (signal: AbortSignal): Pick<ExecuteOutcome, 'status' | 'error'> {
  const reason: unknown = signal.reason
  if (reason instanceof RunTimeoutError) return { status: 'timed_out', error: { code: 'timeout', message: reason.message } }
  return { status: 'cancelled', error: { code: 'cancelled', message: reason instanceof RunCancelledError ? reason.message : 'the run was cancelled' } }
}

function stopped (signal: AbortSignal): ExecuteOutcome {
  return { result: null, exit: null, output: emptyOutput(), init: null, changes: null, kept: null, ...stoppedStatus(signal) }
}
