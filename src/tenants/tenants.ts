import { createHash, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Logger } from 'pino'
import { ConfigError } from '../config.ts'
import type { Caller } from '../jobs/job-service.ts'
import { SCOPES, type Scope } from './scopes.ts'
import { DEFAULT_TENANT, parseTenantFile, type TenantSpec } from './tenant-file.ts'

/** Who holds a token: the caller its requests act as, and what it may do. */
export interface TokenHolder {
  caller: Caller
  scopes: ReadonlySet<Scope>
}

interface Table {
  /** Tokens by their SHA-256: every lookup compares against all of them, in constant time. */
  entries: ReadonlyArray<{ digest: Buffer, holder: TokenHolder }>
  /** The tenants configured (AUTH_TOKENS' `default` among them when set). */
  names: readonly string[]
}

export interface TenantsOptions {
  /** TENANTS_FILE, re-read by `reload`. */
  file: string | undefined
  /** AUTH_TOKENS: the tenant `default`, with every scope. */
  authTokens: readonly string[]
  /** METRICS_TOKEN: opens /metrics, nothing else. */
  metricsToken: string | undefined
  logger: Logger
}

export type ReloadOutcome = { reloaded: true, tenants: readonly string[] } | { reloaded: false, reason: string }

/**
 * The tokens the service accepts and who holds each. The table is immutable and replaced whole by
 * `reload` (SIGHUP), so a request sees the old table or the new one, never a mixture; a file that
 * no longer parses leaves the table in force.
 */
export class Tenants {
  readonly #options: TenantsOptions
  #table: Table
  #reloading: Promise<unknown> = Promise.resolve()

  private constructor (options: TenantsOptions, table: Table) {
    this.#options = options
    this.#table = table
  }

  /** Reads TENANTS_FILE (when set); throws a ConfigError naming the bad entry. */
  static async load (options: TenantsOptions): Promise<Tenants> {
    try {
      return new Tenants(options, await readTable(options))
    } catch (error) {
      throw new ConfigError((error as Error).message)
    }
  }

  /** The holder of `token`, or undefined. The time taken does not depend on which token matched, or how much of one. */
  authenticate (token: string): TokenHolder | undefined {
    const digest = createHash('sha256').update(token).digest()
    let found: TokenHolder | undefined
    for (const entry of this.#table.entries) {
      if (timingSafeEqual(entry.digest, digest)) found = entry.holder
    }
    return found
  }

  get names (): readonly string[] {
    return this.#table.names
  }

  /** Re-reads TENANTS_FILE and swaps the table in; on any problem keeps the one in force. Reloads run one at a time, in order. */
  reload (): Promise<ReloadOutcome> {
    const next = this.#reloading.then(() => this.#reload())
    this.#reloading = next
    return next
  }

  async #reload (): Promise<ReloadOutcome> {
    const { file, logger } = this.#options
    if (file === undefined) {
      logger.info('SIGHUP: TENANTS_FILE is not set; nothing to reload')
      return { reloaded: false, reason: 'TENANTS_FILE is not set' }
    }
    try {
      this.#table = await readTable(this.#options)
    } catch (error) {
      const reason = (error as Error).message
      logger.error({ reason }, `TENANTS_FILE not reloaded, the tenants in force stay: ${reason}`)
      return { reloaded: false, reason }
    }
    logger.info({ tenants: this.#table.names, tokens: this.#table.entries.length }, 'TENANTS_FILE reloaded')
    return { reloaded: true, tenants: this.#table.names }
  }
}

async function readTable ({ file, authTokens, metricsToken }: TenantsOptions): Promise<Table> {
  // `where` prefixes a problem with its entry; `owner` names it to the entry that repeats a token.
  const specs: Array<{ spec: TenantSpec, where: string, owner: string }> = []
  if (authTokens.length > 0) {
    specs.push({ where: 'AUTH_TOKENS', owner: 'AUTH_TOKENS', spec: { name: DEFAULT_TENANT, tokens: [...new Set(authTokens)], scopes: [...SCOPES], limits: {} } })
  }
  if (file !== undefined) {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      throw new Error(`TENANTS_FILE ${file} cannot be read: ${(error as Error).message}`)
    }
    let parsed: TenantSpec[]
    try {
      parsed = parseTenantFile(text)
    } catch (error) {
      const problem = (error as Error).message
      throw new Error(`TENANTS_FILE ${file}${problem.startsWith('tenants[') ? ': ' : ' '}${problem}`)
    }
    parsed.forEach((spec, index) => {
      const owner = `tenants[${index}] (${JSON.stringify(spec.name)})`
      specs.push({ spec, owner, where: `TENANTS_FILE ${file}: ${owner}` })
    })
  }
  if (metricsToken !== undefined) {
    specs.push({ where: 'METRICS_TOKEN', owner: 'METRICS_TOKEN', spec: { name: DEFAULT_TENANT, tokens: [metricsToken], scopes: ['metrics'], limits: {} } })
  }

  const owners = new Map<string, string>()
  const entries: Array<{ digest: Buffer, holder: TokenHolder }> = []
  for (const { spec, where, owner } of specs) {
    const scopes = new Set<Scope>(spec.scopes)
    if (scopes.has('admin')) scopes.add('jobs')
    const holder: TokenHolder = Object.freeze({
      caller: Object.freeze({ tenant: spec.name, limits: Object.freeze({ ...spec.limits }), admin: scopes.has('admin') }),
      scopes,
    })
    spec.tokens.forEach((token, index) => {
      const first = owners.get(token)
      if (first !== undefined) throw new Error(`${where}: ${owner === 'METRICS_TOKEN' ? 'it' : `tokens[${index}]`} is also a token of ${first}; every token must belong to one tenant`)
      owners.set(token, owner)
      entries.push({ digest: createHash('sha256').update(token).digest(), holder })
    })
  }
  const names = [...new Set(specs.filter(({ owner }) => owner !== 'METRICS_TOKEN').map(({ spec }) => spec.name))].sort()
  if (names.length === 0) throw new Error(`TENANTS_FILE ${file} has no tenants and AUTH_TOKENS is not set: no token would open the API`)
  return { entries, names }
}
