import { copyFile, lstat, mkdir, open, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { git } from './git.ts'
import { readPlainFile } from '../plain-files.ts'
import { refProblem } from './refs.ts'
import type { Collected, KeptTree, WorkspaceChanges } from './workspace.ts'

const MAX_COMMITS = 1000
const COMMIT_ID = /^[0-9a-f]{40}$/

export interface CollectInput {
  /** The workspace: the agent's work tree, and its `.git`, which the agent controlled. */
  workTree: string
  /** A folder of the service's own that becomes the git directory changes are collected with. */
  gitDir: string
  /** The base repository's objects (the agent's clone borrows them: `clone --shared`). */
  baseObjects: string
  /** The commit changes are measured against: where the workspace started. */
  baseCommit: string
  /** The commit of BASE_REPO a chain of continuations started from (`baseCommit` for a job that continues none). */
  originalBase: string
  jobId: string
  signal: AbortSignal
  /** The git-crypt key, when the repository is unlocked: the service's git directory gets its own copy. */
  gitCryptKey?: string | undefined
  maxDiffBytes: number
  /** Git settings of the service's own (git-crypt's filter, or a filter that refuses to run without a key). */
  config: readonly string[]
  /** Set for `push: true`: pushes `head` (everything committed) from the service's git directory. */
  push?: ((gitDir: string, head: string) => Promise<NonNullable<WorkspaceChanges['push']>>) | undefined
  /** Keep the final tree for a continuation: a git bundle of at most `maxBytes`. */
  keep?: { maxBytes: number } | undefined
}

/**
 * What the agent changed against the commit it started from: its commits, every file added,
 * modified, deleted or renamed (committed or not, untracked files too), line counts, and the
 * unified diff up to `maxDiffBytes`. Files under git-crypt show as binary (no decrypted secret
 * reaches the job JSON).
 *
 * Nothing the agent configured runs, here or later: git runs with a git directory the service
 * made (`GIT_DIR`, `GIT_WORK_TREE`), whose configuration is ours and whose only filter is
 * git-crypt's. The agent's objects are reached through an alternate, its HEAD and refs are read
 * as plain files (never through a symlink). So a filter, hook, fsmonitor, textconv, external diff
 * or `core.*` setting planted in the workspace's `.git` is never even read.
 */
export async function collectChanges (input: CollectInput): Promise<Collected> {
  const { workTree, gitDir, baseCommit, signal } = input
  const agentGit = join(workTree, '.git')
  const agentObjects = await agentObjectsOf(agentGit)
  const head = (agentObjects === undefined ? undefined : await readHead(agentGit)) ?? baseCommit
  await makeGitDir(gitDir, [...(agentObjects === undefined ? [] : [agentObjects]), input.baseObjects], input.gitCryptKey)

  const env = { GIT_DIR: gitDir, GIT_WORK_TREE: workTree, GIT_INDEX_FILE: join(gitDir, 'index') }
  const run = (args: string[]) => git(workTree, args, { env, config: input.config, trustedConfig: true, signal })

  // Stage everything in an index of our own built from HEAD: the agent's index (and any
  // assume-unchanged bits it set) is never read.
  await run(['read-tree', head])
  await run(['add', '-A'])
  // What the agent left uncommitted, committed on top of its HEAD: a pushed branch, and the tree a
  // continuation starts from, hold all of its work.
  let final = head
  if (input.push !== undefined || input.keep !== undefined) {
    const [tree, headTree] = await Promise.all([run(['write-tree']), run(['rev-parse', `${head}^{tree}`])])
    if (tree.trim() !== headTree.trim()) {
      final = (await run(['commit-tree', tree.trim(), '-p', head, '-m', `claude-runner: changes of job ${input.jobId}`])).trim()
    }
  }
  const tip = input.push === undefined ? head : final

  const log = await run(['log', `--max-count=${MAX_COMMITS}`, '--reverse', '--format=%H%x00%s%x00', `${baseCommit}..${tip}`])
  const parts = log.split('\0').map(part => part.replace(/^\n/, ''))
  const commits: WorkspaceChanges['commits'] = []
  for (let i = 0; i + 1 < parts.length; i += 2) commits.push({ sha: parts[i]!, subject: parts[i + 1]! })

  const diffArgs = ['diff', '--cached', '--no-ext-diff', '--no-textconv', '-M', '--no-color']
  const { files, stats } = parseRawNumstat(await run([...diffArgs, '--raw', '--numstat', '-z', baseCommit]))
  const diffFile = join(gitDir, 'changes.diff')
  await run([...diffArgs, `--output=${diffFile}`, baseCommit])
  const { text: diff, truncated } = await readCapped(diffFile, input.maxDiffBytes)

  const changes: WorkspaceChanges = {
    base_commit: baseCommit,
    original_base_commit: input.originalBase,
    head_commit: tip,
    commits,
    files,
    stats,
    diff,
    diff_truncated: truncated,
    push: input.push === undefined ? null : await input.push(gitDir, tip),
  }
  const tree: KeptTree = { base_commit: input.originalBase, head_commit: head, final_commit: final, bundle_bytes: 0 }
  return { changes, kept: input.keep === undefined ? undefined : await bundle(tree, gitDir, run, input.keep.maxBytes) }
}

/**
 * The commits a continuation needs beyond what BASE_REPO has: a git bundle of the final tree
 * against the commit the chain started from (none when the base has them all already).
 */
async function bundle (tree: KeptTree, gitDir: string, run: (args: string[]) => Promise<string>, maxBytes: number): Promise<NonNullable<Collected['kept']>> {
  if (tree.final_commit === tree.base_commit) return { tree, bundle: undefined }
  // A bundle is made of refs: one of ours, in the service's git directory (written as git would).
  await mkdir(join(gitDir, 'refs', 'heads'), { recursive: true })
  await writeFile(join(gitDir, 'refs', 'heads', 'final'), `${tree.final_commit}\n`)
  const file = join(gitDir, 'final.bundle')
  try {
    await run(['bundle', 'create', '--quiet', file, 'refs/heads/final', `^${tree.base_commit}`])
  } catch (error) {
    // Refused as empty: the agent went back to an ancestor of the base, which has every object.
    if ((await run(['rev-list', '--max-count=1', tree.final_commit, `^${tree.base_commit}`])).trim() === '') return { tree, bundle: undefined }
    throw error
  }
  const data = await readPlainFile(gitDir, ['final.bundle'], maxBytes)
  if (data === 'too_large' || data === undefined) {
    return { reason: `its final tree, a git bundle of ${(await stat(file)).size} bytes, is larger than MAX_RESUME_BYTES (${maxBytes})` }
  }
  return { tree: { ...tree, bundle_bytes: data.length }, bundle: data }
}

/**
 * Puts what a continuation starts from (the bundle its previous run kept) into a git directory of
 * the service's own, to be the workspace's read-only second alternate: the agent reads those
 * objects but can neither change nor delete them, and collecting finds them there whatever it did.
 */
export async function unbundle (gitDir: string, baseObjects: string, data: Buffer, signal: AbortSignal): Promise<void> {
  await makeGitDir(gitDir, [baseObjects], undefined)
  const file = join(gitDir, 'continued.bundle')
  await writeFile(file, data, { mode: 0o600 })
  try {
    await git(gitDir, ['bundle', 'unbundle', file], { env: { GIT_DIR: gitDir }, signal })
  } finally {
    await rm(file, { force: true })
  }
  // Inside the sandbox the base is elsewhere, and git would complain of the host path on every
  // command: the workspace lists both object folders itself. Collecting writes this file anew.
  await rm(join(gitDir, 'objects', 'info', 'alternates'), { force: true })
}

/**
 * The agent's object folder, if `.git` and `.git/objects` are still real folders. Its own
 * alternates file goes: it would make our git read whatever folder the agent named (the base's
 * objects are listed by us, at their host path).
 */
async function agentObjectsOf (agentGit: string): Promise<string | undefined> {
  for (const dir of [agentGit, join(agentGit, 'objects')]) {
    const info = await lstat(dir).catch(() => undefined)
    if (info === undefined || !info.isDirectory()) return undefined
  }
  const info = join(agentGit, 'objects', 'info')
  const infoStat = await lstat(info).catch(() => undefined)
  if (infoStat?.isDirectory() === true) await rm(join(info, 'alternates'), { force: true })
  else if (infoStat !== undefined) await unlink(info)
  return join(agentGit, 'objects')
}

/** The commit the agent's HEAD names, read as plain files; undefined when there is none (unborn, unreadable). */
async function readHead (agentGit: string): Promise<string | undefined> {
  const head = (await readPlain(agentGit, ['HEAD'], 4096))?.trim()
  if (head === undefined) return undefined
  if (COMMIT_ID.test(head)) return head
  const ref = /^ref: (refs\/\S+)$/.exec(head)?.[1]
  // The name under refs/ must be one git would accept (no `..`, no odd characters): it becomes a path.
  if (ref === undefined || refProblem(ref.slice('refs/'.length)) !== undefined) return undefined
  const loose = (await readPlain(agentGit, ref.split('/'), 4096))?.trim()
  if (loose !== undefined) return COMMIT_ID.test(loose) ? loose : undefined
  const packed = await readPlain(agentGit, ['packed-refs'], 16 * 1024 * 1024)
  const line = packed?.split('\n').find(entry => entry.endsWith(` ${ref}`))
  const commit = line?.slice(0, line.indexOf(' '))
  return commit !== undefined && COMMIT_ID.test(commit) ? commit : undefined
}

/** A small text file of the agent's `.git`, read as a plain file (see readPlainFile). */
async function readPlain (root: string, parts: string[], maxBytes: number): Promise<string | undefined> {
  const data = await readPlainFile(root, parts, maxBytes)
  return Buffer.isBuffer(data) ? data.toString('utf8') : undefined
}

/** A bare git directory of the service's own: no hooks, our configuration, the agent's and the base's objects as alternates. */
async function makeGitDir (gitDir: string, alternates: string[], gitCryptKey: string | undefined): Promise<void> {
  await mkdir(join(gitDir, 'objects', 'info'), { recursive: true, mode: 0o700 })
  await mkdir(join(gitDir, 'refs'), { recursive: true })
  await writeFile(join(gitDir, 'HEAD'), 'ref: refs/heads/main\n')
  await writeFile(join(gitDir, 'config'), '[core]\n\trepositoryformatversion = 0\n\tbare = true\n')
  await writeFile(join(gitDir, 'objects', 'info', 'alternates'), alternates.map(path => `${path}\n`).join(''))
  if (gitCryptKey !== undefined) {
    // git-crypt finds its key under the git directory it is run for (GIT_DIR).
    await mkdir(join(gitDir, 'git-crypt', 'keys'), { recursive: true, mode: 0o700 })
    await copyFile(gitCryptKey, join(gitDir, 'git-crypt', 'keys', 'default'))
  }
}

/**
 * Reads `git diff --raw --numstat -z`: raw records (`:modes shas STATUS\0path\0`, two paths for
 * renames and copies) give each file's status, numstat records (`added\tdeleted\tpath\0`, or an
 * empty path then two paths for renames; `-` for binary files) give the line counts.
 */
export function parseRawNumstat (output: string): Pick<WorkspaceChanges, 'files' | 'stats'> {
  const fields = output.split('\0')
  const files: WorkspaceChanges['files'] = []
  let insertions = 0
  let deletions = 0
  for (let i = 0; i < fields.length;) {
    const field = fields[i++]!
    if (field === '') continue
    if (field.startsWith(':')) {
      const kind = field.slice(field.lastIndexOf(' ') + 1)[0]!
      if (kind === 'R' || kind === 'C') {
        const oldPath = fields[i++]!
        files.push({ path: fields[i++]!, status: statusName(kind), old_path: oldPath })
      } else {
        files.push({ path: fields[i++]!, status: statusName(kind) })
      }
      continue
    }
    const [added, removed, path] = field.split('\t')
    if (added !== '-') insertions += Number(added)
    if (removed !== '-') deletions += Number(removed)
    if (path === '') i += 2 // a rename: old and new paths follow
  }
  return { files, stats: { files_changed: files.length, insertions, deletions } }
}

function statusName (kind: string): string {
  return { A: 'added', M: 'modified', D: 'deleted', R: 'renamed', C: 'copied', T: 'type_changed' }[kind] ?? 'changed'
}

async function readCapped (file: string, maxBytes: number): Promise<{ text: string, truncated: boolean }> {
  const handle = await open(file, 'r')
  try {
    const { size } = await handle.stat()
    const length = Math.min(size, maxBytes)
    const buffer = Buffer.alloc(length)
    await handle.read(buffer, 0, length, 0)
    // Cut at the last whole line so a truncated diff stays readable.
    const text = size > maxBytes ? buffer.toString('utf8', 0, buffer.lastIndexOf(0x0a) + 1) : buffer.toString('utf8')
    return { text, truncated: size > maxBytes }
  } finally {
    await handle.close()
  }
}
