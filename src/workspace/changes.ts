import { constants } from 'node:fs'
import { copyFile, lstat, mkdir, open, rm, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { git } from './git.ts'
import { refProblem } from './refs.ts'
import type { WorkspaceChanges } from './workspace.ts'

const MAX_COMMITS = 1000
const COMMIT_ID = /^[0-9a-f]{40}$/

export interface CollectInput {
  /** The workspace: the agent's work tree, and its `.git`, which the agent controlled. */
  workTree: string
  /** A folder of the service's own that becomes the git directory changes are collected with. */
  gitDir: string
  /** The base repository's objects (the agent's clone borrows them: `clone --shared`). */
  baseObjects: string
  baseCommit: string
  jobId: string
  signal: AbortSignal
  /** The git-crypt key, when the repository is unlocked: the service's git directory gets its own copy. */
  gitCryptKey?: string | undefined
  maxDiffBytes: number
  /** Git settings of the service's own (git-crypt's filter, or a filter that refuses to run without a key). */
  config: readonly string[]
  /** Set for `push: true`: pushes `head` (everything committed) from the service's git directory. */
  push?: ((gitDir: string, head: string) => Promise<NonNullable<WorkspaceChanges['push']>>) | undefined
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
export async function collectChanges (input: CollectInput): Promise<WorkspaceChanges> {
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
  let tip = head
  if (input.push !== undefined) {
    // Commit what the agent left uncommitted, so the pushed branch holds all of its work.
    const tree = (await run(['write-tree'])).trim()
    if (tree !== (await run(['rev-parse', `${head}^{tree}`])).trim()) {
      tip = (await run(['commit-tree', tree, '-p', head, '-m', `claude-runner: changes of job ${input.jobId}`])).trim()
    }
  }

  const log = await run(['log', `--max-count=${MAX_COMMITS}`, '--reverse', '--format=%H%x00%s%x00', `${baseCommit}..${tip}`])
  const parts = log.split('\0').map(part => part.replace(/^\n/, ''))
  const commits: WorkspaceChanges['commits'] = []
  for (let i = 0; i + 1 < parts.length; i += 2) commits.push({ sha: parts[i]!, subject: parts[i + 1]! })

  const diffArgs = ['diff', '--cached', '--no-ext-diff', '--no-textconv', '-M', '--no-color']
  const { files, stats } = parseRawNumstat(await run([...diffArgs, '--raw', '--numstat', '-z', baseCommit]))
  const diffFile = join(gitDir, 'changes.diff')
  await run([...diffArgs, `--output=${diffFile}`, baseCommit])
  const { text: diff, truncated } = await readCapped(diffFile, input.maxDiffBytes)

  return {
    base_commit: baseCommit,
    head_commit: tip,
    commits,
    files,
    stats,
    diff,
    diff_truncated: truncated,
    push: input.push === undefined ? null : await input.push(gitDir, tip),
  }
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

/** A regular file under `root`, reached through real folders only (no symlink anywhere), at most `maxBytes`. */
async function readPlain (root: string, parts: string[], maxBytes: number): Promise<string | undefined> {
  let dir = root
  for (const part of parts.slice(0, -1)) {
    dir = join(dir, part)
    const info = await lstat(dir).catch(() => undefined)
    if (info === undefined || !info.isDirectory()) return undefined
  }
  let handle
  try {
    handle = await open(join(dir, parts.at(-1)!), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
  } catch {
    return undefined
  }
  try {
    const info = await handle.stat()
    if (!info.isFile() || info.size > maxBytes) return undefined
    return await handle.readFile('utf8')
  } finally {
    await handle.close()
  }
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
