import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import OpenAI from 'openai'
import { describe, expect, inject, it, onTestFinished, vi } from 'vitest'
import { createRedisEngine } from '../src/engine/redis-engine.ts'
import type { RunHandle } from '../src/engine/types.ts'
import { createRecord } from '../src/jobs/job.ts'
import { tempDir, TOKEN } from './helpers/app.ts'
import { redisEngineOptions } from './helpers/engine.ts'
import { AgentProbe, expectAllGone } from './helpers/probe.ts'
import { waitForPing } from './setup/redis.ts'
import { getJobOver, json, post, startServer, type Server } from './helpers/server.ts'
import { collectEvents } from './helpers/sse.ts'

/**
 * Many replicas on one Redis: real server processes (src/server.ts) on the test run's private Redis,
 * each with its own WORKSPACE_ROOT and port, driven over HTTP.
 */

const REDIS = inject('redisUrl')
const cluster = REDIS === '' ? describe.skip : describe
const AUTH = { authorization: `Bearer ${TOKEN}` }
const prefix = (): string => `c-${randomBytes(6).toString('hex')}`

async function replica (cluster: string, instance: string, env: Record<string, string> = {}): Promise<Server> {
  return startServer({
    REDIS_URL: REDIS,
    REDIS_PREFIX: cluster,
    INSTANCE_ID: instance,
    WORKSPACE_ROOT: await tempDir(),
    REPLICA_TIMEOUT_SECONDS: '2',
    SHUTDOWN_GRACE_SECONDS: '0',
    KILL_GRACE_SECONDS: '1',
    MAX_CONCURRENCY: '1',
    ...env,
  })
}

const health = async (server: Server) => json(fetch(`${server.url}/health`))
const cancel = (server: Server, id: string) => fetch(`${server.url}/jobs/${id}`, { method: 'DELETE', headers: AUTH })

cluster('many replicas on one Redis', () => {
  it('submitted on A, is read, followed, listed and cancelled on B; its process group dies', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const a = await replica(name, 'replica-a')
    const job = await json(post(a.url, { prompt: `${probe.directive} [[fake say working]]` }))
    await probe.waitStarted(1)
    const b = await replica(name, 'replica-b')
    expect(await getJobOver(b.url, job.job_id)).toMatchObject({ job_id: job.job_id, status: 'running', agent: { instance: 'replica-a' } })
    const listed = await json(fetch(`${b.url}/jobs`, { headers: AUTH }))
    expect(listed.jobs.map((summary: { job_id: string }) => summary.job_id)).toEqual([job.job_id])
    const following = collectEvents(b.url, `/jobs/${job.job_id}/events`)
    const response = await cancel(b, job.job_id)
    expect(response.status).toBe(202)
    expect((await response.json()).cancel).toMatchObject({ reason: 'user' })
    await expectAllGone([probe.started[0]!.pid])
    const { events } = await following
    expect(events.at(-1)).toMatchObject({ type: 'end', data: { status: 'cancelled', cancel: { reason: 'user' }, agent: { instance: 'replica-a' } } })
    const ids = events.map(event => event.id!)
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1))
    // The same history, replayed from another replica after any id.
    const replay = await collectEvents(a.url, `/jobs/${job.job_id}/events`, { lastEventId: 2 })
    expect(replay.events.map(event => event.id)).toEqual(ids.slice(2))
    const output = await fetch(`${b.url}/jobs/${job.job_id}/output`, { headers: AUTH })
    expect(await output.text()).toContain('"subtype":"init"')
  })

  it('runs in submission order across replicas, never more than their summed MAX_CONCURRENCY', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const [a, b] = await Promise.all([replica(name, 'replica-a'), replica(name, 'replica-b')])
    const jobs: Array<Record<string, any>> = []
    for (let i = 0; i < 5; i++) jobs.push(await json(post([a, b][i % 2]!.url, { prompt: `job ${i} ${probe.directive}` })))
    await probe.waitStarted(2)
    await vi.waitFor(async () => expect((await health(a)).cluster).toEqual({ replicas: 2, active: 2, queued: 3, capacity: 2 }))
    const statuses = async () => Promise.all(jobs.map(async job => (await getJobOver(b.url, job.job_id)).status as string))
    expect(await statuses()).toEqual(['running', 'running', 'queued', 'queued', 'queued'])
    expect((await getJobOver(a.url, jobs[3]!.job_id)).queue_position).toBe(2)
    for (let next = 2; next < 5; next++) {
      probe.releaseOne()
      await probe.waitStarted(next + 1)
      const now = await statuses()
      // The oldest waiting job, and no other, took the freed slot, on whichever replica it was.
      expect(now.slice(next + 1).every(status => status === 'queued')).toBe(true)
      expect(now[next]).toBe('running')
    }
    probe.release()
    const done = await Promise.all(jobs.map(job => getJobOver(a.url, job.job_id, 30)))
    expect(done.map(job => job.status)).toEqual(Array(5).fill('completed'))
    expect(new Set(done.map(job => job.agent.instance))).toEqual(new Set(['replica-a', 'replica-b']))
  })

  it('admits exactly MAX_QUEUE_DEPTH runs when many submissions race on two replicas', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const env = { MAX_QUEUE_DEPTH: '10' }
    const [a, b] = await Promise.all([replica(name, 'replica-a', env), replica(name, 'replica-b', env)])
    const responses = await Promise.all(Array.from({ length: 80 }, (_, i) => post([a, b][i % 2]!.url, { prompt: `race ${i} ${probe.directive}` })))
    const codes = responses.map(response => response.status)
    expect(codes.filter(code => code === 202)).toHaveLength(10)
    expect(codes.filter(code => code === 429)).toHaveLength(70)
    const refused = await responses.find(response => response.status === 429)!.json()
    expect(refused.error).toMatchObject({ code: 'queue_full', max_queue_depth: 10 })
    probe.release()
  })

  it('gives one job for one Idempotency-Key sent to both replicas at the same moment', async () => {
    const name = prefix()
    const [a, b] = await Promise.all([replica(name, 'replica-a'), replica(name, 'replica-b')])
    const body = JSON.stringify({ prompt: 'once' })
    const responses = await Promise.all(Array.from({ length: 20 }, (_, i) => fetch(`${[a, b][i % 2]!.url}/execute`, {
      method: 'POST',
      headers: { ...AUTH, 'content-type': 'application/json', 'idempotency-key': 'ci-pipeline-7' },
      body,
    })))
    expect(responses.map(response => response.status)).toEqual(Array(20).fill(202))
    const ids = await Promise.all(responses.map(async response => (await response.json()).job_id as string))
    expect(new Set(ids).size).toBe(1)
    expect(responses.filter(response => response.headers.get('idempotent-replayed') === 'true')).toHaveLength(19)
  })

  it('ends worker_lost the job whose replica was SIGKILLed mid-run, never runs it again, and runs its queue elsewhere', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const a = await replica(name, 'replica-a')
    const lost = await json(post(a.url, { prompt: `lost ${probe.directive}` }))
    await probe.waitStarted(1)
    const b = await replica(name, 'replica-b')
    const busy = await json(post(b.url, { prompt: `busy ${probe.directive}` }))
    await probe.waitStarted(2)
    const waiting = await json(post(a.url, { prompt: 'waits' }))
    a.child.kill('SIGKILL')
    await a.exited
    // The agent dies with its replica (the sandbox's die-with-parent).
    await expectAllGone([probe.started[0]!.pid])
    const ended = await getJobOver(b.url, lost.job_id, 30)
    expect(ended).toMatchObject({ status: 'failed', error: { code: 'worker_lost', message: expect.stringContaining('replica-a') }, agent: { instance: 'replica-a' } })
    // The dead replica leaves the cluster's numbers at the next background refresh.
    await vi.waitFor(async () => expect((await health(b)).cluster).toMatchObject({ replicas: 1, capacity: 1 }))
    expect(probe.started).toHaveLength(2)
    probe.release()
    expect(await getJobOver(b.url, busy.job_id, 30)).toMatchObject({ status: 'completed' })
    expect(await getJobOver(b.url, waiting.job_id, 30)).toMatchObject({ status: 'completed', agent: { instance: 'replica-b' } })
    // Nothing started the lost job again.
    expect(probe.started).toHaveLength(2)
    expect((await getJobOver(b.url, lost.job_id)).status).toBe('failed')
  })

  it('drains only the replica sent SIGTERM: the other one takes its queue', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const env = { SHUTDOWN_GRACE_SECONDS: '1' }
    const a = await replica(name, 'replica-a', env)
    const onA = await json(post(a.url, { prompt: `a ${probe.directive}` }))
    await probe.waitStarted(1)
    const b = await replica(name, 'replica-b', env)
    const onB = await json(post(b.url, { prompt: `b ${probe.directive}` }))
    await probe.waitStarted(2)
    const queued = [await json(post(a.url, { prompt: 'q1' })), await json(post(a.url, { prompt: 'q2' }))]
    a.child.kill('SIGTERM')
    await vi.waitFor(async () => expect(await health(a)).toMatchObject({ status: 'draining' }))
    expect((await post(a.url, { prompt: 'late' })).status).toBe(503)
    expect(await a.exited).toBe(0)
    // Its running job had its grace, then was cancelled; the queue belongs to the cluster.
    expect(await getJobOver(b.url, onA.job_id)).toMatchObject({ status: 'cancelled', cancel: { reason: 'shutdown' } })
    for (const job of queued) expect(await getJobOver(b.url, job.job_id)).toMatchObject({ status: 'queued', cancel: null })
    probe.release()
    expect(await getJobOver(b.url, onB.job_id, 30)).toMatchObject({ status: 'completed' })
    for (const job of queued) expect(await getJobOver(b.url, job.job_id, 30)).toMatchObject({ status: 'completed', agent: { instance: 'replica-b' } })
  })

  it('keeps every record across a restart of every replica, and runs what was still queued', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const [a, b] = await Promise.all([replica(name, 'replica-a'), replica(name, 'replica-b')])
    const done = await json(post(a.url, { prompt: '[[fake say step one]] [[fake text finished]]' }))
    expect(await getJobOver(b.url, done.job_id, 30)).toMatchObject({ status: 'completed' })
    const history = (await collectEvents(a.url, `/jobs/${done.job_id}/events`)).events
    const held = [await json(post(a.url, { prompt: probe.directive })), await json(post(b.url, { prompt: probe.directive }))]
    await probe.waitStarted(2)
    const queued = await json(post(a.url, { prompt: 'after the restart' }))
    for (const server of [a, b]) server.child.kill('SIGTERM')
    await Promise.all([a.exited, b.exited])
    const [c, d] = await Promise.all([replica(name, 'replica-c'), replica(name, 'replica-d')])
    expect(await getJobOver(c.url, done.job_id)).toMatchObject({ status: 'completed', result: { text: 'finished' } })
    expect((await collectEvents(d.url, `/jobs/${done.job_id}/events`)).events).toEqual(history)
    for (const job of held) expect(await getJobOver(d.url, job.job_id)).toMatchObject({ status: 'cancelled', cancel: { reason: 'shutdown' } })
    expect(await getJobOver(d.url, queued.job_id, 30)).toMatchObject({ status: 'completed', agent: { instance: expect.stringMatching(/^replica-[cd]$/) } })
  })

  it('answers 503 while Redis is away, finishes the run meanwhile and writes it when Redis is back', async () => {
    // A Redis of its own, with persistence, that the test stops and starts.
    const dir = await tempDir()
    const socket = join(dir, 'redis.sock')
    const startRedis = async () => {
      const server = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--appendonly', 'yes', '--save', '', '--dir', dir, '--logfile', join(dir, 'redis.log')], { stdio: 'ignore' })
      onTestFinished(() => { server.kill('SIGKILL') })
      await waitForPing(socket)
      return server
    }
    let redis = await startRedis()
    const probe = await AgentProbe.start()
    const a = await startServer({ REDIS_URL: `unix://${socket}`, REDIS_PREFIX: 'outage', INSTANCE_ID: 'replica-a', WORKSPACE_ROOT: await tempDir(), REPLICA_TIMEOUT_SECONDS: '2' })
    const before = await json(post(a.url, { prompt: 'before' }))
    expect(await getJobOver(a.url, before.job_id, 30)).toMatchObject({ status: 'completed' })
    const during = await json(post(a.url, { prompt: `${probe.directive} [[fake text written later]]` }))
    await probe.waitStarted(1)
    redis.kill('SIGTERM')
    await new Promise(resolve => redis.once('exit', resolve))
    await vi.waitFor(async () => {
      const response = await fetch(`${a.url}/health`)
      expect(response.status).toBe(503)
      expect(await response.json()).toMatchObject({ status: 'unavailable', engine: { kind: 'redis', redis: { state: 'disconnected' } } })
    })
    const refused = await post(a.url, { prompt: 'not now' })
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('5')
    expect((await refused.json()).error.code).toBe('engine_unavailable')
    expect((await fetch(`${a.url}/jobs/${before.job_id}`, { headers: AUTH })).status).toBe(503)
    // The agent finishes while Redis is away.
    probe.release()
    redis = await startRedis()
    await vi.waitFor(async () => expect((await fetch(`${a.url}/health`)).status).toBe(200), { timeout: 30_000 })
    expect(await getJobOver(a.url, during.job_id, 30)).toMatchObject({ status: 'completed', result: { text: 'written later' } })
    expect(await getJobOver(a.url, before.job_id)).toMatchObject({ status: 'completed' })
    expect((await collectEvents(a.url, `/jobs/${during.job_id}/events`)).events.at(-1)).toMatchObject({ type: 'end', data: { status: 'completed' } })
  })

  it('runs a chat completion sent to a full replica on the other one, and kills it there when the client goes', async () => {
    const name = prefix()
    const probe = await AgentProbe.start()
    const a = await replica(name, 'replica-a')
    const held = await json(post(a.url, { prompt: probe.directive }))
    await probe.waitStarted(1)
    const b = await replica(name, 'replica-b')
    const client = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const answer = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'hi [[fake text from the other replica]]' }] })
    expect(answer.choices[0]!.message.content).toBe('from the other replica')
    const controller = new AbortController()
    const stream = client.chat.completions.create({ model: 'haiku', stream: true, messages: [{ role: 'user', content: `${probe.directive} [[fake say partly]]` }] }, { signal: controller.signal })
    await probe.waitStarted(2)
    await vi.waitFor(async () => expect((await health(b)).active).toBe(1))
    controller.abort()
    await stream.catch(() => {})
    await expectAllGone([probe.started[1]!.pid])
    await vi.waitFor(async () => expect((await health(b)).active).toBe(0))
    probe.release()
    expect(await getJobOver(a.url, held.job_id, 30)).toMatchObject({ status: 'completed' })
  })

  it('delivers a callback once more from another replica when the one delivering it dies mid-attempt', async () => {
    const name = prefix()
    const received: IncomingMessage[] = []
    const held: ServerResponse[] = []
    const receiver = createServer((request, response) => {
      received.push(request)
      request.resume()
      if (received.length === 1) held.push(response)
      else response.writeHead(204).end()
    })
    await new Promise<void>(resolve => receiver.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => { for (const response of held) response.destroy(); receiver.close() })
    const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`
    const env = { WEBHOOK_SECRET: 'whsec-cluster-0123456789', WEBHOOK_ALLOWED_HOSTS: `127.0.0.1:${(receiver.address() as AddressInfo).port}`, WEBHOOK_TIMEOUT_SECONDS: '1', WEBHOOK_BACKOFF_SECONDS: '0.1' }
    const a = await replica(name, 'replica-a', env)
    const job = await json(post(a.url, { prompt: 'call me', callback_url: hook }))
    await vi.waitFor(() => expect(received).toHaveLength(1))
    a.child.kill('SIGKILL')
    await a.exited
    const b = await replica(name, 'replica-b', env)
    await vi.waitFor(async () => expect((await getJobOver(b.url, job.job_id)).callback).toMatchObject({ delivered: true }), { timeout: 30_000 })
    expect(received).toHaveLength(2)
    expect(received[1]!.headers['x-claude-runner-delivery']).toBe(received[0]!.headers['x-claude-runner-delivery'])
  })
})

cluster('what a dead replica had taken', () => {
  const REPLICA = fileURLToPath(new URL('./fixtures/engine-replica.ts', import.meta.url))
  const TIMEOUT_MS = 1000

  /** A replica in a process of its own, holding every run it takes (see fixtures/engine-replica.ts). */
  async function doomedReplica (name: string, mode: 'preparing' | 'spawned') {
    const child = spawn(process.execPath, [REPLICA, REDIS, name, 'doomed', mode, String(TIMEOUT_MS)], { stdio: ['ignore', 'pipe', 'inherit'] })
    onTestFinished(() => { child.kill('SIGKILL') })
    const taken: string[] = []
    const waiters: Array<() => void> = []
    let buffer = ''
    const ready = new Promise<void>(resolve => {
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        buffer += chunk
        for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n')) {
          const message = JSON.parse(buffer.slice(0, newline)) as { ready?: true, taken?: string }
          buffer = buffer.slice(newline + 1)
          if (message.ready) resolve()
          if (message.taken !== undefined) {
            taken.push(message.taken)
            for (const wake of waiters.splice(0)) wake()
          }
        }
      })
    })
    await ready
    const tookOne = (): Promise<void> => taken.length > 0 ? Promise.resolve() : new Promise(resolve => waiters.push(resolve))
    return { child, taken, tookOne }
  }

  async function survivor (name: string) {
    const engine = await createRedisEngine(redisEngineOptions(REDIS, name, { instance: 'survivor', replicaTimeoutMs: TIMEOUT_MS }))
    onTestFinished(() => engine.close())
    return engine
  }

  const run = (id = randomBytes(8).toString('hex')) => createRecord({ id, kind: 'job', tenant: 'default', createdAt: Date.now(), timeoutMs: 60_000, execute: { id, spec: { prompt: 'p' } }, request: { prompt: 'p' }, idempotency: null, callback: false })

  it('runs elsewhere a run whose replica died before starting its agent', async () => {
    const name = prefix()
    const doomed = await doomedReplica(name, 'preparing')
    const engine = await survivor(name)
    const record = (await engine.queue.admit(run(), { limits: {}, keepMs: 60_000 })).record
    await doomed.tookOne()
    expect(doomed.taken).toEqual([record.id])
    doomed.child.kill('SIGKILL')
    const ran: string[] = []
    engine.queue.process(async (handle: RunHandle) => {
      ran.push(handle.record.id)
      await handle.claimSpawn()
      await handle.finish({ status: 'completed', error: null }, [])
    })
    await engine.events.waitTerminal(record.id, 30_000)
    expect(ran).toEqual([record.id])
    expect(await engine.store.get(record.id)).toMatchObject({ status: 'completed', instance: 'survivor' })
  })

  it('ends worker_lost, without running it again, a run whose replica died after starting its agent', async () => {
    const name = prefix()
    const doomed = await doomedReplica(name, 'spawned')
    const engine = await survivor(name)
    const record = (await engine.queue.admit(run(), { limits: {}, keepMs: 60_000 })).record
    await doomed.tookOne()
    doomed.child.kill('SIGKILL')
    const ran: string[] = []
    engine.queue.process(async (handle: RunHandle) => {
      ran.push(handle.record.id)
      await handle.finish({ status: 'completed', error: null }, [])
    })
    await engine.events.waitTerminal(record.id, 30_000)
    expect(await engine.store.get(record.id)).toMatchObject({ status: 'failed', error: { code: 'worker_lost' }, instance: 'doomed' })
    expect(ran).toEqual([])
  })
})
