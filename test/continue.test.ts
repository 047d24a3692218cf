// continue_from: a job resumes a finished job's Claude Code session, in a workspace that starts
// where that job left off. Over HTTP, with the fake CLI (which keeps transcripts and resumes them as
// the real one does), real git, in the sandbox, on both engines.
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, inject, it } from 'vitest'
import type { Config } from '../src/config.ts'
import { appMaker, AUTH, describeEngines, engineConfig, finished, getJob, makeApp, run, submit, tempDir } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'
import { makeRepo, sh, type FixtureRepo } from './helpers/repos.ts'

const TEAM_A = 'team-a-token-0123456789abcdef'
const TEAM_B = 'team-b-token-0123456789abcdef'

/** What `[[fake sh COMMAND]]` answers. */
const shell = (command: string, output: string, exit = 0): string => `$ ${command}\n${output}[exit ${exit}]`

/** What `[[fake recall]]` answered: the session resumed and its prompts so far. */
function recalled (text: string | null): { resumed: string | null, session_id: string, prompts: string[] } {
  const line = text?.split('\n').find(entry => entry.startsWith('recall '))
  if (line === undefined) throw new Error(`no recall in ${JSON.stringify(text)}`)
  return JSON.parse(line.slice('recall '.length))
}

async function refused (app: Awaited<ReturnType<typeof makeApp>>['app'], body: Record<string, unknown>): Promise<{ status: number, error: { code: string, message: string, field?: string } }> {
  const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: body })
  return { status: response.statusCode, error: response.json().error }
}

describeEngines('continue_from', engine => {
  const makeEngineApp = appMaker(engine)
  const gitApp = async (repo: FixtureRepo, overrides: Partial<Config> = {}) => {
    const made = await makeEngineApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, ...overrides })
    await made.app.ctx.workspaces.ready
    return made
  }

  it('resumes the session of a finished job, in a workspace holding its commits and what it left uncommitted; chains go on', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const first = await run(app, {
      prompt: 'first step [[fake write a.txt committed\\n]] [[fake commit add a.txt]] [[fake write wip.txt uncommitted\\n]] [[fake append README.md edited\\n]] [[fake rm src/app.txt]]',
    })
    expect(first).toMatchObject({ status: 'completed', resumable: true, continued_from: null })
    const sessionId = first.agent!.session_id!
    const agentHead = first.changes!.head_commit
    expect(first.changes!.commits).toEqual([{ sha: agentHead, subject: 'add a.txt' }])

    const second = await run(app, {
      continue_from: first.job_id,
      prompt: 'second step [[fake sh git rev-parse HEAD]] [[fake sh git status --porcelain 2>&1]] [[fake sh cat a.txt wip.txt]] [[fake write b.txt second\\n]] [[fake recall]]',
    })
    expect(second).toMatchObject({ status: 'completed', continued_from: first.job_id, request: { continue_from: first.job_id }, resumable: true })
    // The same session, carried on: it knows the first prompt.
    expect(second.agent!.session_id).toBe(sessionId)
    expect(recalled(second.result!.text)).toEqual({ resumed: sessionId, session_id: sessionId, prompts: [expect.stringContaining('first step'), expect.stringContaining('second step')] })
    // HEAD is where the agent left it; what it left uncommitted is uncommitted again.
    expect(second.result!.text).toContain([
      shell('git rev-parse HEAD', `${agentHead}\n`),
      shell('git status --porcelain 2>&1', ' M README.md\n D src/app.txt\n?? wip.txt\n'),
      shell('cat a.txt wip.txt', 'committed\nuncommitted\n'),
    ].join('\n'))
    // Its changes are its own: measured against the first job's final tree, the original base alongside.
    const changes = second.changes!
    expect(changes.base_commit).not.toBe(agentHead)
    expect(changes.original_base_commit).toBe(repo.commits.main)
    expect(first.changes!.original_base_commit).toBe(repo.commits.main)
    expect(changes.files).toEqual([{ path: 'b.txt', status: 'added' }])
    expect(changes.commits).toEqual([])
    expect(changes.head_commit).toBe(agentHead)

    const third = await run(app, { continue_from: second.job_id, prompt: 'third step [[fake sh cat a.txt wip.txt b.txt]] [[fake recall]]' })
    expect(third).toMatchObject({ status: 'completed', continued_from: second.job_id })
    expect(third.result!.text).toContain(shell('cat a.txt wip.txt b.txt', 'committed\nuncommitted\nsecond\n'))
    expect(recalled(third.result!.text).prompts).toEqual([expect.stringContaining('first step'), expect.stringContaining('second step'), expect.stringContaining('third step')])
    expect(third.changes).toMatchObject({ original_base_commit: repo.commits.main, files: [], commits: [] })
    // A job can be continued more than once: each continuation starts from the same place.
    const again = await run(app, { continue_from: first.job_id, prompt: 'another second step [[fake sh ls]] [[fake recall]]' })
    expect(again.result!.text).not.toContain('b.txt')
    expect(recalled(again.result!.text).prompts).toHaveLength(2)
  })

  it('resumes the session without BASE_REPO, in a fresh folder', async () => {
    const { app } = await makeEngineApp()
    const first = await run(app, { prompt: 'remember the word PELICAN' })
    const second = await run(app, { continue_from: first.job_id, prompt: 'which word? [[fake echo]]' })
    expect(second).toMatchObject({ status: 'completed', continued_from: first.job_id, changes: null })
    const echoed = JSON.parse(second.result!.text!) as { argv: string[] }
    expect(echoed.argv).toContain(`--resume=${first.agent!.session_id}`)
    // A session's recorded system prompt would silently win over this job's own: it is rendered afresh.
    expect(echoed.argv).not.toContain('--system-prompt-snapshot=off')
    const steered = await run(app, { continue_from: first.job_id, prompt: '[[fake echo]]', append_system_prompt: 'Be terse.' })
    expect((JSON.parse(steered.result!.text!) as { argv: string[] }).argv).toEqual(expect.arrayContaining([`--resume=${first.agent!.session_id}`, '--system-prompt-snapshot=off', '--append-system-prompt=Be terse.']))
  })

  it('refuses what cannot be continued: unknown, another tenant\'s, not finished, never started, with a ref', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo)
    const unknown = await refused(app, { prompt: 'go on', continue_from: 'no-such-job' })
    expect(unknown).toEqual({ status: 404, error: { code: 'job_not_found', field: 'continue_from', message: expect.stringContaining('no-such-job') } })

    const done = await run(app, { prompt: 'done' })
    // Another tenant's job does not exist for this one.
    const tenants = join(await tempDir(), 'tenants.json')
    writeFileSync(tenants, JSON.stringify({ tenants: [{ name: 'team-a', tokens: [TEAM_A] }, { name: 'team-b', tokens: [TEAM_B] }] }))
    const { app: shared } = await makeEngineApp({ tenantsFile: tenants })
    const ours = await shared.inject({ method: 'POST', url: '/execute', headers: { authorization: `Bearer ${TEAM_A}` }, payload: { prompt: 'ours' } })
    await finished(shared, ours.json().job_id)
    const theirs = await shared.inject({ method: 'POST', url: '/execute', headers: { authorization: `Bearer ${TEAM_B}` }, payload: { prompt: 'go on', continue_from: ours.json().job_id } })
    expect(theirs.statusCode).toBe(404)
    expect(theirs.json().error).toMatchObject({ code: 'job_not_found', field: 'continue_from' })

    const probe = await AgentProbe.start()
    const running = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    const early = await refused(app, { prompt: 'go on', continue_from: running.job_id })
    expect(early).toMatchObject({ status: 409, error: { code: 'job_not_finished', field: 'continue_from', message: expect.stringContaining('running') } })
    probe.release()
    await finished(app, running.job_id)

    const failed = await run(app, { prompt: 'never starts', ref: 'no-such-branch' })
    expect(failed).toMatchObject({ status: 'failed', error: { code: 'ref_not_found' }, resumable: false })
    const never = await refused(app, { prompt: 'go on', continue_from: failed.job_id })
    expect(never).toMatchObject({ status: 400, error: { code: 'not_resumable', field: 'continue_from', message: expect.stringContaining('never started a session') } })

    const withRef = await refused(app, { prompt: 'go on', continue_from: done.job_id, ref: 'main' })
    expect(withRef).toMatchObject({ status: 400, error: { code: 'validation_error', field: 'ref' } })
    // Nothing was admitted by any of these.
    expect((await app.inject({ method: 'GET', url: '/jobs', headers: AUTH })).json().jobs).toHaveLength(3)
  })

  it('keeps nothing past MAX_RESUME_BYTES: the job completes and is not resumable, saying why', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await gitApp(repo, { maxResumeBytes: 2048 })
    // The transcript holds the prompt: 4 KiB of it is past the limit.
    const big = await run(app, { prompt: `${'x'.repeat(4096)} [[fake write a.txt a]]` })
    expect(big).toMatchObject({ status: 'completed', resumable: false, changes: { files: [{ path: 'a.txt', status: 'added' }] } })
    expect(await refused(app, { prompt: 'go on', continue_from: big.job_id })).toMatchObject({ status: 400, error: { code: 'not_resumable', message: expect.stringContaining('larger than MAX_RESUME_BYTES (2048)') } })
    const small = await run(app, { prompt: 'short' })
    expect(small.resumable).toBe(true)

    const { app: off } = await makeEngineApp({ maxResumeBytes: 0 })
    const kept = await run(off, { prompt: 'short' })
    expect(kept).toMatchObject({ status: 'completed', resumable: false })
    expect(await refused(off, { prompt: 'go on', continue_from: kept.job_id })).toMatchObject({ status: 400, error: { code: 'not_resumable', message: expect.stringContaining('MAX_RESUME_BYTES is 0') } })
  })

  it('fails a continuation whose job was evicted while it waited, saying so', async () => {
    const { app } = await makeEngineApp({ maxConcurrency: 1, maxFinishedJobs: 1 })
    const first = await run(app, { prompt: 'first' })
    const probe = await AgentProbe.start()
    const blocker = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    const waiting = await submit(app, { prompt: 'go on', continue_from: first.job_id })
    expect(waiting.status).toBe('queued')
    // The blocker ending makes two finished jobs: the oldest, the one to continue, goes.
    probe.release()
    await finished(app, blocker.job_id)
    const done = await finished(app, waiting.job_id)
    expect(done).toMatchObject({ status: 'failed', continued_from: first.job_id, error: { code: 'not_resumable', message: expect.stringContaining(`job ${first.job_id}, which this job continues, is gone`) }, agent: null })
  })

  it.runIf(engine === 'redis' && inject('redisUrl') !== '')('continues on another replica, whose base has none of the first job\'s objects', async () => {
    const repo = makeRepo(await tempDir())
    const shared = { ...engineConfig('redis'), baseRepo: repo.origin, baseRefreshSeconds: 0 }
    const a = await makeApp({ ...shared, instanceId: 'replica-a' })
    await a.app.ctx.workspaces.ready
    const first = await run(a.app, { prompt: 'first [[fake write a.txt from a\\n]] [[fake commit on a]] [[fake write wip.txt left on a\\n]]' })
    expect(first).toMatchObject({ status: 'completed', agent: { instance: 'replica-a' }, resumable: true })
    // Replica A goes away; B, on its own disk, never saw the first job's commit.
    await a.app.close()
    const b = await makeApp({ ...shared, instanceId: 'replica-b' })
    await b.app.ctx.workspaces.ready
    expect(() => execFileSync('git', ['cat-file', '-e', first.changes!.head_commit], { cwd: join(b.root, 'base.git'), stdio: 'ignore' })).toThrow()
    const second = await run(b.app, { continue_from: first.job_id, prompt: 'second [[fake sh cat a.txt wip.txt]] [[fake recall]]' })
    expect(second).toMatchObject({ status: 'completed', agent: { instance: 'replica-b', session_id: first.agent!.session_id } })
    expect(second.result!.text).toContain(shell('cat a.txt wip.txt', 'from a\nleft on a\n'))
    expect(recalled(second.result!.text).prompts).toEqual([expect.stringContaining('first'), expect.stringContaining('second')])
    expect((await getJob(b.app, first.job_id)).job_id).toBe(first.job_id)
  })
})

describe('continue_from in a git workspace', () => {
  it('continues a job whose agent went back to an older commit: the base has everything, nothing is bundled', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const first = await run(app, { prompt: '[[fake git checkout -q HEAD~1]]' })
    expect(first).toMatchObject({ status: 'completed', resumable: true, changes: { head_commit: repo.commits.initial } })
    expect(await app.ctx.engine.store.artifact(first.job_id, 'tree')).toBeUndefined()
    const second = await run(app, { continue_from: first.job_id, prompt: '[[fake sh git rev-parse HEAD]] [[fake sh git status --porcelain 2>&1]]' })
    expect(second.result!.text).toBe([shell('git rev-parse HEAD', `${repo.commits.initial}\n`), shell('git status --porcelain 2>&1', '')].join('\n'))
    expect(second.changes).toMatchObject({ base_commit: repo.commits.initial, original_base_commit: repo.commits.main, files: [] })
  })
})

describe('continue_from on a repository under git-crypt', () => {
  it('gives the continuation plaintext, while what is kept holds only ciphertext', async () => {
    const repo = makeRepo(await tempDir(), { gitCrypt: true })
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, gitCryptKey: repo.key })
    await app.ctx.workspaces.ready
    const first = await run(app, { prompt: '[[fake write secret/new.txt NEWSECRET\\n]] [[fake commit add a secret]] [[fake append secret/token.txt ROTATED\\n]]' })
    expect(first).toMatchObject({ status: 'completed', resumable: true })
    const second = await run(app, { continue_from: first.job_id, prompt: '[[fake sh cat secret/new.txt secret/token.txt]] [[fake sh git status --porcelain 2>&1]]' })
    expect(second.result!.text).toBe([shell('cat secret/new.txt secret/token.txt', 'NEWSECRET\nTOPSECRET\nROTATED\n'), shell('git status --porcelain 2>&1', ' M secret/token.txt\n')].join('\n'))
    // The bundle kept in the engine, opened without the key: every secret in it is encrypted.
    const bundle = await app.ctx.engine.store.artifact(first.job_id, 'tree')
    const dir = await tempDir()
    writeFileSync(join(dir, 'kept.bundle'), bundle!)
    const clone = join(dir, 'clone')
    sh(dir, ['clone', '-q', '--no-checkout', repo.origin, clone])
    sh(clone, ['fetch', '-q', join(dir, 'kept.bundle'), 'refs/heads/final:refs/heads/final'])
    for (const file of ['secret/new.txt', 'secret/token.txt']) {
      const blob = sh(clone, ['cat-file', 'blob', `refs/heads/final:${file}`])
      expect(blob.startsWith('\0GITCRYPT\0'), file).toBe(true)
    }
    expect(sh(clone, ['log', '--format=%s', 'refs/heads/final']).split('\n').slice(0, 2)).toEqual([`claude-runner: changes of job ${first.job_id}`, 'add a secret'])
  })
})
