import { randomBytes } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { chmod, copyFile, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { isAbsolute, join, resolve } from 'node:path'
import type { Logger } from 'pino'
import { INSIDE, type Mount } from '../agent/sandbox.ts'
import { redactCredentials } from '../redact.ts'
import { collectChanges, unbundle } from './changes.ts'
import { git } from './git.ts'
import { isCommitId } from './refs.ts'
import { RwLock } from './rw-lock.ts'
import { WorkspaceError, type Collected, type CollectOptions, type PrepareOptions, type Workspace, type WorkspaceChanges, type WorkspaceFolders, type WorkspaceInfo, type WorkspaceProvider } from './workspace.ts'

export interface GitWorkspacesOptions {
  folders: WorkspaceFolders
  /** BASE_REPO: a URL or a local path. */
  repo: string
  /** BASE_REF; default: the remote's HEAD. */
  ref?: string | undefined
  /** BASE_REFRESH_SECONDS in ms; 0 = fetch only at start-up and on demand. */
  refreshMs: number
  /** GIT_CRYPT_KEY: an exported git-crypt key. */
  gitCryptKey?: string | undefined
  maxDiffBytes: number
  /** Agents run sandboxed (SANDBOX=bwrap): they see the base's objects, read-only, at INSIDE.baseObjects. */
  sandboxed: boolean
  logger: Logger
  now: () => number
}

interface BaseStatus {
  state: NonNullable<WorkspaceInfo['state']>
  /** BASE_REF, or the remote's default branch once known. */
  defaultRef?: string | undefined
  defaultCommit?: string | undefined
  hasKey: boolean
  lastFetchAt?: number | undefined
  lastError?: string | undefined
  fetches: number
}
interface Target { kind: 'branch' | 'tag' | 'commit', commit: string }

const PUSH_DISABLED = '/dev/null/push-disabled-by-claude-runner'
const AGENT_IDENTITY = ['user.name=Claude Code (claude-runner)', 'user.email=claude-runner@localhost']
const GIT_CRYPT_CONFIG = [
  'filter.git-crypt.smudge="git-crypt" smudge',
  'filter.git-crypt.clean="git-crypt" clean',
  'filter.git-crypt.required=true',
  'diff.git-crypt.textconv="git-crypt" diff',
]
/** Parallel checkout only pays for itself on large trees (measured: slower at 200 files, 1.8x faster at 5,000). */
const PARALLEL_CHECKOUT_FILES = 1000
/** Past this many packs in the base, a fetch is followed by a geometric repack. */
const MAX_PACKS = 16

/**
 * Per-job git workspaces from a warm base repository.
 *
 * The base is a bare clone of BASE_REPO under WORKSPACE_ROOT/base.git, kept fresh by `git fetch`;
 * even from a local BASE_REPO it is a copy (`--no-local`), never hardlinks to the operator's files.
 * A job's workspace is a `git clone --shared` of it: the clone borrows the base's objects through
 * an alternate, and the agent sees them through a read-only bind, so no object file it can write
 * is shared with the base (a `--local` clone hardlinks them: an agent's `chmod u+w` and an
 * overwrite would change the base's). The base therefore never drops an object (no gc, no prune;
 * repacks keep everything). The clone's template brings the git-crypt key before any file is
 * checked out. Whatever changes the base (clone, fetch, repack) holds the write side of one lock;
 * resolving a workspace's ref, cloning and pushing hold the read side; a commit-id checkout and
 * the agent's run hold nothing. (`git worktree` is never used: git-crypt breaks on worktrees,
 * and they share the base's index locks.)
 */
export class GitWorkspaces implements WorkspaceProvider {
  readonly #options: GitWorkspacesOptions
  readonly #lock = new RwLock()
  readonly #repo: string
  readonly #base: string
  readonly #template: string
  readonly #checkoutWorkers = String(Math.max(1, Math.min(availableParallelism(), 8)))
  /** The base's state, replaced (never changed in place) by #update, so describe() can keep its answer. */
  #status: Readonly<BaseStatus> = { state: 'initialising', hasKey: false, fetches: 0 }
  #described: WorkspaceInfo | undefined
  #ready: Promise<void>
  #refreshing: Promise<void> | undefined
  readonly #resolved = new Map<string, Target>()
  readonly #gitCryptCommits = new Map<string, boolean>()
  readonly #listeners: Array<() => void> = []
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor (options: GitWorkspacesOptions) {
    this.#options = options
    this.#repo = isLocalPath(options.repo) ? resolve(options.repo) : options.repo
    this.#base = join(options.folders.root, 'base.git')
    this.#template = join(options.folders.root, 'template')
    this.#ready = this.#initialise()
  }

  /** Resolves once the base is ready (or has failed; see `describe()`). */
  get ready (): Promise<void> {
    return this.#ready
  }

  /** The same object until the base's state changes: GET /health serialises it once per change. */
  describe (): WorkspaceInfo {
    const status = this.#status
    this.#described ??= {
      kind: 'git',
      repo: redactCredentials(this.#repo),
      state: status.state,
      ref: status.defaultRef ?? null,
      commit: status.defaultCommit ?? null,
      git_crypt: status.hasKey ? 'unlocked' : 'no key',
      fetches: status.fetches,
      last_fetch_at: status.lastFetchAt === undefined ? null : new Date(status.lastFetchAt).toISOString(),
      last_error: status.lastError ?? null,
    }
    return this.#described
  }

  #update (change: Partial<BaseStatus>): void {
    const before = this.current(undefined)
    this.#status = { ...this.#status, ...change }
    this.#described = undefined
    if (this.current(undefined) !== before) {
      for (const listener of this.#listeners) listener()
    }
  }

  /**
   * A job at BASE_REF (named or not) gets a clone of it at its commit as of the last fetch: one
   * made ahead of time is the same while the base has not moved.
   */
  current (ref: string | undefined): string | undefined {
    const { state, defaultRef, defaultCommit } = this.#status
    if (state !== 'ready' || defaultRef === undefined || defaultCommit === undefined) return undefined
    if (ref !== undefined && ref !== defaultRef) return undefined
    return baseIdentity(defaultRef, defaultCommit)
  }

  onChange (listener: () => void): void {
    this.#listeners.push(listener)
  }

  async prepare (id: string, { ref, signal, restore }: PrepareOptions): Promise<Workspace> {
    await this.#ensureReady()
    // The default is BASE_REF as of the last fetch (BASE_REFRESH_SECONDS keeps it fresh). A
    // continuation starts from the commit its chain started from, then from where it left off.
    const name = restore?.tree.base_commit ?? ref ?? this.#status.defaultRef!
    const checkout = restore === undefined
    const path = this.#options.folders.pathFor(id)
    const gitDir = this.#options.folders.collectPathFor(id)
    try {
      let target = await this.#cloneAt(name, path, signal, checkout)
      // Why the ref could not be looked for: a fetch that failed is said, never hidden behind "not found".
      let fetchError: unknown
      if (target === undefined) {
        await this.refresh().catch(error => {
          fetchError = error
          this.#options.logger.warn({ err: error }, 'on-demand fetch failed')
        })
        target = await this.#cloneAt(name, path, signal, checkout)
      }
      if (target === undefined && isCommitId(name) && fetchError === undefined) {
        // A commit no branch points at (yet): ask the remote for it by id (a remote may refuse
        // fetches by id: then it is simply not found).
        await this.#lock.write(() => git(this.#base, ['fetch', '--quiet', 'origin', name])).catch(() => {})
        this.#resolved.clear()
        target = await this.#cloneAt(name, path, signal, checkout)
      }
      if (target === undefined && fetchError !== undefined) {
        throw new WorkspaceError('fetch_failed', `ref ${JSON.stringify(name)} is not in the base repository, and fetching BASE_REPO to look for it failed: ${(fetchError as Error).message}`, { cause: fetchError })
      }
      if (target === undefined) {
        if (restore !== undefined) throw new WorkspaceError('workspace_error', `the job this one continues started from commit ${name}, which BASE_REPO no longer has (checked after fetching)`)
        throw new WorkspaceError('ref_not_found', `ref ${JSON.stringify(name)} is not a branch, tag or commit of BASE_REPO (checked after fetching)`)
      }
      const continued = restore?.bundle !== undefined
      if (restore !== undefined) await this.#restore(path, gitDir, restore, signal)
      if (this.#options.sandboxed) {
        // Inside the sandbox the objects it borrows are at fixed paths; the clone's alternates say so.
        await writeFile(join(path, '.git', 'objects', 'info', 'alternates'), `${INSIDE.baseObjects}\n${continued ? `${INSIDE.continuedObjects}\n` : ''}`)
      }
      // A restored workspace is a continuation's own: never one a warm start could stand in for.
      return this.#workspace(id, path, restore?.tree.final_commit ?? target.commit, target.commit, continued, restore === undefined && name === this.#status.defaultRef ? baseIdentity(name, target.commit) : undefined)
    } catch (error) {
      await Promise.all([this.#options.folders.discard(path), this.#options.folders.discard(gitDir)])
      if (signal.aborted || error instanceof WorkspaceError) throw error
      throw new WorkspaceError('workspace_error', `could not create the workspace: ${(error as Error).message}`, { cause: error })
    }
  }

  /**
   * Resolves `name` and clones the base at it, both under the read lock so no fetch can move the
   * ref in between. A branch or tag is checked out by the clone itself (one git process); a commit
   * id needs a second one. The git-crypt key arrives through the clone's template, before any
   * file is checked out. Returns undefined when the base has no such ref.
   */
  async #cloneAt (name: string, path: string, signal: AbortSignal, checkout: boolean): Promise<Target | undefined> {
    return this.#lock.read(async () => {
      const target = await this.#resolve(name)
      if (target === undefined) return undefined
      if (!this.#status.hasKey && await this.#usesGitCrypt(target.commit)) {
        throw new WorkspaceError('workspace_error', 'BASE_REPO uses git-crypt at this commit but the service has no key: set GIT_CRYPT_KEY, or point BASE_REPO at an unlocked clone')
      }
      await git(this.#options.folders.jobs, [
        '-c', `checkout.workers=${this.#checkoutWorkers}`,
        '-c', `checkout.thresholdForParallelism=${PARALLEL_CHECKOUT_FILES}`,
        'clone', '--shared', '--quiet', `--template=${this.#template}`,
        ...(target.kind === 'commit' || !checkout ? ['--no-checkout'] : [`--branch=${name}`]),
        '-c', `remote.origin.pushurl=${PUSH_DISABLED}`,
        ...AGENT_IDENTITY.flatMap(entry => ['-c', entry]),
        ...(this.#status.hasKey ? GIT_CRYPT_CONFIG : ['filter.git-crypt.required=true']).flatMap(entry => ['-c', entry]),
        '--', this.#base, path,
      ], { signal, trustedConfig: true })
      return target
    }).then(async target => {
      if (target?.kind === 'commit' && checkout) await this.#checkout(path, target.commit, signal)
      return target
    })
  }

  async #checkout (path: string, commit: string, signal: AbortSignal): Promise<void> {
    await git(path, ['-c', `checkout.workers=${this.#checkoutWorkers}`, '-c', `checkout.thresholdForParallelism=${PARALLEL_CHECKOUT_FILES}`, 'checkout', '--quiet', '--detach', commit], { signal, trustedConfig: this.#status.hasKey })
  }

  /**
   * Makes a fresh clone look as the continued run left its workspace: HEAD at its HEAD (detached,
   * like every workspace), and what it left uncommitted uncommitted again. The objects the base
   * lacks come from the run's bundle, unpacked into the service's git directory for this run and
   * borrowed from there (read-only inside the sandbox). The agent has not run yet: the clone's
   * configuration is still the service's own.
   */
  async #restore (path: string, gitDir: string, { tree, bundle }: NonNullable<PrepareOptions['restore']>, signal: AbortSignal): Promise<void> {
    const baseObjects = join(this.#base, 'objects')
    if (bundle !== undefined) {
      await unbundle(gitDir, baseObjects, bundle, signal)
      await writeFile(join(path, '.git', 'objects', 'info', 'alternates'), `${baseObjects}\n${join(gitDir, 'objects')}\n`)
    }
    await this.#checkout(path, tree.final_commit, signal)
    if (tree.head_commit !== tree.final_commit) await git(path, ['reset', '--quiet', tree.head_commit], { signal, trustedConfig: this.#status.hasKey })
  }

  #workspace (id: string, path: string, commit: string, originalBase: string, continued: boolean, identity: string | undefined): Workspace {
    let disposed: Promise<void> | undefined
    const gitDir = this.#options.folders.collectPathFor(id)
    const mounts: Mount[] = this.#options.sandboxed ? [{ source: join(this.#base, 'objects'), target: INSIDE.baseObjects }] : []
    if (this.#options.sandboxed && continued) mounts.push({ source: join(gitDir, 'objects'), target: INSIDE.continuedObjects })
    return {
      path,
      mounts,
      identity,
      collect: options => this.#collect(path, gitDir, commit, originalBase, options),
      dispose: () => (disposed ??= Promise.all([this.#options.folders.discard(path), this.#options.folders.discard(gitDir)]).then(() => {})),
    }
  }

  /** Fetches BASE_REPO into the base; concurrent callers share one fetch. */
  refresh (): Promise<void> {
    this.#refreshing ??= this.#lock.write(() => this.#fetch()).finally(() => { this.#refreshing = undefined })
    return this.#refreshing
  }

  async close (): Promise<void> {
    this.#closed = true
    clearInterval(this.#timer)
    await this.#ready.catch(() => {})
    clearInterval(this.#timer)
    await this.#refreshing?.catch(() => {})
    await this.#options.folders.drain()
  }

  async #initialise (): Promise<void> {
    try {
      await this.#lock.write(async () => {
        await this.#makeBase()
        await this.#takeKey()
        await this.#fetch()
      })
      this.#update({ state: 'ready' })
      const { hasKey, defaultCommit } = this.#status
      if (hasKey && defaultCommit !== undefined && await this.#usesGitCrypt(defaultCommit)) {
        // Prove the key opens the repository now, not in the first job.
        const probe = await this.prepare(`warmup-${randomBytes(4).toString('hex')}`, { signal: new AbortController().signal })
        await probe.dispose()
      }
      this.#options.logger.info(this.describe(), 'base repository ready')
    } catch (error) {
      this.#update({ state: 'error', lastError: redactCredentials((error as Error).message) })
      this.#options.logger.error({ err: error, repo: redactCredentials(this.#repo) }, 'base repository failed to initialise')
    }
    // One timer for the provider's life, however many times a broken base is mended.
    if (this.#options.refreshMs > 0 && !this.#closed && this.#timer === undefined) {
      this.#timer = setInterval(() => {
        this.refresh().catch(() => {})
      }, this.#options.refreshMs)
      this.#timer.unref()
    }
  }

  /** A job that finds the base broken tries once to mend it before failing. */
  async #ensureReady (): Promise<void> {
    if (this.#status.state !== 'ready') await this.#ready
    if (this.#status.state === 'error') {
      this.#update({ state: 'initialising' })
      this.#ready = this.#initialise()
      await this.#ready
    }
    if (this.#status.state !== 'ready') {
      throw new WorkspaceError('workspace_error', `the base repository is not available: ${this.#status.lastError ?? 'unknown error'}`)
    }
  }

  async #makeBase (): Promise<void> {
    if (await exists(this.#base)) {
      const url = await git(this.#base, ['config', '--get', 'remote.origin.url']).catch(() => '')
      if (url.trim() === this.#repo) return
      this.#options.logger.warn({ repo: redactCredentials(this.#repo) }, 'the base repository under WORKSPACE_ROOT is of another BASE_REPO: cloning anew')
      await rm(this.#base, { recursive: true, force: true })
    }
    const partial = `${this.#base}.partial`
    await rm(partial, { recursive: true, force: true })
    // --no-local: a copy, even of a local BASE_REPO (a local clone hardlinks the operator's object
    // files). gc.auto=0: nothing may repack or prune behind the lock's back, and workspaces borrow
    // the base's objects, so none may ever go. fetch.unpackLimit=1: fetched objects stay in packs.
    await git(this.#options.folders.root, ['clone', '--bare', '--no-local', '--quiet', '-c', 'gc.auto=0', '-c', 'gc.pruneExpire=never', '-c', 'fetch.unpackLimit=1', '--', this.#repo, partial])
    await git(partial, ['config', 'remote.origin.fetch', '+refs/heads/*:refs/heads/*'])
    await rm(this.#base, { recursive: true, force: true })
    await rename(partial, this.#base)
  }

  async #takeKey (): Promise<void> {
    const candidates = this.#options.gitCryptKey !== undefined
      ? [this.#options.gitCryptKey]
      : isLocalPath(this.#repo)
        ? [join(this.#repo, '.git', 'git-crypt', 'keys', 'default'), join(this.#repo, 'git-crypt', 'keys', 'default')]
        : []
    // Every workspace is cloned with this template: it holds the git-crypt key (if any) and
    // nothing else (no sample hooks to copy).
    await rm(this.#template, { recursive: true, force: true })
    await mkdir(this.#template, { mode: 0o700 })
    for (const candidate of candidates) {
      if (!await exists(candidate)) continue
      const keys = join(this.#template, 'git-crypt', 'keys')
      await mkdir(keys, { recursive: true, mode: 0o700 })
      await copyFile(candidate, join(keys, 'default'))
      await chmod(join(keys, 'default'), 0o600)
      this.#update({ hasKey: true })
      return
    }
    if (this.#options.gitCryptKey !== undefined) {
      throw new Error(`GIT_CRYPT_KEY ${this.#options.gitCryptKey} does not exist`)
    }
  }

  /** Runs under the write lock. */
  async #fetch (): Promise<void> {
    try {
      await git(this.#base, ['fetch', '--quiet', '--prune', '--tags', 'origin'])
      // Fetched packs are kept as packs (fetch.unpackLimit=1); roll small ones together now and then.
      if (await packCount(this.#base) > MAX_PACKS) await git(this.#base, ['repack', '-d', '-q', '--geometric=2'])
      this.#update({ fetches: this.#status.fetches + 1, lastFetchAt: this.#options.now(), lastError: undefined })
    } catch (error) {
      this.#update({ lastError: redactCredentials((error as Error).message) })
      throw error
    } finally {
      this.#resolved.clear()
    }
    const defaultRef = this.#status.defaultRef ?? this.#options.ref ?? (await git(this.#base, ['symbolic-ref', '--short', 'HEAD'])).trim()
    this.#update({ defaultRef, defaultCommit: (await this.#resolve(defaultRef))?.commit })
  }

  /**
   * A branch, a tag, or a commit id, in that order; undefined when none matches. Answers are kept
   * until the next fetch (the only thing that moves refs in the base).
   */
  async #resolve (name: string): Promise<Target | undefined> {
    const known = this.#resolved.get(name)
    if (known !== undefined) return known
    const refs = await git(this.#base, ['for-each-ref', '--format=%(refname)%00%(objectname)%00%(*objectname)', `refs/heads/${name}`, `refs/tags/${name}`])
    let target: Target | undefined
    for (const kind of ['branch', 'tag'] as const) {
      const wanted = `refs/${kind === 'branch' ? 'heads' : 'tags'}/${name}`
      const line = refs.split('\n').find(entry => entry.startsWith(`${wanted}\0`))
      if (line === undefined) continue
      const [, object, peeled] = line.split('\0')
      target = { kind, commit: peeled !== undefined && peeled !== '' ? peeled : object! }
      break
    }
    if (target === undefined && isCommitId(name)) {
      const commit = (await git(this.#base, ['rev-parse', '--verify', '--quiet', `${name}^{commit}`]).catch(() => '')).trim()
      if (commit !== '') target = { kind: 'commit', commit }
    }
    if (target !== undefined) this.#resolved.set(name, target)
    return target
  }

  /** Whether any .gitattributes at `commit` puts files under git-crypt; a commit never changes, so it is asked once. */
  async #usesGitCrypt (commit: string): Promise<boolean> {
    let uses = this.#gitCryptCommits.get(commit)
    if (uses === undefined) {
      const found = await git(this.#base, ['grep', '-l', '-F', 'filter=git-crypt', commit, '--', ':(glob)**/.gitattributes']).catch(() => '')
      uses = found.trim() !== ''
      if (this.#gitCryptCommits.size > 10_000) this.#gitCryptCommits.clear()
      this.#gitCryptCommits.set(commit, uses)
    }
    return uses
  }

  async #collect (path: string, gitDir: string, baseCommit: string, originalBase: string, { push, jobId, signal, keep }: CollectOptions): Promise<Collected> {
    const { hasKey } = this.#status
    return collectChanges({
      workTree: path,
      gitDir,
      baseObjects: join(this.#base, 'objects'),
      baseCommit,
      originalBase,
      keep,
      jobId,
      signal,
      gitCryptKey: hasKey ? join(this.#template, 'git-crypt', 'keys', 'default') : undefined,
      config: [...AGENT_IDENTITY, ...(hasKey ? GIT_CRYPT_CONFIG : ['filter.git-crypt.required=true']), 'core.fsmonitor=false', 'core.untrackedCache=false', 'core.hooksPath=/dev/null'],
      maxDiffBytes: this.#options.maxDiffBytes,
      push: push ? (dir, head) => this.#push(dir, head, jobId, signal) : undefined,
    })
  }

  /**
   * Pushes a workspace's HEAD as claude-runner/<job> from the git directory changes were collected
   * with: the service's configuration and credentials, never a configuration the agent could have
   * written, and nothing of the agent's enters the base. Under the read lock, so no repack moves
   * the base's objects while they are sent.
   */
  async #push (gitDir: string, head: string, jobId: string, signal: AbortSignal): Promise<NonNullable<WorkspaceChanges['push']>> {
    const branch = `claude-runner/${jobId}`
    try {
      await this.#lock.read(() => git(gitDir, ['push', '--quiet', '--', this.#repo, `${head}:refs/heads/${branch}`], { env: { GIT_DIR: gitDir }, signal }))
      return { branch, commit: head, remote: redactCredentials(this.#repo) }
    } catch (error) {
      return { error: redactCredentials(error instanceof Error ? error.message : String(error)) }
    }
  }
}

async function packCount (repo: string): Promise<number> {
  const names = await readdir(join(repo, 'objects', 'pack')).catch(() => [])
  return names.filter(name => name.endsWith('.pack')).length
}

async function exists (path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false)
}

/** A local path rather than a URL (`scheme://...` or scp-like `user@host:path`). */
function isLocalPath (repo: string): boolean {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(repo)) return false
  if (isAbsolute(repo) || repo.startsWith('.')) return true
  return !/^[^/]+:/.test(repo)
}

/** What `current` and a workspace made at BASE_REF call it: the ref and its commit. */
function baseIdentity (ref: string, commit: string): string {
  return `${ref}@${commit}`
}
