import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import type { TestProject } from 'vitest/node'

declare module 'vitest' {
  export interface ProvidedContext {
    /** The test run's private Redis (unix:///...), or '' when redis-server is not installed. */
    redisUrl: string
  }
}

/**
 * One private redis-server per test run, on a unix socket in a temporary folder (no TCP port, so
 * nothing can collide), without persistence. Each test uses a key prefix of its own. With CI=true
 * a missing redis-server fails the run; elsewhere the Redis suites are skipped, loudly.
 */
export default async function setup (project: TestProject): Promise<() => Promise<void>> {
  const found = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0
  if (!found) {
    if (process.env.CI === 'true') throw new Error('redis-server is not installed: the Redis engine cannot be tested (./dev test installs it with apt)')
    process.stderr.write('\n*** redis-server is not installed: the Redis engine tests are SKIPPED (./dev test installs it) ***\n\n')
    project.provide('redisUrl', '')
    return async () => {}
  }
  const dir = await mkdtemp(join(tmpdir(), 'cr-redis-'))
  const socket = join(dir, 'redis.sock')
  const server = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', join(dir, 'redis.log')], { stdio: 'ignore' })
  await waitForPing(socket)
  project.provide('redisUrl', `unix://${socket}`)
  return async () => {
    server.kill('SIGKILL')
    await new Promise(resolve => server.once('exit', resolve))
    await rm(dir, { recursive: true, force: true })
  }
}

/** PING until it answers: the server's "Ready" log line is not a reliable signal. */
export async function waitForPing (socket: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const client = new Redis({ path: socket, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    client.on('error', () => {})
    try {
      await client.connect()
      if (await client.ping() === 'PONG') return
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`redis-server on ${socket} did not answer in ${timeoutMs} ms: ${(error as Error).message}`)
      await new Promise(resolve => setTimeout(resolve, 25))
    } finally {
      client.disconnect()
    }
  }
}
