import { AppError } from '../errors.ts'

/**
 * What a token may do. `admin` includes `jobs`: it works on every tenant's jobs, lists them by
 * tenant and reads everyone's usage.
 */
export const SCOPES = ['jobs', 'chat', 'metrics', 'admin'] as const
export type Scope = (typeof SCOPES)[number]

/** Scopes of a tenant whose entry lists none. */
export const DEFAULT_SCOPES: readonly Scope[] = ['jobs', 'chat']

const NEEDED_FOR: Record<Scope, string> = {
  jobs: 'submitting, reading, following and cancelling jobs',
  chat: 'the /v1 API',
  metrics: '/metrics',
  admin: 'other tenants\' jobs, GET /jobs?tenant= and everyone\'s usage',
}

/** A valid token used outside its scopes: 403 `forbidden`, `scope` naming the one that would do. */
export function forbidden (needed: readonly [Scope, ...Scope[]]): AppError {
  const [first] = needed
  const message = needed.length === 1
    ? `this token lacks the ${first} scope, needed for ${NEEDED_FOR[first]}`
    : `this token has none of the scopes ${needed.join(', ')}; one of them is needed here`
  return new AppError('forbidden', message, { details: { scope: first } })
}
