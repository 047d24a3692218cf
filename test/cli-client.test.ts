import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { AUTH, listen, makeApp, run, submit, tempDir, TOKEN } from './helpers/app.ts'
import { cli, startCli } from './helpers/cli.ts'
import { AgentProbe } from './helpers/probe.ts'
import { closedPort, cuttingProxy } from './helpers/proxy.ts'
import { startServer } from './helpers/server.ts'

const requestsTo = async (app: Awaited<ReturnType<typeof makeApp>>['app'], route: string): Promise<number> => {
  const text = (await app.inject({ method: 'GET', url: '/metrics', headers: AUTH })).body
  const line = text.split('\n').find(line => line.startsWith(`claude_runner_http_requests_total{method="GET",route="${route}",status="200"}`))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

describe('the claude-runner client against a server that is not there', () => {
  it('fails at once with 69 when the first connection is refused, saying why', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`
    for (const args of [['status', 'some-job'], ['run', '-q', 'hi'], ['wait', 'some-job'], ['follow', 'some-job']]) {
      const result = await cli(url, args)
      expect(result.code, args.join(' ')).toBe(69)
      expect(result.stderr, args.join(' ')).toContain(`cannot reach ${url}: connect ECONNREFUSED`)
      expect(result.stderr).not.toContain('retrying')
    }
  })

  it('with --connect-timeout, retries (saying so, even with -q) and gives up when it runs out', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`
    const result = await cli(url, ['run', '-q', '--connect-timeout', '0.8', 'hi'])
    expect(result.code).toBe(69)
    expect(result.stderr).toMatch(/ECONNREFUSED.*; retrying in \d\.\ds \(--connect-timeout 0\.8s\)/)
    expect(result.stderr).toContain('(gave up after --connect-timeout 0.8s)')
  })

  it('with --connect-timeout, goes on as soon as the server is up', async () => {
    const port = await closedPort()
    const client = startCli(`http://127.0.0.1:${port}`, ['run', '--connect-timeout', '60', 'hi [[fake text up at last]]'])
    await client.stderrContains('retrying')
    const { app } = await makeApp()
    await app.listen({ host: '127.0.0.1', port })
    const result = await client.done
    expect(result.code).toBe(0)
    expect(result.stdout).toBe('up at last\n')
  })
})

describe('the claude-runner client behind a proxy that cuts connections', () => {
  it('follows to the end when every stream is cut after one event: each stream that delivered starts the count again', async () => {
    const { app } = await makeApp()
    const base = await listen(app)
    const says = Array.from({ length: 12 }, (_, i) => `[[fake say step ${i}]]`).join(' ')
    const job = await run(app, { prompt: `${says} [[fake text all done]]` })
    const proxy = await cuttingProxy(base, () => 'one-event')
    const result = await cli(proxy.url, ['follow', job.job_id])
    expect(result.code).toBe(0)
    expect(result.stdout).toBe('all done\n')
    // One connection per event: many more than the 10 failures it would give up after.
    expect(proxy.connections).toBeGreaterThan(15)
    expect(result.stderr).toContain('assistant: step 11')
    expect(result.stderr).toMatch(/the event stream of job \S+ stopped: it was cut \(.*\); resuming after event \d+/)
    expect(result.stderr.match(/assistant: step 3\n/g)).toHaveLength(1)
  })

  it('retries dropped connections the same way in wait and follow', async () => {
    const { app } = await makeApp()
    const base = await listen(app)
    const job = await run(app, { prompt: '[[fake text finished]]' })
    for (const command of ['wait', 'follow']) {
      const proxy = await cuttingProxy(base, connection => connection < 3 ? 'drop' : 'pass')
      const result = await cli(proxy.url, [command, job.job_id])
      expect(result.code, command).toBe(0)
      expect(result.stdout, command).toBe('finished\n')
      expect(result.stderr.match(/other side closed; retrying in/g), command).toHaveLength(3)
    }
  })
})

describe('claude-runner wait --timeout', () => {
  it('never spins: it long-polls for what is left, and exits 75 while the job runs', async () => {
    const { app } = await makeApp()
    const base = await listen(app)
    const probe = await AgentProbe.start()
    const job = await submit(app, { prompt: probe.directive })
    await probe.waitStarted(1)
    const before = await requestsTo(app, '/jobs/:id')
    const result = await cli(base, ['wait', job.job_id, '--timeout', '0.9'])
    expect(result.code).toBe(75)
    expect(result.stderr).toContain(`job ${job.job_id} is still running`)
    expect(await requestsTo(app, '/jobs/:id') - before).toBeLessThanOrEqual(2)
    probe.release()
  })
})

describe('the claude-runner client when the server is killed and restarted', () => {
  it('says the server lost the job and exits 76, from follow and from wait', async () => {
    const probe = await AgentProbe.start()
    const first = await startServer({ WORKSPACE_ROOT: await tempDir() })
    const port = new URL(first.url).port
    // The client talks to the port through a proxy, so the test can see its long-poll arrive.
    const proxy = await cuttingProxy(first.url, () => 'pass')
    const accepted = await fetch(`${first.url}/execute`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify({ prompt: probe.directive }) })
    const job = await accepted.json() as { job_id: string }
    await probe.waitStarted(1)
    const following = startCli(proxy.url, ['follow', job.job_id])
    await following.stderrContains('agent running')
    const waiting = startCli(proxy.url, ['wait', job.job_id])
    // Its long-poll has reached the server: the plain GET before it was answered.
    await vi.waitFor(() => expect(proxy.requests.some(line => line.startsWith(`GET /jobs/${job.job_id}?wait=`))).toBe(true))

    first.child.kill('SIGKILL')
    await first.exited
    const second = await startServer({ WORKSPACE_ROOT: await tempDir(), PORT: port })
    expect(second.url).toBe(first.url)
    for (const client of [following, waiting]) {
      const result = await client.done
      expect(result.code).toBe(76)
      expect(result.stderr).toContain(`the server no longer has job ${job.job_id}: it was restarted (or killed) since it accepted the job`)
      expect(result.stderr).toContain('retrying in')
    }
  })
})

describe('the claude-runner client and a tenant\'s budget', () => {
  it('fails at once (65) on budget_exceeded instead of waiting until midnight UTC', async () => {
    const token = 'team-a-token-0123456789abcdef'
    const file = join(await tempDir(), 'tenants.json')
    writeFileSync(file, JSON.stringify({ tenants: [{ name: 'team-a', tokens: [token], budget_usd_per_day: 0.04 }] }))
    const { app } = await makeApp({ tenantsFile: file })
    const base = await listen(app)
    // One run spends the budget: the fake CLI reports $0.049864.
    const spent = await cli(base, ['run', '-q', '--token', token, 'hi'])
    expect(spent.code, spent.stderr).toBe(0)
    const refused = await cli(base, ['run', '-q', '--token', token, 'hi'])
    expect(refused.code, refused.stderr).toBe(65)
    expect(refused.stderr).toContain('429 budget_exceeded: tenant team-a has spent $0.0499 today (UTC)')
    expect(refused.stderr).not.toContain('retrying')
  })
})

describe('claude-runner --help and the README', () => {
  it('list the same exit codes', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
    const source = readFileSync(new URL('../bin/claude-runner.mjs', import.meta.url), 'utf8')
    const codes = [...source.matchAll(/^ {2}[a-z_]+: (\d+),$/gm)].map(match => match[1])
    expect(codes).toEqual(['0', '1', '2', '3', '64', '65', '69', '75', '76'])
    const table = readme.slice(readme.indexOf('| exit |'), readme.indexOf('\n\n', readme.indexOf('| exit |')))
    for (const code of codes) expect(table, `exit code ${code}`).toMatch(new RegExp(`\\| (\\d+, )*${code}(, \\d+)* \\|`))
  })
})
