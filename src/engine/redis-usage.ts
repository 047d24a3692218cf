import type { Redis } from 'ioredis'
import { daysBetween, emptyDay, oldestKept } from './memory-usage.ts'
import { unavailable } from './redis-connection.ts'
import type { TerminalStatus, UsageDay, UsageLedger } from './types.ts'

const STATUSES: readonly TerminalStatus[] = ['completed', 'failed', 'timed_out', 'cancelled']
const FIELDS = ['total_cost_usd', 'input_tokens', 'output_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens', 'agent_seconds'] as const

/**
 * Usage per tenant and UTC day in hashes the end of each run adds to (see the finish script); kept
 * 90 days. A hash expires a day after that (Redis' clock, from its last write): the days past 90
 * by the engine's clock read as empty, as they do on the memory engine.
 */
export class RedisUsageLedger implements UsageLedger {
  readonly #redis: Redis
  readonly #prefix: string
  readonly #now: () => number

  constructor (redis: Redis, prefix: string, now: () => number) {
    this.#redis = redis
    this.#prefix = prefix
    this.#now = now
  }

  async days (tenants: readonly string[] | undefined, from: string, to: string): Promise<Array<{ tenant: string, days: UsageDay[] }>> {
    try {
      const names = tenants ?? (await this.#redis.smembers(`${this.#prefix}:tenants`)).sort()
      const oldest = oldestKept(this.#now())
      const dates = daysBetween(from, to)
      const pipeline = this.#redis.pipeline()
      for (const tenant of names) for (const date of dates) pipeline.hgetall(`${this.#prefix}:usage:${tenant}:${date}`)
      const replies = (await pipeline.exec()) ?? []
      let i = 0
      return names.map(tenant => ({
        tenant,
        days: dates.map(date => {
          const [error, hash] = replies[i++] ?? [null, {}]
          if (error) throw error
          return date < oldest ? emptyDay(date) : toDay(date, hash as Record<string, string>)
        }),
      }))
    } catch (error) {
      throw unavailable(error)
    }
  }
}

function toDay (date: string, hash: Record<string, string>): UsageDay {
  const day = emptyDay(date)
  for (const status of STATUSES) day.runs[status] = Number(hash[status] ?? 0)
  for (const field of FIELDS) day[field] = Number(hash[field] ?? 0)
  return day
}
