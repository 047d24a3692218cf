// Attacks from inside a run, one per hole the sandbox closes: the agent (the fake CLI) runs shell
// commands in its real sandbox (`[[fake sh COMMAND]]`, whose output becomes its answer) and the
// tests check what it saw and what it changed.
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { AUTH, FAKE_CLAUDE, FAKE_CLAUDE_LIBS, finished, makeApp, record, run, submit, tempDir, TOKEN } from './helpers/app.ts'
import { AgentProbe, commandLine, descendants, expectAllGone, isRunning } from './helpers/probe.ts'
import { makeRepo, sh } from './helpers/repos.ts'
import { getJobOver, json, post, refusedServer, SERVER, startServer } from './helpers/server.ts'

const SERVICE_CODE = fileURLToPath(new URL('../src', import.meta.url))
const SECRETS = { AUTH_TOKENS: TOKEN, WEBHOOK_SECRET: 'webhook-secret-0123456789', METRICS_TOKEN: 'metrics-token-0123456789' }

describe('an agent in its sandbox', () => {
  it('cannot read the service\'s environment: no service process is visible', async () => {
    const root = await tempDir()
    const server = await startServer({ WORKSPACE_ROOT: root, ...SECRETS })
    const pid = server.child.pid!
    const job = await json(post(server.url, {
      prompt: `[[fake sh cat /proc/${pid}/environ]] [[fake sh grep -l -a -e ${TOKEN} -e ${SECRETS.WEBHOOK_SECRET} /proc/*/environ]] [[fake sh ls /proc | grep -E '^[0-9]+$' | wc -l]]`,
    }))
    const done = await getJobOver(server.url, job.job_id, 30)
    expect(done.status).toBe('completed')
    const [environ, search, count] = (done.result.text as string).split(/\n(?=\$ )/)
    expect(environ).toBe(`$ cat /proc/${pid}/environ\ncat: /proc/${pid}/environ: No such file or directory\n[exit 1]`)
    // grep found no environ holding a secret (exit 1, no file named).
    expect(search).toMatch(/^\$ grep [^\n]*\n\[exit 1\]$/)
    // Its PID namespace holds bwrap's init, the agent, and the shells it runs: a handful, never the host's.
    expect(Number(/\n(\d+)\n/.exec(count!)![1])).toBeLessThan(10)
  })

  it('cannot read the base repository\'s config, anything else of WORKSPACE_ROOT, or the service\'s code', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    expect(existsSync(join(root, 'base.git', 'config'))).toBe(true)
    const job = await run(app, {
      prompt: `[[fake sh cat ${root}/base.git/config]] [[fake sh ls ${root}]] [[fake sh cat /run/claude-runner/base-objects/../config]] [[fake sh ls /run/claude-runner]] [[fake sh cat ${SERVICE_CODE}/server.ts]]`,
    })
    expect(job.status).toBe('completed')
    const seen = job.result!.text!
    expect(seen).toContain(`cat: ${root}/base.git/config: No such file or directory`)
    expect(seen).toContain(`ls: cannot access '${root}': No such file or directory`)
    expect(seen).toContain('cat: /run/claude-runner/base-objects/../config: No such file or directory')
    expect(seen).not.toContain('[remote "origin"]')
    expect(seen).toContain(`cat: ${SERVICE_CODE}/server.ts: No such file or directory`)
  })

  it('cannot list or read another running job\'s workspace or configuration folder', async () => {
    const template = await tempDir('cr-template-')
    writeFileSync(join(template, '.credentials.json'), '{"token":"credential-of-every-run"}')
    const { app, root } = await makeApp({ claudeConfigTemplate: template })
    const probe = await AgentProbe.start()
    const victim = await submit(app, { prompt: `[[fake write victim-secret.txt victim-secret-42]] ${probe.directive}` })
    await probe.waitStarted(1)
    expect(readFileSync(join(root, 'jobs', victim.job_id, 'victim-secret.txt'), 'utf8')).toBe('victim-secret-42')
    const attacker = await run(app, {
      prompt: [
        `[[fake sh ls ${root}/jobs]]`, `[[fake sh cat ${root}/jobs/${victim.job_id}/victim-secret.txt]]`,
        `[[fake sh cat ${root}/claude-config/${victim.job_id}/.credentials.json]]`,
        '[[fake sh ls -a /workspace/.. /home]]', '[[fake sh cat /home/agent/.claude/.credentials.json]]',
        '[[fake sh find / -name victim-secret.txt 2>/dev/null]]',
      ].join(' '),
    })
    probe.release()
    expect((await finished(app, victim.job_id)).status).toBe('completed')
    expect(attacker.status).toBe('completed')
    const seen = attacker.result!.text!
    expect(seen).not.toContain('victim-secret-42')
    expect(seen).toContain(`ls: cannot access '${root}/jobs': No such file or directory`)
    expect(seen).toContain(`cat: ${root}/jobs/${victim.job_id}/victim-secret.txt: No such file or directory`)
    expect(seen).toContain(`cat: ${root}/claude-config/${victim.job_id}/.credentials.json: No such file or directory`)
    expect(seen).toContain('/home:\n.\n..\nagent\n')
    // Its own configuration folder holds the template's copy: that much is its own.
    expect(seen).toContain('{"token":"credential-of-every-run"}')
    expect(seen).toContain('$ find / -name victim-secret.txt 2>/dev/null\n[exit 1]')
  })

  it('cannot change the base or a local BASE_REPO by overwriting object files', async () => {
    const repo = makeRepo(await tempDir())
    const { app, root } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const base = join(root, 'base.git')
    // The base is a copy of the local BASE_REPO, not hardlinks to its files.
    for (const pack of readdirSync(join(base, 'objects', 'pack'))) expect(statSync(join(base, 'objects', 'pack', pack)).nlink).toBe(1)
    const attack = 'for f in $(find .git/objects $(cat .git/objects/info/alternates) -type f); do chmod u+w "$f" 2>&1; printf garbage > "$f" && echo "overwrote $f"; done'
    const job = await run(app, { prompt: `[[fake sh cat .git/objects/info/alternates]] [[fake sh ${attack}]]` })
    expect(job.status).toBe('completed')
    const seen = job.result!.text!
    expect(seen).toContain('/run/claude-runner/base-objects')
    expect(seen).toContain('Read-only file system')
    expect(seen).not.toMatch(/overwrote \/run/)
    for (const repository of [base, repo.origin]) expect(sh(repository, ['fsck', '--full', '--strict'])).toBe('')
    const later = await run(app, { prompt: '[[fake sh cat README.md && git fsck --full]]' })
    expect(later.result!.text).toBe('$ cat README.md && git fsck --full\n# fixture\n[exit 0]')
  })

  it('leaves no daemon behind: a setsid process dies with the job, completed or cancelled', async () => {
    const { app } = await makeApp()
    for (const ending of ['complete', 'cancel'] as const) {
      const probe = await AgentProbe.start()
      const job = await submit(app, { prompt: `[[fake sh setsid sh -c 'sleep 313' >/dev/null 2>&1 &]] ${probe.directive}` })
      await probe.waitStarted(1)
      const sandbox = (await record(app, job.job_id)).pid!
      const daemon = descendants(sandbox).find(pid => commandLine(pid) === 'sleep 313')
      expect(daemon, ending).toEqual(expect.any(Number))
      // It escaped the agent's process group and session: only the PID namespace holds it.
      expect(descendants(probe.started[0]!.pid)).not.toContain(daemon)
      if (ending === 'cancel') await app.inject({ method: 'DELETE', url: `/jobs/${job.job_id}`, headers: AUTH })
      else probe.release()
      expect((await finished(app, job.job_id)).status).toBe(ending === 'cancel' ? 'cancelled' : 'completed')
      await expectAllGone([daemon!])
    }
  })

  it('plants git filters, hooks, fsmonitor and textconv that the service never runs while collecting', async () => {
    const repo = makeRepo(await tempDir())
    const dir = await tempDir()
    chmodSync(dir, 0o777)
    const marker = (name: string) => join(dir, name)
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0, allowPush: true })
    await app.ctx.workspaces.ready
    const plant = [
      `git config filter.x.clean 'touch ${marker('clean')}; cat'`, `git config filter.x.smudge 'touch ${marker('smudge')}; cat'`,
      `git config filter.x.process 'touch ${marker('process')}'`, `git config core.fsmonitor 'touch ${marker('fsmonitor')}'`,
      `git config diff.x.textconv 'touch ${marker('textconv')}; cat'`, `git config diff.external 'touch ${marker('external')}'`,
      'git config core.hooksPath /workspace/.hooks', 'git config core.untrackedCache true',
      "printf '* filter=x diff=x\\n' > .gitattributes",
      `mkdir .hooks && printf '#!/bin/sh\\ntouch ${marker('hook')}\\n' > .hooks/pre-commit && chmod +x .hooks/pre-commit`,
      'mkdir nested && git -C nested init -q && echo n > nested/file && git -C nested add file && git -C nested -c user.name=a -c user.email=a@b commit -qm n',
      `git -C nested config core.fsmonitor 'touch ${marker('nested')}' && echo more >> nested/file`,
      'echo changed >> README.md',
    ].join(' && ')
    const job = await run(app, { prompt: `[[fake sh ${plant}]]`, push: true })
    expect(job.error).toBeNull()
    expect(job.status).toBe('completed')
    expect(job.result!.text).toMatch(/\[exit 0\]$/)
    expect(readdirSync(dir)).toEqual([])
    expect(job.changes!.files).toEqual(expect.arrayContaining([{ path: 'README.md', status: 'modified' }, { path: '.gitattributes', status: 'added' }]))
    expect(job.changes!.diff).toContain('+changed')
    // What was pushed is the agent's content, unfiltered.
    expect(sh(repo.origin, ['show', `claude-runner/${job.job_id}:README.md`])).toBe('# fixture\nchanged')
  })

  it('cannot plant symlinks that make the service read host files through .git', async () => {
    const repo = makeRepo(await tempDir())
    const outside = await tempDir()
    writeFileSync(join(outside, 'HEAD'), `${'f'.repeat(40)}\n`)
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const job = await run(app, { prompt: `[[fake write new.txt new]] [[fake sh rm .git/HEAD && ln -s ${outside}/HEAD .git/HEAD]]` })
    expect(job.status).toBe('completed')
    // HEAD could not be read as a plain file: the work tree is compared with the commit it started from.
    expect(job.changes).toMatchObject({ base_commit: repo.commits.main, head_commit: repo.commits.main, files: [{ path: 'new.txt', status: 'added' }] })
  })
})

describe('what a run sees', () => {
  it('finds a CLI that lives under /tmp, though the run has a /tmp of its own', async () => {
    const elsewhere = join(await tempDir('cr-cli-'), 'fixtures')
    cpSync(dirname(FAKE_CLAUDE), elsewhere, { recursive: true })
    const { app } = await makeApp({ claudeBin: join(elsewhere, 'fake-claude.mjs') })
    const job = await run(app, { prompt: '[[fake sh ls /tmp]]' })
    expect(job.status).toBe('completed')
  })
})

describe('removing what an agent leaves', () => {
  it('removes chmod 555 trees from the workspace, /tmp and HOME, and the service restarts cleanly', async () => {
    const user = await unprivileged()
    const root = await user.folder()
    const env = { ...user.env, WORKSPACE_ROOT: root, PATH: user.path, HOME: await user.folder() }
    const server = await startServer(env, user.options)
    const lock = (dir: string) => `mkdir -p ${dir}/locked/deep && echo x > ${dir}/locked/deep/file && chmod 555 ${dir}/locked/deep ${dir}/locked`
    const job = await json(post(server.url, { prompt: `[[fake sh ${lock('/workspace')} && ${lock('/tmp')} && ${lock('$HOME')} && ${lock('$CLAUDE_CONFIG_DIR')}]]` }))
    const done = await getJobOver(server.url, job.job_id, 30)
    expect(done.status).toBe('completed')
    expect(done.result.text).toMatch(/\[exit 0\]$/)
    await vi.waitFor(() => {
      for (const folder of ['jobs', 'claude-config', 'runs', 'trash']) expect(readdirSync(join(root, folder)), folder).toEqual([])
    }, { timeout: 10_000, interval: 50 })
    server.child.kill('SIGTERM')
    expect(await server.exited).toBe(0)
    const again = await startServer(env, user.options)
    const next = await json(post(again.url, { prompt: 'hi' }))
    expect((await getJobOver(again.url, next.job_id, 30)).status).toBe('completed')
  })
})

describe('a crash of the service', () => {
  it('leaves no agent running: SIGKILL with 5 runs going ends every agent, grandchild and daemon', async () => {
    const root = await tempDir()
    const probe = await AgentProbe.start()
    const server = await startServer({ WORKSPACE_ROOT: root })
    for (let i = 0; i < 5; i++) await post(server.url, { prompt: `[[fake grandchild]] [[fake sh setsid sh -c 'sleep 314' >/dev/null 2>&1 &]] ${probe.directive}` })
    await probe.waitStarted(5)
    const started = descendants(server.child.pid!)
    const agents = probe.started.map(start => start.pid)
    expect(started).toEqual(expect.arrayContaining(agents))
    expect(started.filter(pid => commandLine(pid) === 'sleep 314')).toHaveLength(5)
    // bwrap, its init, the agent, its grandchild and the daemon, per run.
    expect(started.length).toBeGreaterThanOrEqual(25)
    server.child.kill('SIGKILL')
    await server.exited
    await expectAllGone(started)
    // The next instance starts on the same folder (the crashed one's lock is stale) and finds nothing running.
    const again = await startServer({ WORKSPACE_ROOT: root })
    expect(again.logs.find(line => line.msg === 'killed agent processes left running by an earlier run')).toBeUndefined()
    expect(readdirSync(join(root, 'jobs'))).toEqual([])
  })

  it('with SANDBOX=off, the next start-up kills what the records name, and never a reused pid', async () => {
    const root = await tempDir()
    const probe = await AgentProbe.start()
    const server = await startServer({ WORKSPACE_ROOT: root, SANDBOX: 'off' })
    for (let i = 0; i < 2; i++) await post(server.url, { prompt: `[[fake grandchild]] ${probe.directive}` })
    await probe.waitStarted(2)
    const started = descendants(server.child.pid!)
    expect(started.length).toBeGreaterThanOrEqual(4)
    server.child.kill('SIGKILL')
    await server.exited
    // Without a sandbox nothing ends them with the service.
    expect(started.every(isRunning)).toBe(true)
    // A record naming a live process that is not the one recorded (same pid, another start time).
    const bystander = spawn('sleep', ['1000'], { stdio: 'ignore' })
    onTestFinished(() => { bystander.kill('SIGKILL') })
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    writeFileSync(join(root, 'pids', 'reused'), JSON.stringify({ pid: bystander.pid, start: '1', boot }))
    const again = await startServer({ WORKSPACE_ROOT: root, SANDBOX: 'off' })
    expect(again.logs).toContainEqual(expect.objectContaining({ msg: 'killed agent processes left running by an earlier run', pids: expect.arrayContaining(probe.started.map(start => start.pid)) }))
    await expectAllGone(started)
    expect(isRunning(bystander.pid!)).toBe(true)
    expect(readdirSync(join(root, 'pids'))).toEqual([])
  })
})

describe('one instance per WORKSPACE_ROOT', () => {
  it('a second instance refuses to start, naming the holder, and the first one\'s job completes', async () => {
    const root = await tempDir()
    const probe = await AgentProbe.start()
    const first = await startServer({ WORKSPACE_ROOT: root })
    const job = await json(post(first.url, { prompt: `[[fake write kept.txt mine]] ${probe.directive}` }))
    await probe.waitStarted(1)
    const second = await refusedServer({ WORKSPACE_ROOT: root })
    expect(second.code).toBe(2)
    expect(second.stderr).toContain(`WORKSPACE_ROOT ${root} is in use by another claude-runner (pid ${first.child.pid}`)
    // It touched nothing: the running job's workspace is still there.
    expect(readFileSync(join(root, 'jobs', job.job_id, 'kept.txt'), 'utf8')).toBe('mine')
    probe.release()
    expect((await getJobOver(first.url, job.job_id, 30)).status).toBe('completed')
  })
})

describe('start-up', () => {
  it('says on /health and in its log whether runs are isolated', async () => {
    for (const mode of ['bwrap', 'off'] as const) {
      const lines: Array<Record<string, unknown>> = []
      const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(JSON.parse(String(chunk))); done() } }))
      const { app } = await makeApp({ sandbox: mode }, { logger })
      const health = (await app.inject({ method: 'GET', url: '/health' })).json()
      if (mode === 'bwrap') {
        expect(health.sandbox).toEqual({ mode: 'bwrap', isolated: true, version: expect.stringMatching(/^\d+\.\d+/) })
        expect(lines).toContainEqual(expect.objectContaining({ level: 30, msg: 'agent runs are sandboxed with bubblewrap' }))
      } else {
        expect(health.sandbox).toEqual({ mode: 'off', isolated: false, version: null })
        expect(lines).toContainEqual(expect.objectContaining({ level: 40, msg: expect.stringContaining('SANDBOX=off: agent runs are not isolated') }))
      }
    }
  })

  it('fails, saying what to change, when bubblewrap is not installed', async () => {
    const nodeOnly = await tempDir('cr-path-')
    linkOrCopy(process.execPath, join(nodeOnly, 'node'))
    const refused = await refusedServer({ WORKSPACE_ROOT: await tempDir(), PATH: nodeOnly })
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain('SANDBOX=bwrap, but bubblewrap is not installed: install it (Debian: apt-get install bubblewrap), or set SANDBOX=off')
  })

  it('fails, saying what to change, when this machine refuses user namespaces (as a container\'s seccomp profile does)', async () => {
    // The service itself runs in a sandbox that forbids creating user namespaces: its bwrap is refused for real.
    const refused = await refusedServer({ WORKSPACE_ROOT: await tempDir() }, ['bwrap', '--bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--unshare-user', '--unshare-pid', '--disable-userns', '--die-with-parent', '--'])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain('SANDBOX=bwrap, but bubblewrap cannot start a sandbox here: ')
    expect(refused.stderr).toContain('in a container, run with a seccomp and AppArmor profile that allow them')
    expect(refused.stderr).toContain('Or set SANDBOX=off')
  })
})

describe('credentials', () => {
  it('never show in /health, job errors or logs: a URL\'s userinfo becomes ***', async () => {
    const { createServer } = await import('node:http')
    // A dumb-HTTP "server" that advertises a ref whose object it cannot serve: git's error names the URL.
    const dumb = createServer((request, response) => {
      if (request.url?.includes('info/refs')) response.writeHead(200, { 'content-type': 'text/plain' }).end(`${'1'.repeat(40)}\trefs/heads/main\n`)
      else response.writeHead(404).end()
    })
    await new Promise<void>(resolve => dumb.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => new Promise<void>(resolve => dumb.close(() => resolve())))
    const port = (dumb.address() as { port: number }).port
    const lines: string[] = []
    const logger = pino({ level: 'info' }, new Writable({ write (chunk, _encoding, done) { lines.push(String(chunk)); done() } }))
    const { app } = await makeApp({ baseRepo: `http://user:s3cr3t-token@127.0.0.1:${port}/repo.git`, baseRefreshSeconds: 0 }, { logger })
    await app.ctx.workspaces.ready
    const health = (await app.inject({ method: 'GET', url: '/health' })).json()
    expect(health.workspace.state).toBe('error')
    expect(health.workspace.last_error).toContain(`http://***@127.0.0.1:${port}/repo.git`)
    const job = await run(app, { prompt: 'hi' })
    expect(job.error!.code).toBe('workspace_error')
    for (const text of [JSON.stringify(health), JSON.stringify(job), ...lines]) expect(text).not.toContain('s3cr3t-token')
    expect(lines.some(line => line.includes('***@127.0.0.1'))).toBe(true)
  })
})

/**
 * A user other than root for a service process that must not be root (root ignores file
 * permissions, so a `chmod 555` left by the agent would prove nothing). As root, a uid of no one's
 * with a node it can run; otherwise, the current user.
 */
async function unprivileged () {
  if (process.getuid?.() !== 0) {
    return { options: {}, env: {} as Record<string, string>, path: process.env.PATH!, folder: () => tempDir() }
  }
  const uid = 4242
  const dir = await tempDir('cr-user-')
  chmodSync(dir, 0o755)
  mkdirSync(join(dir, 'node', 'bin'), { recursive: true })
  const node = join(dir, 'node', 'bin', 'node')
  // This node may live in root's home (0700): a link elsewhere is one the user can reach.
  linkOrCopy(process.execPath, node)
  // So may this checkout (CI clones wherever it likes): the same files, bound at a path the user
  // can reach, give the service its code, node_modules and the fake CLI.
  const checkout = fileURLToPath(new URL('..', import.meta.url))
  const app = join(dir, 'app')
  mkdirSync(app)
  execFileSync('mount', ['--bind', checkout, app])
  onTestFinished(() => { execFileSync('umount', ['-l', app]) })
  const inApp = (path: string): string => join(app, relative(checkout, path))
  return {
    options: { uid, gid: uid, node, server: inApp(SERVER) },
    env: { CLAUDE_BIN: inApp(FAKE_CLAUDE), SANDBOX_READ_ONLY: inApp(FAKE_CLAUDE_LIBS) },
    path: `${join(dir, 'node', 'bin')}:/usr/local/bin:/usr/bin:/bin`,
    folder: async () => {
      const folder = join(dir, `folder-${readdirSync(dir).length}`)
      mkdirSync(folder, { mode: 0o700 })
      chownSync(folder, uid, uid)
      return folder
    },
  }
}

function linkOrCopy (source: string, target: string): void {
  try {
    linkSync(source, target)
  } catch {
    copyFileSync(source, target)
    chmodSync(target, 0o755)
  }
}
