import type { Redis } from 'ioredis'
import { isTerminal } from '../jobs/job.ts'
import { unavailable } from './redis-connection.ts'
import type { Scripts } from './redis-scripts.ts'
import type { CallbackRecord, JobStore, ListQuery, RunRecord, RunStatus } from './types.ts'

/** Most records a list request reads looking for matches of a status filter, before it hands a cursor back. */
const MAX_SCANNED = 2000

/**
 * Records in Redis. A record is written whole by whoever owns the run (see redis-scripts.ts); what
 * others add while it runs (a cancel request, callback attempts) lives beside it and is merged here.
 */
export class RedisJobStore implements JobStore {
  readonly #redis: Redis
  readonly #scripts: Scripts
  readonly #prefix: string
  readonly #now: () => number

  constructor (options: { redis: Redis, scripts: Scripts, prefix: string, now: () => number }) {
    this.#redis = options.redis
    this.#scripts = options.scripts
    this.#prefix = options.prefix
    this.#now = options.now
  }

  key (id: string, part?: 'meta' | 'ev' | 'out' | 'cb'): string {
    return part === undefined ? `${this.#prefix}:run:${id}` : `${this.#prefix}:run:${id}:${part}`
  }

  async get (id: string): Promise<RunRecord | undefined> {
    const [record] = await this.#read([id])
    return record
  }

  async output (id: string): Promise<string[]> {
    const text = await this.#redis.get(this.key(id, 'out')).catch(error => { throw unavailable(error) })
    return text === null || text === '' ? [] : text.split('\n')
  }

  async list (query: ListQuery): Promise<{ records: RunRecord[], next: number | undefined }> {
    const index = query.tenant === undefined ? `${this.#prefix}:list` : `${this.#prefix}:list:${query.tenant}`
    const records: RunRecord[] = []
    let before = query.before === undefined ? '+inf' : `(${query.before}`
    let scanned = 0
    const batch = Math.min(Math.max(query.limit * 2, 50), 500)
    try {
      while (records.length <= query.limit && scanned < MAX_SCANNED) {
        const page = await this.#redis.zrevrangebyscore(index, before, '-inf', 'WITHSCORES', 'LIMIT', 0, batch)
        if (page.length === 0) break
        const ids: string[] = []
        for (let i = 0; i < page.length; i += 2) ids.push(page[i]!)
        scanned += ids.length
        before = `(${page.at(-1)}`
        const found = await this.#read(ids)
        for (const record of found) {
          if (record === undefined) continue
          if (query.status !== undefined && record.status !== query.status) continue
          records.push(record)
          if (records.length > query.limit) break
        }
        if (ids.length < batch) break
      }
    } catch (error) {
      throw unavailable(error)
    }
    const more = records.length > query.limit
    if (more) records.pop()
    if (!more && scanned >= MAX_SCANNED && records.length < query.limit) {
      // A filter that matches little: hand back a cursor where the scan stopped.
      return { records, next: Number(before.slice(1)) }
    }
    return { records, next: more ? records.at(-1)!.seq : undefined }
  }

  async evictExpired (): Promise<number> {
    return Number(await this.#scripts.sweep(this.#now()))
  }

  async remove (id: string): Promise<'removed' | 'unfinished' | 'unknown'> {
    const reply = await this.#scripts.remove(id, this.#now()).catch(error => { throw unavailable(error) })
    return reply as 'removed' | 'unfinished' | 'unknown'
  }

  /** Records (undefined where gone) with what others wrote beside them merged in. */
  async #read (ids: readonly string[]): Promise<Array<RunRecord | undefined>> {
    const pipeline = this.#redis.pipeline()
    for (const id of ids) {
      pipeline.get(this.key(id))
      pipeline.hmget(this.key(id, 'meta'), 'seq', 'status', 'cancel', 'cbdone')
      pipeline.lrange(this.key(id, 'cb'), 0, -1)
      pipeline.zscore(`${this.#prefix}:expiry`, id)
    }
    const replies = await pipeline.exec().catch(error => { throw unavailable(error) })
    if (replies === null) throw unavailable(new Error('Connection is closed'))
    const now = this.#now()
    let expired = false
    const records = ids.map((_id, i) => {
      const [recordReply, metaReply, callbackReply, expiryReply] = [replies[i * 4]!, replies[i * 4 + 1]!, replies[i * 4 + 2]!, replies[i * 4 + 3]!]
      for (const [error] of [recordReply, metaReply, callbackReply, expiryReply]) if (error) throw unavailable(error)
      const json = recordReply[1] as string | null
      if (json === null) return undefined
      // Past its TTL it is gone, whether or not Redis has expired its keys yet.
      const expiresAt = expiryReply[1] as string | null
      if (expiresAt !== null && now >= Number(expiresAt)) {
        expired = true
        return undefined
      }
      const record = JSON.parse(json) as RunRecord
      const [seq = null, status = null, cancel = null, delivered = null] = metaReply[1] as Array<string | null>
      if (seq !== null) record.seq = Number(seq)
      // The engine moved it on (claimed, ended) before its owner rewrote the record.
      if (status !== null && record.status === 'queued' && status !== 'queued' && !isTerminal(status as RunStatus)) record.status = status as RunStatus
      if (cancel !== null && !isTerminal(record.status)) record.cancel ??= JSON.parse(cancel) as RunRecord['cancel']
      if (record.callback !== null) record.callback = mergeCallback(record.callback, callbackReply[1] as string[], delivered)
      return record
    })
    if (expired) this.#scripts.sweep(now).catch(() => {})
    return records
  }
}

function mergeCallback (callback: CallbackRecord, attempts: string[], delivered: string | null): CallbackRecord {
  return {
    ...callback,
    attempts: attempts.map(attempt => JSON.parse(attempt) as CallbackRecord['attempts'][number]),
    delivered: delivered === null ? null : delivered === 'true',
  }
}
