import { randomBytes } from 'node:crypto'
import { mkdir, readdir, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'

/** What a run changed in its git workspace (see git-workspaces.ts). */
export interface WorkspaceChanges {
  base_commit: string
  head_commit: string
  commits: Array<{ sha: string, subject: string }>
  files: Array<{ path: string, status: string, old_path?: string }>
  stats: { files_changed: number, insertions: number, deletions: number }
  diff: string
  diff_truncated: boolean
  push: { branch: string, commit: string, remote: string } | { error: string } | null
}

export interface Workspace {
  /** The agent's working directory. */
  readonly path: string
  /** What the run changed, or null where there is nothing to compare (a plain folder). */
  collect (options: CollectOptions): Promise<WorkspaceChanges | null>
  /** Removes the workspace. Safe to call more than once; never throws. */
  dispose (): Promise<void>
}

export interface CollectOptions {
  /** Commit what the agent left and push it (jobs with `push: true` whose agent completed). */
  push: boolean
  jobId: string
  signal: AbortSignal
}

export interface PrepareOptions {
  ref?: string | undefined
  signal: AbortSignal
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
  /** Health facts about the provider (e.g. the base repository's state), shown by GET /health. */
  describe (): WorkspaceInfo
  /** Waits for background removals; stops timers. */
  close (): Promise<void>
}

/** Thrown when a workspace cannot be made; the job fails with `code`. */
export class WorkspaceError extends Error {
  override name = 'WorkspaceError'
  readonly code: 'workspace_error' | 'ref_not_found'
  constructor (code: 'workspace_error' | 'ref_not_found', message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
  }
}

/**
 * The folders under WORKSPACE_ROOT. A finished workspace is renamed into `trash/` at once (the
 * job's folder is gone the moment the job ends) and deleted in the background, off the job's
 * critical path: removing a large checkout takes hundreds of milliseconds.
 */
export class WorkspaceFolders {
  readonly root: string
  readonly jobs: string
  /** A Claude Code configuration folder per run (CLAUDE_CONFIG_DIR): see AgentExecutor. */
  readonly configs: string
  readonly trash: string
  readonly #pending = new Set<Promise<void>>()

  constructor (root: string) {
    this.root = root
    this.jobs = join(root, 'jobs')
    this.configs = join(root, 'claude-config')
    this.trash = join(root, 'trash')
  }

  /** Creates the layout and removes what a crashed predecessor left; returns the workspaces removed. */
  async init (): Promise<string[]> {
    for (const dir of [this.jobs, this.configs, this.trash]) await mkdir(dir, { recursive: true, mode: 0o700 })
    const trash = await readdir(this.trash)
    await Promise.all(trash.map(name => rm(join(this.trash, name), { recursive: true, force: true })))
    const configs = await readdir(this.configs)
    await Promise.all(configs.map(name => this.discard(join(this.configs, name))))
    const leftovers = await readdir(this.jobs)
    await Promise.all(leftovers.map(name => this.discard(join(this.jobs, name))))
    return leftovers
  }

  pathFor (id: string): string {
    return join(this.jobs, id)
  }

  configPathFor (id: string): string {
    return join(this.configs, id)
  }

  /** Takes `path` away at once and deletes it in the background. Never throws. */
  async discard (path: string): Promise<void> {
    const target = join(this.trash, `${Date.now()}-${randomBytes(4).toString('hex')}`)
    try {
      await rename(path, target)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
      // Could not move it (another filesystem?): delete it in place instead.
      await rm(path, { recursive: true, force: true }).catch(() => {})
      return
    }
    const removal = rm(target, { recursive: true, force: true, maxRetries: 3 }).catch(() => {})
      .finally(() => { this.#pending.delete(removal) })
    this.#pending.add(removal)
  }

  async drain (): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending)
  }
}

/** A fresh, empty folder per run: used when there is no BASE_REPO, and for chat completions. */
export class DirectoryWorkspaces implements WorkspaceProvider {
  readonly #folders: WorkspaceFolders

  readonly ready = Promise.resolve()

  constructor (folders: WorkspaceFolders) {
    this.#folders = folders
  }

  async prepare (id: string): Promise<Workspace> {
    const path = this.#folders.pathFor(id)
    try {
      await mkdir(path, { mode: 0o700 })
    } catch (error) {
      throw new WorkspaceError('workspace_error', `could not create the workspace ${path}: ${(error as Error).message}`, { cause: error })
    }
    let disposed: Promise<void> | undefined
    return {
      path,
      collect: async () => null,
      dispose: () => (disposed ??= this.#folders.discard(path)),
    }
  }

  readonly #info: WorkspaceInfo = { kind: 'directory' }

  describe (): WorkspaceInfo {
    return this.#info
  }

  async close (): Promise<void> {
    await this.#folders.drain()
  }
}
