import type { TenantLimits } from '../engine/types.ts'
import { TENANT_PATTERN } from '../schemas/common.ts'
import { DEFAULT_SCOPES, SCOPES, type Scope } from './scopes.ts'

/** The tenant of AUTH_TOKENS (every scope), and of METRICS_TOKEN (metrics only). */
export const DEFAULT_TENANT = 'default'

export const TENANT_NAME = new RegExp(TENANT_PATTERN)

export interface TenantSpec {
  name: string
  tokens: string[]
  scopes: Scope[]
  limits: TenantLimits
}

/** The AUTH_TOKENS rules, for every token of the service. Never quotes the token: it is a secret. */
export function tokenProblem (token: unknown): string | undefined {
  if (typeof token !== 'string') return 'must be a string'
  if (token.length < 16) return 'must be at least 16 characters'
  if (!/^[\x21-\x7e]+$/.test(token)) return 'must be printable ASCII without spaces'
  return undefined
}

const FIELDS = new Set(['name', 'tokens', 'scopes', 'max_running', 'max_queued', 'budget_usd_per_day'])

/**
 * Parses TENANTS_FILE (`{"tenants": [{"name", "tokens", "scopes"?, "max_running"?, "max_queued"?,
 * "budget_usd_per_day"?}]}`). Throws an Error whose message names the bad entry and field, so the
 * operator can find it; never one that quotes a token.
 */
export function parseTenantFile (text: string): TenantSpec[] {
  let document: unknown
  try {
    document = JSON.parse(text)
  } catch (error) {
    throw new Error(`is not JSON: ${(error as Error).message}`)
  }
  if (!isObject(document) || !Array.isArray(document.tenants)) throw new Error('must be an object {"tenants": [...]}')
  const extra = Object.keys(document).filter(key => key !== 'tenants')
  if (extra.length > 0) throw new Error(`has an unknown field ${JSON.stringify(extra[0])} (only "tenants")`)
  const names = new Set<string>()
  return document.tenants.map((entry: unknown, index: number): TenantSpec => {
    const at = (problem: string): Error => new Error(`tenants[${index}]${isObject(entry) && typeof entry.name === 'string' ? ` (${JSON.stringify(entry.name.slice(0, 64))})` : ''}: ${problem}`)
    if (!isObject(entry)) throw at('must be an object with "name" and "tokens"')
    const unknown = Object.keys(entry).find(key => !FIELDS.has(key))
    if (unknown !== undefined) throw at(`${JSON.stringify(unknown)} is not a known field (${[...FIELDS].join(', ')})`)
    const { name, tokens, scopes } = entry
    if (typeof name !== 'string' || !TENANT_NAME.test(name)) throw at(`name must match ${TENANT_PATTERN}: 1-63 lower-case letters, digits, "_" or "-"`)
    if (name === DEFAULT_TENANT) throw at(`the name "${DEFAULT_TENANT}" is the tenant of AUTH_TOKENS; choose another`)
    if (names.has(name)) throw at('the name is used by an earlier entry')
    names.add(name)
    if (!Array.isArray(tokens) || tokens.length === 0) throw at('tokens must be a non-empty array of tokens')
    tokens.forEach((token: unknown, i: number) => {
      const problem = tokenProblem(token)
      if (problem !== undefined) throw at(`tokens[${i}] ${problem}`)
    })
    let granted: Scope[] = [...DEFAULT_SCOPES]
    if (scopes !== undefined) {
      if (!Array.isArray(scopes) || scopes.length === 0) throw at(`scopes must be a non-empty array of ${SCOPES.join(', ')}`)
      const bad = scopes.find((scope: unknown) => !SCOPES.includes(scope as Scope))
      if (bad !== undefined) throw at(`scopes: ${JSON.stringify(bad)} is not one of ${SCOPES.join(', ')}`)
      granted = [...new Set(scopes as Scope[])]
    }
    return {
      name,
      tokens: [...new Set(tokens as string[])],
      scopes: granted,
      limits: {
        maxRunning: limit(entry.max_running, 'max_running', 'an integer >= 1', value => Number.isSafeInteger(value) && value >= 1, at),
        maxQueued: limit(entry.max_queued, 'max_queued', 'an integer >= 1', value => Number.isSafeInteger(value) && value >= 1, at),
        budgetUsdPerDay: limit(entry.budget_usd_per_day, 'budget_usd_per_day', 'a number of dollars > 0', value => Number.isFinite(value) && value > 0, at),
      },
    }
  })
}

function limit (value: unknown, field: string, expected: string, valid: (value: number) => boolean, at: (problem: string) => Error): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !valid(value)) throw at(`${field} must be ${expected}, got ${JSON.stringify(value)}`)
  return value
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)
