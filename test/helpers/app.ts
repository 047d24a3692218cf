import { mkdir, mkdtemp, realpath, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { randomBytes } from 'node:crypto'
import { describe, inject, onTestFinished } from 'vitest'
import { buildApp, type AppDeps } from '../../src/app.ts'
import { defaultConfig, type Config } from '../../src/config.ts'
import type { RunRecord } from '../../src/engine/types.ts'
import type { JobView } from '../../src/schemas/job.ts'

export const TOKEN = 'test-token-0123456789abcdef'
export const AUTH = { authorization: `Bearer ${TOKEN}` } as const
export const FAKE_CLAUDE = fileURLToPath(new URL('../fixtures/fake-claude.mjs', import.meta.url))
/** The fake CLI imports Ajv (for --json-schema) from here: its sandbox must show it (SANDBOX_READ_ONLY). */
export const FAKE_CLAUDE_LIBS = fileURLToPath(new URL('../../node_modules', import.meta.url))

export async function tempDir (prefix = 'cr-test-'): Promise<string> {
  const dir = await realpath(await mkdtemp(join(tmpdir(), prefix)))
  onTestFinished(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/**
 * A CLAUDE_CONFIG_TEMPLATE defining agents by these names (`agents/NAME.md`): the CLI lists them
 * as user agents, so a job may name them with `agent`.
 */
export async function agentsTemplate (...names: string[]): Promise<string> {
  const dir = await tempDir('cr-agents-')
  await mkdir(join(dir, 'agents'))
  for (const name of names) await writeFile(join(dir, 'agents', `${name}.md`), `---\nname: ${name}\ndescription: The ${name} agent of a test\n---\nYou are ${name}.\n`)
  return dir
}

export type EngineKind = 'memory' | 'redis'
/** The engines every behaviour suite runs against. */
export const ENGINES: readonly EngineKind[] = ['memory', 'redis']

/** The settings of an engine for one test: Redis gets a key prefix of its own. */
export function engineConfig (engine: EngineKind): Partial<Config> {
  if (engine === 'memory') return {}
  return { redisUrl: inject('redisUrl'), redisPrefix: `t-${randomBytes(6).toString('hex')}` }
}

/** `describe` once per engine; the Redis run is skipped (loudly, by the global setup) without redis-server. */
export function describeEngines (name: string, body: (engine: EngineKind) => void): void {
  for (const engine of ENGINES) {
    const run = engine === 'redis' && inject('redisUrl') === '' ? describe.skip : describe
    run(`${name} (${engine} engine)`, () => body(engine))
  }
}

export interface TestApp {
  app: FastifyInstance
  config: Config
  root: string
}

/** A fresh app per test, on its own WORKSPACE_ROOT, with the fake CLI; closed when the test ends. */
export async function makeApp (overrides: Partial<Config> = {}, deps: AppDeps = {}): Promise<TestApp> {
  const root = await tempDir()
  const config = defaultConfig({
    workspaceRoot: root,
    claudeBin: FAKE_CLAUDE,
    sandboxReadOnly: [FAKE_CLAUDE_LIBS],
    authTokens: [TOKEN],
    logLevel: 'silent',
    shutdownGraceSeconds: 0,
    killGraceSeconds: 2,
    // Warm agents run in the background of an app: tests that want them ask for them.
    warmAgents: 0,
    ...overrides,
  })
  const app = await buildApp(config, { logger: false, ...deps })
  onTestFinished(() => app.close())
  return { app, config, root }
}

/** `makeApp` on the given engine. */
export function appMaker (engine: EngineKind): typeof makeApp {
  return (overrides = {}, deps = {}) => makeApp({ ...engineConfig(engine), ...overrides }, deps)
}

export async function submit (app: FastifyInstance, body: Record<string, unknown>): Promise<JobView> {
  const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: body })
  if (response.statusCode !== 202) throw new Error(`submit failed: ${response.statusCode} ${response.body}`)
  return response.json<JobView>()
}

export async function getJob (app: FastifyInstance, id: string): Promise<JobView> {
  const response = await app.inject({ method: 'GET', url: `/jobs/${id}`, headers: AUTH })
  if (response.statusCode !== 200) throw new Error(`get failed: ${response.statusCode} ${response.body}`)
  return response.json<JobView>()
}

/** The record the engine holds for a run (tests look at what the API does not show). */
export async function record (app: FastifyInstance, id: string): Promise<RunRecord> {
  const found = await app.ctx.engine.store.get(id)
  if (found === undefined) throw new Error(`no run ${id}`)
  return found
}

/** Waits for the job to be terminal (an event, not a poll) and returns its JSON. */
export async function finished (app: FastifyInstance, id: string): Promise<JobView> {
  await record(app, id)
  await app.ctx.engine.events.waitTerminal(id, 10 * 60_000)
  return getJob(app, id)
}

/** The types of the events a run logged so far. */
export async function eventTypes (app: FastifyInstance, id: string): Promise<string[]> {
  return (await app.ctx.engine.events.since(id, 0)).map(event => event.type)
}

export async function run (app: FastifyInstance, body: Record<string, unknown>): Promise<JobView> {
  const job = await submit(app, body)
  return finished(app, job.job_id)
}

/** Listens on a free port of 127.0.0.1 (for real HTTP: streaming, disconnects, the openai SDK). */
export async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP')
  return `http://127.0.0.1:${address.port}`
}
