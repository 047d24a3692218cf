// Warm starts (WARM_AGENTS): CLIs started ahead of time, in their sandbox, waiting for a prompt.
// The real fake CLI, real bwrap, real git; warm processes are found by their process records
// (WORKSPACE_ROOT/pids/warm-*) and waited for as conditions, never for time.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { describe, expect, it, vi } from 'vitest'
import type { JobView } from '../src/schemas/job.ts'
import { AUTH, agentsTemplate, appMaker, describeEngines, eventTypes, finished, makeApp, record, run, submit, tempDir } from './helpers/app.ts'
import { AgentProbe, descendants, expectAllGone, isRunning } from './helpers/probe.ts'
import { makeRepo, pushCommit } from './helpers/repos.ts'

/** The host pids (of their sandboxes) of the warm agents waiting now, from their process records. */
function warmPids (root: string): number[] {
  const dir = join(root, 'pids')
  let names: string[] = []
  try {
    names = readdirSync(dir).filter(name => name.startsWith('warm-'))
  } catch {}
  return names.flatMap(name => {
    try {
      return [(JSON.parse(readFileSync(join(dir, name), 'utf8')) as { pid: number }).pid]
    } catch {
      return []
    }
  })
}

async function warmReady (app: FastifyInstance, count: number): Promise<void> {
  await vi.waitFor(() => expect(app.ctx.warm.describe().ready).toBeGreaterThanOrEqual(count), { timeout: 30_000, interval: 20 })
}

const health = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/health' })).json()

/** Without what differs between any two runs: ids, times, pids, sessions. */
function normalized (value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (key, field: unknown) => {
    if (['pid', 'session_id', 'uuid', 'duration_ms', 'duration_api_ms', 'instance', 'queue_wait_ms', 'run_ms'].includes(key)) return '<varies>'
    if (typeof field === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-/.test(field)) return '<id>'
    return field
  }))
}

function comparable (job: JobView): unknown {
  const { job_id: _id, created_at: _c, started_at: _s, finished_at: _f, phase_ms: phases, ...rest } = job
  return normalized({ ...rest, phases: Object.keys(phases).sort() })
}

async function eventsOf (app: FastifyInstance, id: string): Promise<unknown[]> {
  return (await app.ctx.engine.events.since(id, 0)).map(event => ({ type: event.type, data: normalized(JSON.parse(event.json)) }))
}

describeEngines('warm starts', engine => {
  const makeEngineApp = appMaker(engine)

  it('give a job the same JSON and events as a cold start, apart from ids and times', async () => {
    const repo = makeRepo(await tempDir())
    const request = { prompt: 'fix it [[fake tool]] [[fake write notes.txt noted]] [[fake text fixed]]', metadata: { pipeline: 7 } }
    const cold = await makeEngineApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await cold.app.ctx.workspaces.ready
    const warm = await makeEngineApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, warmAgents: 1 })
    await warmReady(warm.app, 1)
    const warmJob = await run(warm.app, request)
    const coldJob = await run(cold.app, request)
    expect(warm.app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 0 })
    expect(cold.app.ctx.warm.describe()).toMatchObject({ hits: 0, misses: 0 })
    expect(coldJob).toMatchObject({ status: 'completed', result: { text: 'fixed' }, changes: { files: [{ path: 'hello.txt', status: 'added' }, { path: 'notes.txt', status: 'added' }] } })
    expect(comparable(warmJob)).toEqual(comparable(coldJob))
    expect(await eventsOf(warm.app, warmJob.job_id)).toEqual(await eventsOf(cold.app, coldJob.job_id))
  })

  it('give a chat completion the same answer as a cold start, and count hits and misses', async () => {
    const { app } = await makeEngineApp({ warmAgents: 2 })
    const chat = (content: string) => app.inject({ method: 'POST', url: '/v1/chat/completions', headers: AUTH, payload: { model: 'haiku', messages: [{ role: 'user', content }] } })
    const first = await chat('hello [[fake echo]]')
    // The first chat starts cold (its argument set was not known); then it is kept warm, next to the default job's.
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 0, misses: 1 })
    await warmReady(app, 2)
    const second = await chat('hello [[fake echo]]')
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
    const echoed = (response: typeof first) => JSON.parse(response.json().choices[0].message.content) as { argv: string[], stdin: string, cwd: string }
    expect(echoed(second)).toEqual({ ...echoed(first), env: expect.anything() })
    expect(echoed(second).argv).toEqual(['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose', '--model=haiku'])
    expect((await health(app)).warm).toMatchObject({ hits: 1, misses: 1 })
    const metrics = (await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })).body
    expect(metrics).toContain('claude_runner_warm_starts_total{result="hit"} 1')
    expect(metrics).toContain('claude_runner_warm_starts_total{result="miss"} 1')
  })

  it('start none while every slot runs, and one as soon as a slot is free', async () => {
    const { app, root } = await makeEngineApp({ warmAgents: 1, maxConcurrency: 1 })
    await warmReady(app, 1)
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: `hold ${probe.directive}` })
    await probe.waitStarted(1)
    // The run took the warm agent and has read its prompt: a replacement would start now if it could.
    await vi.waitFor(async () => expect(await eventTypes(app, job.job_id)).toContain('init'))
    expect(app.ctx.warm.describe()).toMatchObject({ ready: 0, starting: 0, hits: 1 })
    // The only warm-started process is the one running the job.
    expect(warmPids(root)).toEqual([(await record(app, job.job_id)).pid])
    probe.release()
    await finished(app, job.job_id)
    await warmReady(app, 1)
    expect(warmPids(root)).toHaveLength(1)
  })

  it('leave none running after drain, by pid', async () => {
    const { app, root } = await makeEngineApp({ warmAgents: 2 })
    await warmReady(app, 2)
    const pids = warmPids(root)
    expect(pids).toHaveLength(2)
    const inside = pids.flatMap(pid => descendants(pid))
    expect(inside.length).toBeGreaterThanOrEqual(2)
    await app.ctx.drain()
    await expectAllGone([...pids, ...inside])
    expect((await health(app)).warm).toMatchObject({ ready: 0, starting: 0 })
    expect(readdirSync(join(root, 'jobs'))).toEqual([])
  })
})

describe('warm starts', () => {
  it('replace a warm agent that died while waiting, and never hand it a prompt', async () => {
    const { app, root } = await makeApp({ warmAgents: 1 })
    await warmReady(app, 1)
    const [dead] = warmPids(root)
    process.kill(dead!, 'SIGKILL')
    await vi.waitFor(() => {
      const pids = warmPids(root)
      expect(pids).toHaveLength(1)
      expect(pids[0]).not.toBe(dead)
    }, { timeout: 30_000, interval: 20 })
    await warmReady(app, 1)
    const [replacement] = warmPids(root)
    const job = await run(app, { prompt: '[[fake text from the replacement]]' })
    expect(job).toMatchObject({ status: 'completed', result: { text: 'from the replacement' }, agent: { pid: replacement } })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 0 })
    expect(isRunning(dead!)).toBe(false)
  })

  it('keep the argument sets used most recently warm: a pipeline that always sends the same agent and model gets warm starts', async () => {
    const { app } = await makeApp({ warmAgents: 2, claudeConfigTemplate: await agentsTemplate('reviewer') })
    await warmReady(app, 2)
    const request = { prompt: 'review [[fake echo]]', agent: 'reviewer', model: 'sonnet' }
    const first = await run(app, request)
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 0, misses: 1 })
    // One process for the default job, one for the set just used.
    await vi.waitFor(() => expect(app.ctx.warm.describe()).toMatchObject({ ready: 2, starting: 0 }), { timeout: 30_000, interval: 20 })
    const second = await run(app, request)
    const plain = await run(app, { prompt: '[[fake text plain]]' })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 2, misses: 1 })
    expect(JSON.parse(second.result!.text!).argv).toEqual(JSON.parse(first.result!.text!).argv)
    expect(JSON.parse(second.result!.text!).argv).toContain('--agent=reviewer')
    expect(plain.result!.text).toBe('plain')
  })

  it('refuse an unknown agent the same way warm or cold', async () => {
    const { app } = await makeApp({ warmAgents: 2 })
    const cold = await run(app, { prompt: 'x', agent: 'nobody' })
    await vi.waitFor(() => expect(app.ctx.warm.describe()).toMatchObject({ ready: 2, starting: 0 }), { timeout: 30_000, interval: 20 })
    const warm = await run(app, { prompt: 'x', agent: 'nobody' })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
    expect(warm.error).toEqual(cold.error)
    expect(warm.error).toMatchObject({ code: 'unknown_agent' })
  })

  it('cancel a warm job like a cold one: nothing it started survives', async () => {
    const { app, root } = await makeApp({ warmAgents: 1 })
    await warmReady(app, 1)
    const [pid] = warmPids(root)
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: `[[fake grandchild]] ${probe.directive} [[fake hang]]` })
    await probe.waitStarted(1)
    expect(probe.started[0]!.pid).not.toBe(pid)
    const inside = descendants(pid!)
    const response = await app.inject({ method: 'DELETE', url: `/jobs/${job.job_id}`, headers: AUTH })
    expect(response.statusCode).toBe(202)
    const done = await finished(app, job.job_id)
    expect(done).toMatchObject({ status: 'cancelled', error: { code: 'cancelled' }, agent: { pid } })
    await expectAllGone([pid!, ...inside])
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1 })
  })

  it('replace warm workspaces when the base moves; a job at another ref starts cold', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, warmAgents: 1 })
    await warmReady(app, 1)
    const [stale] = warmPids(root)
    const moved = pushCommit(repo, 'main', 'moved.txt', 'the base moved\n')
    await (app.ctx.workspaces as unknown as { refresh: () => Promise<void> }).refresh()
    await vi.waitFor(() => {
      expect(warmPids(root)).toHaveLength(1)
      expect(warmPids(root)[0]).not.toBe(stale)
      expect(app.ctx.warm.describe().ready).toBe(1)
    }, { timeout: 30_000, interval: 20 })
    const job = await run(app, { prompt: '[[fake sh cat moved.txt]]' })
    expect(job).toMatchObject({ status: 'completed', changes: { base_commit: moved } })
    expect(job.result!.text).toContain('the base moved')
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 0 })
    await warmReady(app, 1)
    const other = await run(app, { prompt: '[[fake sh cat feature.txt]]', ref: 'feature' })
    expect(other).toMatchObject({ status: 'completed', changes: { base_commit: repo.commits.feature } })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
  })

  it('recycle a warm agent after WARM_AGENT_MAX_IDLE_SECONDS', async () => {
    const { app, root } = await makeApp({ warmAgents: 1, warmAgentMaxIdleSeconds: 1 })
    await warmReady(app, 1)
    const [first] = warmPids(root)
    await vi.waitFor(() => {
      expect(warmPids(root)).toHaveLength(1)
      expect(warmPids(root)[0]).not.toBe(first)
    }, { timeout: 30_000, interval: 50 })
    await expectAllGone([first!])
  })

  it('are off with SANDBOX=off: a warm agent\'s host paths would tell', async () => {
    const { app, root } = await makeApp({ warmAgents: 2, sandbox: 'off' })
    expect(app.ctx.warm.size).toBe(0)
    const job = await run(app, { prompt: '[[fake text cold]]' })
    expect(job.status).toBe('completed')
    expect(app.ctx.warm.describe()).toEqual({ ready: 0, starting: 0, hits: 0, misses: 0 })
    expect(warmPids(root)).toEqual([])
  })
})
