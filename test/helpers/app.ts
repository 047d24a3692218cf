import { mkdtemp, realpath, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { onTestFinished } from 'vitest'
import { buildApp, type AppDeps } from '../../src/app.ts'
import { defaultConfig, type Config } from '../../src/config.ts'
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
    ...overrides,
  })
  const app = await buildApp(config, { logger: false, ...deps })
  onTestFinished(() => app.close())
  return { app, config, root }
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

/** Waits for the job to be terminal (an event, not a poll) and returns its JSON. */
export async function finished (app: FastifyInstance, id: string): Promise<JobView> {
  const job = app.ctx.jobs.get(id)
  if (job === undefined) throw new Error(`no job ${id}`)
  await job.done
  return getJob(app, id)
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
