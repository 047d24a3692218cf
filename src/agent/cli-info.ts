import { probeCommand } from './agent-process.ts'
import type { Sandbox } from './sandbox.ts'

export type CliInfo =
  | { state: 'checking', bin: string }
  | { state: 'found', bin: string, version: string }
  | { state: 'missing', bin: string, error: string }

/**
 * Asks `CLAUDE_BIN --version` once, in the background and in the sandbox the runs get, so
 * `/health` can tell ops whether the CLI is there (and runs where the agents run) and which
 * version it is, without a health check ever waiting on a process.
 */
export class CliProbe {
  #info: CliInfo
  readonly #done: Promise<void>

  constructor (bin: string, env: Readonly<Record<string, string>>, sandbox: Sandbox) {
    this.#info = { state: 'checking', bin }
    this.#done = sandbox.probe(bin, ['--version'], env)
      .then(command => 'error' in command ? { ok: false, output: command.error.message } : probeCommand(command, { timeoutMs: 15_000 }))
      .then(({ ok, output }) => {
        this.#info = ok
          ? { state: 'found', bin, version: output.split('\n')[0] ?? output }
          : { state: 'missing', bin, error: output.split('\n')[0] || 'no output' }
      })
  }

  /** The same object until the answer comes in. */
  get info (): CliInfo {
    return this.#info
  }

  /** Resolves once the answer is in. */
  get ready (): Promise<void> {
    return this.#done
  }
}
