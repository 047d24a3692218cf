import { execa } from 'execa'

/**
 * The one place that starts processes. The agent runs in a process group of its own, without a
 * shell, with exactly the environment it is given; aborting `signal` sends SIGTERM to the whole
 * group and SIGKILL after `killGraceMs`, so nothing the agent started outlives a cancel or timeout.
 */
export interface ProcessOptions {
  bin: string
  args: readonly string[]
  cwd: string
  /** The complete environment of the process: nothing of the service's own leaks in. */
  env: Readonly<Record<string, string>>
  /** Written to stdin, which is then closed. */
  input: string
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
  /** True when the group had to be sent SIGKILL after the grace period. */
  forceKilled: boolean
}

export async function runProcess (options: ProcessOptions): Promise<ProcessExit> {
  const subprocess = execa(options.bin, options.args, {
    cwd: options.cwd,
    env: options.env,
    extendEnv: false,
    input: options.input,
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    encoding: 'buffer',
    reject: false,
    killDescendants: true,
    cancelSignal: options.signal,
    forceKillAfterDelay: Math.round(options.killGraceMs),
  })
  if (subprocess.pid !== undefined) options.onSpawn?.(subprocess.pid)
  subprocess.stdout.on('data', options.onStdout)
  subprocess.stderr.on('data', options.onStderr)
  // Once the agent itself has exited, whatever it left running in its group (a background server,
  // a grandchild that ignores SIGTERM or holds stdout open) is swept away: its workspace is about to go.
  subprocess.nodeChildProcess.once('exit', () => { subprocess.kill('SIGKILL') })

  const result = await subprocess
  if (result.exitCode === undefined && result.signal === undefined) {
    return {
      exitCode: null,
      signal: null,
      spawnError: { code: result.code ?? 'ESPAWN', message: result.originalMessage ?? result.shortMessage ?? 'could not start the process' },
      forceKilled: false,
    }
  }
  return {
    exitCode: result.exitCode ?? null,
    signal: result.signal ?? null,
    spawnError: null,
    forceKilled: result.isForcefullyTerminated,
  }
}

/** Runs a short command and returns its stdout, e.g. `claude --version`. Never throws. */
export async function probeCommand (bin: string, args: readonly string[], options: { env: Readonly<Record<string, string>>, timeoutMs: number }): Promise<{ ok: boolean, output: string }> {
  const result = await execa(bin, args, {
    env: options.env,
    extendEnv: false,
    stdin: 'ignore',
    reject: false,
    timeout: options.timeoutMs,
    killDescendants: true,
    maxBuffer: 64 * 1024,
  })
  const output = (result.failed ? (result.stderr || result.originalMessage || result.shortMessage) : result.stdout) ?? ''
  return { ok: !result.failed, output: String(output).trim() }
}
