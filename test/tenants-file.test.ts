import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { describe, expect, it, vi } from 'vitest'
import { ConfigError } from '../src/config.ts'
import { Tenants } from '../src/tenants/tenants.ts'
import { tempDir, TOKEN } from './helpers/app.ts'
import { refusedServer, startServer } from './helpers/server.ts'

/*
 * TENANTS_FILE: checked at start-up with a message naming the bad entry (and never quoting a
 * token), re-read on SIGHUP by the real server process.
 */

const OLD = 'team-a-old-token-0123456789'
const NEW = 'team-a-new-token-0123456789'
const silent = pino({ level: 'silent' })

async function file (content: unknown): Promise<string> {
  const path = join(await tempDir(), 'tenants.json')
  await writeFile(path, typeof content === 'string' ? content : JSON.stringify(content))
  return path
}

const load = async (content: unknown, options: { authTokens?: string[], metricsToken?: string } = {}) =>
  Tenants.load({ file: await file(content), authTokens: options.authTokens ?? [], metricsToken: options.metricsToken, logger: silent })

describe('TENANTS_FILE at start-up', () => {
  const team = (fields: Record<string, unknown> = {}) => ({ name: 'team-a', tokens: [OLD], ...fields })
  it.each([
    ['not JSON', '{"tenants": [', 'is not JSON'],
    ['not an object of tenants', '[]', 'must be an object {"tenants": [...]}'],
    ['an unknown top-level field', { tenants: [team()], teams: [] }, 'unknown field "teams"'],
    ['a name with capitals', { tenants: [team({ name: 'Team-A' })] }, 'tenants[0] ("Team-A"): name must match'],
    ['no name', { tenants: [{ tokens: [OLD] }] }, 'tenants[0]: name must match'],
    ['the reserved name', { tenants: [team({ name: 'default' })] }, 'tenants[0] ("default"): the name "default" is the tenant of AUTH_TOKENS'],
    ['a name twice', { tenants: [team(), team({ tokens: [NEW] })] }, 'tenants[1] ("team-a"): the name is used by an earlier entry'],
    ['no tokens', { tenants: [team({ tokens: [] })] }, 'tenants[0] ("team-a"): tokens must be a non-empty array'],
    ['a short token', { tenants: [team({ tokens: [OLD, 'short'] })] }, 'tenants[0] ("team-a"): tokens[1] must be at least 16 characters'],
    ['a token with a space', { tenants: [team({ tokens: ['has a space in it 0123456'] })] }, 'tokens[0] must be printable ASCII without spaces'],
    ['a token of two tenants', { tenants: [team(), { name: 'team-b', tokens: [NEW, OLD] }] }, 'tenants[1] ("team-b"): tokens[1] is also a token of tenants[0] ("team-a")'],
    ['an unknown scope', { tenants: [team({ scopes: ['jobs', 'root'] })] }, 'tenants[0] ("team-a"): scopes: "root" is not one of jobs, chat, metrics, admin'],
    ['empty scopes', { tenants: [team({ scopes: [] })] }, 'scopes must be a non-empty array'],
    ['an unknown field', { tenants: [team({ max_runing: 2 })] }, 'tenants[0] ("team-a"): "max_runing" is not a known field'],
    ['max_running 0', { tenants: [team({ max_running: 0 })] }, 'tenants[0] ("team-a"): max_running must be an integer >= 1, got 0'],
    ['max_queued 1.5', { tenants: [team({ max_queued: 1.5 })] }, 'max_queued must be an integer >= 1, got 1.5'],
    ['a budget as a string', { tenants: [team({ budget_usd_per_day: '50' })] }, 'budget_usd_per_day must be a number of dollars > 0, got "50"'],
    ['no tenants and no AUTH_TOKENS', { tenants: [] }, 'has no tenants and AUTH_TOKENS is not set'],
  ])('refuses %s, naming the entry', async (_what, content, message) => {
    const error = await load(content).catch((error: unknown) => error)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as Error).message).toMatch(/^TENANTS_FILE \/\S+tenants\.json[: ]/)
    expect((error as Error).message).toContain(message)
    // Tokens are secrets: a message never quotes one.
    for (const token of [OLD, NEW]) expect((error as Error).message).not.toContain(token)
  })

  it('refuses a token also in AUTH_TOKENS or METRICS_TOKEN', async () => {
    await expect(load({ tenants: [team()] }, { authTokens: [OLD] })).rejects.toThrow('tenants[0] ("team-a"): tokens[0] is also a token of AUTH_TOKENS')
    await expect(load({ tenants: [team()] }, { metricsToken: OLD })).rejects.toThrow('METRICS_TOKEN: it is also a token of tenants[0] ("team-a")')
  })

  it('gives default scopes and limits, admin includes jobs, AUTH_TOKENS is `default` with every scope', async () => {
    const tenants = await load({
      tenants: [
        team({ max_running: 4, max_queued: 20, budget_usd_per_day: 50 }),
        { name: 'ops', tokens: [NEW], scopes: ['admin'] },
      ],
    }, { authTokens: [TOKEN] })
    expect(tenants.names).toEqual(['default', 'ops', 'team-a'])
    const a = tenants.authenticate(OLD)!
    expect(a.caller).toEqual({ tenant: 'team-a', limits: { maxRunning: 4, maxQueued: 20, budgetUsdPerDay: 50 }, admin: false })
    expect([...a.scopes].sort()).toEqual(['chat', 'jobs'])
    expect([...tenants.authenticate(NEW)!.scopes].sort()).toEqual(['admin', 'jobs'])
    expect(tenants.authenticate(NEW)!.caller.admin).toBe(true)
    expect(tenants.authenticate(TOKEN)!.caller).toEqual({ tenant: 'default', limits: {}, admin: true })
    expect([...tenants.authenticate(TOKEN)!.scopes].sort()).toEqual(['admin', 'chat', 'jobs', 'metrics'])
    expect(tenants.authenticate(`${OLD}x`)).toBeUndefined()
    expect(tenants.authenticate(OLD.slice(0, -1))).toBeUndefined()
    expect(tenants.authenticate('')).toBeUndefined()
  })

  it('stops the service with the message, exit code 2', async () => {
    const path = await file({ tenants: [{ name: 'team-a', tokens: [OLD], max_running: -1 }] })
    const { code, stderr } = await refusedServer({ WORKSPACE_ROOT: await tempDir(), TENANTS_FILE: path })
    expect(code).toBe(2)
    expect(stderr).toBe(`claude-runner: invalid configuration: TENANTS_FILE ${path}: tenants[0] ("team-a"): max_running must be an integer >= 1, got -1\n`)
  })
})

describe('SIGHUP', () => {
  it('re-reads TENANTS_FILE in the running server: the old token gets 401, the new one works; a broken file keeps the tenants in force', async () => {
    const path = await file({ tenants: [{ name: 'team-a', tokens: [OLD] }] })
    const server = await startServer({ WORKSPACE_ROOT: await tempDir(), TENANTS_FILE: path, AUTH_TOKENS: '' })
    // No token is generated when TENANTS_FILE is set.
    expect(server.logs.some(line => typeof line.token === 'string')).toBe(false)
    const status = async (token: string) => (await fetch(`${server.url}/jobs`, { headers: { authorization: `Bearer ${token}` } })).status
    expect(await status(OLD)).toBe(200)
    expect(await status(NEW)).toBe(401)
    const submitted = await fetch(`${server.url}/execute`, { method: 'POST', headers: { authorization: `Bearer ${OLD}`, 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'hi' }) })
    const job = await submitted.json() as { job_id: string }

    const reloads = (message: string) => server.logs.filter(line => String(line.msg).startsWith(message)).length
    await writeFile(path, JSON.stringify({ tenants: [{ name: 'team-a', tokens: [NEW] }] }))
    server.child.kill('SIGHUP')
    await vi.waitFor(() => expect(reloads('TENANTS_FILE reloaded')).toBe(1), { timeout: 10_000 })
    expect(await status(OLD)).toBe(401)
    expect(await status(NEW)).toBe(200)
    // The tenant is the same: its job is still its own under the new token.
    expect((await fetch(`${server.url}/jobs/${job.job_id}`, { headers: { authorization: `Bearer ${NEW}` } })).status).toBe(200)

    // Half a file (an editor mid-write): the tenants in force stay, and the log says why.
    await writeFile(path, '{"tenants": [{"name": "team-a", "tokens": ["')
    server.child.kill('SIGHUP')
    await vi.waitFor(() => expect(reloads('TENANTS_FILE not reloaded')).toBe(1), { timeout: 10_000 })
    const refusal = server.logs.find(line => String(line.msg).startsWith('TENANTS_FILE not reloaded'))!
    expect(refusal).toMatchObject({ level: 50, reason: expect.stringContaining(`TENANTS_FILE ${path} is not JSON`) })
    expect(await status(NEW)).toBe(200)
    expect(await status(OLD)).toBe(401)
    // An entry that breaks a rule is refused the same way.
    await writeFile(path, JSON.stringify({ tenants: [{ name: 'team-a', tokens: [OLD, 'short'] }] }))
    server.child.kill('SIGHUP')
    await vi.waitFor(() => expect(reloads('TENANTS_FILE not reloaded')).toBe(2), { timeout: 10_000 })
    expect(await status(NEW)).toBe(200)
    expect(await status(OLD)).toBe(401)

    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
  })
})
