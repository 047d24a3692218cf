import { copyFile, lstat, mkdir, open, readlink, realpath, stat, writeFile } from 'node:fs/promises'
import { basename, delimiter, dirname, isAbsolute, join, resolve } from 'node:path'
import { ConfigError } from '../config.ts'
import { probeCommand } from './agent-process.ts'

/**
 * Turns "run this argv in this workspace, with this configuration folder and this environment"
 * into the command that starts it: inside a bubblewrap sandbox (SANDBOX=bwrap), or as it is
 * (SANDBOX=off). agent-process.ts starts whatever this returns; nothing else starts an agent.
 *
 * Inside, paths are fixed, whatever the run: the workspace is /workspace, HOME /home/agent, the
 * Claude Code configuration folder /home/agent/.claude, /tmp is the run's own. A warm run started
 * before its job is known looks like any other, a session transcript (kept under a folder named
 * after the cwd) can be resumed by another run, and nothing the agent reports shows the host's layout.
 */
export const INSIDE = {
  workspace: '/workspace',
  home: '/home/agent',
  config: '/home/agent/.claude',
  tmp: '/tmp',
  inputs: '/run/claude-runner/inputs',
  baseObjects: '/run/claude-runner/base-objects',
  /** A continuation's: the objects of the runs it continues (see GitWorkspaces). */
  continuedObjects: '/run/claude-runner/continued-objects',
} as const

const AGENT_UID = 1000
const AGENT_USER = 'agent'
/** /dev/shm is memory: bounded (the root and the rest of /dev, also memory, are read-only). */
const SHM_BYTES = 256 * 1024 * 1024
/** The /tmp of a probe (`claude --version`), which has no run folders. */
const PROBE_TMP_BYTES = 64 * 1024 * 1024

/** A run's own folders on the host. */
export interface RunPaths {
  /** The working tree (read-write). */
  workspace: string
  /** CLAUDE_CONFIG_DIR (read-write). */
  config: string
  /** HOME (read-write; unused with SANDBOX=off). */
  home: string
  /** /tmp (read-write; unused with SANDBOX=off). */
  tmp: string
  /** Files the CLI reads, e.g. long system prompts (read-only inside). */
  inputs: string
}

/** A host path a run may read (never write), and where the agent sees it. */
export interface Mount {
  source: string
  target: string
}

export interface SandboxCommand {
  bin: string
  args: string[]
  /** The host folder the process starts in. */
  cwd: string
  env: Record<string, string>
  /** bwrap's options, NUL-separated, for file descriptor 3 (`--args 3`): never in a process listing. */
  fd3?: Buffer | undefined
  /** True when `bin` is bwrap: stopping it gently means signalling the processes inside. */
  sandboxed: boolean
}

export interface SandboxInfo {
  mode: 'bwrap' | 'off'
  /** Whether runs are isolated from the service and from each other. */
  isolated: boolean
  version: string | null
}

export interface SandboxSpec {
  paths: RunPaths
  /** Read-only binds the run needs (e.g. the base repository's objects). */
  mounts: readonly Mount[]
  bin: string
  args: readonly string[]
  /** The agent's environment (allowlisted: see agent-env.ts). */
  env: Readonly<Record<string, string>>
}

export type Prepared = SandboxCommand | { error: { code: string, message: string } }

export interface Sandbox {
  readonly info: SandboxInfo
  /** The paths of a run as the agent sees them. */
  view (paths: RunPaths): RunPaths
  command (spec: SandboxSpec): Promise<Prepared>
  /** A short command outside any run (e.g. `claude --version`), confined like a run. */
  probe (bin: string, args: readonly string[], env: Readonly<Record<string, string>>): Promise<Prepared>
}

/** SANDBOX=off: the agent runs as the service's user, with the host's paths. Not isolated. */
export class NoSandbox implements Sandbox {
  readonly info: SandboxInfo = { mode: 'off', isolated: false, version: null }

  view (paths: RunPaths): RunPaths {
    return paths
  }

  async command ({ paths, bin, args, env }: SandboxSpec): Promise<Prepared> {
    return { bin, args: [...args], cwd: paths.workspace, env: { ...env, CLAUDE_CONFIG_DIR: paths.config }, sandboxed: false }
  }

  async probe (bin: string, args: readonly string[], env: Readonly<Record<string, string>>): Promise<Prepared> {
    return { bin, args: [...args], cwd: '/', env: { ...env }, sandboxed: false }
  }
}

/**
 * What a run sees, and why:
 * - /usr and the top-level links into it, read-only: the CLI, git, a shell and ordinary tools.
 * - From /etc only what programs need to run and reach the network (resolver, CA certificates, ld.so,
 *   time zone, alternatives); a passwd and group of our own. As root outside, the agent keeps owner
 *   access to root's files (the user namespace maps its uid to root), so nothing secret may be
 *   visible at all: /etc/shadow, ssh host keys, /etc/ssl/private, system git or npm configuration.
 * - The CLI's own folder and, for a script, its interpreter's: read-only, at their host paths.
 * - Its workspace, configuration folder, HOME and /tmp read-write; its inputs and the base's
 *   objects read-only. Nothing else of WORKSPACE_ROOT, no other run, no service code, no home.
 * - A /proc of its own PID namespace: no service process (or its environ) is visible, and when the
 *   agent exits every process it left dies with the namespace.
 * - The network is the host's: the CLI must reach its API. See the README for what that exposes.
 */
const ETC = [
  'alternatives', 'ca-certificates', 'ca-certificates.conf', 'ssl/certs', 'ssl/openssl.cnf', 'pki/tls/certs', 'pki/ca-trust',
  'hosts', 'host.conf', 'resolv.conf', 'nsswitch.conf', 'gai.conf', 'services', 'protocols', 'networks', 'hostname',
  'ld.so.cache', 'ld.so.conf', 'ld.so.conf.d', 'localtime', 'timezone', 'os-release', 'debian_version',
  'profile', 'bash.bashrc', 'inputrc', 'shells', 'terminfo', 'mime.types', 'magic', 'magic.mime', 'locale.alias',
]
const PROBE_TMP = ['--size', String(PROBE_TMP_BYTES), '--tmpfs', '/tmp']
const TOP_LEVEL = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']
/** Variables naming host files the CLI reads (CA bundles): those files are bound in, read-only. */
const FILE_VARIABLES = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR']

export interface BubblewrapOptions {
  /** CLAUDE_BIN. */
  cli: string
  /** Other programs runs start (the MCP profiles' servers): found and bound like the CLI. */
  programs?: readonly string[] | undefined
  /** The agent's environment: its PATH finds the CLI and a script's interpreter. */
  env: Readonly<Record<string, string>>
  /** A folder of the service's own (under WORKSPACE_ROOT) for the sandbox's passwd and group. */
  stateDir: string
  /** SANDBOX_READ_ONLY: extra host paths the agent may read. */
  readOnly: readonly string[]
}

/** SANDBOX=bwrap. */
export class Bubblewrap implements Sandbox {
  readonly info: SandboxInfo
  readonly #bwrap: string
  /** The options every sandbox starts with (namespaces, system binds, /etc, passwd). */
  readonly #base: readonly string[]
  /**
   * Host paths every sandbox shows read-only (programs, SANDBOX_READ_ONLY, CA files), bound after
   * the run's own folders: one under /tmp or HOME would be hidden by those otherwise.
   */
  readonly #shared: readonly string[]
  readonly #options: BubblewrapOptions
  #cli: { exe: string, binds: string[] } | undefined

  private constructor (bwrap: string, version: string, base: string[], shared: string[], options: BubblewrapOptions) {
    this.#bwrap = bwrap
    this.#base = base
    this.#shared = shared
    this.#options = options
    this.info = { mode: 'bwrap', isolated: true, version }
  }

  /**
   * Finds bwrap, lays out what every sandbox shares and proves a sandbox starts here: a service
   * that cannot isolate its runs refuses to start, saying what to change.
   */
  static async create (options: BubblewrapOptions): Promise<Bubblewrap> {
    const bwrap = await which('bwrap', process.env.PATH ?? '')
    if (bwrap === undefined) {
      throw new ConfigError('SANDBOX=bwrap, but bubblewrap is not installed: install it (Debian: apt-get install bubblewrap), or set SANDBOX=off to run agents without isolation')
    }
    const base = await baseArgs(options)
    const shared = await sharedBinds(options)
    const versionProbe = await probeCommand({ bin: bwrap, args: ['--version'], cwd: '/', env: {}, sandboxed: false }, { timeoutMs: 10_000 })
    const sandbox = new Bubblewrap(bwrap, versionProbe.output.replace(/^bubblewrap\s*/, '') || 'unknown', base, shared, options)
    const truePath = (await which('true', '/usr/bin:/bin')) ?? '/usr/bin/true'
    const check = await probeCommand(sandbox.#wrap([...base, ...PROBE_TMP, ...shared, '--chdir', '/', '--remount-ro', '/'], [truePath], {}), { timeoutMs: 10_000 })
    if (!check.ok) {
      throw new ConfigError(`SANDBOX=bwrap, but bubblewrap cannot start a sandbox here: ${check.output.split('\n')[0] || 'it failed'}. ` +
        'It needs user namespaces and a fresh /proc: in a container, run with a seccomp and AppArmor profile that allow them ' +
        '(see "Running in Docker" in the README); on Ubuntu 23.10 and later, allow unprivileged user namespaces for bwrap. ' +
        'Or set SANDBOX=off to run agents without isolation')
    }
    return sandbox
  }

  view (paths: RunPaths): RunPaths {
    return { workspace: INSIDE.workspace, config: INSIDE.config, home: INSIDE.home, tmp: INSIDE.tmp, inputs: INSIDE.inputs }
  }

  async command ({ paths, mounts, bin, args, env }: SandboxSpec): Promise<Prepared> {
    const cli = await this.#resolveCli(bin)
    if (cli === undefined) return notFound(bin)
    const run = [
      '--bind', paths.home, INSIDE.home,
      '--bind', paths.config, INSIDE.config,
      '--bind', paths.tmp, INSIDE.tmp,
      '--symlink', '../tmp', '/var/tmp',
      '--bind', paths.workspace, INSIDE.workspace,
      '--ro-bind', paths.inputs, INSIDE.inputs,
      ...mounts.flatMap(mount => ['--ro-bind', mount.source, mount.target]),
      ...this.#shared,
      ...cli.binds.flatMap(path => ['--ro-bind', path, path]),
      '--remount-ro', '/',
      '--chdir', INSIDE.workspace,
    ]
    const inside = { ...env, HOME: INSIDE.home, USER: AGENT_USER, LOGNAME: AGENT_USER, TMPDIR: INSIDE.tmp, CLAUDE_CONFIG_DIR: INSIDE.config }
    return this.#wrap([...this.#base, ...run], [cli.exe, ...args], inside)
  }

  async probe (bin: string, args: readonly string[], env: Readonly<Record<string, string>>): Promise<Prepared> {
    const cli = await this.#resolveCli(bin)
    if (cli === undefined) return notFound(bin)
    const options = [...this.#base, ...PROBE_TMP, ...this.#shared, ...cli.binds.flatMap(path => ['--ro-bind', path, path]), '--chdir', '/', '--remount-ro', '/']
    return this.#wrap(options, [cli.exe, ...args], { ...env, HOME: INSIDE.tmp, TMPDIR: INSIDE.tmp })
  }

  #wrap (options: readonly string[], command: readonly string[], env: Readonly<Record<string, string>>): SandboxCommand {
    const settings = ['--clearenv', ...Object.entries(env).flatMap(([name, value]) => ['--setenv', name, value])]
    return {
      bin: this.#bwrap,
      args: ['--args', '3', '--', ...command],
      cwd: '/',
      // bwrap's own environment is empty: the agent's is set inside, from fd 3 (see --clearenv).
      env: {},
      fd3: Buffer.from([...options, ...settings].map(arg => `${arg}\0`).join('')),
      sandboxed: true,
    }
  }

  /** The CLI's real path and the host folders it needs; kept once found (it may be installed later). */
  async #resolveCli (bin: string): Promise<{ exe: string, binds: string[] } | undefined> {
    if (bin === this.#options.cli && this.#cli !== undefined) return this.#cli
    const found = await resolveProgram(bin, this.#options.env)
    if (found !== undefined && bin === this.#options.cli) this.#cli = found
    return found
  }
}

function notFound (bin: string): Prepared {
  return { error: { code: 'ENOENT', message: `${bin} was not found` } }
}

/** The options every sandbox of this service shares. */
async function baseArgs (options: BubblewrapOptions): Promise<string[]> {
  const args = [
    '--unshare-user', '--uid', String(AGENT_UID), '--gid', String(AGENT_UID),
    '--unshare-pid', '--unshare-ipc', '--unshare-cgroup-try',
    // No user namespaces inside: the kernel's namespace code is attack surface an agent does not need.
    '--disable-userns',
    '--die-with-parent',
    // A session of its own: no TIOCSTI into the service's terminal; SIGTERM reaches the agent's group.
    '--new-session',
    '--ro-bind', '/usr', '/usr',
  ]
  for (const name of TOP_LEVEL) {
    const path = `/${name}`
    const info = await lstat(path).catch(() => undefined)
    if (info?.isSymbolicLink() === true) args.push('--symlink', await readlink(path), path)
    else if (info?.isDirectory() === true) args.push('--ro-bind', path, path)
  }
  // /dev is a tmpfs of bwrap's, as large as memory: read-only but for /dev/shm, which is bounded.
  args.push('--proc', '/proc', '--dev', '/dev', '--size', String(SHM_BYTES), '--tmpfs', '/dev/shm', '--remount-ro', '/dev')
  for (const entry of ETC) {
    if (await exists(`/etc/${entry}`)) args.push('--ro-bind', `/etc/${entry}`, `/etc/${entry}`)
  }
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
  const passwd = join(options.stateDir, 'passwd')
  const group = join(options.stateDir, 'group')
  await writeFile(passwd, `root:x:0:0:root:/root:/usr/sbin/nologin\n${AGENT_USER}:x:${AGENT_UID}:${AGENT_UID}:claude-runner agent:${INSIDE.home}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`, { mode: 0o644 })
  await writeFile(group, `root:x:0:\n${AGENT_USER}:x:${AGENT_UID}:\nnogroup:x:65534:\n`, { mode: 0o644 })
  args.push('--ro-bind', passwd, '/etc/passwd', '--ro-bind', group, '/etc/group')
  return args
}

/** SANDBOX_READ_ONLY, the files CA variables name, the folders of the other programs runs start. */
async function sharedBinds (options: BubblewrapOptions): Promise<string[]> {
  const args: string[] = []
  const extra = [...options.readOnly]
  for (const name of FILE_VARIABLES) {
    const value = options.env[name]
    if (value !== undefined && isAbsolute(value)) extra.push(value)
  }
  for (const program of options.programs ?? []) {
    const found = await resolveProgram(program, options.env)
    if (found !== undefined) extra.push(...found.binds)
  }
  for (const path of new Set(extra)) {
    if (!await exists(path)) continue
    const real = await realpath(path)
    args.push('--ro-bind', real, path)
  }
  return args
}

/**
 * Finds `bin` (a path, or a name on the agent's PATH) and the host folders it needs: its own,
 * and, for a script, its interpreter's (`#!/usr/bin/env node` is looked up on the same PATH). A
 * folder named `bin` brings its parent (an install prefix: node's lib, a package's files).
 * Nothing under /usr: it is bound already.
 */
async function resolveProgram (bin: string, env: Readonly<Record<string, string>>): Promise<{ exe: string, binds: string[] } | undefined> {
  const path = bin.includes('/') ? resolve(bin) : await which(bin, env.PATH ?? '')
  if (path === undefined) return undefined
  const exe = await realpath(path).catch(() => undefined)
  if (exe === undefined || !(await stat(exe)).isFile()) return undefined
  const binds = new Set<string>()
  const add = (file: string): void => {
    const dir = dirname(file)
    const folder = basename(dir) === 'bin' && dirname(dir) !== '/' ? dirname(dir) : dir
    if (folder !== '/' && folder !== '/usr' && !folder.startsWith('/usr/')) binds.add(folder)
  }
  add(exe)
  const interpreter = await shebang(exe)
  if (interpreter !== undefined) {
    const program = basename(interpreter.path) === 'env' && interpreter.arg !== undefined
      ? await which(interpreter.arg, env.PATH ?? '')
      : interpreter.path
    const real = program === undefined ? undefined : await realpath(program).catch(() => undefined)
    if (real !== undefined) add(real)
  }
  return { exe, binds: [...binds] }
}

async function shebang (file: string): Promise<{ path: string, arg: string | undefined } | undefined> {
  const handle = await open(file, 'r')
  try {
    const buffer = Buffer.alloc(256)
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
    const head = buffer.toString('utf8', 0, bytesRead)
    if (!head.startsWith('#!')) return undefined
    const [path, ...rest] = head.slice(2).split('\n')[0]!.trim().split(/\s+/)
    if (path === undefined || path === '') return undefined
    return { path, arg: rest.find(arg => !arg.startsWith('-')) }
  } finally {
    await handle.close()
  }
}

async function which (name: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir === '' || !isAbsolute(dir)) continue
    const candidate = join(dir, name)
    const info = await stat(candidate).catch(() => undefined)
    if (info?.isFile() === true && (info.mode & 0o111) !== 0) return candidate
  }
  return undefined
}

async function exists (path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false)
}

/**
 * A run's inputs folder: files the CLI must read (system prompts too long for argv, MCP
 * configurations...). The agent sees it read-only; whoever adds a file gets the path to put in
 * the CLI's argv, the one the CLI will see.
 */
export class RunInputs {
  readonly #host: string
  readonly #inside: string
  readonly #names = new Set<string>()

  constructor (host: string, inside: string) {
    this.#host = host
    this.#inside = inside
  }

  /** Writes `content` as a file named `name`; returns its path as the CLI sees it. */
  async write (name: string, content: string | Uint8Array): Promise<string> {
    const file = this.#claim(name)
    await writeFile(join(this.#host, file), content, { mode: 0o600, flag: 'wx' })
    return join(this.#inside, file)
  }

  /** Copies a host file in (it may change or go while the run reads it); returns its path as the CLI sees it. */
  async copy (source: string, name = basename(source)): Promise<string> {
    const file = this.#claim(name)
    await copyFile(source, join(this.#host, file))
    return join(this.#inside, file)
  }

  #claim (name: string): string {
    const safe = name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_') || 'input'
    let file = safe
    for (let i = 2; this.#names.has(file); i++) file = `${i}-${safe}`
    this.#names.add(file)
    return file
  }
}
