import { randomBytes } from 'node:crypto'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { git } from './git.ts'
import type { WorkspaceChanges } from './workspace.ts'

const MAX_COMMITS = 1000

export interface CollectInput {
  path: string
  baseCommit: string
  jobId: string
  signal: AbortSignal
  /** The agent's environment: git runs in a folder the agent controlled, with no more than it had. */
  agentEnv: Readonly<Record<string, string>>
  /** Whether the workspace has git-crypt's filters configured. */
  gitCrypt: boolean
  maxDiffBytes: number
  /** Set for `push: true`: pushes the workspace's HEAD once everything is committed. */
  push?: ((head: string) => Promise<NonNullable<WorkspaceChanges['push']>>) | undefined
}

/**
 * What the agent changed against the commit it started from: its commits, every file added,
 * modified, deleted or renamed (committed or not, untracked files too), line counts, and the
 * unified diff up to `maxDiffBytes`. Hooks and fsmonitor the agent may have planted never run;
 * files under git-crypt show as binary (no decrypted secret reaches the job JSON).
 */
export async function collectChanges (input: CollectInput): Promise<WorkspaceChanges> {
  const { path, baseCommit, signal } = input
  const untrusted = { untrusted: { env: input.agentEnv }, trustedConfig: input.gitCrypt, signal }
  const inWorkspace = (args: string[], env?: Record<string, string>) => git(path, args, { ...untrusted, env })

  if (input.push !== undefined && (await inWorkspace(['status', '--porcelain', '-z'])).length > 0) {
    // Commit what the agent left uncommitted, so the pushed branch holds all of its work.
    await inWorkspace(['add', '-A'])
    await inWorkspace(['commit', '--quiet', '--no-verify', '-m', `claude-runner: changes of job ${input.jobId}`])
  }

  const head = (await inWorkspace(['rev-parse', 'HEAD'])).trim()
  const log = await inWorkspace(['log', `--max-count=${MAX_COMMITS}`, '--reverse', '--format=%H%x00%s%x00', `${baseCommit}..${head}`])
  const parts = log.split('\0').map(part => part.replace(/^\n/, ''))
  const commits: WorkspaceChanges['commits'] = []
  for (let i = 0; i + 1 < parts.length; i += 2) commits.push({ sha: parts[i]!, subject: parts[i + 1]! })

  // Stage everything in a scratch index built from HEAD: the agent's own index (and any
  // assume-unchanged bits it set) is left out of it.
  const index = { GIT_INDEX_FILE: join(path, '.git', `claude-runner-${randomBytes(4).toString('hex')}.index`) }
  await inWorkspace(['read-tree', head], index)
  await inWorkspace(['add', '-A'], index)
  const diffArgs = ['diff', '--cached', '--no-ext-diff', '--no-textconv', '-M', '--no-color']
  const { files, stats } = parseRawNumstat(await inWorkspace([...diffArgs, '--raw', '--numstat', '-z', baseCommit], index))
  const diffFile = join(path, '.git', 'claude-runner.diff')
  await inWorkspace([...diffArgs, `--output=${diffFile}`, baseCommit], index)
  const { text: diff, truncated } = await readCapped(diffFile, input.maxDiffBytes)

  return {
    base_commit: baseCommit,
    head_commit: head,
    commits,
    files,
    stats,
    diff,
    diff_truncated: truncated,
    push: input.push === undefined ? null : await input.push(head),
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
