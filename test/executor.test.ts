// AgentExecutor on its own: the real sandbox, the real fake CLI, real git workspaces, with the
// collecting step held at a gate so a cancel or a timeout lands exactly while it runs.
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { runAgent, startAgent } from '../src/agent/agent-run.ts'
import { ProcessRecords } from '../src/agent/process-records.ts'
import { Bubblewrap } from '../src/agent/sandbox.ts'
import { RunCancelledError, RunTimeoutError } from '../src/errors.ts'
import { AgentExecutor } from '../src/runner/agent-executor.ts'
import { GitWorkspaces } from '../src/workspace/git-workspaces.ts'
import { WorkspaceFolders, type WorkspaceProvider } from '../src/workspace/workspace.ts'
import { FAKE_CLAUDE, tempDir } from './helpers/app.ts'
import { makeRepo } from './helpers/repos.ts'

async function gatedExecutor () {
  const folders = new WorkspaceFolders(await tempDir())
  await folders.init()
  const repo = makeRepo(await tempDir())
  const env = { PATH: process.env.PATH! }
  const git = new GitWorkspaces({ folders, repo: repo.origin, refreshMs: 0, maxDiffBytes: 1 << 20, sandboxed: true, logger: pino({ level: 'silent' }), now: Date.now })
  onTestFinished(() => git.close())
  await git.ready
  let entered!: () => void
  let release!: () => void
  const collecting = new Promise<void>(resolve => { entered = resolve })
  const gate = new Promise<void>(resolve => { release = resolve })
  const workspaces: WorkspaceProvider = {
    ready: git.ready,
    describe: () => git.describe(),
    close: () => git.close(),
    prepare: async (id, options) => {
      const workspace = await git.prepare(id, options)
      return {
        ...workspace,
        collect: async collect => {
          entered()
          await gate
          return workspace.collect(collect)
        },
      }
    },
  }
  const executor = new AgentExecutor({
    bin: FAKE_CLAUDE,
    sandbox: await Bubblewrap.create({ cli: FAKE_CLAUDE, env, stateDir: folders.sandbox, readOnly: [] }),
    records: new ProcessRecords(folders.pids),
    env,
    configs: { folders },
    killGraceMs: 1000,
    maxOutputBytes: 1 << 20,
    workspaces,
  })
  return { executor, collecting, release, repo }
}

describe('a run stopped while its changes are collected', () => {
  for (const [stop, status, code] of [
    [new RunCancelledError('user'), 'cancelled', 'cancelled'],
    [new RunTimeoutError(1000), 'timed_out', 'timeout'],
  ] as const) {
    it(`ends ${status}, keeping the agent's result and exit code`, async () => {
      const { executor, collecting, release } = await gatedExecutor()
      const controller = new AbortController()
      const outcome = executor.execute({ id: `run-${code}`, spec: { prompt: '[[fake write a.txt a]] [[fake text all done]]' } }, {}, controller.signal)
      await collecting
      controller.abort(stop)
      release()
      const done = await outcome
      expect(done).toMatchObject({ status, error: { code, message: stop.message }, exit: { code: 0, signal: null }, result: { is_error: false, result: 'all done' } })
    })
  }
})

describe('a run stopped while its branch is pushed', () => {
  it('ends cancelled, not push_failed, with the changes it collected', async () => {
    const { executor, release, repo } = await gatedExecutor()
    release()
    // The base refuses to answer the push until the test lets it: the cancel lands inside `git push`.
    const pushing = join(repo.origin, 'pushing')
    const letGo = join(repo.origin, 'let-go')
    const hook = join(repo.origin, 'hooks', 'pre-receive')
    writeFileSync(hook, `#!/bin/sh\ntouch '${pushing}'\nwhile [ ! -e '${letGo}' ]; do sleep 0.05; done\nexit 1\n`)
    chmodSync(hook, 0o755)
    onTestFinished(() => { writeFileSync(letGo, '') })
    const controller = new AbortController()
    const outcome = executor.execute({ id: 'run-push', push: true, spec: { prompt: '[[fake write a.txt a]] [[fake text all done]]' } }, {}, controller.signal)
    await vi.waitFor(() => { expect(existsSync(pushing)).toBe(true) })
    const stop = new RunCancelledError('user')
    controller.abort(stop)
    const done = await outcome
    expect(done).toMatchObject({ status: 'cancelled', error: { code: 'cancelled', message: stop.message }, exit: { code: 0, signal: null }, result: { result: 'all done' } })
    expect(done.changes?.files.map(file => file.path)).toEqual(['a.txt'])
  })
})

describe('a CLI started before its prompt is known', () => {
  it('waits, printing nothing, and runs the prompt it is given later, in the sandbox', async () => {
    const dir = await tempDir()
    const paths = { workspace: join(dir, 'ws'), config: join(dir, 'config'), home: join(dir, 'home'), tmp: join(dir, 'tmp'), inputs: join(dir, 'inputs') }
    for (const path of Object.values(paths)) mkdirSync(path)
    const env = { PATH: process.env.PATH! }
    const started = startAgent({ prompt: 'not this one' }, {
      bin: FAKE_CLAUDE,
      sandbox: await Bubblewrap.create({ cli: FAKE_CLAUDE, env, stateDir: join(dir, 'state'), readOnly: [] }),
      paths,
      env,
      killGraceMs: 1000,
      maxOutputBytes: 1 << 20,
    })
    // The process runs (it has answered the handshake) before the prompt exists.
    expect(await started.ready).toBe(true)
    expect(started.alive).toBe(true)
    const events: string[] = []
    const outcome = await started.run({ prompt: '[[fake text fed after the start]]' }, { signal: new AbortController().signal, onEvent: event => events.push(event.type) })
    expect(outcome).toMatchObject({ status: 'completed', result: { result: 'fed after the start' } })
    // Nothing of the handshake is the run's: its output starts with the CLI's init line.
    expect(JSON.parse(outcome.output.lines[0]!)).toMatchObject({ type: 'system', subtype: 'init' })
    expect(outcome.output.bytes).toBe(outcome.output.lines.reduce((sum, line) => sum + Buffer.byteLength(line) + 1, 0))
    expect(events[0]).toBe('init')
  })

  it('refuses an agent the CLI did not find, before the model is called', async () => {
    const dir = await tempDir()
    const paths = { workspace: join(dir, 'ws'), config: join(dir, 'config'), home: join(dir, 'home'), tmp: join(dir, 'tmp'), inputs: join(dir, 'inputs') }
    for (const path of Object.values(paths)) mkdirSync(path)
    mkdirSync(join(paths.workspace, '.claude', 'agents'), { recursive: true })
    writeFileSync(join(paths.workspace, '.claude', 'agents', 'reviewer.md'), '---\nname: reviewer\ndescription: Reviews\n---\nReview.\n')
    const env = { PATH: process.env.PATH! }
    const sandbox = await Bubblewrap.create({ cli: FAKE_CLAUDE, env, stateDir: join(dir, 'state'), readOnly: [] })
    const options = { bin: FAKE_CLAUDE, sandbox, paths, env, killGraceMs: 1000, maxOutputBytes: 1 << 20, signal: new AbortController().signal }
    const missing = await runAgent({ prompt: '[[fake text unreachable]]', agent: 'Reviewer' }, options)
    expect(missing).toMatchObject({ status: 'failed', result: null, error: { code: 'unknown_agent', message: "agent 'Reviewer' not found. Available agents: claude, Explore, general-purpose, Plan, statusline-setup, reviewer" } })
    expect(missing.output.lines).toEqual([])
    const found = await runAgent({ prompt: '[[fake text reviewed]]', agent: 'reviewer' }, options)
    expect(found).toMatchObject({ status: 'completed', result: { result: 'reviewed' } })
  })
})
