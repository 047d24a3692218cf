import { readdirSync, readFileSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { onTestFinished, vi } from 'vitest'

export interface ProbeStart {
  pid: number
  argv: string[]
  cwd: string
}

/**
 * The fake CLI's gate: an agent given `[[fake probe URL]]` reports here when it starts and waits
 * until the test releases it. Tests wait for starts as events, never for time to pass.
 */
export class AgentProbe {
  readonly started: ProbeStart[] = []
  readonly url: string
  readonly #held: ServerResponse[] = []
  readonly #waiters: Array<{ count: number, resolve: () => void }> = []
  #released = false
  readonly #close: () => Promise<void>

  private constructor (url: string, close: () => Promise<void>, register: (probe: AgentProbe) => void) {
    this.url = url
    this.#close = close
    register(this)
  }

  static async start (): Promise<AgentProbe> {
    let probe: AgentProbe | undefined
    const server = createServer((request, response) => {
      let body = ''
      request.setEncoding('utf8')
      request.on('data', chunk => { body += chunk })
      request.on('end', () => probe!.#onStart(JSON.parse(body) as ProbeStart, response))
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    const close = async (): Promise<void> => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
    const created = new AgentProbe(`http://127.0.0.1:${port}/`, close, p => { probe = p })
    onTestFinished(() => created.close())
    return created
  }

  /** The directive that makes a fake agent report and wait here. */
  get directive (): string {
    return `[[fake probe ${this.url}]]`
  }

  /** Resolves once `count` agents have reported in. */
  waitStarted (count: number): Promise<void> {
    if (this.started.length >= count) return Promise.resolve()
    return new Promise(resolve => this.#waiters.push({ count, resolve }))
  }

  /** Lets every waiting agent go on, and every later one pass straight through. */
  release (): void {
    this.#released = true
    for (const response of this.#held.splice(0)) response.end('go')
  }

  /** Lets the oldest waiting agent go on. */
  releaseOne (): void {
    this.#held.shift()?.end('go')
  }

  async close (): Promise<void> {
    this.release()
    await this.#close()
  }

  #onStart (start: ProbeStart, response: ServerResponse): void {
    this.started.push(start)
    if (this.#released) response.end('go')
    else this.#held.push(response)
    for (const waiter of [...this.#waiters]) {
      if (this.started.length >= waiter.count) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1)
        waiter.resolve()
      }
    }
  }
}

/** The fields of /proc/PID/stat after the command name (state first, then ppid, pgrp...), or undefined. */
function procStat (pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  } catch {
    return undefined
  }
}

/** Whether a process is alive (a zombie counts as dead: it runs nothing). */
export function isRunning (pid: number): boolean {
  const state = procStat(pid)?.[0]
  return state !== undefined && state !== 'Z' && state !== 'X'
}

/** Live processes in the process group `pgid`. */
export function groupMembers (pgid: number): number[] {
  return readdirSync('/proc').filter(entry => /^\d+$/.test(entry)).filter(entry => {
    const fields = procStat(entry)
    return fields !== undefined && fields[0] !== 'Z' && Number(fields[2]) === pgid
  }).map(Number)
}

/** Waits until none of `pids` runs (SIGKILL is delivered asynchronously by the kernel). */
export async function expectAllGone (pids: number[]): Promise<void> {
  await vi.waitFor(() => {
    const alive = pids.filter(isRunning)
    if (alive.length > 0) throw new Error(`still running: ${alive.join(', ')}`)
  }, { timeout: 10_000, interval: 25 })
}

export function readPid (path: string): number {
  return Number(readFileSync(path, 'utf8'))
}
