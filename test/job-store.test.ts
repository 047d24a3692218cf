import { describe, expect, it } from 'vitest'
import { EventLog } from '../src/jobs/event-log.ts'
import { MemoryJobStore } from '../src/jobs/job-store.ts'
import { Job, type JobStatus } from '../src/jobs/job.ts'

let seq = 0
function makeJob (status: JobStatus, finishedAt?: number, prompt = 'p'): Job {
  const job = new Job({
    id: `job-${++seq}`,
    seq,
    request: { prompt },
    limits: { timeoutMs: 1000 },
    createdAt: 0,
    events: new EventLog({ maxEvents: 10, maxBytes: 1000 }),
  })
  if (status === 'running') job.start(0)
  else if (status !== 'queued') job.finish(status, finishedAt ?? 0)
  return job
}

describe('MemoryJobStore', () => {
  it('evicts finished jobs past the TTL and keeps queued and running ones (seed: _evict_old_jobs)', () => {
    let now = 100_000
    const store = new MemoryJobStore({ ttlMs: 60_000, maxFinished: 100, maxRetainedBytes: 1e9, now: () => now })
    const old = makeJob('completed', now - 99_999)
    const fresh = makeJob('completed', now)
    const running = makeJob('running')
    const queued = makeJob('queued')
    for (const job of [old, fresh, running, queued]) store.add(job)
    store.finished(old)
    store.finished(fresh)
    expect(store.evictExpired()).toBe(1)
    expect(store.get(old.id)).toBeUndefined()
    expect(store.get(fresh.id)).toBe(fresh)
    expect(store.get(running.id)).toBe(running)
    expect(store.get(queued.id)).toBe(queued)
    now += 10 * 60_000
    expect(store.evictExpired()).toBe(1)
    expect(store.size).toBe(2)
  })

  it('keeps at most maxFinished finished jobs, dropping the oldest first', () => {
    const store = new MemoryJobStore({ ttlMs: 1e9, maxFinished: 3, maxRetainedBytes: 1e9, now: () => 0 })
    const running = makeJob('running')
    store.add(running)
    const done = Array.from({ length: 5 }, () => makeJob('completed'))
    for (const job of done) {
      store.add(job)
      store.finished(job)
    }
    expect(done.map(job => store.get(job.id) !== undefined)).toEqual([false, false, true, true, true])
    expect(store.get(running.id)).toBe(running)
  })

  it('bounds the bytes finished jobs hold', () => {
    const store = new MemoryJobStore({ ttlMs: 1e9, maxFinished: 1000, maxRetainedBytes: 64 * 1024, now: () => 0 })
    const jobs = Array.from({ length: 10 }, () => makeJob('failed', 0, 'x'.repeat(20 * 1024)))
    for (const job of jobs) {
      store.add(job)
      store.finished(job)
    }
    expect(store.retainedBytes).toBeLessThanOrEqual(64 * 1024)
    expect(store.get(jobs.at(-1)!.id)).toBeDefined()
    expect(store.get(jobs[0]!.id)).toBeUndefined()
  })

  it('lists newest first, filtered, in pages', () => {
    const store = new MemoryJobStore({ ttlMs: 1e9, maxFinished: 100, maxRetainedBytes: 1e9, now: () => 0 })
    const jobs = [makeJob('completed'), makeJob('failed'), makeJob('completed'), makeJob('running'), makeJob('completed')]
    for (const job of jobs) {
      store.add(job)
      if (job.terminal) store.finished(job)
    }
    const page1 = store.list({ limit: 2 })
    expect(page1.jobs.map(job => job.id)).toEqual([jobs[4]!.id, jobs[3]!.id])
    const page2 = store.list({ limit: 2, before: page1.next })
    expect(page2.jobs.map(job => job.id)).toEqual([jobs[2]!.id, jobs[1]!.id])
    const page3 = store.list({ limit: 2, before: page2.next })
    expect(page3).toEqual({ jobs: [jobs[0]], next: undefined })
    expect(store.list({ limit: 10, status: 'completed' }).jobs.map(job => job.id)).toEqual([jobs[4]!.id, jobs[2]!.id, jobs[0]!.id])
  })
})
