import { cp, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { startAgent, stoppedBy, type AgentOutcome, type RunError, type StartedAgent } from '../agent/agent-run.ts'
import type { AgentSpec } from '../agent/cli-args.ts'
import type { ProcessRecords } from '../agent/process-records.ts'
import type { RunPaths, Sandbox } from '../agent/sandbox.ts'
import type { AgentEvent } from '../agent/stream-json.ts'
import type { ExecutionPhase } from '../engine/types.ts'
import type { DiskWatch } from '../workspace/disk.ts'
import { WorkspaceError, type Collected, type Workspace, type WorkspaceChanges, type WorkspaceFolders, type WorkspaceProvider } from '../workspace/workspace.ts'
import { keepForContinuation, loadResume, restoreTranscript, ResumeError, type ArtifactReader, type Kept, type ResumeFrom } from './continuation.ts'
import type { WarmLane, WarmPool } from './warm-pool.ts'

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
  /** Awaited just before the agent is given its run; a rejection means it must not be (see RunHandle.claimSpawn). */
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
  /**
   * Warm starts (WARM_AGENTS): runs take CLIs this executor started ahead of time in the pool's
   * `lane`; `defaultSpec` is the argument set kept warm before any run has been seen.
   */
  warm?: { pool: WarmPool, lane: string, defaultSpec?: AgentSpec | undefined } | undefined
  /** The disk under WORKSPACE_ROOT: a run that failed on a full one ends `workspace_full`. */
  disk?: DiskWatch | undefined
  onError?: (error: unknown, context: string) => void
}

/** A run's folders and workspace, and its CLI once started: made for a run, or ahead of one. */
export interface PreparedRun {
  /** The id its folders and process record are named by (a warm one's is its own, not the run's). */
  readonly id: string
  readonly paths: RunPaths
  readonly workspace: Workspace
  agent: StartedAgent | undefined
}

const COLLECT_AFTER_ABORT_MS = 60_000
/** What ExecuteRequest may hold for a warm start to stand in for a cold one; anything more (a continuation...) starts cold. */
const WARM_REQUEST_FIELDS: ReadonlySet<string> = new Set(['id', 'spec', 'ref', 'push', 'keep'])

const emptyOutput = (): AgentOutcome['output'] => ({ lines: [], bytes: 0, keptBytes: 0, truncated: false, stderrTail: '' })
/** How a run fails when the disk fills under it: git errors, a CLI that crashed or wrote no result. */
const DISK_FAILURES: ReadonlySet<string> = new Set(['workspace_error', 'fetch_failed', 'agent_crashed', 'agent_spawn_failed', 'no_result'])

/**
 * One run from start to end: make the workspace, run the agent in it, collect what it changed,
 * remove the workspace. Whatever happens, it resolves with an outcome and leaves nothing behind.
 *
 * With warm starts, the workspace and the CLI may have been made before the run existed, by the
 * same code and with the same argv: the run then only hands the CLI its prompt.
 */
export class AgentExecutor {
  readonly #options: AgentExecutorOptions
  /** Process groups of the agents running now. */
  readonly #live = new Set<number>()
  readonly #lane: WarmLane<PreparedRun> | undefined

  constructor (options: AgentExecutorOptions) {
    this.#options = options
    const { warm, workspaces } = options
    this.#lane = warm?.pool.lane<PreparedRun>(warm.lane, {
      defaultSpec: warm.defaultSpec,
      current: () => workspaces.current?.(undefined),
      onChange: listener => workspaces.onChange?.(listener),
      start: (id, spec, signal) => this.#startAhead(id, spec, signal),
      identity: prepared => prepared.workspace.identity,
      agent: prepared => prepared.agent!,
      release: prepared => this.#release(prepared),
    })
  }

  async execute (request: ExecuteRequest, hooks: ExecuteHooks, signal: AbortSignal): Promise<ExecuteOutcome> {
    const outcome = await this.#startAndRun(request, hooks, signal)
    // A run that failed on a full disk says so, with the free space, whatever git or the CLI said.
    const disk = this.#options.disk
    if (disk === undefined || outcome.status !== 'failed' || outcome.error === null || !DISK_FAILURES.has(outcome.error.code)) return outcome
    const full = await disk.full(outcome.error.message)
    return full === undefined ? outcome : { ...outcome, error: { code: 'workspace_full', message: full } }
  }

  async #startAndRun (request: ExecuteRequest, hooks: ExecuteHooks, signal: AbortSignal): Promise<ExecuteOutcome> {
    hooks.onPhase?.('preparing')
    // While this run's CLI starts, the pool starts none (and stops the one it may be starting).
    const starting = this.#lane?.runStarting()
    try {
      return await this.#execute(request, hooks, signal, () => starting?.())
    } finally {
      starting?.()
    }
  }

  async #execute (request: ExecuteRequest, hooks: ExecuteHooks, signal: AbortSignal, started: () => void): Promise<ExecuteOutcome> {
    const taken = await this.#takeWarm(request, signal) ?? await this.#prepareCold(request, signal)
    if (!('paths' in taken)) return taken
    let prepared: PreparedRun | undefined = taken

    let agentPid: number | undefined
    const spawned = (pid: number): void => {
      agentPid = pid
      this.#live.add(pid)
      hooks.onSpawn?.(pid)
    }
    try {
      if (signal.aborted) return stopped(signal)
      await hooks.beforeSpawn?.()
      if (prepared.agent !== undefined && !prepared.agent.alive) {
        // The warm CLI died after the run took it (while its spawn was claimed), before it was
        // given the prompt: the run starts cold, as it would have without warm starts.
        const dead = prepared
        prepared = undefined
        await this.#release(dead)
        const cold = await this.#prepareCold(request, signal)
        if (!('paths' in cold)) return cold
        prepared = cold
      }
      const { workspace } = prepared
      hooks.onPhase?.('running')
      // A continuation resumes the earlier run's session; it always starts cold (see #takeWarm).
      const spec = request.resume === undefined ? request.spec : { ...request.spec, resume: request.resume.session_id }
      const agent = prepared.agent ??= this.#start(prepared, spec, spawned)
      if (agent.pid !== undefined && agentPid === undefined) spawned(agent.pid)
      const outcome = await agent.run(spec, {
        signal,
        onEvent: event => {
          // The CLI has read its prompt: its start-up is over.
          if (event.type === 'init') started()
          hooks.onEvent?.(event)
        },
      })
      started()
      if (agentPid !== undefined) this.#live.delete(agentPid)
      await this.#options.records.forget(prepared.id)
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
          ? { ...outcome, ...stoppedBy(signal), changes }
          : changes?.push != null && 'error' in changes.push
            ? { ...outcome, status: 'failed', error: { code: 'push_failed', message: `the agent finished but its changes could not be pushed: ${changes.push.error}` }, changes }
            : { ...outcome, changes }
      } catch (error) {
        tree = { reason: 'its workspace could not be collected' }
        if (!abortedBefore && signal.aborted) {
          // Cancelled or timed out while collecting: the job ends so, with the agent's result and exit.
          ended = { ...outcome, ...stoppedBy(signal), changes: null }
        } else {
          this.#options.onError?.(error, 'collecting the workspace changes')
          ended = outcome.status !== 'completed'
            ? { ...outcome, changes: null }
            : { ...outcome, status: 'failed', error: { code: 'workspace_error', message: `the agent finished but its changes could not be collected: ${(error as Error).message}` }, changes: null }
        }
      }
      if (request.keep !== true) return { ...ended, kept: null }
      const kept = await keepForContinuation({ outcome, tree, configDir: prepared.paths.config, cwd: this.#options.sandbox.view(prepared.paths).workspace, maxBytes: maxResumeBytes })
        .catch((error: unknown): Kept => {
          this.#options.onError?.(error, 'keeping what continuing the run needs')
          return { state: { resumable: false, reason: `what continuing it needs could not be kept: ${(error as Error).message}` }, artifacts: [] }
        })
      return { ...ended, kept }
    } finally {
      if (agentPid !== undefined) this.#live.delete(agentPid)
      if (prepared !== undefined) await this.#release(prepared)
    }
  }

  async #loadResume (resume: ResumeFrom): Promise<Awaited<ReturnType<typeof loadResume>>> {
    const read = this.#options.artifacts
    if (read === undefined) throw new ResumeError('this executor cannot continue runs: it reads no artifacts')
    return loadResume(resume, read)
  }

  /** A run's own folders and workspace, made now; or how the run ends when they cannot be. */
  async #prepareCold (request: ExecuteRequest, signal: AbortSignal): Promise<PreparedRun | ExecuteOutcome> {
    if (signal.aborted) return stopped(signal)
    try {
      return await this.#prepare(request.id, request.ref, signal, request.resume)
    } catch (error) {
      if (signal.aborted) return stopped(signal)
      const failure: RunError = error instanceof WorkspaceError || error instanceof ResumeError
        ? { code: error.code, message: error.message }
        : { code: 'workspace_error', message: `could not prepare the workspace: ${(error as Error).message}` }
      return { status: 'failed', error: failure, result: null, exit: null, output: emptyOutput(), init: null, changes: null, kept: null }
    }
  }

  /**
   * A warm CLI for this run, if one waits with the same argv in a workspace like the one the run
   * would get (BASE_REF's current commit, or an empty folder) and answers; else a cold start.
   */
  async #takeWarm (request: ExecuteRequest, signal: AbortSignal): Promise<PreparedRun | undefined> {
    if (this.#lane === undefined) return undefined
    const plain = Object.entries(request).every(([key, value]) => value === undefined || WARM_REQUEST_FIELDS.has(key))
    const identity = plain ? this.#options.workspaces.current?.(request.ref) : undefined
    return this.#lane.take(request.spec, identity, signal)
  }

  /**
   * Makes a run's configuration folder, HOME, /tmp, inputs and workspace, with what a continuation
   * restores (its tree, its session transcript) in them before any CLI starts; on failure, removes
   * what it made.
   */
  async #prepare (id: string, ref: string | undefined, signal: AbortSignal, resume?: ResumeFrom): Promise<PreparedRun> {
    const { folders, template } = this.#options.configs
    const configDir = folders.configPathFor(id)
    const runDir = folders.runPathFor(id)
    let workspace: Workspace | undefined
    try {
      await mkdir(configDir, { mode: 0o700 })
      if (template !== undefined) await cp(template, configDir, { recursive: true })
      await mkdir(runDir, { mode: 0o700 })
      for (const name of ['home', 'tmp', 'inputs']) await mkdir(join(runDir, name), { mode: 0o700 })
      const restored = resume === undefined ? undefined : await this.#loadResume(resume)
      workspace = await this.#options.workspaces.prepare(id, {
        ref,
        signal,
        restore: restored === undefined || resume?.tree == null ? undefined : { tree: resume.tree, bundle: restored.bundle },
      })
      const paths: RunPaths = { workspace: workspace.path, config: configDir, home: join(runDir, 'home'), tmp: join(runDir, 'tmp'), inputs: join(runDir, 'inputs') }
      if (resume !== undefined && restored !== undefined) await restoreTranscript(resume, restored.transcript, configDir, this.#options.sandbox.view(paths).workspace)
      return { id, paths, workspace, agent: undefined }
    } catch (error) {
      await Promise.all([workspace?.dispose(), folders.discard(configDir), folders.discard(runDir)])
      throw error
    }
  }

  #start (prepared: PreparedRun, spec: AgentSpec, onSpawn?: (pid: number) => void): StartedAgent {
    return startAgent(spec, {
      bin: this.#options.bin,
      sandbox: this.#options.sandbox,
      paths: prepared.paths,
      mounts: prepared.workspace.mounts,
      env: this.#options.env,
      killGraceMs: this.#options.killGraceMs,
      maxOutputBytes: this.#options.maxOutputBytes,
      onSpawn: pid => {
        this.#options.records.record(prepared.id, pid)
        onSpawn?.(pid)
      },
    })
  }

  /** A warm start: everything a cold run of `spec` at the default ref makes, before the run exists. */
  async #startAhead (id: string, spec: AgentSpec, signal: AbortSignal): Promise<PreparedRun> {
    const prepared = await this.#prepare(id, undefined, signal)
    if (signal.aborted) {
      await this.#release(prepared)
      throw signal.reason
    }
    prepared.agent = this.#start(prepared, spec)
    return prepared
  }

  /** Stops its CLI if it still runs (it was never given a prompt), then removes its folders and workspace. */
  async #release (prepared: PreparedRun): Promise<void> {
    const { agent } = prepared
    if (agent !== undefined) {
      agent.stop()
      await agent.exited
      await this.#options.records.forget(prepared.id)
    }
    const { folders } = this.#options.configs
    await prepared.workspace.dispose()
    await Promise.all([folders.discard(folders.configPathFor(prepared.id)), folders.discard(folders.runPathFor(prepared.id))])
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
  return { result: null, exit: null, output: emptyOutput(), init: null, changes: null, kept: null, ...stoppedBy(signal) }
}
