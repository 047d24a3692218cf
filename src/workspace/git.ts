import { simpleGit, type SimpleGitOptions } from 'simple-git'
import { redactCredentials } from '../redact.ts'

/**
 * The one place that runs git (through simple-git). Every argument here is built by the service:
 * refs from requests are validated (refs.ts) and passed fully qualified or as commit ids, never as
 * something git could read as an option.
 */
export interface GitOptions {
  /** Kills the git process when it aborts. */
  signal?: AbortSignal | undefined
  /** Extra environment for this command, on top of the service's own. */
  env?: Record<string, string> | undefined
  /**
   * Options simple-git would otherwise refuse (it guards against untrusted input): the git-crypt
   * filter and textconv drivers, the clone template, fsmonitor and hooks switched off; set only
   * to fixed values of our own.
   */
  trustedConfig?: boolean | undefined
  /** `-c` settings for this command. */
  config?: readonly string[] | undefined
}

/** A git command that failed; its message has no credentials in it (see redact.ts). */
export class GitCommandError extends Error {
  override name = 'GitCommandError'
}

/** Variables simple-git would strip from the environment unless told they are wanted. */
const isGitVariable = (name: string): boolean => name.toUpperCase().startsWith('GIT_')

/** Editors, pagers and askpass programs: a service never wants git to start one. */
const INTERACTIVE = new Set(['EDITOR', 'VISUAL', 'PAGER', 'GIT_PAGER', 'GIT_EDITOR', 'GIT_SEQUENCE_EDITOR', 'SSH_ASKPASS', 'GIT_ASKPASS', 'PREFIX'])

/**
 * The operator's own git settings that simple-git guards (it cannot tell them from injected ones):
 * how to reach remotes (ssh command, proxy) and config from the environment. They come from the
 * service's environment, never from a request, so they are allowed when present.
 */
const OPERATOR_SETTINGS: Record<string, string> = {
  GIT_SSH: 'allowUnsafeSshCommand',
  GIT_SSH_COMMAND: 'allowUnsafeSshCommand',
  GIT_PROXY_COMMAND: 'allowUnsafeGitProxy',
  GIT_CONFIG_GLOBAL: 'allowUnsafeConfigPaths',
  GIT_CONFIG_SYSTEM: 'allowUnsafeConfigPaths',
  GIT_CONFIG: 'allowUnsafeConfigPaths',
  GIT_CONFIG_COUNT: 'allowUnsafeConfigEnvCount',
  GIT_CONFIG_PARAMETERS: 'allowUnsafeConfigEnvCount',
  GIT_EXEC_PATH: 'allowUnsafeExec',
  GIT_TEMPLATE_DIR: 'allowUnsafeTemplateDir',
  GIT_EXTERNAL_DIFF: 'allowUnsafeDiffExternal',
}

export async function git (cwd: string, args: readonly string[], options: GitOptions = {}): Promise<string> {
  // Never wait on a credential prompt: a service has nobody to answer it.
  const base = stringEnv(process.env)
  for (const name of Object.keys(base)) if (INTERACTIVE.has(name.toUpperCase())) delete base[name]
  const env: Record<string, string> = { ...base, GIT_TERMINAL_PROMPT: '0', ...options.env }
  const operatorSettings = Object.fromEntries(Object.keys(env)
    .map(name => OPERATOR_SETTINGS[name.toUpperCase()])
    .filter(category => category !== undefined)
    .map(category => [category, true]))
  const config: Partial<SimpleGitOptions> = {
    baseDir: cwd,
    maxConcurrentProcesses: 1,
    trimmed: false,
    allowEnvironment: Object.keys(env).filter(isGitVariable),
    ...(options.signal ? { abort: options.signal } : {}),
    ...(options.config ? { config: [...options.config] } : {}),
    unsafe: {
      ...operatorSettings,
      ...(options.trustedConfig ? { allowUnsafeFilter: true, allowUnsafeDiffTextConv: true, allowUnsafeTemplateDir: true, allowUnsafeFsMonitor: true, allowUnsafeHooksPath: true } : {}),
    },
  }
  try {
    return await simpleGit(config).env(env).outputHandler(markOutputRead).raw([...args])
  } catch (error) {
    const command = args.find((arg, i) => !arg.startsWith('-') && args[i - 1] !== '-c') ?? ''
    // No `cause`: the original error's message holds git's raw output, credentials and all.
    throw new GitCommandError(redactCredentials(`git ${command}: ${cleanMessage(error)}`))
  }
}

/**
 * simple-git waits 50 ms more after a git process that printed nothing (read-tree, add, an empty
 * log or diff, a quiet clone), whatever its `completion` option says: its completion plugin takes
 * a chunk of output as the only proof that the output is all in. When git's stdout ends, it is: an
 * empty chunk then tells the plugin so, and adds nothing to the output. Collecting a workspace
 * runs five such commands: 250 ms of its ~320 went to these waits.
 */
function markOutputRead (_command: string, stdout: NodeJS.ReadableStream): void {
  stdout.once('end', () => stdout.emit('data', Buffer.alloc(0)))
}

function stringEnv (source: NodeJS.ProcessEnv): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(source)) if (value !== undefined) env[name] = value
  return env
}

function cleanMessage (error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  const lines = message.split('\n').map(line => line.trim()).filter(line => line !== '')
  return lines.slice(0, 6).join(' | ') || 'failed'
}
