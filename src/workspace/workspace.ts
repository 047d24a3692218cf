import { randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Mount } from '../agent/sandbox.ts'

/** What a run changed in its git workspace (see git-workspaces.ts). */
export interface WorkspaceChanges {
  /** Where the workspace started: a commit of BASE_REPO, or the final tree of the job it continues. */
  base_commit: string
  /** The commit of BASE_REPO a chain of continuations started from (`base_commit` for a job that continues none). */
  original_base_commit: string
  head_commit: string
  commits: Array<{ sha: string, subject: string }>
  files: Array<{ path: string, status: string, old_path?: string }>
  stats: { files_changed: number, insertions: number, deletions: number }
  diff: string
  diff_truncated: boolean
  push: { branch: string, commit: string, remote: string } | { error: string } | null
}

/** A run's final tree as a continuation restores it (see GitWorkspaces): plain JSON, kept in the run's record. */
export interface KeptTree {
  /** The commit of BASE_REPO the chain of continuations started from: what the bundle builds on. */
  base_commit: string
  /** The agent's HEAD when it ended: the continuation's HEAD. */
  head_commit: string
  /** The whole tree it left: `head_commit`, or a commit on top of it of what it left uncommitted. */
  final_commit: string
  /** Size of the git bundle of the commits BASE_REPO lacks (artifact `tree`); 0: there are none. */
  bundle_bytes: number
}

export interface Collected {
  /** What the run changed, or null where there is nothing to compare (a plain folder). */
  changes: WorkspaceChanges | null
  /** With `keep`: the final tree, with its bundle, or why it could not be kept; undefined: nothing to keep (a plain folder). */
  kept?: { tree: KeptTree, bundle: Buffer | undefined } | { reason: string } | undefined
}

export interface Workspace {
  /** The agent's working directory. */
  readonly path: string
  /** Host paths the agent must be able to read, read-only (e.g. the base's objects). */
  readonly mounts?: readonly Mount[]
  /**
   * What it was made as, when made for the default ref (BASE_REF's commit, or an empty folder):
   * a workspace made ahead of time stands in for a run's only if this is what `current` says now.
   */
  readonly identity?: string | undefined
  collect (options: CollectOptions): Promise<Collected>
  /** Removes the workspace. Safe to call more than once; never throws. */
  dispose (): Promise<void>
}

export interface CollectOptions {
  /** Commit what the agent left and push it (jobs with `push: true` whose agent completed). */
  push: boolean
  jobId: string
  signal: AbortSignal
  /** Keep the final tree for a continuation, as a git bundle of at most `maxBytes`. */
  keep?: { maxBytes: number } | undefined
}

export interface PrepareOptions {
  ref?: string | undefined
  signal: AbortSignal
  /** Start where an earlier run left off (a continuation), instead of at `ref`. */
  restore?: { tree: KeptTree, bundle: Buffer | undefined } | undefined
}

/** What GET /health says about workspaces; the `git` fields only with BASE_REPO. */
export interface WorkspaceInfo {
  kind: 'git' | 'directory'
  repo?: string
  state?: 'initialising' | 'ready' | 'error'
  ref?: string | null
  commit?: string | null
  git_crypt?: 'unlocked' | 'no key'
  fetches?: number
  last_fetch_at?: string | null
  last_error?: string | null
}

/** Makes one isolated working directory per run. */
export interface WorkspaceProvider {
  /** Resolves when the provider can make workspaces (a git base is cloned); never rejects. */
  readonly ready: Promise<void>
  prepare (id: string, options: PrepareOptions): Promise<Workspace>
  /**
   * What `prepare(id, { ref })` would make now, when a workspace made ahead of time (for the
   * default ref) could stand in for it: its `identity`. Undefined when none can: another ref, a
   * base not ready. A provider without it has no warm workspaces.
   */
  current? (ref: string | undefined): string | undefined
  /** Calls `listener` whenever what `current` says may have changed (the base was fetched). */
  onChange? (listener: () => void): void
  /** Health facts about the provider (e.g. the base repository's state), shown by GET /health. */
  describe (): WorkspaceInfo
  /** Waits for background removals; stops timers. */
  close (): Promise<void>
}

/** Thrown when a workspace cannot be made; the job fails with `code`. */
export type WorkspaceErrorCode = 'workspace_error' | 'workspace_full' | 'ref_not_found' | 'fetch_failed'

export class WorkspaceError extends Error {
  override name = 'WorkspaceError'
  readonly code: WorkspaceErrorCode
  constructor (code: WorkspaceErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}

/**
 * The folders under WORKSPACE_ROOT. A finished workspace is renamed into `trash/` at once (the
 * job's folder is gone the moment the job ends) and deleted in the background, off the job's
 * critical path: removing a large checkout takes hundreds of milliseconds. Whatever permissions
 * the agent left (a `chmod 555` tree), removal makes the folders writable and tries again; what
 * still fails is logged and retried later. Nothing here throws once the layout exists.
 */
export class WorkspaceFolders {
  readonly root: string
  readonly jobs: string
  /** A Claude Code configuration folder per run (CLAUDE_CONFIG_DIR): see AgentExecutor. */
  readonly configs: string
  /** Per run: its HOME, /tmp and inputs folder (see agent/sandbox.ts). */
  readonly runs: string
  /** Per run: the git directory its changes are collected with (see changes.ts). */
  readonly collect: string
  /** Records of the agent processes running (see agent/process-records.ts). */
  readonly pids: string
  /** What every sandbox shares (its passwd and group). */
  readonly sandbox: string
  readonly trash: string
  readonly #pending = new Set<Promise<void>>()
  readonly #onError: (error: unknown, context: string) => void
  #retry: NodeJS.Timeout | undefined
  #closed = false

  constructor (root: string, options: { onError?: (error: unknown, context: string) => void } = {}) {
    this.root = root
    this.jobs = join(root, 'jobs')
    this.configs = join(root, 'claude-config')
    this.runs = join(root, 'runs')
    this.collect = join(root, 'collect')
    this.pids = join(root, 'pids')
    this.sandbox = join(root, 'sandbox')
    this.trash = join(root, 'trash')
    this.#onError = options.onError ?? (() => {})
  }

  /**
   * Creates the layout (which throws: without it nothing can run) and removes what a crashed
   * predecessor left (which never does); returns the workspaces removed.
   */
  async init (): Promise<string[]> {
    for (const dir of [this.jobs, this.configs, this.runs, this.collect, this.trash]) await mkdir(dir, { recursive: true, mode: 0o700 })
    for (const dir of [this.configs, this.runs, this.collect]) {
      const names = await readdir(dir).catch(() => [])
      await Promise.all(names.map(name => this.#takeAway(join(dir, name))))
    }
    const leftovers = await readdir(this.jobs).catch(() => [])
    await Promise.all(leftovers.map(name => this.#takeAway(join(this.jobs, name))))
    await this.#emptyTrash()
    return leftovers
  }

  pathFor (id: string): string {
    return join(this.jobs, id)
  }

  configPathFor (id: string): string {
    return join(this.configs, id)
  }

  runPathFor (id: string): string {
    return join(this.runs, id)
  }

  collectPathFor (id: string): string {
    return join(this.collect, id)
  }

  /** Takes `path` away at once and deletes it in the background. Never throws. */
  async discard (path: string): Promise<void> {
    const target = await this.#takeAway(path)
    if (target === undefined) return
    const removal = removeTree(target)
      .catch((error: unknown) => { this.#failed(error, target) })
      .finally(() => { this.#pending.delete(removal) })
    this.#pending.add(removal)
  }

  async drain (): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending)
  }

  /** Drains and stops retrying. */
  async close (): Promise<void> {
    this.#closed = true
    clearTimeout(this.#retry)
    await this.drain()
  }

  /** Renames `path` into the trash; returns where it went (undefined: it was not there, or was deleted in place). */
  async #takeAway (path: string): Promise<string | undefined> {
    const target = join(this.trash, `${Date.now()}-${randomBytes(4).toString('hex')}`)
    try {
      await rename(path, target)
      return target
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      // Could not move it (another filesystem?): delete it in place instead.
      await removeTree(path).catch((failure: unknown) => { this.#failed(failure, path) })
      return undefined
    }
  }

  async #emptyTrash (): Promise<void> {
    const names = await readdir(this.trash).catch(() => [])
    await Promise.all(names.map(name => removeTree(join(this.trash, name)).catch((error: unknown) => { this.#failed(error, join(this.trash, name)) })))
  }

  #failed (error: unknown, path: string): void {
    this.#onError(error, `could not remove ${path}; retrying in ${RETRY_MS / 1000}s`)
    if (this.#closed || this.#retry !== undefined) return
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      const sweep = this.#emptyTrash().finally(() => { this.#pending.delete(sweep) })
      this.#pending.add(sweep)
    }, RETRY_MS)
    this.#retry.unref()
  }
}

const RETRY_MS = 60_000

/** `rm -rf`, and if the agent left folders it may not write to, makes them writable and tries again. */
export async function removeTree (path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true, maxRetries: 2 })
  } catch {
    await makeWritable(path)
    await rm(path, { recursive: true, force: true, maxRetries: 2 })
  }
}

async function makeWritable (path: string): Promise<void> {
  const info = await lstat(path).catch(() => undefined)
  // lstat: a symlink the agent left is removed, never followed.
  if (info === undefined || !info.isDirectory()) return
  await chmod(path, 0o700).catch(() => {})
  const names = await readdir(path).catch(() => [])
  for (const name of names) await makeWritable(join(path, name))
}

const EMPTY = 'empty folder'

/** A fresh, empty folder per run: used when there is no BASE_REPO, and for chat completions. */
export class DirectoryWorkspaces implements WorkspaceProvider {
  readonly #folders: WorkspaceFolders

  readonly ready = Promise.resolve()

  constructor (folders: WorkspaceFolders) {
    this.#folders = folders
  }

  async prepare (id: string, options?: PrepareOptions): Promise<Workspace> {
    if (options?.restore !== undefined) {
      throw new WorkspaceError('workspace_error', 'this job continues one that worked on a git repository, but the service has no BASE_REPO now')
    }
    const path = this.#folders.pathFor(id)
    try {
      await mkdir(path, { mode: 0o700 })
    } catch (error) {
      throw new WorkspaceError('workspace_error', `could not create the workspace ${path}: ${(error as Error).message}`, { cause: error })
    }
    let disposed: Promise<void> | undefined
    return {
      path,
      identity: EMPTY,
      collect: async () => ({ changes: null }),
      dispose: () => (disposed ??= this.#folders.discard(path)),
    }
  }

  /** Every workspace is the same empty folder: any made ahead of time will do. */
  current (): string {
    return EMPTY
  }

  onChange (): void {}

  readonly #info: WorkspaceInfo = { kind: 'directory' }

  describe (): WorkspaceInfo {
    return this.#info
  }

  async close (): Promise<void> {
    await this.#folders.drain()
  }
}
