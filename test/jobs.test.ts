import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { AUTH, agentsTemplate, finished, getJob, appMaker, describeEngines, record, run, submit } from './helpers/app.ts'
import { AgentProbe, descendants, expectAllGone, isRunning } from './helpers/probe.ts'

const echo = (text: string): Record<string, unknown> => JSON.parse(text)

describeEngines('jobs', engine => {
  const makeApp = appMaker(engine)

  describe('a job', () => {
    it('returns the agent\'s answer, cost, usage and session', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: 'say hi [[fake usage 120 30 7 5]]' })
      expect(job).toMatchObject({
        status: 'completed',
        phase: 'finished',
        error: null,
        exit: { code: 0, signal: null },
        result: {
          text: 'Hi! (fake model)',
          is_error: false,
          subtype: 'success',
          num_turns: 1,
          total_cost_usd: 0.049864,
          usage: { input_tokens: 120, output_tokens: 30, cache_read_input_tokens: 7, cache_creation_input_tokens: 5 },
          session_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
          terminal_reason: 'completed',
        },
        agent: { pid: expect.any(Number), model: 'claude-opus-5-5', claude_code_version: '2.1.332' },
        output: { truncated: false, lines: 3, stderr_tail: '' },
      })
      expect(job.result!.session_id).toBe(job.agent!.session_id)
      expect(job.queue_wait_ms).toBeGreaterThanOrEqual(0)
      expect(job.run_ms).toBeGreaterThanOrEqual(0)
      expect(Object.keys(job.phase_ms).sort()).toEqual(['collecting', 'preparing', 'running'])
      expect(Date.parse(job.finished_at!)).toBeGreaterThanOrEqual(Date.parse(job.started_at!))
    })

    it('is answered 202 with a Location at once, before the agent has run', async () => {
      const { app } = await makeApp()
      const probe = await AgentProbe.start()
      const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: probe.directive, metadata: { pipeline: 42 } } })
      expect(response.statusCode).toBe(202)
      const body = response.json()
      expect(response.headers.location).toBe(`/jobs/${body.job_id}`)
      expect(body).toMatchObject({ status: expect.stringMatching(/queued|running/), result: null, request: { prompt: probe.directive, metadata: { pipeline: 42 } } })
      probe.release()
      await finished(app, body.job_id)
    })

    it('passes model, agent, max turns and budget to the CLI as options, and the prompt on stdin', async () => {
      const { app } = await makeApp({ claudeConfigTemplate: await agentsTemplate('reviewer') })
      const job = await run(app, { prompt: 'hello [[fake echo]]', model: 'sonnet', agent: 'reviewer', max_turns: 3, max_budget_usd: 0.5 })
      const seen = echo(job.result!.text!)
      expect(seen.argv).toEqual(['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose', '--model=sonnet', '--agent=reviewer', '--max-turns=3', '--max-budget-usd=0.5'])
      expect(seen.stdin).toBe('hello [[fake echo]]')
      expect(job.agent!.model).toBe('claude-sonnet-5-5')
    })

    it('delivers a 1 MiB prompt intact through stdin', async () => {
      const { app } = await makeApp()
      const directive = ' [[fake echo]]'
      const prompt = 'é'.repeat(200_000) + 'x'.repeat(1024 * 1024 - 400_000 - directive.length) + directive
      expect(Buffer.byteLength(prompt)).toBe(1024 * 1024)
      const job = await run(app, { prompt })
      expect(job.status).toBe('completed')
      const seen = echo(job.result!.text!)
      expect(seen.stdin_bytes).toBe(1024 * 1024)
      expect(seen.stdin_sha256).toBe(createHash('sha256').update(prompt).digest('hex'))
    })

    it('keeps memory bounded when the agent floods its output', async () => {
      const maxOutputBytes = 1024 * 1024
      const { app } = await makeApp({ maxOutputBytes })
      const job = await run(app, { prompt: '[[fake flood 52428800]]' })
      expect(job.status).toBe('completed')
      expect(job.result!.text).toBe('Hi! (fake model)')
      expect(job.output!.bytes).toBeGreaterThan(50 * 1024 * 1024)
      expect(job.output!.truncated).toBe(true)
      expect(job.output!.kept_bytes).toBeLessThanOrEqual(maxOutputBytes)
      const events = await app.ctx.engine.events.since(job.job_id, 0)
      expect(events.reduce((sum, event) => sum + event.json.length, 0)).toBeLessThanOrEqual(maxOutputBytes)
      const raw = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}/output`, headers: AUTH })
      expect(raw.headers['x-output-truncated']).toBe('true')
      expect(raw.rawPayload.length).toBeLessThanOrEqual(maxOutputBytes)
    })

    it('drops a single line longer than MAX_OUTPUT_BYTES without losing the result', async () => {
      const { app } = await makeApp({ maxOutputBytes: 256 * 1024 })
      const job = await run(app, { prompt: '[[fake big-line 1000000]]' })
      expect(job.status).toBe('completed')
      expect(job.output!.truncated).toBe(true)
      expect(job.result!.text).toBe('Hi! (fake model)')
    })

    it('reassembles lines split across chunks and keeps non-JSON lines as log', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: '[[fake split]] [[fake garbage]] [[fake text split ok]]' })
      expect(job.status).toBe('completed')
      expect(job.result!.text).toBe('split ok')
      const raw = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}/output`, headers: AUTH })
      expect(raw.headers['content-type']).toMatch(/^application\/x-ndjson/)
      const lines = raw.body.trim().split('\n')
      expect(lines).toContain('this line is not JSON')
      expect(JSON.parse(lines.at(-1)!)).toMatchObject({ type: 'result', result: 'split ok' })
    })

    it('fails with a clear message when CLAUDE_BIN does not exist, and /health says so', async () => {
      const { app } = await makeApp({ claudeBin: '/nonexistent/claude' })
      const job = await run(app, { prompt: 'hi' })
      expect(job.status).toBe('failed')
      expect(job.error!.code).toBe('agent_not_found')
      expect(job.error!.message).toContain('CLAUDE_BIN')
      expect(job.error!.message).toContain('/nonexistent/claude')
      await app.ctx.cli.ready
      const health = (await app.inject({ method: 'GET', url: '/health' })).json()
      expect(health.claude).toMatchObject({ bin: '/nonexistent/claude', state: 'missing', version: null })
      // The service is still up and serving (200), and says jobs will fail, and why.
      expect(health.status).toBe('degraded')
      expect(health.reasons).toEqual([expect.stringContaining('the Claude Code CLI cannot run (CLAUDE_BIN /nonexistent/claude)')])
    })

    it('reports the CLI version on /health', async () => {
      const { app } = await makeApp()
      await app.ctx.cli.ready
      const health = (await app.inject({ method: 'GET', url: '/health' })).json()
      expect(health.claude).toMatchObject({ state: 'found', version: '2.1.332 (Claude Code)', error: null })
      expect(health.version).toMatch(/^\d+\.\d+\.\d+/)
      expect(JSON.stringify(health)).not.toContain('test-token')
    })
  })

  describe('a failing agent', () => {
    it('an is_error result fails the job with the result text', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: '[[fake is-error]]' })
      expect(job).toMatchObject({ status: 'failed', error: { code: 'agent_error', message: 'fake agent failure' }, exit: { code: 1 } })
      expect(job.result!.is_error).toBe(true)
    })

    it('an API error reported as subtype success is still a failure', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: '[[fake api-error 401]]' })
      expect(job.status).toBe('failed')
      expect(job.result).toMatchObject({ subtype: 'success', is_error: true, api_error_status: 401 })
      expect(job.error).toEqual({ code: 'api_error', message: 'API Error: 401 fake 401 error' })
    })

    it('max turns and max budget fail with the CLI\'s reason', async () => {
      const { app } = await makeApp()
      const turns = await run(app, { prompt: '[[fake max-turns]]', max_turns: 1 })
      expect(turns).toMatchObject({ status: 'failed', error: { code: 'max_turns', message: 'Reached maximum number of turns (1)' } })
      expect(turns.result).toMatchObject({ subtype: 'error_max_turns', text: null, errors: ['Reached maximum number of turns (1)'] })
      const budget = await run(app, { prompt: '[[fake max-budget]]', max_budget_usd: 0.01 })
      expect(budget).toMatchObject({ status: 'failed', error: { code: 'max_budget', message: 'Reached maximum budget ($0.01)' } })
    })

    it('a crash without a result fails with the exit code and stderr', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: '[[fake stderr something broke]] [[fake exit 3]]' })
      expect(job).toMatchObject({ status: 'failed', exit: { code: 3, signal: null }, result: null })
      expect(job.error!.code).toBe('agent_crashed')
      expect(job.error!.message).toContain('exited with code 3')
      expect(job.error!.message).toContain('something broke')
      expect(job.output!.stderr_tail).toContain('fake-claude: exiting with 3')
    })

    it('exit 0 without a result is a failure, not a success', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: '[[fake no-result]]' })
      expect(job).toMatchObject({ status: 'failed', error: { code: 'no_result' }, exit: { code: 0 } })
    })

    it('a success result with a non-zero exit is a failure', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: '[[fake result-exit 2]]' })
      expect(job).toMatchObject({ status: 'failed', error: { code: 'agent_crashed' }, exit: { code: 2 } })
      expect(job.result!.is_error).toBe(false)
    })
  })

  describe('timeouts', () => {
    it('time out a hung agent, kill everything in its sandbox and remove its workspace', async () => {
      const { app, root } = await makeApp({ killGraceSeconds: 0.5 })
      const probe = await AgentProbe.start()
      // The probe never lets the agent go: it hangs there until the timeout.
      const submitted = await submit(app, { prompt: `[[fake grandchild]] ${probe.directive}`, timeout_seconds: 2 })
      await probe.waitStarted(1)
      const agent = probe.started[0]!.pid
      const sandbox = (await record(app, submitted.job_id)).pid!
      const everything = descendants(sandbox)
      expect(everything).toContain(agent)
      expect(descendants(agent)).toHaveLength(1)
      const job = await finished(app, submitted.job_id)
      expect(job.status).toBe('timed_out')
      expect(job.error).toEqual({ code: 'timeout', message: 'the run exceeded its timeout of 2s' })
      // The agent died of SIGTERM; bwrap reports that as 128 + 15.
      expect(job.exit).toEqual({ code: 143, signal: null })
      await expectAllGone([sandbox, ...everything])
      expect(await readdir(join(root, 'jobs'))).toEqual([])
    })

    it('SIGKILL an agent that ignores SIGTERM after the grace period', async () => {
      const { app } = await makeApp({ killGraceSeconds: 0.3 })
      const probe = await AgentProbe.start()
      const submitted = await submit(app, { prompt: `[[fake ignore-sigterm]] ${probe.directive}`, timeout_seconds: 2 })
      await probe.waitStarted(1)
      const job = await finished(app, submitted.job_id)
      expect(job.status).toBe('timed_out')
      expect(job.exit!.signal).toBe('SIGKILL')
      await expectAllGone([probe.started[0]!.pid])
    })

    it('count execution only, not the time spent waiting in the queue', async () => {
      const { app } = await makeApp({ maxConcurrency: 1 })
      const probe = await AgentProbe.start()
      const blocker = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      const waiting = await submit(app, { prompt: 'quick', timeout_seconds: 2 })
      // Let the waiting job sit in the queue for longer than its whole timeout.
      await sleep(2500)
      expect((await getJob(app, waiting.job_id)).status).toBe('queued')
      probe.release()
      await finished(app, blocker.job_id)
      const done = await finished(app, waiting.job_id)
      expect(done.status).toBe('completed')
      expect(done.queue_wait_ms).toBeGreaterThan(2000)
    })
  })

  describe('cancelling', () => {
    it('a queued job leaves the queue at once and never starts', async () => {
      const { app } = await makeApp({ maxConcurrency: 1 })
      const probe = await AgentProbe.start()
      const blocker = await submit(app, { prompt: probe.directive })
      await probe.waitStarted(1)
      const queued = await submit(app, { prompt: probe.directive })
      const response = await app.inject({ method: 'DELETE', url: `/jobs/${queued.job_id}`, headers: AUTH })
      expect(response.statusCode).toBe(200)
      expect(response.json()).toMatchObject({
        status: 'cancelled',
        started_at: null,
        error: { code: 'cancelled' },
        cancel: { reason: 'user', requested_at: expect.any(String) },
      })
      expect(app.ctx.engine.queue.counts.queued).toBe(0)
      probe.release()
      await finished(app, blocker.job_id)
      expect(probe.started).toHaveLength(1)
    })

    it('a running job has its process group killed and its workspace removed', async () => {
      const { app, root } = await makeApp()
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: `[[fake grandchild]] ${probe.directive}` })
      await probe.waitStarted(1)
      const agentPid = probe.started[0]!.pid
      const [grandchild] = descendants(agentPid)
      expect(grandchild).toEqual(expect.any(Number))
      expect(isRunning(agentPid)).toBe(true)
      expect(isRunning(grandchild!)).toBe(true)

      const response = await app.inject({ method: 'DELETE', url: `/jobs/${job.job_id}`, headers: AUTH })
      expect(response.statusCode).toBe(202)
      expect(response.json()).toMatchObject({ status: 'running', cancel: { reason: 'user' } })
      const done = await finished(app, job.job_id)
      expect(done).toMatchObject({ status: 'cancelled', error: { code: 'cancelled', message: 'the job was cancelled' } })
      await expectAllGone([agentPid, grandchild!])
      expect(existsSync(join(root, 'jobs', job.job_id))).toBe(false)
      expect(app.ctx.engine.queue.counts.active).toBe(0)
    })

    it('a finished job answers 409 with its state; an unknown one 404', async () => {
      const { app } = await makeApp()
      const job = await run(app, { prompt: 'hi' })
      const again = await app.inject({ method: 'DELETE', url: `/jobs/${job.job_id}`, headers: AUTH })
      expect(again.statusCode).toBe(409)
      expect(again.json().error).toMatchObject({ code: 'job_finished', status: 'completed' })
      const unknown = await app.inject({ method: 'DELETE', url: '/jobs/nope', headers: AUTH })
      expect(unknown.statusCode).toBe(404)
      expect(unknown.json().error.code).toBe('job_not_found')
    })
  })

  describe('the agent process', () => {
    it('does not outlive the job when a grandchild holds its stdout open', async () => {
      const { app } = await makeApp()
      const probe = await AgentProbe.start()
      const submitted = await submit(app, { prompt: `[[fake grandchild-stdout]] ${probe.directive}` })
      await probe.waitStarted(1)
      const grandchildren = descendants(probe.started[0]!.pid)
      expect(grandchildren).toHaveLength(1)
      probe.release()
      expect((await finished(app, submitted.job_id)).status).toBe('completed')
      await expectAllGone(grandchildren)
    })

    it('sees none of the service\'s secrets in its environment', async () => {
      const env = {
        PATH: process.env.PATH!,
        HOME: '/home/agent',
        AUTH_TOKENS: 'secret-token-aaaaaaaaaaaaaaaa',
        WEBHOOK_SECRET: 'whsec',
        DATABASE_URL: 'postgres://user:pw@db/app',
        ANTHROPIC_API_KEY: 'sk-ant-test',
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
        TEAM_VAR: 'passed on',
        LC_ALL: 'C.UTF-8',
      }
      const { app } = await makeApp({ agentEnvPassthrough: ['TEAM_VAR', 'WEBHOOK_SECRET'] }, { env })
      const job = await run(app, { prompt: '[[fake echo]]' })
      const seen = echo(job.result!.text!).env as Record<string, string>
      expect(seen).toMatchObject({ HOME: '/home/agent', ANTHROPIC_API_KEY: 'sk-ant-test', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', TEAM_VAR: 'passed on', LC_ALL: 'C.UTF-8' })
      expect(seen).not.toHaveProperty('AUTH_TOKENS')
      expect(seen).not.toHaveProperty('WEBHOOK_SECRET')
      expect(seen).not.toHaveProperty('DATABASE_URL')
      expect(JSON.stringify(seen)).not.toContain('secret-token')
    })

    it('starts jobs in submission order, at most MAX_CONCURRENCY at a time', async () => {
      let tick = 0
      const { app } = await makeApp({ maxConcurrency: 3 }, { now: () => ++tick })
      const jobs = []
      for (let i = 0; i < 20; i++) jobs.push(await submit(app, { prompt: `job ${i}` }))
      const done = await Promise.all(jobs.map(job => finished(app, job.job_id)))
      expect(done.every(job => job.status === 'completed')).toBe(true)
      const held = await Promise.all(jobs.map(job => record(app, job.job_id)))
      const starts = held.map(job => job.startedAt!)
      expect(starts).toEqual([...starts].sort((a, b) => a - b))
      // On the tick clock, count how many jobs were running at each start.
      for (const job of held) {
        const overlapping = held.filter(other => other.startedAt! <= job.startedAt! && other.finishedAt! > job.startedAt!)
        expect(overlapping.length).toBeLessThanOrEqual(3)
      }
    })
  })
})
