import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { onTestFinished, vi } from 'vitest'

export interface ProbeStart {
  /** The agent's pid on the host (inside a sandbox it has another one of its own). */
  pid: number
  /** The pid the agent saw for itself. */
  nsPid: number
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
      request.on('end', () => {
        const reported = JSON.parse(body) as ProbeStart
        const pid = peerPid(request.socket.remotePort!, request.socket.localPort!) ?? reported.pid
        probe!.#onStart({ ...reported, pid, nsPid: reported.pid }, response)
      })
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

/**
 * The host pid of the process at the other end of a loopback TCP connection: the socket's inode
 * from /proc/net/tcp, then the process holding it. The network namespace is shared with the
 * sandboxes, their pids are not: this is how a test learns which host process an agent is.
 */
export function peerPid (remotePort: number, localPort: number): number | undefined {
  const port = (value: number): string => value.toString(16).toUpperCase().padStart(4, '0')
  let inode: string | undefined
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines: string[]
    try {
      lines = readFileSync(table, 'utf8').split('\n').slice(1)
    } catch {
      continue
    }
    for (const line of lines) {
      const fields = line.trim().split(/\s+/)
      if (fields[1]?.endsWith(`:${port(remotePort)}`) && fields[2]?.endsWith(`:${port(localPort)}`)) inode = fields[9]
    }
  }
  if (inode === undefined) return undefined
  const target = `socket:[${inode}]`
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    let fds: string[]
    try {
      fds = readdirSync(`/proc/${entry}/fd`)
    } catch {
      continue
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${entry}/fd/${fd}`) === target) return Number(entry)
      } catch {}
    }
  }
  return undefined
}

/** Every live process descended from `pid` (children, their children...), by host pid. */
export function descendants (pid: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const fields = procStat(entry)
    if (fields === undefined || fields[0] === 'Z') continue
    const parent = Number(fields[1])
    children.set(parent, [...(children.get(parent) ?? []), Number(entry)])
  }
  const found: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child)
      queue.push(child)
    }
  }
  return found
}

/** The command line of a process, or undefined once it is gone. */
export function commandLine (pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
  } catch {
    return undefined
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

/** The pids of the first agent `gate` holds and of the one grandchild it started (`[[fake grandchild]]`). */
export async function heldAgentGroup (gate: AgentProbe): Promise<number[]> {
  await gate.waitStarted(1)
  const agent = gate.started[0]!.pid
  const grandchildren = descendants(agent)
  if (grandchildren.length !== 1) throw new Error(`expected one grandchild of agent ${agent}, found ${grandchildren.length}`)
  return [agent, ...grandchildren]
}

/** An SDK stream (openai's or Anthropic's helpers): events by name, and abort. */
interface AbortableStream {
  once: (event: any, listener: () => void) => unknown
  abort: () => void
}

/** Lets `gate`'s agent go on, aborts `stream` at its first `event`, and waits until the SDK says it aborted. */
export async function abortAtFirst (gate: AgentProbe, stream: AbortableStream, event: string): Promise<void> {
  const first = new Promise<void>(resolve => stream.once(event, () => resolve()))
  const aborted = new Promise<void>(resolve => stream.once('abort', () => resolve()))
  gate.releaseOne()
  await first
  stream.abort()
  await aborted
}
