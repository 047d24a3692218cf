import { randomBytes } from 'node:crypto'
import { hostname, tmpdir } from 'node:os'
import { isAbsolute, join, resolve } from 'node:path'
import { tokenProblem } from './tenants/tenant-file.ts'

/**
 * Every setting the service reads from its environment, in one table: the variable, its default,
 * how it is parsed and checked. `Config` is derived from this table, so the two cannot drift, and
 * the README's configuration table is checked against it by a test.
 */
type Parser<T> = (raw: string, name: string) => T

interface Setting<T> {
  env: string
  default: T | (() => T)
  parse: Parser<T>
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const fail = (name: string, expected: string, raw: string): never => {
  throw new ConfigError(`${name} must be ${expected}, got ${JSON.stringify(raw)}`)
}

const string = (): Parser<string> => (raw, name) => raw.trim() === '' ? fail(name, 'a non-empty string', raw) : raw.trim()

const optionalString = (): Parser<string | undefined> => raw => raw.trim() === '' ? undefined : raw.trim()

const integer = (min: number, max = Number.MAX_SAFE_INTEGER): Parser<number> => (raw, name) => {
  const value = Number(raw.trim())
  if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
    return fail(name, `an integer from ${min} to ${max}`, raw)
  }
  return value
}

const seconds = (min: number, max: number): Parser<number> => (raw, name) => {
  const value = Number(raw.trim())
  if (raw.trim() === '' || !Number.isFinite(value) || value < min || value > max) {
    return fail(name, `a number of seconds from ${min} to ${max}`, raw)
  }
  return value
}

const boolean = (): Parser<boolean> => (raw, name) => {
  const value = raw.trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(value)) return true
  if (['0', 'false', 'no', 'off', ''].includes(value)) return false
  return fail(name, 'a boolean (true/false, 1/0, yes/no)', raw)
}

const list = (check?: (item: string, name: string) => void): Parser<string[]> => (raw, name) => {
  const items = raw.split(',').map(item => item.trim()).filter(item => item !== '')
  for (const item of items) check?.(item, name)
  return items
}

const oneOf = <T extends string>(values: readonly T[]): Parser<T> => (raw, name) => {
  const value = raw.trim() as T
  return values.includes(value) ? value : fail(name, `one of ${values.join(', ')}`, raw)
}

const path = (): Parser<string> => (raw, name) => {
  const value = string()(raw, name)
  return isAbsolute(value) ? value : resolve(value)
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
// The choices of `claude --permission-mode` (2.1.332).
const PERMISSION_MODES = ['acceptEdits', 'auto', 'bypassPermissions', 'manual', 'dontAsk', 'plan'] as const
const SYSTEM_PROMPT_MODES = ['append', 'replace'] as const
const SANDBOX_MODES = ['bwrap', 'off'] as const
const MiB = 1024 * 1024

const settings = {
  host: { env: 'HOST', default: '127.0.0.1', parse: string() },
  port: { env: 'PORT', default: 8080, parse: integer(0, 65535) },
  authTokens: {
    env: 'AUTH_TOKENS',
    default: (): string[] => [],
    parse: list((token, name) => {
      const problem = tokenProblem(token)
      if (problem !== undefined) throw new ConfigError(`${name}: every token ${problem}`)
    }),
  },
  // Tenants: their tokens, scopes and limits; checked at start-up, re-read on SIGHUP (src/tenants/).
  tenantsFile: { env: 'TENANTS_FILE', default: undefined as string | undefined, parse: (raw: string, name: string) => raw.trim() === '' ? undefined : path()(raw, name) },
  maxConcurrency: { env: 'MAX_CONCURRENCY', default: 10, parse: integer(1, 1000) },
  // Runs admitted and not finished (running + waiting): 100 waiting behind the default 10 running.
  maxQueueDepth: { env: 'MAX_QUEUE_DEPTH', default: 110, parse: integer(1, 1_000_000) },
  jobTimeoutSeconds: { env: 'JOB_TIMEOUT_SECONDS', default: 1800, parse: seconds(1, 7 * 24 * 3600) },
  jobTtlSeconds: { env: 'JOB_TTL_SECONDS', default: 3600, parse: seconds(0, 30 * 24 * 3600) },
  maxFinishedJobs: { env: 'MAX_FINISHED_JOBS', default: 1000, parse: integer(1, 10_000_000) },
  maxRetainedBytes: { env: 'MAX_RETAINED_BYTES', default: 256 * MiB, parse: integer(MiB, 64 * 1024 * MiB) },
  // What a finished job keeps to be continued (continue_from): its transcript and its tree's bundle.
  maxResumeBytes: { env: 'MAX_RESUME_BYTES', default: 16 * MiB, parse: integer(0, 1024 * MiB) },
  claudeBin: { env: 'CLAUDE_BIN', default: 'claude', parse: string() },
  // Two: one for the default job, one for the most recent other argument set (e.g. the chat
  // completions'); each costs ~150 MB while it waits (and, with BASE_REPO, a checkout on disk).
  warmAgents: { env: 'WARM_AGENTS', default: 2, parse: integer(0, 100) },
  warmAgentMaxIdleSeconds: { env: 'WARM_AGENT_MAX_IDLE_SECONDS', default: 600, parse: seconds(1, 7 * 24 * 3600) },
  sandbox: { env: 'SANDBOX', default: 'bwrap' as (typeof SANDBOX_MODES)[number], parse: oneOf(SANDBOX_MODES) },
  sandboxReadOnly: {
    env: 'SANDBOX_READ_ONLY',
    default: (): string[] => [],
    parse: list((item, name) => {
      if (!isAbsolute(item)) throw new ConfigError(`${name}: ${JSON.stringify(item)} is not an absolute path`)
    }),
  },
  workspaceRoot: { env: 'WORKSPACE_ROOT', default: () => join(tmpdir(), 'claude-runner'), parse: path() },
  maxOutputBytes: { env: 'MAX_OUTPUT_BYTES', default: 8 * MiB, parse: integer(64 * 1024, 1024 * MiB) },
  killGraceSeconds: { env: 'KILL_GRACE_SECONDS', default: 10, parse: seconds(0, 600) },
  logLevel: { env: 'LOG_LEVEL', default: 'info' as (typeof LOG_LEVELS)[number], parse: oneOf(LOG_LEVELS) },
  agentPermissionMode: {
    env: 'AGENT_PERMISSION_MODE',
    default: undefined as (typeof PERMISSION_MODES)[number] | undefined,
    parse: (raw: string, name: string) => raw.trim() === '' ? undefined : oneOf(PERMISSION_MODES)(raw, name),
  },
  claudeConfigTemplate: { env: 'CLAUDE_CONFIG_TEMPLATE', default: undefined as string | undefined, parse: (raw: string, name: string) => raw.trim() === '' ? undefined : path()(raw, name) },
  mcpConfigDir: { env: 'MCP_CONFIG_DIR', default: undefined as string | undefined, parse: (raw: string, name: string) => raw.trim() === '' ? undefined : path()(raw, name) },
  agentEnvPassthrough: {
    env: 'AGENT_ENV_PASSTHROUGH',
    default: (): string[] => [],
    parse: list((item, name) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(item)) throw new ConfigError(`${name}: ${JSON.stringify(item)} is not an environment variable name`)
    }),
  },
  systemPromptMode: { env: 'OPENAI_SYSTEM_PROMPT_MODE', default: 'append' as (typeof SYSTEM_PROMPT_MODES)[number], parse: oneOf(SYSTEM_PROMPT_MODES) },
  openaiModels: { env: 'OPENAI_MODELS', default: (): string[] => ['haiku', 'sonnet', 'opus'], parse: list() },
  sseKeepAliveSeconds: { env: 'SSE_KEEPALIVE_SECONDS', default: 15, parse: seconds(0.05, 600) },
  sseWriteTimeoutSeconds: { env: 'SSE_WRITE_TIMEOUT_SECONDS', default: 30, parse: seconds(0.05, 3600) },
  requestTimeoutSeconds: { env: 'REQUEST_TIMEOUT_SECONDS', default: 30, parse: seconds(0.05, 3600) },
  baseRepo: { env: 'BASE_REPO', default: undefined as string | undefined, parse: optionalString() },
  baseRef: { env: 'BASE_REF', default: undefined as string | undefined, parse: optionalString() },
  baseRefreshSeconds: { env: 'BASE_REFRESH_SECONDS', default: 300, parse: seconds(0, 7 * 24 * 3600) },
  gitCryptKey: { env: 'GIT_CRYPT_KEY', default: undefined as string | undefined, parse: optionalString() },
  allowPush: { env: 'ALLOW_PUSH', default: false, parse: boolean() },
  maxDiffBytes: { env: 'MAX_DIFF_BYTES', default: MiB, parse: integer(1024, 256 * MiB) },
  // Below this much free space under WORKSPACE_ROOT, /health says `degraded`.
  workspaceMinFreeBytes: { env: 'WORKSPACE_MIN_FREE_BYTES', default: 1024 * MiB, parse: integer(0, 1024 * 1024 * MiB) },
  shutdownGraceSeconds: { env: 'SHUTDOWN_GRACE_SECONDS', default: 30, parse: seconds(0, 3600) },
  metricsToken: {
    env: 'METRICS_TOKEN',
    default: undefined as string | undefined,
    parse: (raw: string, name: string) => {
      const token = optionalString()(raw, name)
      const problem = token === undefined ? undefined : tokenProblem(token)
      if (problem !== undefined) throw new ConfigError(`${name} ${problem}`)
      return token
    },
  },
  webhookSecret: { env: 'WEBHOOK_SECRET', default: undefined as string | undefined, parse: optionalString() },
  webhookAllowedHosts: {
    env: 'WEBHOOK_ALLOWED_HOSTS',
    default: (): string[] => [],
    parse: list((host, name) => {
      if (!/^[a-z0-9.-]+(:\d{1,5})?$/i.test(host) && !/^\[[0-9a-f:]+\](:\d{1,5})?$/i.test(host)) {
        throw new ConfigError(`${name}: ${JSON.stringify(host)} is not a host name (or host:port)`)
      }
    }),
  },
  webhookMaxAttempts: { env: 'WEBHOOK_MAX_ATTEMPTS', default: 5, parse: integer(1, 20) },
  webhookTimeoutSeconds: { env: 'WEBHOOK_TIMEOUT_SECONDS', default: 10, parse: seconds(0.1, 300) },
  webhookBackoffSeconds: { env: 'WEBHOOK_BACKOFF_SECONDS', default: 2, parse: seconds(0, 600) },
  redisUrl: {
    env: 'REDIS_URL',
    default: undefined as string | undefined,
    parse: (raw: string, name: string) => {
      const value = optionalString()(raw, name)
      if (value !== undefined && !/^(rediss?:\/\/[^\s]+|unix:\/\/\/[^\s]+)$/.test(value)) {
        return fail(name, 'a redis://, rediss:// or unix:///path/to/redis.sock URL', raw)
      }
      return value
    },
  },
  redisPrefix: {
    env: 'REDIS_PREFIX',
    default: 'claude-runner',
    parse: (raw: string, name: string) => /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/.test(raw.trim()) ? raw.trim() : fail(name, 'a key prefix of letters, digits, "_", ".", ":" or "-" (at most 64)', raw),
  },
  instanceId: {
    env: 'INSTANCE_ID',
    default: () => `${hostname().replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 48)}-${randomBytes(3).toString('hex')}`,
    parse: (raw: string, name: string) => /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(raw.trim()) ? raw.trim() : fail(name, 'a name of letters, digits, "_", "." or "-" (at most 64)', raw),
  },
  replicaTimeoutSeconds: { env: 'REPLICA_TIMEOUT_SECONDS', default: 30, parse: seconds(1, 600) },
} satisfies Record<string, Setting<unknown>>

type Settings = typeof settings
export type Config = { [K in keyof Settings]: ReturnType<Settings[K]['parse']> } & {
  /** True when neither AUTH_TOKENS nor TENANTS_FILE was set and the service made a token of its own. */
  authTokensGenerated: boolean
}

/** The environment variables the service reads, for docs and tests. */
export const CONFIG_VARIABLES: readonly string[] = Object.values(settings).map(setting => setting.env)

const defaultOf = <T>(setting: Setting<T>): T =>
  typeof setting.default === 'function' ? (setting.default as () => T)() : setting.default

/**
 * Reads the configuration from `env`. Throws a `ConfigError` naming the variable when a value is
 * invalid, so the service never starts on a half-understood configuration.
 */
export function loadConfig (env: NodeJS.ProcessEnv = process.env): Config {
  const config: Record<string, unknown> = {}
  for (const [key, setting] of Object.entries(settings) as Array<[string, Setting<unknown>]>) {
    const raw = env[setting.env]
    config[key] = raw === undefined ? defaultOf(setting) : setting.parse(raw, setting.env)
  }
  return finalise(config as Omit<Config, 'authTokensGenerated'>)
}

/** The defaults with `overrides` on top: what tests and embedders start from. */
export function defaultConfig (overrides: Partial<Config> = {}): Config {
  const config: Record<string, unknown> = {}
  for (const [key, setting] of Object.entries(settings) as Array<[string, Setting<unknown>]>) {
    config[key] = defaultOf(setting)
  }
  return finalise({ ...config, ...overrides } as Omit<Config, 'authTokensGenerated'>)
}

function finalise (config: Omit<Config, 'authTokensGenerated'>): Config {
  if (config.webhookAllowedHosts.length > 0 && config.webhookSecret === undefined) {
    throw new ConfigError('WEBHOOK_ALLOWED_HOSTS needs WEBHOOK_SECRET: callbacks are always signed')
  }
  if (config.authTokens.length > 0 || config.tenantsFile !== undefined) return { ...config, authTokensGenerated: false }
  // Never run open: with no token configured, make one and let the server log it once.
  return { ...config, authTokens: [randomBytes(24).toString('base64url')], authTokensGenerated: true }
}
