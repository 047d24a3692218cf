import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { describe, expect, it, vi } from 'vitest'
import type { Config } from '../src/config.ts'
import { GitWorkspaces } from '../src/workspace/git-workspaces.ts'
import { WorkspaceFolders } from '../src/workspace/workspace.ts'
import { AUTH, finished, makeApp, record, run, submit, tempDir } from './helpers/app.ts'
import { AgentProbe, descendants, expectAllGone } from './helpers/probe.ts'
import { makeRepo, pushCommit, sh, type FixtureRepo } from './helpers/repos.ts'

async function gitApp (repo: FixtureRepo, overrides: Partial<Config> = {}) {
  const made = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, ...overrides })
  await made.app.ctx.workspaces.ready
  return made
}

const workspaceFiles = async (root: string) => readdir(join(root, 'jobs'))
/** What `[[fake sh COMMAND]]` answers. */
const shell = (command: string, output: string, exit = 0) => `$ ${command}\n${output}[exit ${exit}]`

describe('git workspaces', () => {
  it('give each job a full checkout of BASE_REF from a warm base', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await gitApp(repo)
    const health = (await app.inject({ method: 'GET', url: '/health' })).json()
    expect(health.workspace).toMatchObject({ kind: 'git', state: 'ready', ref: 'main', commit: repo.commits.main, last_error: null, repo: repo.origin })
    expect(health.workspace.last_fetch_at).toEqual(expect.any(String))

    const probe = await AgentProbe.start()
    // What the agent sees, from inside its sandbox.
    const job = await submit(app, { prompt: `[[fake sh git rev-parse HEAD]] [[fake sh git status --porcelain]] [[fake sh cat CHANGELOG.md]] ${probe.directive}` })
    await probe.waitStarted(1)
    expect(probe.started[0]!.cwd).toBe('/workspace')
    const onHost = join(root, 'jobs', job.job_id)
    expect(readFileSync(join(onHost, 'CHANGELOG.md'), 'utf8')).toBe('- second commit\n')
    probe.release()
    const done = await finished(app, job.job_id)
    expect(done.status).toBe('completed')
    expect(done.result!.text).toBe([shell('git rev-parse HEAD', `${repo.commits.main}\n`), shell('git status --porcelain', ''), shell('cat CHANGELOG.md', '- second commit\n')].join('\n'))
    expect(done.changes).toMatchObject({ base_commit: repo.commits.main, head_commit: repo.commits.main, commits: [], files: [], diff: '', diff_truncated: false, push: null })
    expect(Object.keys(done.phase_ms).sort()).toEqual(['collecting', 'preparing', 'running'])
    expect(existsSync(onHost)).toBe(false)
  })

  it('report exactly what the agent created, modified, deleted and committed', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const job = await run(app, {
      prompt: [
        '[[fake write new.txt hello\\nworld\\n]]',
        '[[fake append README.md more\\n]]',
        '[[fake rm src/app.txt]]',
        '[[fake commit agent commit]]',
        '[[fake write notes/untracked.txt left uncommitted\\n]]',
      ].join(' '),
    })
    expect(job.status).toBe('completed')
    const changes = job.changes!
    expect(changes.base_commit).toBe(repo.commits.main)
    expect(changes.head_commit).not.toBe(repo.commits.main)
    expect(changes.commits).toEqual([{ sha: changes.head_commit, subject: 'agent commit' }])
    expect(changes.files).toEqual(expect.arrayContaining([
      { path: 'new.txt', status: 'added' },
      { path: 'README.md', status: 'modified' },
      { path: 'src/app.txt', status: 'deleted' },
      { path: 'notes/untracked.txt', status: 'added' },
    ]))
    expect(changes.files).toHaveLength(4)
    expect(changes.stats).toEqual({ files_changed: 4, insertions: 4, deletions: 2 })
    expect(changes.diff).toContain('+++ b/new.txt')
    expect(changes.diff).toContain('+world')
    expect(changes.diff).toContain('-line 2')
    expect(changes.diff).toContain('+left uncommitted')
    // The base and origin are untouched.
    expect(sh(repo.origin, ['rev-parse', 'main'])).toBe(repo.commits.main)
  })

  it('cap the diff at MAX_DIFF_BYTES and say so', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo, { maxDiffBytes: 2048 })
    const big = Array.from({ length: 500 }, (_, i) => `line ${i}`).join('\\n')
    const job = await run(app, { prompt: `[[fake write big.txt ${big}]]` })
    expect(job.changes!.diff_truncated).toBe(true)
    expect(Buffer.byteLength(job.changes!.diff)).toBeLessThanOrEqual(2048)
    expect(job.changes!.diff.endsWith('\n')).toBe(true)
    expect(job.changes!.stats.insertions).toBe(500)
  })

  it('check out a branch, a tag, a full or short commit id', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const cases: Array<[string, string]> = [
      ['feature', repo.commits.feature],
      ['v1.0', repo.commits.initial],
      [repo.commits.feature, repo.commits.feature],
      [repo.commits.initial.slice(0, 10), repo.commits.initial],
    ]
    for (const [ref, commit] of cases) {
      const job = await run(app, { prompt: '[[fake echo]]', ref })
      expect(job.status, ref).toBe('completed')
      expect(job.changes!.base_commit, ref).toBe(commit)
      expect(job.request.ref).toBe(ref)
    }
  })

  it('fetch on demand a ref pushed to origin after start-up', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const late = pushCommit(repo, 'late-branch', 'late.txt', 'late\n')
    const job = await run(app, { prompt: 'hi', ref: 'late-branch' })
    expect(job.status).toBe('completed')
    expect(job.changes!.base_commit).toBe(late)
    const tipOnly = pushCommit(repo, 'another', 'another.txt', 'x\n')
    const bySha = await run(app, { prompt: 'hi', ref: tipOnly })
    expect(bySha.changes!.base_commit).toBe(tipOnly)
  })

  it('fail a job whose ref does not exist, and leave nothing behind', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await gitApp(repo)
    const job = await run(app, { prompt: 'hi', ref: 'no-such-branch' })
    expect(job.status).toBe('failed')
    expect(job.error).toEqual({ code: 'ref_not_found', message: expect.stringContaining('"no-such-branch" is not a branch, tag or commit of BASE_REPO') })
    expect(job.agent).toBeNull()
    expect(await workspaceFiles(root)).toEqual([])
  })

  it('refuse option-looking and malformed refs with 400', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    for (const ref of ['-x', '--upload-pack=touch /tmp/pwned', 'main~1', 'main^', 'a..b', 'has space', '@{-1}', 'x/.hidden', 'x.lock', 'refs//x', 'a:b', 'x/']) {
      const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', ref } })
      expect(response.statusCode, ref).toBe(400)
      expect(response.json().error, ref).toMatchObject({ code: 'invalid_ref', field: 'ref' })
    }
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
  })

  it('isolate 10 concurrent jobs from each other and from the base', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await gitApp(repo)
    const probe = await AgentProbe.start()
    const refs = ['main', 'feature', 'v1.0', repo.commits.feature, 'main', 'feature', 'v1.0', 'main', repo.commits.initial, 'main']
    const expected = [repo.commits.main, repo.commits.feature, repo.commits.initial, repo.commits.feature, repo.commits.main, repo.commits.feature, repo.commits.initial, repo.commits.main, repo.commits.initial, repo.commits.main]
    const jobs = []
    for (const [i, ref] of refs.entries()) {
      jobs.push(await submit(app, { prompt: `${probe.directive} [[fake rm README.md]] [[fake write job-${i}.txt ${i}]] [[fake append src/app.txt job ${i}\\n]] [[fake sh git rev-parse HEAD]]`, ref }))
    }
    await probe.waitStarted(10)
    probe.release()
    const done = await Promise.all(jobs.map(job => finished(app, job.job_id)))
    for (const [i, job] of done.entries()) {
      expect(job.status).toBe('completed')
      expect(job.result!.text, `job ${i}`).toBe(shell('git rev-parse HEAD', `${expected[i]}\n`))
      expect(job.changes!.base_commit).toBe(expected[i])
      expect(job.changes!.files.map(file => file.path).sort()).toEqual(['README.md', `job-${i}.txt`, 'src/app.txt'])
      expect(job.changes!.diff).toContain(`+job ${i}`)
      expect(job.changes!.diff).not.toContain(`+job ${(i + 1) % 10}\n`)
    }
    expect(sh(join(root, 'base.git'), ['rev-parse', 'main'])).toBe(repo.commits.main)
    expect(sh(repo.origin, ['ls-tree', '--name-only', 'main']).split('\n')).toContain('README.md')
  })

  it('keep preparing jobs correctly while the base fetches', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const workspaces = app.ctx.workspaces as GitWorkspaces
    const jobs = []
    const fetches: Array<Promise<void>> = []
    for (let i = 0; i < 10; i++) {
      pushCommit(repo, `branch-${i}`, `file-${i}.txt`, `${i}\n`)
      fetches.push(workspaces.refresh())
      jobs.push(await submit(app, { prompt: `[[fake write out-${i}.txt ${i}]]`, ref: i % 2 === 0 ? 'main' : 'feature' }))
    }
    await Promise.all(fetches)
    const done = await Promise.all(jobs.map(job => finished(app, job.job_id)))
    expect(done.map(job => job.status)).toEqual(Array(10).fill('completed'))
    expect(workspaces.describe()).toMatchObject({ state: 'ready', last_error: null })
  })

  it('remove the workspace after every outcome: failure, timeout, cancel', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await gitApp(repo, { killGraceSeconds: 0.5 })
    const failed = await run(app, { prompt: '[[fake write x.txt x]] [[fake is-error]]' })
    expect(failed.status).toBe('failed')
    expect(failed.changes!.files).toEqual([{ path: 'x.txt', status: 'added' }])
    const hung = await AgentProbe.start()
    const timing = await submit(app, { prompt: `[[fake write y.txt y]] ${hung.directive}`, timeout_seconds: 2 })
    await hung.waitStarted(1)
    const timedOut = await finished(app, timing.job_id)
    expect(timedOut.status).toBe('timed_out')
    expect(timedOut.changes!.files).toEqual([{ path: 'y.txt', status: 'added' }])
    const probe = await AgentProbe.start()
    const cancelled = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    const left = [probe.started[0]!.pid, ...descendants((await record(app, cancelled.job_id)).pid!)]
    await app.inject({ method: 'DELETE', url: `/jobs/${cancelled.job_id}`, headers: AUTH })
    expect((await finished(app, cancelled.job_id)).status).toBe('cancelled')
    await expectAllGone([hung.started[0]!.pid, ...left])
    expect(await workspaceFiles(root)).toEqual([])
  })

  it('mend a base that failed to initialise, and say so on /health meanwhile', async () => {
    const dir = await tempDir()
    const { app } = await makeApp({ baseRepo: join(dir, 'not-yet.git'), baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const health = (await app.inject({ method: 'GET', url: '/health' })).json()
    expect(health.workspace).toMatchObject({ state: 'error', last_error: expect.stringContaining('not-yet.git') })
    const failed = await run(app, { prompt: 'hi' })
    expect(failed.error).toMatchObject({ code: 'workspace_error', message: expect.stringContaining('base repository is not available') })
    // The repository appears: the next job clones it and runs.
    const repo = makeRepo(dir)
    sh(dir, ['clone', '-q', '--bare', repo.origin, join(dir, 'not-yet.git')])
    const ok = await run(app, { prompt: 'hi' })
    expect(ok.status).toBe('completed')
    expect(ok.changes!.base_commit).toBe(repo.commits.main)
    expect((await app.inject({ method: 'GET', url: '/health' })).json().workspace).toMatchObject({ state: 'ready', commit: repo.commits.main, fetches: 1, last_error: null })
    await (app.ctx.workspaces as GitWorkspaces).refresh()
    expect((await app.inject({ method: 'GET', url: '/health' })).json().workspace).toMatchObject({ state: 'ready', fetches: 2 })
  })

  it('keep one refresh timer however often a broken base is mended, and none after close', async () => {
    // Only the interval timers are faked: git, the filesystem and promises run for real.
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] })
    try {
      const dir = await tempDir()
      const folders = new WorkspaceFolders(join(dir, 'root'))
      await folders.init()
      const provider = new GitWorkspaces({ folders, repo: join(dir, 'missing.git'), refreshMs: 60_000, maxDiffBytes: 1024, sandboxed: false, logger: pino({ level: 'silent' }), now: Date.now })
      await provider.ready
      expect(provider.describe().state).toBe('error')
      for (let i = 0; i < 3; i++) {
        await expect(provider.prepare(`job-${i}`, { signal: new AbortController().signal })).rejects.toThrow('base repository is not available')
      }
      expect(vi.getTimerCount()).toBe(1)
      await provider.close()
      expect(vi.getTimerCount()).toBe(0)
    } finally {
      vi.useRealTimers()
    }
  })
})

describe('git-crypt', () => {
  it('decrypts files in the workspace, keeps status clean, and commits new secrets encrypted', async () => {
    const repo = makeRepo(await tempDir(), { gitCrypt: true })
    const { app } = await gitApp(repo, { gitCryptKey: repo.key, allowPush: true })
    expect((await app.inject({ method: 'GET', url: '/health' })).json().workspace).toMatchObject({ state: 'ready', git_crypt: 'unlocked' })

    const job = await submit(app, {
      prompt: '[[fake sh cat secret/token.txt]] [[fake sh git status --porcelain]] [[fake write secret/new.txt NEWSECRET\\n]] [[fake append secret/token.txt ROTATED\\n]] [[fake commit rotate secrets]] [[fake write secret/later.txt LATERSECRET\\n]]',
      push: true,
    })
    const done = await finished(app, job.job_id)
    expect(done.status).toBe('completed')
    // The agent saw plaintext and a clean status.
    expect(done.result!.text).toBe([shell('cat secret/token.txt', 'TOPSECRET\n'), shell('git status --porcelain', '')].join('\n'))
    const branch = `claude-runner/${job.job_id}`
    expect(done.changes!.push).toEqual({ branch, commit: done.changes!.head_commit, remote: repo.origin })
    // In origin, every file under secret/ is ciphertext, in the agent's commit and in ours.
    for (const file of ['secret/new.txt', 'secret/token.txt', 'secret/later.txt']) {
      const blob = sh(repo.origin, ['cat-file', 'blob', `${branch}:${file}`])
      expect(blob.startsWith('\0GITCRYPT\0'), file).toBe(true)
      expect(blob).not.toMatch(/SECRET|ROTATED/)
    }
    expect(sh(repo.origin, ['log', '--format=%s', branch]).split('\n').slice(0, 2)).toEqual([`claude-runner: changes of job ${job.job_id}`, 'rotate secrets'])
    // Decrypted, the pushed branch holds what the agent wrote.
    sh(repo.work, ['fetch', '-q', 'origin', branch])
    expect(sh(repo.work, ['cat-file', '--filters', 'FETCH_HEAD:secret/new.txt'])).toBe('NEWSECRET')
    // The job's diff never shows decrypted secrets.
    expect(done.changes!.diff).not.toMatch(/NEWSECRET|LATERSECRET|ROTATED|TOPSECRET/)
    expect(done.changes!.files.map(file => file.path).sort()).toEqual(['secret/later.txt', 'secret/new.txt', 'secret/token.txt'])
  })

  it('takes the key from an unlocked clone given as BASE_REPO', async () => {
    const repo = makeRepo(await tempDir(), { gitCrypt: true })
    const { app } = await makeApp({ baseRepo: repo.work, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const job = await run(app, { prompt: '[[fake echo]] [[fake write seen.txt x]]' })
    expect(job.status).toBe('completed')
    expect((await app.inject({ method: 'GET', url: '/health' })).json().workspace.git_crypt).toBe('unlocked')
  })

  it('fails closed without a key: the job says what to set', async () => {
    const repo = makeRepo(await tempDir(), { gitCrypt: true })
    const { app, root } = await gitApp(repo)
    const job = await run(app, { prompt: 'hi' })
    expect(job).toMatchObject({ status: 'failed', error: { code: 'workspace_error', message: expect.stringContaining('GIT_CRYPT_KEY') } })
    expect(await workspaceFiles(root)).toEqual([])
  })

  it('refuses a wrong key at start-up', async () => {
    const repo = makeRepo(await tempDir(), { gitCrypt: true })
    const other = makeRepo(await tempDir(), { gitCrypt: true })
    const { app } = await gitApp(repo, { gitCryptKey: other.key })
    expect((await app.inject({ method: 'GET', url: '/health' })).json().workspace).toMatchObject({ state: 'error', last_error: expect.stringContaining('git-crypt') })
  })
})

describe('push', () => {
  it('is refused unless ALLOW_PUSH is set', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', push: true } })
    expect(response.statusCode).toBe(400)
    expect(response.json().error).toMatchObject({ code: 'push_not_allowed', field: 'push' })
  })

  it('pushes the agent\'s work as claude-runner/<job_id> without running hooks the agent planted', async () => {
    const repo = makeRepo(await tempDir())
    const dir = await tempDir()
    const { app } = await gitApp(repo, { allowPush: true })
    const marker = join(dir, 'hook-ran')
    const job = await run(app, {
      prompt: `[[fake write .git/hooks/pre-commit #!/bin/sh\\ntouch ${marker}\\n]] [[fake exec .git/hooks/pre-commit]] [[fake write result.txt done\\n]]`,
      push: true,
    })
    expect(job.status).toBe('completed')
    const branch = `claude-runner/${job.job_id}`
    expect(job.changes!.push).toMatchObject({ branch, commit: job.changes!.head_commit })
    expect(sh(repo.origin, ['rev-parse', branch])).toBe(job.changes!.head_commit)
    expect(sh(repo.origin, ['show', `${branch}:result.txt`])).toBe('done')
    expect(existsSync(marker)).toBe(false)
    // The base keeps no staging ref.
    expect(sh(join(app.ctx.config.workspaceRoot, 'base.git'), ['for-each-ref', 'refs/claude-runner'])).toBe('')
  })

  it('fails the job when the push is refused, keeping its changes', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo, { allowPush: true })
    // origin refuses every update.
    writeFileSync(join(repo.origin, 'hooks', 'pre-receive'), '#!/bin/sh\necho "pushes are frozen" >&2\nexit 1\n')
    chmodSync(join(repo.origin, 'hooks', 'pre-receive'), 0o755)
    const job = await run(app, { prompt: '[[fake write a.txt a]]', push: true })
    expect(job.status).toBe('failed')
    expect(job.error).toMatchObject({ code: 'push_failed', message: expect.stringContaining('pushes are frozen') })
    expect(job.changes!.files).toEqual([{ path: 'a.txt', status: 'added' }])
  })
})
