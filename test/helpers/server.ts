import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { onTestFinished } from 'vitest'
import { FAKE_CLAUDE, FAKE_CLAUDE_LIBS, TOKEN } from './app.ts'

export const SERVER = fileURLToPath(new URL('../../src/server.ts', import.meta.url))

export interface Server {
  child: ChildProcess
  url: string
  logs: Array<Record<string, unknown>>
  exited: Promise<number | null>
}

export interface ServerOptions {
  /** Run the service as this user (the test must be root to ask). */
  uid?: number
  gid?: number
  /** The node binary to run it with (default: this one). */
  node?: string
  /** The service's entry file (default: this checkout's src/server.ts). */
  server?: string
}

/** Starts the real service (src/server.ts) as a process and waits until it listens. */
export async function startServer (env: Record<string, string>, options: ServerOptions = {}): Promise<Server> {
  const child = spawn(options.node ?? process.execPath, [options.server ?? SERVER], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME!, PORT: '0', AUTH_TOKENS: TOKEN, CLAUDE_BIN: FAKE_CLAUDE, SANDBOX_READ_ONLY: FAKE_CLAUDE_LIBS, LOG_LEVEL: 'info', WARM_AGENTS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid === undefined ? {} : { uid: options.uid, gid: options.gid ?? options.uid }),
  })
  onTestFinished(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const logs: Array<Record<string, unknown>> = []
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', chunk => { stderr += chunk })
  const url = await new Promise<string>((resolve, reject) => {
    let buffer = ''
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk
      let newline = buffer.indexOf('\n')
      while (newline !== -1) {
        const line = JSON.parse(buffer.slice(0, newline)) as Record<string, unknown>
        buffer = buffer.slice(newline + 1)
        newline = buffer.indexOf('\n')
        logs.push(line)
        const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(String(line.msg))
        if (match) resolve(match[1]!)
      }
    })
    void exited.then(code => reject(new Error(`server exited with ${code}: ${stderr}`)))
  })
  return { child, url, logs, exited }
}

/** Starts the service (behind `wrapper`, a command line it is run by) expecting it to refuse: resolves with its exit code and stderr. */
export async function refusedServer (env: Record<string, string>, wrapper: string[] = []): Promise<{ code: number | null, stderr: string }> {
  const [bin, ...args] = [...wrapper, process.execPath, SERVER]
  const child = spawn(bin!, args, {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME!, PORT: '0', AUTH_TOKENS: TOKEN, CLAUDE_BIN: FAKE_CLAUDE, SANDBOX_READ_ONLY: FAKE_CLAUDE_LIBS, LOG_LEVEL: 'info', WARM_AGENTS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  onTestFinished(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', chunk => { stderr += chunk })
  child.stdout.resume()
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  return { code, stderr }
}

export const post = (url: string, body: unknown) => fetch(`${url}/execute`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
export const json = async (response: Response | Promise<Response>) => (await (await response).json()) as Record<string, any>
export const getJobOver = (url: string, id: string, waitSeconds = 0) => json(fetch(`${url}/jobs/${id}${waitSeconds > 0 ? `?wait=${waitSeconds}` : ''}`, { headers: { authorization: `Bearer ${TOKEN}` } }))
