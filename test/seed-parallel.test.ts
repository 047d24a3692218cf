// The behaviours of the earlier service's test suite (shared/seed/), ported: concurrent runs, never
// 409, capacity 1 queues the second job, queue depth gives 429, /health fields, a workspace per
// job, TTL eviction. The chat-completion case lives in openai-chat.test.ts.
import { existsSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { AUTH, agentsTemplate, finished, getJob, appMaker, describeEngines, submit } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'

describeEngines('the seed', engine => {
  const makeApp = appMaker(engine)

  describe('parallel execution (seed)', () => {
    it('does not answer 409 to a second /execute while a job runs', async () => {
      const { app } = await makeApp({ claudeConfigTemplate: await agentsTemplate('x', 'y', 'z') })
      const probe = await AgentProbe.start()
      const first = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: `a ${probe.directive}`, agent: 'x' } })
      await probe.waitStarted(1)
      const second = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: `b ${probe.directive}`, agent: 'y' } })
      expect(first.statusCode).toBe(202)
      expect(second.statusCode).toBe(202)
      expect(second.json()).toMatchObject({ job_id: expect.any(String), status: expect.stringMatching(/queued|running/) })
      probe.release()
      const jobs = await Promise.all([first, second].map(r => finished(app, r.json().job_id)))
      expect(jobs.map(job => job.status)).toEqual(['completed', 'completed'])
    })

    it('runs two /execute jobs at the same time', async () => {
      const { app } = await makeApp({ claudeConfigTemplate: await agentsTemplate('x', 'y', 'z') })
      const probe = await AgentProbe.start()
      const a = await submit(app, { prompt: `a ${probe.directive}`, agent: 'x' })
      const b = await submit(app, { prompt: `b ${probe.directive}`, agent: 'y' })
      // Both agents report in while neither has been let go: they run concurrently.
      await probe.waitStarted(2)
      expect(app.ctx.engine.queue.counts.active).toBe(2)
      expect(new Set(probe.started.map(start => start.pid)).size).toBe(2)
      probe.release()
      expect((await finished(app, a.job_id)).status).toBe('completed')
      expect((await finished(app, b.job_id)).status).toBe('completed')
    })

    it('with capacity 1, accepts the second job but keeps it queued until the slot frees', async () => {
      const { app } = await makeApp({ maxConcurrency: 1, claudeConfigTemplate: await agentsTemplate('x', 'y', 'z') })
      const probe = await AgentProbe.start()
      const r1 = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: `a ${probe.directive}`, agent: 'x' } })
      await probe.waitStarted(1)
      const r2 = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'b', agent: 'y' } })
      expect(r1.statusCode).toBe(202)
      expect(r2.statusCode).toBe(202)
      const job2 = await getJob(app, r2.json().job_id)
      expect(job2).toMatchObject({ status: 'queued', phase: 'queued', queue_position: 1, started_at: null })
      expect(app.ctx.engine.queue.counts.active).toBe(1)
      expect(app.ctx.engine.queue.counts.queued).toBe(1)
      expect(probe.started).toHaveLength(1)

      probe.release()
      const done1 = await finished(app, r1.json().job_id)
      const done2 = await finished(app, r2.json().job_id)
      expect(done2.status).toBe('completed')
      expect(Date.parse(done2.started_at!)).toBeGreaterThanOrEqual(Date.parse(done1.finished_at!))
    })

    it('reports capacity on /health', async () => {
      const { app, config } = await makeApp({ maxConcurrency: 7 })
      const response = await app.inject({ method: 'GET', url: '/health' })
      expect(response.statusCode).toBe(200)
      expect(response.json()).toMatchObject({ status: 'ok', busy: false, active: 0, queued: 0, capacity: config.maxConcurrency })
      expect(config.maxConcurrency).toBe(7)
    })

    it('reports busy when every slot is taken', async () => {
      const { app } = await makeApp({ maxConcurrency: 1 })
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      await submit(app, { prompt: 'waits' })
      const health = (await app.inject({ method: 'GET', url: '/health' })).json()
      expect(health).toMatchObject({ status: 'ok', busy: true, active: 1, queued: 1, capacity: 1 })
      probe.release()
      await finished(app, job.job_id)
    })

    it('keeps /health true from one request to the next: its cached answer follows every change', async () => {
      let clock = Date.parse('2026-01-01T00:00:00Z')
      const { app } = await makeApp({ maxConcurrency: 1 }, { now: () => clock })
      const health = async () => {
        const response = await app.inject({ method: 'GET', url: '/health' })
        expect(response.headers['content-type']).toBe('application/json; charset=utf-8')
        return { code: response.statusCode, ...response.json() }
      }
      await app.ctx.cli.ready
      const idle = await health()
      expect(idle).toMatchObject({ code: 200, status: 'ok', busy: false, active: 0, queued: 0, uptime_seconds: 0, claude: { state: 'found' } })
      expect(await health()).toEqual(idle)
      const probe = await AgentProbe.start()
      const held = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      expect(await health()).toMatchObject({ busy: true, active: 1, queued: 0 })
      const waiting = await submit(app, { prompt: 'waits' })
      expect(await health()).toMatchObject({ busy: true, active: 1, queued: 1, uptime_seconds: 0 })
      clock += 2_999
      expect(await health()).toMatchObject({ uptime_seconds: 2 })
      probe.release()
      await finished(app, held.job_id)
      await finished(app, waiting.job_id)
      expect(await health()).toMatchObject({ code: 200, status: 'ok', busy: false, active: 0, queued: 0, uptime_seconds: 2 })
      await app.ctx.drain()
      expect(await health()).toMatchObject({ code: 503, status: 'draining', active: 0, queued: 0 })
    })

    it('gives each job a workspace of its own, removed afterwards', async () => {
      const { app, root } = await makeApp({ claudeConfigTemplate: await agentsTemplate('x', 'y', 'z') })
      const probe = await AgentProbe.start()
      const a = await submit(app, { prompt: `a ${probe.directive}`, agent: 'x' })
      const b = await submit(app, { prompt: `b ${probe.directive}`, agent: 'y' })
      await probe.waitStarted(2)
      // Each agent works in /workspace of its own sandbox: its own folder on the host.
      expect(probe.started.map(start => start.cwd)).toEqual(['/workspace', '/workspace'])
      const cwds = [`${root}/jobs/${a.job_id}`, `${root}/jobs/${b.job_id}`]
      for (const cwd of cwds) expect(existsSync(cwd)).toBe(true)
      probe.release()
      await finished(app, a.job_id)
      await finished(app, b.job_id)
      for (const cwd of cwds) expect(existsSync(cwd)).toBe(false)
    })

    it('refuses with 429 beyond MAX_QUEUE_DEPTH (test_queue_depth_rejection, literally)', async () => {
      // The seed: capacity 1, MAX_QUEUE_DEPTH = 2; the first runs, the second waits, the third is
      // refused. The depth counts what was admitted and has not finished: running plus waiting.
      const { app } = await makeApp({ maxConcurrency: 1, maxQueueDepth: 2, claudeConfigTemplate: await agentsTemplate('x', 'y', 'z') })
      const probe = await AgentProbe.start()
      const r1 = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: `a ${probe.directive}`, agent: 'x' } })
      await probe.waitStarted(1)
      const r2 = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'b', agent: 'y' } })
      const r3 = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'c', agent: 'z' } })
      probe.release()
      await finished(app, r2.json().job_id)
      expect(r1.statusCode).toBe(202) // active
      expect(r2.statusCode).toBe(202) // queued
      expect(r3.statusCode).toBe(429) // over depth
      expect(Number(r3.headers['retry-after'])).toBeGreaterThanOrEqual(1)
      expect(r3.json().error).toMatchObject({ code: 'queue_full', queued: 1, active: 1, capacity: 1, max_queue_depth: 2 })
      // Nothing of the refused job was kept.
      const listed = await app.inject({ method: 'GET', url: '/jobs', headers: AUTH })
      expect(listed.json().jobs.map((job: { job_id: string }) => job.job_id).sort()).toEqual([r1.json().job_id, r2.json().job_id].sort())
    })

    it('evicts finished jobs past JOB_TTL_SECONDS and keeps queued and running ones', async () => {
      let clock = Date.parse('2026-01-01T00:00:00Z')
      const { app } = await makeApp({ maxConcurrency: 1, jobTtlSeconds: 60 }, { now: () => clock })
      const probe = await AgentProbe.start()
      const old = await submit(app, { prompt: 'old' })
      await finished(app, old.job_id)
      clock += 50_000
      const fresh = await submit(app, { prompt: 'fresh' })
      await finished(app, fresh.job_id)
      const running = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      const queued = await submit(app, { prompt: 'queued' })

      clock += 20_000 // old finished 70 s ago, fresh 20 s ago
      expect(await app.ctx.engine.store.get(old.job_id)).toBeUndefined()
      const gone = await app.inject({ method: 'GET', url: `/jobs/${old.job_id}`, headers: AUTH })
      expect(gone.statusCode).toBe(404)
      expect(gone.json().error.code).toBe('job_not_found')
      expect((await getJob(app, fresh.job_id)).status).toBe('completed')
      expect((await getJob(app, running.job_id)).status).toBe('running')
      expect((await getJob(app, queued.job_id)).status).toBe('queued')

      clock += 10 * 60_000 // still running and queued: never evicted, however old
      expect((await getJob(app, running.job_id)).status).toBe('running')
      expect((await getJob(app, queued.job_id)).status).toBe('queued')
      expect(await app.ctx.engine.store.get(fresh.job_id)).toBeUndefined()
      probe.release()
      await finished(app, queued.job_id)
    })
  })
})
