import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { onTestFinished } from 'vitest'
import { TOKEN } from './app.ts'

export const CLI = fileURLToPath(new URL('../../bin/claude-runner.mjs', import.meta.url))

export interface CliRun {
  code: number | null
  stdout: string
  stderr: string
}

export interface RunningCli {
  child: ChildProcess
  /** Resolves once stderr contains `text`. */
  stderrContains: (text: string) => Promise<void>
  done: Promise<CliRun>
}

/** Starts the claude-runner client as CI would: a real process against a real server. */
export function startCli (base: string, args: string[], input?: string): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, CLAUDE_RUNNER_URL: base, CLAUDE_RUNNER_TOKEN: TOKEN },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  onTestFinished(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let stdout = ''
  let stderr = ''
  const waiters: Array<{ text: string, resolve: () => void }> = []
  child.stdout.setEncoding('utf8').on('data', chunk => { stdout += chunk })
  child.stderr.setEncoding('utf8').on('data', chunk => {
    stderr += chunk
    for (const waiter of [...waiters]) {
      if (!stderr.includes(waiter.text)) continue
      waiters.splice(waiters.indexOf(waiter), 1)
      waiter.resolve()
    }
  })
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', code => resolve({ code, stdout, stderr }))
  })
  child.stdin.end(input ?? '')
  return {
    child,
    done,
    stderrContains: text => stderr.includes(text) ? Promise.resolve() : new Promise(resolve => waiters.push({ text, resolve })),
  }
}

export function cli (base: string, args: string[], input?: string): Promise<CliRun> {
  return startCli(base, args, input).done
}
