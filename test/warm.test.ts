// Warm starts (WARM_AGENTS): CLIs started ahead of time, in their sandbox, waiting for a prompt.
// The real fake CLI, real bwrap, real git; warm processes are found by their process records
// (WORKSPACE_ROOT/pids/warm-*) and waited for as conditions, never for time.
import { readdirSync, readFileSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { ProcessRecords } from '../src/agent/process-records.ts'
import { Bubblewrap } from '../src/agent/sandbox.ts'
import { AgentExecutor, type PreparedRun } from '../src/runner/agent-executor.ts'
import { WarmPool, type LaneOptions, type WarmLane } from '../src/runner/warm-pool.ts'
import type { JobView } from '../src/schemas/job.ts'
import { DirectoryWorkspaces, WorkspaceFolders, type PrepareOptions, type Workspace } from '../src/workspace/workspace.ts'
import { AUTH, FAKE_CLAUDE, agentsTemplate, appMaker, describeEngines, eventTypes, finished, makeApp, record, run, submit, tempDir } from './helpers/app.ts'
import { AgentProbe, commandLine, descendants, expectAllGone, isRunning } from './helpers/probe.ts'
import { makeRepo, pushCommit } from './helpers/repos.ts'
import { json, startServer } from './helpers/server.ts'

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

/** Every process on the machine whose command line names `root`: a sandbox made under it, or what runs in one. */
function processesUnder (root: string): number[] {
  return readdirSync('/proc').filter(name => /^\d+$/.test(name)).map(Number)
    .filter(pid => pid !== process.pid && commandLine(pid)?.includes(root) === true)
}

/** The argv each waiting warm agent's CLI was started with, as the process inside its sandbox shows it. */
function warmArgv (root: string): string[][] {
  return warmPids(root).flatMap(pid => {
    // One being stopped may have no CLI left.
    const cli = descendants(pid).map(commandLine).find(line => line?.includes('fake-claude.mjs'))
    return cli === undefined ? [] : [cli.slice(cli.indexOf('fake-claude.mjs') + 'fake-claude.mjs'.length).trim().split(' ')]
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

  it('keep what a warm-started job leaves for its continuation, which itself starts cold', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await makeEngineApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, warmAgents: 1 })
    await warmReady(app, 1)
    const first = await run(app, { prompt: '[[fake write notes.txt noted]] [[fake text first]]' })
    expect(first.status).toBe('completed')
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1 })
    await warmReady(app, 1)
    // It restores the first job's tree and session before its CLI starts: no warm CLI can be that.
    const next = await run(app, { prompt: '[[fake sh cat notes.txt]]', continue_from: first.job_id })
    expect(next).toMatchObject({ status: 'completed', continued_from: first.job_id, result: { session_id: first.result!.session_id } })
    expect(next.result!.text).toContain('$ cat notes.txt\nnoted[exit 0]')
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, ready: 1 })
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
    expect(await health(app)).toMatchObject({ busy: true, active: 1, capacity: 1 })
    // The only warm-started process is the one running the job.
    expect(warmPids(root)).toEqual([(await record(app, job.job_id)).pid])
    probe.release()
    await finished(app, job.job_id)
    await warmReady(app, 1)
    expect(warmPids(root)).toHaveLength(1)
    // A warm agent is not a run: it holds no slot and is not counted as one.
    expect(await health(app)).toMatchObject({ busy: false, active: 0, queued: 0, capacity: 1 })
    const metrics = (await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })).body
    expect(metrics).toMatch(/^claude_runner_warm_agents_ready 1$/m)
    expect(metrics).toMatch(/^claude_runner_active_runs 0$/m)
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

  it('leave none running after a drain that came while they were still starting', async () => {
    const { app, root } = await makeEngineApp({ warmAgents: 2 })
    let drained: Promise<void> | undefined
    // Drained in the same turn as the first CLI is seen spawned (its process record is written)
    // but not yet ready: the stage where only the pool knows of it.
    await vi.waitFor(() => {
      expect(app.ctx.warm.describe()).toMatchObject({ ready: 0, starting: 1 })
      expect(warmPids(root)).toHaveLength(1)
      drained = app.ctx.drain()
    }, { timeout: 30_000, interval: 1 })
    const [caught] = warmPids(root)
    const inside = descendants(caught!)
    await drained
    expect(app.ctx.warm.describe()).toMatchObject({ ready: 0, starting: 0 })
    await expectAllGone([caught!, ...inside])
    expect(processesUnder(root)).toEqual([])
    expect(warmPids(root)).toEqual([])
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

  it('keep only the most recent argument sets warm, as many as WARM_AGENTS', async () => {
    const { app, root } = await makeApp({ warmAgents: 2 })
    await warmReady(app, 2)
    for (const model of ['model-a', 'model-b', 'model-c']) await run(app, { prompt: '[[fake text ok]]', model })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 0, misses: 3 })
    // The default job's set and the one used last; model-a and model-b gave their places up (and their CLIs are gone).
    await vi.waitFor(() => {
      expect(app.ctx.warm.describe()).toMatchObject({ ready: 2, starting: 0 })
      expect(warmPids(root)).toHaveLength(2)
    }, { timeout: 30_000, interval: 20 })
    const argv = warmArgv(root).map(args => args.filter(arg => arg.startsWith('--model')))
    expect(argv.sort()).toEqual([[], ['--model=model-c']])
    await run(app, { prompt: '[[fake text ok]]', model: 'model-c' })
    await run(app, { prompt: '[[fake text ok]]', model: 'model-a' })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 4 })
  })

  it('start a chat completion with a system message warm only once its argument set is kept warm', async () => {
    const { app, root } = await makeApp({ warmAgents: 2 })
    const chat = (system: string) => app.inject({ method: 'POST', url: '/v1/chat/completions', headers: AUTH, payload: { model: 'haiku', messages: [{ role: 'system', content: system }, { role: 'user', content: '[[fake echo]]' }] } })
    const argvOf = (response: Awaited<ReturnType<typeof chat>>) => (JSON.parse(response.json().choices[0].message.content) as { argv: string[] }).argv
    const first = await chat('Answer in French.')
    expect(argvOf(first)).toContain('--append-system-prompt=Answer in French.')
    await vi.waitFor(() => expect(app.ctx.warm.describe()).toMatchObject({ ready: 2, starting: 0 }), { timeout: 30_000, interval: 20 })
    expect(warmArgv(root).some(args => args.includes('--append-system-prompt=Answer'))).toBe(true)
    const again = await chat('Answer in French.')
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
    expect(argvOf(again)).toEqual(argvOf(first))
    const other = await chat('Answer in German.')
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 2 })
    expect(argvOf(other)).toContain('--append-system-prompt=Answer in German.')
  })

  it('give a Responses or Messages run the warm CLI a chat completion with the same argv would take', async () => {
    const { app } = await makeApp({ warmAgents: 2 })
    const post = async (url: string, payload: Record<string, unknown>) => {
      const response = await app.inject({ method: 'POST', url, headers: AUTH, payload })
      expect(response.statusCode).toBe(200)
      return response.json()
    }
    const argvOf = (text: string) => (JSON.parse(text) as { argv: string[] }).argv
    const chat = await post('/v1/chat/completions', { model: 'haiku', messages: [{ role: 'user', content: '[[fake echo]]' }] })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 0, misses: 1 })
    const ready = () => vi.waitFor(() => expect(app.ctx.warm.describe()).toMatchObject({ ready: 2, starting: 0 }), { timeout: 30_000, interval: 20 })
    await ready()
    const message = await post('/v1/messages', { model: 'haiku', max_tokens: 100, messages: [{ role: 'user', content: '[[fake echo]]' }] })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
    await ready()
    const response = await post('/v1/responses', { model: 'haiku', input: '[[fake echo]]' })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 2, misses: 1 })
    expect(argvOf(message.content[0].text)).toEqual(argvOf(chat.choices[0].message.content))
    expect(argvOf(response.output[0].content[0].text)).toEqual(argvOf(chat.choices[0].message.content))
  })

  it('count a job\'s timeout from when it takes the warm agent, and time it out as a cold start is', async () => {
    const { app } = await makeApp({ warmAgents: 1 })
    await warmReady(app, 1)
    const readySince = Date.now()
    // The warm agent has waited longer than the job may run: what it waited is not the job's time.
    await vi.waitFor(() => expect(Date.now() - readySince).toBeGreaterThan(2500), { timeout: 10_000, interval: 100 })
    const quick = await run(app, { prompt: '[[fake text in time]]', timeout_seconds: 2 })
    expect(quick).toMatchObject({ status: 'completed', result: { text: 'in time' } })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 0 })
    await warmReady(app, 1)
    const warm = await run(app, { prompt: '[[fake hang]]', timeout_seconds: 0.5 })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 2, misses: 0 })
    const { app: coldApp } = await makeApp()
    const cold = await run(coldApp, { prompt: '[[fake hang]]', timeout_seconds: 0.5 })
    expect(warm).toMatchObject({ status: 'timed_out', error: { code: 'timeout' } })
    expect({ status: warm.status, error: warm.error, exit: warm.exit }).toEqual({ status: cold.status, error: cold.error, exit: cold.exit })
  })

  it('start cold on a new day: a CLI started yesterday would tell the model yesterday\'s date', async () => {
    let offset = 0
    const { app, root } = await makeApp({ warmAgents: 1 }, { now: () => Date.now() + offset })
    await warmReady(app, 1)
    const [yesterdays] = warmPids(root)
    offset = 24 * 3600_000
    const job = await run(app, { prompt: '[[fake text today]]' })
    expect(job).toMatchObject({ status: 'completed', result: { text: 'today' } })
    expect(job.agent!.pid).not.toBe(yesterdays)
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 0, misses: 1 })
    await expectAllGone([yesterdays!])
    await warmReady(app, 1)
    expect(await run(app, { prompt: '[[fake text warm again]]' })).toMatchObject({ status: 'completed', result: { text: 'warm again' } })
    expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
  })

  it('start none while the disk is below WORKSPACE_MIN_FREE_BYTES: a warm workspace takes what a run\'s does', async () => {
    const { app } = await makeApp({ warmAgents: 1, workspaceMinFreeBytes: 1024 * 1024 * 2 ** 20 })
    await vi.waitFor(async () => expect((await health(app)).status).toBe('degraded'))
    // The one that may have started before the disk was first measured is used up by this job.
    const job = await run(app, { prompt: '[[fake text ok]]' })
    expect(job.status).toBe('completed')
    // A replacement would have started as the job's CLI read its prompt, with a slot free.
    expect(app.ctx.warm.describe()).toMatchObject({ ready: 0, starting: 0 })
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

describe('warm starts on shutdown', () => {
  it('leave no warm agent running once the service exits on SIGTERM, by pid', async () => {
    const root = await tempDir()
    const server = await startServer({ WORKSPACE_ROOT: root, WARM_AGENTS: '2' })
    await vi.waitFor(async () => expect((await json(fetch(`${server.url}/health`))).warm).toMatchObject({ ready: 2, starting: 0 }), { timeout: 30_000, interval: 50 })
    const pids = warmPids(root)
    expect(pids).toHaveLength(2)
    const inside = pids.flatMap(pid => descendants(pid))
    expect(inside.length).toBeGreaterThanOrEqual(2)
    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    await expectAllGone([...pids, ...inside])
    expect(processesUnder(root)).toEqual([])
    expect(await readdir(join(root, 'jobs'))).toEqual([])
    expect(warmPids(root)).toEqual([])
  })
})

/** A pool that keeps what its lanes hand out, so a test can reach the CLI a run took. */
class WatchedPool extends WarmPool {
  readonly taken: PreparedRun[] = []

  override lane<P> (name: string, options: LaneOptions<P>): WarmLane<P> {
    const lane = super.lane(name, options)
    return {
      ...lane,
      take: async (...args) => {
        const made = await lane.take(...args)
        if (made !== undefined) this.taken.push(made as PreparedRun)
        return made
      },
    }
  }
}

describe('a warm agent that dies after a run took it, before its prompt', () => {
  it('is never handed the prompt: the run starts cold and completes', async () => {
    const folders = new WorkspaceFolders(await tempDir())
    await folders.init()
    const env = { PATH: process.env.PATH! }
    const pool = new WatchedPool({ size: 1, maxIdleMs: 600_000, mayStart: () => true, now: Date.now, logger: pino({ level: 'silent' }) })
    onTestFinished(() => pool.close())
    const executor = new AgentExecutor({
      bin: FAKE_CLAUDE,
      sandbox: await Bubblewrap.create({ cli: FAKE_CLAUDE, env, stateDir: folders.sandbox, readOnly: [] }),
      records: new ProcessRecords(folders.pids),
      env,
      configs: { folders },
      killGraceMs: 1000,
      maxOutputBytes: 1 << 20,
      workspaces: new DirectoryWorkspaces(folders),
      warm: { pool, lane: 'jobs', defaultSpec: { prompt: '' } },
    })
    await vi.waitFor(() => expect(pool.describe().ready).toBe(1), { timeout: 30_000, interval: 20 })
    const spawned: number[] = []
    let warmPid: number | undefined
    const outcome = await executor.execute({ id: 'run-after-death', spec: { prompt: '[[fake text started cold]]' } }, {
      onSpawn: pid => spawned.push(pid),
      // Between the take and the prompt (where a Redis replica claims the spawn), the warm CLI dies.
      beforeSpawn: async () => {
        const taken = pool.taken[0]!.agent!
        warmPid = taken.pid
        process.kill(warmPid!, 'SIGKILL')
        await taken.exited
      },
    }, new AbortController().signal)
    expect(pool.describe()).toMatchObject({ hits: 1 })
    expect(outcome).toMatchObject({ status: 'completed', result: { result: 'started cold' } })
    expect(spawned).toHaveLength(1)
    expect(spawned[0]).not.toBe(warmPid)
    expect(readdirSync(folders.jobs).filter(name => !name.startsWith('warm-'))).toEqual([])
  })
})

/** Empty-folder workspaces whose warm ones are made only once `open` is called: a warm start held mid-way. */
class GatedWorkspaces extends DirectoryWorkspaces {
  readonly warmPrepared: string[] = []
  #open!: () => void
  readonly #gate = new Promise<void>(resolve => { this.#open = resolve })

  open (): void {
    this.#open()
  }

  override async prepare (id: string, options?: PrepareOptions): Promise<Workspace> {
    if (id.startsWith('warm-')) {
      await this.#gate
      this.warmPrepared.push(id)
    }
    return super.prepare(id, options)
  }
}

/** Process records that also remember, in order, whose CLI was spawned. */
class SpawnedRecords extends ProcessRecords {
  readonly spawned: string[] = []

  override record (id: string, pid: number): void {
    this.spawned.push(id)
    super.record(id, pid)
  }
}

describe('a run starting while a warm agent is being started', () => {
  it('stops that warm start if the run starts cold, and lets none start until its own CLI has read its prompt', async () => {
    const folders = new WorkspaceFolders(await tempDir())
    await folders.init()
    const env = { PATH: process.env.PATH! }
    const pool = new WarmPool({ size: 1, maxIdleMs: 600_000, mayStart: () => true, now: Date.now, logger: pino({ level: 'silent' }) })
    const workspaces = new GatedWorkspaces(folders)
    // A held warm start would hold the pool's close too.
    onTestFinished(() => {
      workspaces.open()
      return pool.close()
    })
    const records = new SpawnedRecords(folders.pids)
    const executor = new AgentExecutor({
      bin: FAKE_CLAUDE,
      sandbox: await Bubblewrap.create({ cli: FAKE_CLAUDE, env, stateDir: folders.sandbox, readOnly: [] }),
      records,
      env,
      configs: { folders },
      killGraceMs: 1000,
      maxOutputBytes: 1 << 20,
      workspaces,
      warm: { pool, lane: 'jobs', defaultSpec: { prompt: '' } },
    })
    await vi.waitFor(() => expect(pool.describe()).toMatchObject({ ready: 0, starting: 1 }))
    const whileStarting: Array<{ ready: number, starting: number }> = []
    const outcome = await executor.execute({ id: 'cold-run', spec: { prompt: '[[fake text cold]]', model: 'another-model' } }, {
      // Its workspace is made and its CLI not yet spawned: the pool is asked to fill its gap, and must not.
      beforeSpawn: async () => {
        pool.kick()
        await new Promise(resolve => setImmediate(resolve))
        await new Promise(resolve => setImmediate(resolve))
        const { ready, starting } = pool.describe()
        whileStarting.push({ ready, starting })
      },
    }, new AbortController().signal)
    expect(outcome).toMatchObject({ status: 'completed', result: { result: 'cold' } })
    expect(whileStarting).toEqual([{ ready: 0, starting: 0 }])
    expect(pool.describe()).toMatchObject({ hits: 0, misses: 1 })
    // Once the run's CLI had read its prompt, the gap was filled again.
    expect(pool.describe()).toMatchObject({ ready: 0, starting: 1 })
    workspaces.open()
    await vi.waitFor(() => expect(pool.describe()).toMatchObject({ ready: 1, starting: 0 }), { timeout: 30_000, interval: 20 })
    // The start the run stopped never started its CLI: the run's and the replacement's are the only ones.
    const [stopped, replacement] = workspaces.warmPrepared
    expect(records.spawned).toEqual(['cold-run', replacement])
    expect(readdirSync(folders.jobs)).toEqual([replacement])
    expect(stopped).not.toBe(replacement)
  })
})
