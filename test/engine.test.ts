import { randomBytes, randomUUID } from 'node:crypto'
import { expect, inject, it, onTestFinished, vi } from 'vitest'
import { createMemoryEngine, type EngineOptions } from '../src/engine/memory-engine.ts'
import { createRedisEngine } from '../src/engine/redis-engine.ts'
import type { Engine, RunHandle, RunRecord, TenantLimits } from '../src/engine/types.ts'
import { AppError, RunCancelledError, RunTimeoutError } from '../src/errors.ts'
import { createRecord, isTerminal } from '../src/jobs/job.ts'
import { describeEngines, type EngineKind } from './helpers/app.ts'
import { engineOptions, redisEngineOptions } from './helpers/engine.ts'

/**
 * The engine contract, the same for both engines: the work queue, the store and the events,
 * driven directly with processors the test holds and releases.
 */

interface Held {
  handle: RunHandle
  signal: AbortSignal
  release: (update?: Partial<Parameters<RunHandle['finish']>[0]>) => void
}

class Processor {
  readonly started: string[] = []
  readonly held = new Map<string, Held>()
  readonly #waiters: Array<{ count: number, resolve: () => void }> = []
  #released = false

  readonly run = async (handle: RunHandle, signal: AbortSignal): Promise<void> => {
    const { promise, resolve } = Promise.withResolvers<Partial<Parameters<RunHandle['finish']>[0]>>()
    this.held.set(handle.record.id, { handle, signal, release: update => resolve(update ?? {}) })
    this.started.push(handle.record.id)
    if (this.#released) resolve({})
    for (const waiter of [...this.#waiters]) {
      if (this.started.length >= waiter.count) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
        waiter.resolve()
      }
    }
    const update = await Promise.race([promise, new Promise<Partial<Parameters<RunHandle['finish']>[0]>>(resolve => signal.addEventListener('abort', () => resolve({}), { once: true }))])
    // An aborted run waits to be released too: its slot is held until its process is gone.
    if (signal.aborted) await promise
    const reason: unknown = signal.reason
    const status = signal.aborted ? (reason instanceof RunTimeoutError ? 'timed_out' : 'cancelled') : 'completed'
    await handle.finish({ status, error: status === 'completed' ? null : { code: status === 'timed_out' ? 'timeout' : 'cancelled', message: String((reason as Error)?.message) }, ...update }, ['{"type":"result"}'])
  }

  waitStarted (count: number): Promise<void> {
    if (this.started.length >= count) return Promise.resolve()
    return new Promise(resolve => this.#waiters.push({ count, resolve }))
  }

  release (id: string, update?: Partial<Parameters<RunHandle['finish']>[0]>): void {
    const held = this.held.get(id)
    if (held === undefined) throw new Error(`${id} is not running`)
    held.release(update)
  }

  /** Lets every run go, held or still to come (teardown). */
  releaseAll (): void {
    this.#released = true
    for (const held of this.held.values()) held.release()
  }
}

/** An engine whose runs the returned processor holds until released; both are torn down after the test. */
async function setup (kind: EngineKind, overrides: Partial<EngineOptions> & { dispatchTickMs?: number } = {}): Promise<{ engine: Engine, processor: Processor }> {
  const engine = await makeEngine(kind, overrides)
  const processor = new Processor()
  engine.queue.process(processor.run)
  onTestFinished(async () => {
    processor.releaseAll()
    await engine.close()
  })
  return { engine, processor }
}

async function makeEngine (kind: EngineKind, overrides: Partial<EngineOptions> & { dispatchTickMs?: number } = {}): Promise<Engine> {
  const { dispatchTickMs, ...options } = { concurrency: 2, ...overrides }
  return kind === 'memory'
    ? createMemoryEngine(engineOptions(options))
    : await createRedisEngine(redisEngineOptions(inject('redisUrl'), `t-${randomBytes(6).toString('hex')}`, { ...options, ...(dispatchTickMs === undefined ? {} : { dispatchTickMs }) }))
}

function job (options: { tenant?: string, prompt?: string, timeoutMs?: number, idempotency?: { key: string, fingerprint: string }, now?: number, kind?: 'job' | 'chat' } = {}): RunRecord {
  const id = randomUUID()
  const prompt = options.prompt ?? 'p'
  return createRecord({
    id,
    kind: options.kind ?? 'job',
    tenant: options.tenant ?? 'default',
    createdAt: options.now ?? Date.now(),
    timeoutMs: options.timeoutMs ?? 60_000,
    execute: { id, spec: { prompt } },
    request: options.kind === 'chat' ? null : { prompt },
    idempotency: options.idempotency ?? null,
    callback: false,
  })
}

async function admit (engine: Engine, record: RunRecord, limits: TenantLimits = {}): Promise<RunRecord> {
  const result = await engine.queue.admit(record, { limits, keepMs: 3_600_000 })
  return result.record
}

async function refusal (promise: Promise<unknown>): Promise<AppError> {
  const error = await promise.then(() => undefined, (e: unknown) => e)
  expect(error).toBeInstanceOf(AppError)
  return error as AppError
}

async function ended (engine: Engine, id: string): Promise<RunRecord> {
  await engine.events.waitTerminal(id, 30_000)
  const record = await engine.store.get(id)
  expect(record).toBeDefined()
  expect(isTerminal(record!.status)).toBe(true)
  return record!
}

describeEngines('the engine', kind => {
  it('runs at most MAX_CONCURRENCY at once and starts the rest in submission order', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 2 })
    const records = []
    for (let i = 0; i < 5; i++) records.push(await admit(engine, job({ prompt: `job ${i}` })))
    await processor.waitStarted(2)
    expect(processor.started).toEqual([records[0]!.id, records[1]!.id])
    expect(await Promise.all(records.map(record => engine.queue.position(record.id)))).toEqual([undefined, undefined, 1, 2, 3])
    expect((await engine.store.get(records[2]!.id))!.status).toBe('queued')
    for (let i = 0; i < 5; i++) {
      await processor.waitStarted(Math.min(i + 2, 5))
      processor.release(records[i]!.id)
      await ended(engine, records[i]!.id)
    }
    expect(processor.started).toEqual(records.map(record => record.id))
    expect(records.map(record => record.seq)).toEqual([...records.map(record => record.seq)].sort((a, b) => a - b))
  })

  it('refuses once MAX_QUEUE_DEPTH runs are admitted, running and waiting together, with the counts and Retry-After', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1, maxQueueDepth: 2 })
    const running = await admit(engine, job())
    await processor.waitStarted(1)
    const waiting = await admit(engine, job())
    const error = await refusal(admit(engine, job()))
    expect(error).toMatchObject({ code: 'queue_full', statusCode: 429, details: { active: 1, queued: 1, capacity: 1, max_queue_depth: 2 } })
    expect(Number(error.headers!['retry-after'])).toBeGreaterThanOrEqual(1)
    processor.release(running.id)
    await processor.waitStarted(2)
    // A slot freed: one more is admitted.
    await admit(engine, job())
    processor.release(waiting.id)
  })

  it('counts the timeout from the start of the run, never while it waits', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1 })
    const first = await admit(engine, job())
    const second = await admit(engine, job({ timeoutMs: 100 }))
    await processor.waitStarted(1)
    // Longer than the second's timeout, while it waits.
    await new Promise(resolve => setTimeout(resolve, 300))
    processor.release(first.id)
    await processor.waitStarted(2)
    const held = processor.held.get(second.id)!
    expect(held.signal.aborted).toBe(false)
    await new Promise<void>(resolve => held.signal.addEventListener('abort', () => resolve()))
    expect(held.signal.reason).toBeInstanceOf(RunTimeoutError)
    processor.release(second.id)
    expect((await ended(engine, second.id)).status).toBe('timed_out')
  })

  it('cancels a waiting run at once; a running one has its signal aborted and keeps its slot until it ends', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1 })
    const running = await admit(engine, job())
    const waiting = await admit(engine, job())
    await processor.waitStarted(1)
    expect(await engine.queue.cancel(waiting.id, 'user')).toBe('dequeued')
    expect(await ended(engine, waiting.id)).toMatchObject({ status: 'cancelled', error: { code: 'cancelled' }, cancel: { reason: 'user' }, startedAt: null })
    expect((await engine.events.since(waiting.id, 0)).map(event => [event.id, event.type])).toEqual([[1, 'status'], [2, 'status']])

    expect(await engine.queue.cancel(running.id, 'user')).toBe('signalled')
    const held = processor.held.get(running.id)!
    await vi.waitFor(() => expect(held.signal.aborted).toBe(true))
    expect(held.signal.reason).toBeInstanceOf(RunCancelledError)
    expect(engine.queue.counts.active).toBe(1)
    processor.release(running.id)
    expect(await ended(engine, running.id)).toMatchObject({ status: 'cancelled', cancel: { reason: 'user' } })
    await vi.waitFor(() => expect(engine.queue.counts.active).toBe(0))
    expect(await engine.queue.cancel(running.id, 'user')).toBe('unknown')
    expect(processor.started).toEqual([running.id])
  })

  it('on drain gives running runs their grace, then cancels them; refuses new runs', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1 })
    const running = await admit(engine, job())
    const waiting = await admit(engine, job())
    await processor.waitStarted(1)
    const draining = engine.queue.drain(200)
    expect(engine.queue.counts.closing).toBe(true)
    expect(await refusal(admit(engine, job()))).toMatchObject({ code: 'shutting_down', statusCode: 503 })
    const held = processor.held.get(running.id)!
    await new Promise<void>(resolve => held.signal.addEventListener('abort', () => resolve()))
    expect(held.signal.reason).toMatchObject({ reason: 'shutdown' })
    processor.release(running.id)
    await draining
    expect(await ended(engine, running.id)).toMatchObject({ status: 'cancelled', cancel: { reason: 'shutdown' } })
    const left = await engine.store.get(waiting.id)
    if (kind === 'memory') {
      // One process: what waits is cancelled with it.
      expect(left).toMatchObject({ status: 'cancelled', cancel: { reason: 'shutdown' } })
    } else {
      // The cluster's queue: what waits stays for the other replicas.
      expect(left).toMatchObject({ status: 'queued', cancel: null })
    }
    expect(processor.started).toEqual([running.id])
  })

  it('holds a tenant at max_running while later runs of others start, then starts its oldest first', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 3 })
    const capped = { maxRunning: 1 }
    const a1 = await admit(engine, job({ tenant: 'team-a' }), capped)
    await processor.waitStarted(1)
    const a2 = await admit(engine, job({ tenant: 'team-a' }), capped)
    const b1 = await admit(engine, job({ tenant: 'team-b' }))
    const b2 = await admit(engine, job({ tenant: 'team-b' }))
    await processor.waitStarted(3)
    expect(processor.started).toEqual([a1.id, b1.id, b2.id])
    expect((await engine.store.get(a2.id))!.status).toBe('queued')
    const b3 = await admit(engine, job({ tenant: 'team-b' }))
    // A slot frees: team-a's waiting run is older than team-b's, and may start now.
    processor.release(a1.id)
    await processor.waitStarted(4)
    expect(processor.started[3]).toBe(a2.id)
    processor.release(b1.id)
    await processor.waitStarted(5)
    expect(processor.started[4]).toBe(b3.id)
    for (const record of [a2, b2, b3]) processor.release(record.id)
  })

  it('refuses a tenant past max_queued with tenant_queue_full while others are accepted', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1 })
    const limits = { maxQueued: 1 }
    const a1 = await admit(engine, job({ tenant: 'team-a' }), limits)
    await processor.waitStarted(1)
    await admit(engine, job({ tenant: 'team-a' }), limits)
    const error = await refusal(admit(engine, job({ tenant: 'team-a' }), limits))
    expect(error).toMatchObject({ code: 'tenant_queue_full', statusCode: 429, details: { tenant: 'team-a', queued: 1, max_queued: 1 } })
    expect(Number(error.headers!['retry-after'])).toBeGreaterThanOrEqual(1)
    await admit(engine, job({ tenant: 'team-b' }), limits)
    processor.release(a1.id)
  })

  it('refuses a tenant that spent its budget today with budget_exceeded until midnight UTC', async () => {
    const now = Date.parse('2026-12-01T18:00:00Z')
    const { engine, processor } = await setup(kind, { concurrency: 2, now: () => now })
    const spent = await admit(engine, job({ tenant: 'team-a', now }), { budgetUsdPerDay: 1 })
    await processor.waitStarted(1)
    processor.release(spent.id, { result: { type: 'result', subtype: 'success', is_error: false, total_cost_usd: 1.25 } })
    await ended(engine, spent.id)
    const error = await refusal(admit(engine, job({ tenant: 'team-a', now }), { budgetUsdPerDay: 1 }))
    expect(error).toMatchObject({ code: 'budget_exceeded', statusCode: 429, details: { tenant: 'team-a', spent_usd: 1.25, budget_usd_per_day: 1 } })
    expect(error.headers!['retry-after']).toBe(String(6 * 3600))
    await admit(engine, job({ tenant: 'team-b', now }), { budgetUsdPerDay: 1 })
    const usage = await engine.usage.days(['team-a'], '2026-12-01', '2026-12-01')
    expect(usage).toEqual([{ tenant: 'team-a', days: [expect.objectContaining({ date: '2026-12-01', total_cost_usd: 1.25, runs: { completed: 1, failed: 0, timed_out: 0, cancelled: 0 } })] }])
  })

  it('keeps Idempotency-Keys per tenant: the same key and body give the same run, another body a conflict', async () => {
    const { engine } = await setup(kind)
    const key = { key: 'ci-42', fingerprint: 'f1' }
    const first = await admit(engine, job({ idempotency: key }))
    const again = await engine.queue.admit(job({ idempotency: key }), { limits: {}, keepMs: 60_000 })
    expect(again).toMatchObject({ admitted: false, record: { id: first.id } })
    expect(await refusal(admit(engine, job({ idempotency: { key: 'ci-42', fingerprint: 'f2' } })))).toMatchObject({ code: 'idempotency_conflict', details: { job_id: first.id } })
    const other = await admit(engine, job({ tenant: 'team-b', idempotency: key }))
    expect(other.id).not.toBe(first.id)
  })

  it('evicts finished runs past their TTL, past MAX_FINISHED_JOBS and past MAX_RETAINED_BYTES, oldest first', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z')
    const { engine, processor } = await setup(kind, { concurrency: 5, ttlMs: 60_000, maxFinished: 3, maxRetainedBytes: 64 * 1024, now: () => now })
    const finish = async (prompt = 'p'): Promise<RunRecord> => {
      const record = await admit(engine, job({ now, prompt }))
      await vi.waitFor(() => expect(processor.held.has(record.id)).toBe(true))
      processor.release(record.id)
      return ended(engine, record.id)
    }
    const old = await finish()
    now += 50_000
    const fresh = await finish()
    const running = await admit(engine, job({ now }))
    await vi.waitFor(() => expect(processor.held.has(running.id)).toBe(true))
    now += 20_000
    // The seed's _evict_old_jobs: past the TTL it is gone; fresh and running ones stay.
    expect(await engine.store.get(old.id)).toBeUndefined()
    expect(await engine.store.get(fresh.id)).toBeDefined()
    expect(await engine.store.get(running.id)).toBeDefined()
    processor.release(running.id)
    await ended(engine, running.id)
    // Count: three finished at most.
    const many = [await finish(), await finish(), await finish()]
    expect(await engine.store.get(fresh.id)).toBeUndefined()
    for (const record of many) expect(await engine.store.get(record.id)).toBeDefined()
    // Bytes: big ones push the oldest out.
    const big = [await finish('x'.repeat(30 * 1024)), await finish('y'.repeat(30 * 1024))]
    expect(await engine.store.get(many[0]!.id)).toBeUndefined()
    expect(await engine.store.get(big[1]!.id)).toBeDefined()
  })

  it('keeps each finished run for the time it was admitted with, never past the TTL', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z')
    const { engine, processor } = await setup(kind, { concurrency: 3, ttlMs: 60_000, now: () => now })
    const finish = async (keepMs: number): Promise<RunRecord> => {
      const record = job({ now, kind: 'chat' })
      await engine.queue.admit(record, { limits: {}, keepMs })
      await vi.waitFor(() => expect(processor.held.has(record.id)).toBe(true))
      processor.release(record.id)
      return ended(engine, record.id)
    }
    const brief = await finish(10_000)
    const longer = await finish(30_000)
    const longest = await finish(3_600_000)
    const kept = async (): Promise<string[]> => {
      const found = []
      for (const [name, record] of Object.entries({ brief, longer, longest })) if (await engine.store.get(record.id) !== undefined) found.push(name)
      return found
    }
    expect(await kept()).toEqual(['brief', 'longer', 'longest'])
    now += 15_000
    expect(await kept()).toEqual(['longer', 'longest'])
    now += 20_000
    expect(await kept()).toEqual(['longest'])
    // An hour asked for, the TTL (a minute) given.
    now += 30_000
    expect(await kept()).toEqual([])
  })

  it('removes a finished run at once, with its events; never one still running', async () => {
    const { engine, processor } = await setup(kind)
    const record = await admit(engine, job({ kind: 'chat' }))
    await vi.waitFor(() => expect(processor.held.has(record.id)).toBe(true))
    expect(await engine.store.remove(record.id)).toBe('unfinished')
    processor.release(record.id)
    await ended(engine, record.id)
    expect((await engine.events.since(record.id, 0)).length).toBeGreaterThan(0)
    expect(await engine.store.remove(record.id)).toBe('removed')
    expect(await engine.store.get(record.id)).toBeUndefined()
    expect(await engine.events.since(record.id, 0)).toEqual([])
    expect(await engine.store.remove(record.id)).toBe('unknown')
    expect(await engine.store.remove('never-was')).toBe('unknown')
  })

  it('lists jobs newest first, by status and tenant, a page at a time, without chat runs', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 6 })
    const records = []
    for (const tenant of ['team-a', 'team-b', 'team-a', 'team-b', 'team-a']) records.push(await admit(engine, job({ tenant })))
    await admit(engine, job({ kind: 'chat' }))
    await processor.waitStarted(6)
    processor.release(records[1]!.id)
    processor.release(records[3]!.id, { status: 'failed', error: { code: 'agent_error', message: 'no' } })
    await ended(engine, records[3]!.id)
    const ids = (page: { records: RunRecord[] }): string[] => page.records.map(record => record.id)
    const page1 = await engine.store.list({ limit: 2 })
    expect(ids(page1)).toEqual([records[4]!.id, records[3]!.id])
    const page2 = await engine.store.list({ limit: 2, before: page1.next })
    expect(ids(page2)).toEqual([records[2]!.id, records[1]!.id])
    const page3 = await engine.store.list({ limit: 2, before: page2.next })
    expect(page3).toMatchObject({ next: undefined })
    expect(ids(page3)).toEqual([records[0]!.id])
    expect(ids(await engine.store.list({ limit: 10, tenant: 'team-a' }))).toEqual([records[4]!.id, records[2]!.id, records[0]!.id])
    expect(ids(await engine.store.list({ limit: 10, status: 'failed' }))).toEqual([records[3]!.id])
    for (const id of processor.started) processor.held.get(id)!.release()
  })

  it('replays a run\'s events by id, follows them live and ends with the terminal one; tells of a gap', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1, maxEventBytes: 8 * 1024 })
    const record = await admit(engine, job())
    await processor.waitStarted(1)
    const { handle } = processor.held.get(record.id)!
    handle.event('text', { text: 'one' })
    handle.event('text', { text: 'two' })
    await vi.waitFor(async () => expect((await engine.events.since(record.id, 0)).length).toBe(3))
    const feed = await engine.events.follow(record.id, 2, 1024 * 1024)
    expect(feed.missed).toBe(false)
    const seen: Array<[number, string]> = []
    const reading = (async () => { for await (const event of feed) seen.push([event.id, event.type]) })()
    handle.event('text', { text: 'three' })
    processor.release(record.id)
    await reading
    expect(seen).toEqual([[3, 'text'], [4, 'text'], [5, 'status']])
    expect(JSON.parse((await engine.events.since(record.id, 4))[0]!.json)).toMatchObject({ status: 'completed' })

    // A log past its bound drops its oldest events; a follower from 0 is told what it missed.
    const chatty = await admit(engine, job())
    await processor.waitStarted(2)
    const chattyHandle = processor.held.get(chatty.id)!.handle
    for (let i = 0; i < 40; i++) chattyHandle.event('text', { text: 'z'.repeat(500) })
    processor.release(chatty.id)
    await ended(engine, chatty.id)
    const late = await engine.events.follow(chatty.id, 0, 1024 * 1024)
    expect(late.missed).toBe(true)
    expect(late.firstId).toBeGreaterThan(1)
    const ids = []
    for await (const event of late) ids.push(event.id)
    expect(ids[0]).toBe(late.firstId)
    expect(ids.at(-1)).toBe(42)
  })

  it('starts a run admitted the moment another ended without waiting for a periodic dispatch', async () => {
    // Redis: the dispatch tick is a safety net; set to ten minutes, a lost wake-up would hang here.
    const { engine, processor } = await setup(kind, { concurrency: 1, ...(kind === 'redis' ? { dispatchTickMs: 600_000 } : {}) })
    for (let i = 0; i < 30; i++) {
      const record = await admit(engine, job())
      await processor.waitStarted(i + 1)
      processor.release(record.id)
      await ended(engine, record.id)
    }
    expect(processor.started).toHaveLength(30)
  })

  it('waits for the end of a run, or for the time given', async () => {
    const { engine, processor } = await setup(kind, { concurrency: 1 })
    const record = await admit(engine, job())
    await processor.waitStarted(1)
    const started = performance.now()
    await engine.events.waitTerminal(record.id, 100)
    expect(performance.now() - started).toBeGreaterThanOrEqual(95)
    const waiting = engine.events.waitTerminal(record.id, 60_000)
    processor.release(record.id)
    await waiting
    expect((await engine.store.get(record.id))!.status).toBe('completed')
  })
})
