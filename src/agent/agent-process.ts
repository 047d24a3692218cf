import { readFileSync } from 'node:fs'
import type { Writable } from 'node:stream'
import { execa } from 'execa'
import type { SandboxCommand } from './sandbox.ts'

/**
 * The one place that starts processes. The command (built by sandbox.ts) runs in a process group
 * of its own, without a shell, with exactly the environment it is given. Aborting `signal` asks
 * the agent to stop (SIGTERM) and, `killGraceMs` later, kills everything it started (SIGKILL).
 *
 * Outside a sandbox the agent's process group is signalled. In one, the gentle signal goes to the
 * processes inside (bwrap itself would die of it and take them down at once, with no grace), and
 * the hard one to bwrap: its death ends the sandbox's PID namespace and everything in it.
 */
export interface ProcessOptions {
  command: SandboxCommand
  /**
   * What the process reads on stdin: a string is written and stdin closed; a function is given
   * the open stdin to feed (and close) as it likes, e.g. a prompt that arrives after the start.
   */
  input: string | ((stdin: Writable) => void)
  signal: AbortSignal
  killGraceMs: number
  onStdout: (chunk: Buffer) => void
  onStderr: (chunk: Buffer) => void
  onSpawn?: (pid: number) => void
}

export interface ProcessExit {
  exitCode: number | null
  signal: string | null
  /** Set when the process could not be started at all (e.g. ENOENT, EACCES). */
  spawnError: { code: string, message: string } | null
  /** True when it had to be sent SIGKILL after the grace period. */
  forceKilled: boolean
}

export async function runProcess (options: ProcessOptions): Promise<ProcessExit> {
  const { command } = options
  const subprocess = execa(command.bin, command.args, {
    cwd: command.cwd,
    env: command.env,
    extendEnv: false,
    ...(typeof options.input === 'string' ? { input: options.input } : {}),
    stdio: stdio(command, 'pipe'),
    buffer: false,
    encoding: 'buffer',
    reject: false,
    killDescendants: true,
  })
  const pid = subprocess.pid
  if (pid !== undefined) options.onSpawn?.(pid)
  if (typeof options.input === 'function' && subprocess.stdin !== null) options.input(subprocess.stdin)
  subprocess.stdout.on('data', options.onStdout)
  subprocess.stderr.on('data', options.onStderr)
  let exited = false
  // Once it has exited, whatever it left running in its group (a background server, a grandchild
  // that ignores SIGTERM or holds stdout open) is swept away: its workspace is about to go.
  subprocess.nodeChildProcess.once('exit', () => {
    exited = true
    killGroup(pid, 'SIGKILL')
  })

  let forceKilled = false
  let timer: NodeJS.Timeout | undefined
  const stop = (): void => {
    if (exited) return
    if (command.sandboxed) terminateInside(pid)
    else killGroup(pid, 'SIGTERM')
    timer = setTimeout(() => {
      if (exited) return
      forceKilled = true
      killGroup(pid, 'SIGKILL')
    }, Math.round(options.killGraceMs))
  }
  if (options.signal.aborted) stop()
  else options.signal.addEventListener('abort', stop, { once: true })

  const result = await subprocess
  clearTimeout(timer)
  options.signal.removeEventListener('abort', stop)
  if (result.exitCode === undefined && result.signal === undefined) {
    return {
      exitCode: null,
      signal: null,
      spawnError: { code: result.code ?? 'ESPAWN', message: result.originalMessage ?? result.shortMessage ?? 'could not start the process' },
      forceKilled: false,
    }
  }
  return { exitCode: result.exitCode ?? null, signal: result.signal ?? null, spawnError: null, forceKilled }
}

/** Runs a short command and returns its stdout, e.g. `claude --version`. Never throws. */
export async function probeCommand (command: SandboxCommand, options: { timeoutMs: number }): Promise<{ ok: boolean, output: string }> {
  const result = await execa(command.bin, command.args, {
    cwd: command.cwd,
    env: command.env,
    extendEnv: false,
    stdio: stdio(command, 'ignore'),
    reject: false,
    timeout: options.timeoutMs,
    killDescendants: true,
    maxBuffer: 64 * 1024,
  })
  const output = (result.failed ? (result.stderr || result.originalMessage || result.shortMessage) : result.stdout) ?? ''
  return { ok: !result.failed, output: String(output).trim() }
}

/** bwrap reads its options (environment included) from fd 3: they stay out of its argv. */
function stdio (command: SandboxCommand, stdin: 'pipe' | 'ignore'): ['pipe' | 'ignore', 'pipe', 'pipe'] | ['pipe' | 'ignore', 'pipe', 'pipe', Uint8Array] {
  return command.fd3 === undefined ? [stdin, 'pipe', 'pipe'] : [stdin, 'pipe', 'pipe', new Uint8Array(command.fd3)]
}

function killGroup (pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return
  try {
    process.kill(-pid, signal)
  } catch {
    // Already gone.
  }
}

/**
 * SIGTERM to the agent inside a sandbox. bwrap's child is the namespace's init, in a session of
 * its own (--new-session) that the agent and its children share; init ignores the signal, they
 * get it. Before the child exists there is nothing to be gentle with: bwrap is killed.
 */
function terminateInside (pid: number | undefined): void {
  if (pid === undefined) return
  let init: number | undefined
  try {
    init = Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0]) || undefined
  } catch {
    init = undefined
  }
  if (init === undefined) killGroup(pid, 'SIGKILL')
  else killGroup(init, 'SIGTERM')
}
