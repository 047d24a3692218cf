import type { UsageDay, UsageLedger } from '../engine/types.ts'
import { AppError } from '../errors.ts'
import type { Caller } from '../jobs/job-service.ts'

/** As long as usage is kept (USAGE_KEEP_DAYS of the engines). */
export const MAX_USAGE_DAYS = 90
const DEFAULT_DAYS = 7
const DAY_MS = 86_400_000

const utcDate = (ms: number): string => new Date(ms).toISOString().slice(0, 10)

/** The UTC days asked for, inclusive: by default the last 7 (today among them); 400 when they make no sense. */
export function usageRange (query: { from?: string | undefined, to?: string | undefined }, now: number): { from: string, to: string } {
  const to = query.to === undefined ? utcDate(now) : day(query.to, 'to')
  const from = query.from === undefined ? utcDate(Date.parse(`${to}T00:00:00Z`) - (DEFAULT_DAYS - 1) * DAY_MS) : day(query.from, 'from')
  if (from > to) throw new AppError('validation_error', `querystring.from (${from}) is after querystring.to (${to})`, { details: { field: 'from' } })
  const days = (Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / DAY_MS + 1
  if (days > MAX_USAGE_DAYS) {
    throw new AppError('validation_error', `from ${from} to ${to} is ${days} days; ask for at most ${MAX_USAGE_DAYS} (usage is kept ${MAX_USAGE_DAYS} days)`, { details: { field: 'from' } })
  }
  return { from, to }
}

function day (value: string, field: 'from' | 'to'): string {
  const ms = Date.parse(`${value}T00:00:00Z`)
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(ms) || utcDate(ms) !== value) {
    throw new AppError('validation_error', `querystring.${field} must be a date YYYY-MM-DD (UTC), got ${JSON.stringify(value)}`, { details: { field } })
  }
  return value
}

/**
 * The caller's tenant's usage, day by day; for an admin every tenant's: those configured and
 * those that ran something in the ledger (a tenant since removed from TENANTS_FILE included).
 */
export async function usageReport (ledger: UsageLedger, caller: Caller, configured: readonly string[], range: { from: string, to: string }): Promise<Array<{ tenant: string, days: UsageDay[] }>> {
  if (!caller.admin) return ledger.days([caller.tenant], range.from, range.to)
  const seen = await ledger.days(undefined, range.from, range.to)
  const missing = configured.filter(name => !seen.some(entry => entry.tenant === name))
  const rest = missing.length === 0 ? [] : await ledger.days(missing, range.from, range.to)
  return [...seen, ...rest].sort((a, b) => a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0)
}
