import type { TerminalStatus, UsageDay, UsageDelta, UsageLedger } from './types.ts'

export const USAGE_KEEP_DAYS = 90
const DAY_MS = 86_400_000

export const utcDate = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

export function emptyDay (date: string): UsageDay {
  return {
    date,
    runs: { completed: 0, failed: 0, timed_out: 0, cancelled: 0 } satisfies Record<TerminalStatus, number>,
    total_cost_usd: 0,
    input_tokens: 0,
    output_tokens: 0,
    cache_read_input_tokens: 0,
    cache_creation_input_tokens: 0,
    agent_seconds: 0,
  }
}

/** The UTC days from `from` to `to`, inclusive (both YYYY-MM-DD). */
export function daysBetween (from: string, to: string): string[] {
  const days: string[] = []
  for (let ms = Date.parse(`${from}T00:00:00Z`); ms <= Date.parse(`${to}T00:00:00Z`); ms += DAY_MS) days.push(utcDate(ms))
  return days
}

/** The oldest UTC day still kept at `now`: usage is kept USAGE_KEEP_DAYS days, by either engine. */
export const oldestKept = (now: number): string => utcDate(now - USAGE_KEEP_DAYS * DAY_MS)

/**
 * Usage per tenant and UTC day, in memory; days older than 90 go. They are dropped on every read
 * and whenever a day begins for any tenant, so a tenant that stops running anything reads the same
 * as on the Redis engine (where each day's hash expires) and its old days do not stay for ever.
 */
export class MemoryUsageLedger implements UsageLedger {
  readonly #days = new Map<string, Map<string, UsageDay>>()
  readonly #now: () => number

  constructor (now: () => number) {
    this.#now = now
  }

  add (tenant: string, at: number, delta: UsageDelta): void {
    const date = utcDate(at)
    let days = this.#days.get(tenant)
    if (days === undefined) this.#days.set(tenant, days = new Map())
    let day = days.get(date)
    if (day === undefined) {
      days.set(date, day = emptyDay(date))
      this.#prune(at)
    }
    day.runs[delta.status]++
    day.total_cost_usd += delta.total_cost_usd
    day.input_tokens += delta.input_tokens
    day.output_tokens += delta.output_tokens
    day.cache_read_input_tokens += delta.cache_read_input_tokens
    day.cache_creation_input_tokens += delta.cache_creation_input_tokens
    day.agent_seconds += delta.agent_seconds
  }

  /** What the tenant's runs cost since 00:00 UTC. */
  costOn (tenant: string, at: number): number {
    return this.#days.get(tenant)?.get(utcDate(at))?.total_cost_usd ?? 0
  }

  async days (tenants: readonly string[] | undefined, from: string, to: string): Promise<Array<{ tenant: string, days: UsageDay[] }>> {
    this.#prune(this.#now())
    const dates = daysBetween(from, to)
    const names = tenants ?? [...this.#days.keys()].sort()
    return names.map(tenant => ({
      tenant,
      days: dates.map(date => structuredClone(this.#days.get(tenant)?.get(date) ?? emptyDay(date))),
    }))
  }

  /** A tenant stays listed with no days left, as in the Redis engine's set of tenants. */
  #prune (now: number): void {
    const oldest = oldestKept(now)
    for (const days of this.#days.values()) for (const key of days.keys()) if (key < oldest) days.delete(key)
  }
}
