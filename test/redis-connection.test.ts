import { spawn, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { ConfigError } from '../src/config.ts'
import { redactRedisUrl, redisOptions } from '../src/engine/redis-connection.ts'
import { tempDir } from './helpers/app.ts'
import { refusedServer } from './helpers/server.ts'
import { waitForPing } from './setup/redis.ts'

/** The REDIS_URL forms the README promises, as the options ioredis is given; and what logs show of them. */
describe('REDIS_URL', () => {
  it('reads user, password, host, port and database of redis://, with percent-escapes undone', () => {
    expect(redisOptions('redis://ci-user:p%40ss%3Aword@cache.internal:6380/3')).toEqual({ host: 'cache.internal', port: 6380, db: 3, username: 'ci-user', password: 'p@ss:word' })
    expect(redisOptions('redis://cache.internal')).toEqual({ host: 'cache.internal', port: 6379, db: 0 })
  })

  it('turns rediss:// into TLS, checked against the host name', () => {
    expect(redisOptions('rediss://:secret@redis.example.com:6390')).toEqual({ host: 'redis.example.com', port: 6390, db: 0, password: 'secret', tls: { servername: 'redis.example.com' } })
    expect(redisOptions('redis://redis.example.com')).not.toHaveProperty('tls')
  })

  it('takes an IPv6 address in brackets, without them', () => {
    expect(redisOptions('redis://[::1]:6390/2')).toEqual({ host: '::1', port: 6390, db: 2 })
    expect(redisOptions('redis://[::1]')).toEqual({ host: '::1', port: 6379, db: 0 })
  })

  it('reads a unix socket path, and its database from ?db=', () => {
    expect(redisOptions('unix:///run/redis/redis.sock?db=4')).toEqual({ path: '/run/redis/redis.sock', db: 4 })
    expect(redisOptions('unix:///tmp/my%20redis.sock')).toEqual({ path: '/tmp/my redis.sock', db: 0 })
  })

  it('refuses a database that is not a number instead of silently using database 0', () => {
    for (const url of ['redis://cache.internal/three', 'redis://cache.internal/-1', 'unix:///run/redis.sock?db=x', 'unix:///run/redis.sock?db=1.5']) {
      expect(() => redisOptions(url), url).toThrow(ConfigError)
      expect(() => redisOptions(url), url).toThrow(/REDIS_URL .*database/)
    }
  })

  it('never shows the password in logs and /health', () => {
    expect(redactRedisUrl('redis://ci-user:p%40ss@cache.internal:6380/3')).toBe('redis://ci-user:***@cache.internal:6380/3')
    expect(redactRedisUrl('rediss://:secret@redis.example.com')).toBe('rediss://:***@redis.example.com')
    // One word before the @ may be a password given without a user: hidden as well.
    expect(redactRedisUrl('redis://secret@redis.example.com')).toBe('redis://***@redis.example.com')
    expect(redactRedisUrl('REDIS://u:secret@h')).toBe('REDIS://u:***@h')
    for (const plain of ['redis://[::1]:6390', 'unix:///run/redis/redis.sock?db=4']) expect(redactRedisUrl(plain)).toBe(plain)
  })
})

const hasRedis = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0

describe.skipIf(!hasRedis)('a Redis that may evict keys', () => {
  it('is refused at start-up with the setting to change: BullMQ loses queued runs when keys are evicted', async () => {
    const dir = await tempDir()
    const socket = join(dir, 'redis.sock')
    const redis = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'allkeys-lru', '--logfile', join(dir, 'redis.log')], { stdio: 'ignore' })
    onTestFinished(() => { redis.kill('SIGKILL') })
    await waitForPing(socket)
    const { code, stderr } = await refusedServer({ REDIS_URL: `unix://${socket}`, WORKSPACE_ROOT: await tempDir() })
    expect(code).toBe(2)
    expect(stderr).toContain('claude-runner: invalid configuration: Redis runs with maxmemory-policy allkeys-lru: set it to noeviction')
  })
})
