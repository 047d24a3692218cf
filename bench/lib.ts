import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { availableParallelism, cpus, release, totalmem } from 'node:os'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'

export const TOKEN = 'bench-token-0123456789abcdef'
export const AUTH = { authorization: `Bearer ${TOKEN}` }
export const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
export const wallNow = (): number => performance.timeOrigin + performance.now()

export interface Stats { n: number, p50: number, p99: number, mean: number, min: number, max: number }

export function stats (samples: number[]): Stats {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
  return {
    n: sorted.length,
    p50: at(0.5),
    p99: at(0.99),
    mean: sorted.reduce((sum, x) => sum + x, 0) / sorted.length,
    min: sorted[0]!,
    max: sorted.at(-1)!,
  }
}

export function machine (): Record<string, string | number> {
  const git = execFileSync('git', ['--version'], { encoding: 'utf8' }).trim()
  let gitCrypt = 'not installed'
  try {
    // git-crypt prints its version on stderr.
    gitCrypt = execFileSync('sh', ['-c', 'git-crypt --version 2>&1'], { encoding: 'utf8' }).trim()
  } catch {}
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memory_gib: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    git,
    git_crypt: gitCrypt,
  }
}

export interface ServiceProcess {
  child: ChildProcess
  url: string
  stop: () => Promise<void>
  rssBytes: () => number
}

const SERVER = fileURLToPath(new URL('../src/server.ts', import.meta.url))

/** Starts src/server.ts as a process of its own (so the load generator does not share its loop). */
export async function startService (env: Record<string, string>): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [SERVER], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME!, PORT: '0', AUTH_TOKENS: TOKEN, LOG_LEVEL: 'info', WARM_AGENTS: '0', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const url = await new Promise<string>((resolve, reject) => {
    let buffer = ''
    const onData = (chunk: string): void => {
      buffer += chunk
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(buffer)
      if (match) {
        // From now on the logs are drained and dropped, at the least cost to this process.
        child.stdout!.off('data', onData)
        child.stdout!.on('data', () => {})
        resolve(match[1]!)
      }
    }
    child.stdout!.setEncoding('utf8').on('data', onData)
    child.once('exit', code => reject(new Error(`service exited with ${code}`)))
  })
  return {
    child,
    url,
    rssBytes: () => rss(child.pid!),
    stop: () => new Promise(resolve => {
      child.once('exit', () => resolve())
      child.kill('SIGTERM')
    }),
  }
}

/** Pins every thread of each process to `cpus` (a `taskset` list). False when that cannot be done. */
export function pinTo (cpus: string, pids: number[]): boolean {
  if (availableParallelism() < 2) return false
  try {
    for (const pid of pids) execFileSync('taskset', ['--all-tasks', '--pid', '--cpu-list', cpus, String(pid)], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export async function startBareFastify (): Promise<{ url: string, pid: number, stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./bare-fastify.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise<number>(resolve => {
    child.stdout.setEncoding('utf8').once('data', (line: string) => resolve((JSON.parse(line) as { listening: number }).listening))
  })
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: () => new Promise(resolve => {
      child.once('exit', () => resolve())
      child.kill('SIGTERM')
    }),
  }
}

/** CPU time (user + system) a process has used, in milliseconds. */
export function cpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // utime and stime are fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10
}

export function rss (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = /VmRSS:\s+(\d+) kB/.exec(status)?.[1]
  return Number(kib) * 1024
}

export async function json<T = any> (url: string, init: RequestInit = {}): Promise<T> {
  const response = await fetch(url, { ...init, headers: { ...AUTH, ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } })
  const body = await response.json()
  if (!response.ok) throw new Error(`${init.method ?? 'GET'} ${url}: ${response.status} ${JSON.stringify(body)}`)
  return body as T
}

export const round = (value: number, digits = 2): number => Math.round(value * 10 ** digits) / 10 ** digits

/** A private redis-server on a unix socket in `dir`, without persistence, as the tests run it. */
export async function startRedis (dir: string): Promise<{ url: string, usedMemory: () => Promise<number>, stop: () => Promise<void> }> {
  const socket = `${dir}/redis.sock`
  const child = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', `${dir}/redis.log`], { stdio: 'ignore' })
  const client = new Redis({ path: socket, lazyConnect: true, retryStrategy: () => 50 })
  client.on('error', () => {})
  for (let tries = 0; ; tries++) {
    try {
      await client.connect()
      break
    } catch (error) {
      if (tries > 200) throw error
      await new Promise(resolve => setTimeout(resolve, 25))
    }
  }
  return {
    url: `unix://${socket}`,
    usedMemory: async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]),
    stop: async () => {
      client.disconnect()
      child.kill('SIGKILL')
      await new Promise(resolve => child.once('exit', resolve))
    },
  }
}
