import { Queue, Worker, type ConnectionOptions } from 'bullmq'
import type { Redis } from 'ioredis'
import type { Logger } from 'pino'
import { RunCancelledError, RunTimeoutError, type CancelReason } from '../errors.ts'
import { serialiseEvent } from '../jobs/event-log.ts'
import { finishRun, LINE_OVERHEAD, retainedBytes, startRun, usageDelta, type TerminalUpdate } from '../jobs/job.ts'
import { SpawnClaimLostError } from '../jobs/run-worker.ts'
import { budgetExceeded, idempotencyConflict, queueFull, retryAfterSeconds, shuttingDown, tenantQueueFull } from './admission.ts'
import type { EngineOptions } from './memory-engine.ts'
import { cancelledMessage } from './memory-work-queue.ts'
import { utcDate, USAGE_KEEP_DAYS } from './memory-usage.ts'
import { unavailable } from './redis-connection.ts'
import type { RedisJobStore } from './redis-job-store.ts'
import type { Reply, Scripts } from './redis-scripts.ts'
import { type AdmitOptions, type AdmitResult, type ClusterCounts, type QueueCounts, type RunHandle, type RunProcessor, type RunRecord, type WorkQueue } from './types.ts'

export interface RedisWorkQueueOptions extends Pick<EngineOptions, 'instance' | 'concurrency' | 'maxQueueDepth' | 'ttlMs' | 'maxFinished' | 'maxRetainedBytes' | 'maxEventBytes' | 'now' | 'onFinished' | 'onSettled'> {
  maxEvents: number
  /** A replica silent this long is dead: its spawned runs end `worker_lost`. */
  replicaTimeoutMs: number
  prefix: string
  /** BullMQ's connection (it makes its own clients from these options). */
  bullConnection: ConnectionOptions
  command: Redis
  writer: Redis
  commandScripts: Scripts
  writerScripts: Scripts
  store: RedisJobStore
  logger: Logger
  /** The cluster's numbers as last refreshed (never fetched on a request). */
  cluster: () => ClusterCounts | null
  /** When this replica last (re)connected to Redis: it judges others dead only after a full timeout connected. */
  connectedSince: () => number | undefined
  /** What the heartbeat says of this replica (P:replicas). */
  describe: () => Record<string, unknown>
  /** The cluster's numbers, as a script that changed them returned them (see stats() in redis-scripts.ts). */
  onStats: (stats: Reply) => void
  /**
   * How often waiting runs are dispatched regardless (default 1 s): a safety net for capacity that
   * appears elsewhere (a replica joins), never the way a run normally starts.
   */
  dispatchTickMs?: number | undefined
}

/** A replica that died mid-run more often than this while preparing it: the run fails instead. */
const MAX_CLAIMS = 3
const DISPATCH_SCAN = 200
const TICK_MS = 1000
const TRANSIT_MS = 5000
/** While Redis is unreachable, events of runs in flight wait in memory up to this much, then are dropped. */
const MAX_OFFLINE_EVENT_BYTES = 16 * 1024 * 1024

interface LocalRun {
  readonly record: RunRecord
  readonly controller: AbortController
}

/**
 * The cluster's queue. Admission, dispatch and the end of runs are Lua scripts (redis-scripts.ts);
 * BullMQ hands each dispatched run to the worker of a replica with a free slot, renews that
 * replica's lock on it, and gives back a run whose replica died before starting its agent (its
 * stall check), so it runs elsewhere. A run whose agent was started is never run again: the spawn
 * claim says who started it, and when that replica's heartbeat stops, the reaper ends the run
 * `worker_lost`. Cancels reach the replica that runs a job over pub/sub (and a poll, in case a
 * message was lost while reconnecting).
 */
export class RedisWorkQueue implements WorkQueue {
  readonly #options: RedisWorkQueueOptions
  readonly #bull: Queue
  readonly #running = new Map<string, LocalRun>()
  readonly #timers: NodeJS.Timeout[] = []
  #worker: Worker | undefined
  #processor: RunProcessor | undefined
  #heartbeat: NodeJS.Timeout | undefined
  #closing = false
  #averageRunMs: number | undefined
  #offlineEventBytes = 0
  #dispatching: Promise<void> | undefined
  #dispatchAgain = false

  constructor (options: RedisWorkQueueOptions) {
    this.#options = options
    this.#bull = new Queue('runs', { connection: options.bullConnection, prefix: `${options.prefix}:bull` })
    this.#bull.on('error', error => { options.logger.warn({ err: error }, 'BullMQ queue error') })
  }

  get counts (): QueueCounts {
    const cluster = this.#options.cluster()
    return { active: this.#running.size, capacity: this.#options.concurrency, queued: cluster?.queued ?? 0, closing: this.#closing }
  }

  async admit (record: RunRecord, { limits, keepMs }: AdmitOptions): Promise<AdmitResult> {
    if (this.#closing) throw shuttingDown()
    const { commandScripts, now, maxQueueDepth, maxEvents, maxEventBytes, store } = this.#options
    const idem = record.idempotency === null ? '' : `${this.#options.prefix}:idem:${record.tenant}:${record.idempotency.key}`
    const event = serialiseEvent({ status: record.status, phase: record.phase })
    let reply: Reply[]
    try {
      reply = await commandScripts.admit(
        record.id, JSON.stringify(record), record.tenant, record.kind, idem, record.idempotency?.fingerprint ?? '',
        maxQueueDepth, limits.maxQueued ?? '', limits.maxRunning ?? '', limits.budgetUsdPerDay ?? '', utcDate(now()),
        event, now(), maxEvents, maxEventBytes, Math.max(0, Math.round(keepMs))) as Reply[]
    } catch (error) {
      throw unavailable(error)
    }
    this.#options.onStats(reply[3] ?? null)
    const [outcome, a, b] = reply as string[]
    switch (outcome) {
      case 'admitted':
        record.seq = Number(a)
        this.dispatch()
        return { admitted: true, record }
      case 'existing': {
        const existing = await store.get(a!)
        if (existing !== undefined) return { admitted: false, record: existing }
        // Gone in between (evicted): a new job it is, next time.
        throw unavailable(new Error('Connection is closed: the idempotent job vanished while it was read'))
      }
      case 'conflict':
        throw idempotencyConflict(record.idempotency!.key, a!)
      case 'queue_full': {
        const active = Number(b)
        const queued = Number(a) - active
        const capacity = this.#options.cluster()?.capacity ?? 0
        throw queueFull({ active, queued, capacity, maxQueueDepth }, this.#retryAfter(queued, capacity))
      }
      case 'tenant_queue_full':
        throw tenantQueueFull(record.tenant, Number(a), limits.maxQueued!, this.#retryAfter(Number(a), this.#options.cluster()?.capacity ?? 1))
      case 'budget':
        throw budgetExceeded(record.tenant, Number(a), limits.budgetUsdPerDay!, now())
      default:
        throw new Error(`unexpected admission reply ${JSON.stringify(reply)}`)
    }
  }

  async cancel (id: string, reason: CancelReason): Promise<'dequeued' | 'signalled' | 'unknown'> {
    const { commandScripts, now } = this.#options
    const cancel = { requestedAt: now(), reason }
    let reply: Array<string | null>
    try {
      reply = await commandScripts.cancel(id, JSON.stringify(cancel)) as Array<string | null>
    } catch (error) {
      throw unavailable(error)
    }
    if (reply[0] === 'dequeue' && reply[1] != null) {
      const record = JSON.parse(reply[1]) as RunRecord
      const ended = await this.#endElsewhere(record, '', { status: 'cancelled', error: { code: 'cancelled', message: cancelledMessage(reason) }, cancel }, this.#options.commandScripts)
      if (ended) return 'dequeued'
      // It left the queue meanwhile: cancel it where it went.
      return this.cancel(id, reason)
    }
    return reply[0] === 'signalled' ? 'signalled' : 'unknown'
  }

  async position (id: string): Promise<number | undefined> {
    const { command, prefix } = this.#options
    try {
      const [rank, promoted] = await Promise.all([command.zrank(`${prefix}:pending`, id), command.zscore(`${prefix}:promoted`, id)])
      if (rank !== null) return rank + 1
      return promoted === null ? undefined : 1
    } catch (error) {
      throw unavailable(error)
    }
  }

  /**
   * Joins the cluster: what this replica's earlier life (a fixed INSTANCE_ID) left is settled, and
   * its heartbeat starts. It takes runs once `process` is called.
   */
  async start (): Promise<void> {
    await this.bury(this.#options.instance)
    await this.#beat()
    this.#heartbeat = setInterval(() => { this.#beat().catch(() => {}) }, Math.max(100, Math.round(this.#options.replicaTimeoutMs / 3)))
    this.#heartbeat.unref()
  }

  /** Says this replica is alive, and how many slots it offers (none before it processes or while it drains). */
  async #beat (): Promise<void> {
    const { commandScripts, instance, replicaTimeoutMs, concurrency } = this.#options
    const info = JSON.stringify({ ...this.#options.describe(), capacity: concurrency, draining: this.#closing })
    await commandScripts.heartbeat(instance, replicaTimeoutMs, info, this.#closing || this.#processor === undefined ? '' : concurrency)
  }

  process (processor: RunProcessor): void {
    const { concurrency, replicaTimeoutMs, bullConnection, prefix, logger } = this.#options
    this.#processor = processor
    this.#worker = new Worker('runs', async job => { await this.#take(String(job.data.id)) }, {
      connection: bullConnection,
      prefix: `${prefix}:bull`,
      concurrency,
      lockDuration: replicaTimeoutMs,
      stalledInterval: Math.max(250, Math.round(replicaTimeoutMs / 6)),
      // BullMQ never fails a run itself: the claim counts re-runs, the reaper ends lost ones.
      maxStalledCount: 1000,
    })
    this.#worker.on('error', error => { logger.warn({ err: error }, 'BullMQ worker error') })
    this.#worker.on('failed', (job, error) => { logger.warn({ err: error, runId: job?.data?.id }, 'BullMQ gave up a run it handed out') })
    const every = (ms: number, task: () => Promise<unknown>): void => {
      const timer = setInterval(() => { task().catch(() => {}) }, ms)
      timer.unref()
      this.#timers.push(timer)
    }
    every(this.#options.dispatchTickMs ?? TICK_MS, async () => { this.dispatch() })
    every(TICK_MS, () => this.#pollCancels())
    every(TRANSIT_MS, () => this.#redeliver())
    every(Math.max(250, Math.round(replicaTimeoutMs / 6)), () => this.reap())
    this.#beat().then(() => this.dispatch(), () => {})
  }

  /** Tells this replica's runs that a cancel was asked for (pub/sub message or poll). */
  cancelled (id: string, reason: CancelReason = 'user'): void {
    const local = this.#running.get(id)
    if (local === undefined || local.controller.signal.aborted) return
    local.record.cancel ??= { requestedAt: this.#options.now(), reason }
    local.controller.abort(new RunCancelledError(reason))
  }

  /** Hands waiting runs to BullMQ while the cluster has free slots; concurrent calls share one pass. */
  dispatch (): void {
    if (this.#dispatching !== undefined) {
      this.#dispatchAgain = true
      return
    }
    this.#dispatchAgain = false
    this.#dispatching = (async () => {
      const [ids, stats] = await this.#options.commandScripts.dispatch(this.#options.now(), DISPATCH_SCAN) as [string[], Reply]
      this.#options.onStats(stats)
      if (ids.length > 0) await this.#hand(ids)
    })().catch(error => {
      this.#options.logger.debug({ err: error }, 'dispatch failed; the next tick retries')
    }).finally(() => {
      this.#dispatching = undefined
      // Asked again while this pass ran (a run ended, another was admitted): one more pass now,
      // not at the next tick.
      if (this.#dispatchAgain) this.dispatch()
    })
  }

  async drain (graceMs: number): Promise<void> {
    this.#closing = true
    const closed = this.#worker?.close() ?? Promise.resolve()
    // Out of the cluster's capacity at once: nothing more is handed to this replica.
    await this.#beat().catch(() => {})
    if (this.#running.size > 0 && graceMs > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([closed, new Promise<void>(resolve => { timer = setTimeout(resolve, graceMs) })])
      clearTimeout(timer)
    }
    for (const id of [...this.#running.keys()]) this.cancelled(id, 'shutdown')
    await closed
    for (const timer of this.#timers) clearInterval(timer)
    this.#timers.length = 0
  }

  async close (): Promise<void> {
    await this.drain(0)
    clearInterval(this.#heartbeat)
    await this.#dispatching
    await this.#bull.close()
    await this.#options.commandScripts.leave(this.#options.instance).catch(() => {})
  }

  /**
   * Replicas whose heartbeat stopped: each run whose agent they had started ends `worker_lost`
   * (runs they had taken but not started go back through BullMQ's stall check, and run elsewhere).
   * Only a replica that has itself been connected for a whole timeout judges: after a Redis outage,
   * every live replica gets that long to beat again.
   */
  async reap (): Promise<void> {
    const { commandScripts, replicaTimeoutMs, now } = this.#options
    const since = this.#options.connectedSince()
    if (since === undefined || now() - since < replicaTimeoutMs) return
    const dead = await commandScripts.dead() as string[]
    for (const instance of dead) await this.bury(instance)
  }

  /** The runs a gone replica (or this replica's earlier life, same INSTANCE_ID) left behind. */
  async bury (instance: string): Promise<void> {
    const { command, commandScripts, prefix, logger } = this.#options
    const ids = await command.smembers(`${prefix}:inst:${instance}:runs`)
    for (const id of ids) {
      const [spawned, status, owner] = await command.hmget(`${prefix}:run:${id}:meta`, 'spawned', 'status', 'instance')
      if (status !== 'running' || owner !== instance || spawned !== instance) continue
      const record = await this.#options.store.get(id)
      if (record === undefined) continue
      const ended = await this.#endElsewhere(record, instance, {
        status: 'failed',
        error: { code: 'worker_lost', message: `replica ${instance} stopped answering (no heartbeat for REPLICA_TIMEOUT_SECONDS) while it ran this job's agent; the job is not run again, since the agent may already have changed things or spent money` },
      }, commandScripts)
      if (ended) logger.warn({ runId: id, instance }, 'run lost with its replica')
    }
    await command.del(`${prefix}:inst:${instance}:runs`)
    await commandScripts.leave(instance)
  }

  /** Ends a run this replica does not run (queued, or lost with its replica); false if it already ended. */
  async #endElsewhere (record: RunRecord, expectedOwner: string, update: TerminalUpdate, scripts: Scripts): Promise<boolean> {
    const ended = await this.#finish(record, update, [], expectedOwner, scripts)
    if (ended) this.#options.onSettled?.({ kind: record.kind, queuedMs: (record.startedAt ?? this.#options.now()) - record.createdAt, runMs: undefined })
    return ended
  }

  async #finish (record: RunRecord, update: TerminalUpdate, lines: readonly string[], expectedOwner: string, scripts: Scripts): Promise<boolean> {
    const { now, ttlMs, maxFinished, maxRetainedBytes, maxEvents, maxEventBytes } = this.#options
    const at = now()
    const event = finishRun(record, update, at)
    const delta = usageDelta(record)!
    // The run's own keep time (AdmitOptions.keepMs) is applied by the script, within this.
    const ttl = ttlMs
    const reply = await scripts.finish(
      record.id, expectedOwner, JSON.stringify(record), lines.length === 0 ? '' : lines.join('\n'), record.status, serialiseEvent(event.data),
      at, at + ttl, ttl, maxFinished, maxRetainedBytes, maxEvents, maxEventBytes, utcDate(at),
      delta.total_cost_usd, delta.input_tokens, delta.output_tokens, delta.cache_read_input_tokens, delta.cache_creation_input_tokens, delta.agent_seconds,
      record.callback === null ? 0 : 1, (USAGE_KEEP_DAYS + 1) * 86_400,
      retainedBytes(record, { lines: lines.length, bytes: lines.reduce((sum, line) => sum + line.length + 1, 0) }, { count: 0, bytes: 0 }), LINE_OVERHEAD) as [number, Reply]
    this.#options.onStats(reply[1])
    if (reply[0] !== 1) return false
    this.#running.delete(record.id)
    try {
      this.#options.onFinished(record)
    } catch {
      // A listener's bug must not undo the end of a run.
    }
    this.dispatch()
    return true
  }

  async #hand (ids: readonly string[]): Promise<void> {
    await this.#bull.addBulk(ids.map(id => ({ name: 'run', data: { id }, opts: { jobId: id, removeOnComplete: true, removeOnFail: true } })))
  }

  /** Runs handed out whose BullMQ job went missing (a replica died between the two steps) are handed again. */
  async #redeliver (): Promise<void> {
    const { command, prefix, now } = this.#options
    const ids = await command.zrangebyscore(`${prefix}:promoted`, '-inf', now() - TRANSIT_MS, 'LIMIT', 0, 500)
    if (ids.length > 0) await this.#hand(ids)
  }

  async #pollCancels (): Promise<void> {
    if (this.#running.size === 0) return
    const ids = [...this.#running.keys()]
    const pipeline = this.#options.command.pipeline()
    for (const id of ids) pipeline.hget(`${this.#options.prefix}:run:${id}:meta`, 'cancel')
    const replies = await pipeline.exec()
    replies?.forEach(([error, value], i) => {
      if (error || typeof value !== 'string') return
      this.cancelled(ids[i]!, (JSON.parse(value) as { reason: CancelReason }).reason)
    })
  }

  /** BullMQ gave this replica's worker a run: claim it, then run it (or settle what the claim found). */
  async #take (id: string): Promise<void> {
    const { writerScripts, command, prefix, instance, logger } = this.#options
    const reply = await writerScripts.claim(id, instance, MAX_CLAIMS) as Array<string | null>
    const [outcome] = reply
    switch (outcome) {
      case 'run':
        this.#options.onStats(reply[3] as Reply)
        return this.#run(JSON.parse(reply[1]!) as RunRecord, Number(reply[2]))
      case 'spawned': {
        const owner = reply[1]!
        if (await command.exists(`${prefix}:alive:${owner}`) === 1) return
        const record = JSON.parse(reply[2]!) as RunRecord
        await this.#endElsewhere(record, owner, { status: 'failed', error: { code: 'worker_lost', message: `replica ${owner} stopped answering while it ran this job's agent; the job is not run again` } }, writerScripts)
        return
      }
      case 'cancelled': {
        const record = JSON.parse(reply[1]!) as RunRecord
        const cancel = JSON.parse(reply[2]!) as NonNullable<RunRecord['cancel']>
        await this.#endElsewhere(record, record.status === 'queued' ? '' : (record.instance ?? ''), { status: 'cancelled', error: { code: 'cancelled', message: cancelledMessage(cancel.reason) }, cancel }, writerScripts)
        return
      }
      case 'exhausted': {
        const record = JSON.parse(reply[1]!) as RunRecord
        logger.error({ runId: id }, `replicas died ${MAX_CLAIMS} times while preparing this run; failing it`)
        await this.#endElsewhere(record, record.status === 'queued' ? '' : (record.instance ?? ''), { status: 'failed', error: { code: 'worker_lost', message: `the replicas that took this job stopped answering ${MAX_CLAIMS} times before its agent started; it is not tried again` } }, writerScripts)
      }
      // 'skip', 'gone': it ended meanwhile (cancelled, or finished by a replica that had been cut off).
    }
  }

  async #run (record: RunRecord, seq: number): Promise<void> {
    const processor = this.#processor!
    const { now, instance, logger } = this.#options
    record.seq = seq
    startRun(record, now(), instance)
    const local: LocalRun = { record, controller: new AbortController() }
    this.#running.set(record.id, local)
    const handle = this.#handle(record)
    handle.save()
    const startedAt = performance.now()
    const timer = setTimeout(() => local.controller.abort(new RunTimeoutError(record.timeoutMs)), record.timeoutMs)
    try {
      await processor(handle, local.controller.signal)
    } catch (error) {
      logger.error({ err: error, runId: record.id }, 'run processor failed')
      await handle.finish({ status: 'failed', error: { code: 'agent_crashed', message: `internal error while running: ${(error as Error).message}` } }, [])
    } finally {
      clearTimeout(timer)
      this.#running.delete(record.id)
      const took = performance.now() - startedAt
      this.#averageRunMs = this.#averageRunMs === undefined ? took : this.#averageRunMs * 0.8 + took * 0.2
      this.#options.onSettled?.({ kind: record.kind, queuedMs: (record.startedAt ?? now()) - record.createdAt, runMs: took })
    }
  }

  /** The owner's side of a run in flight. Writes go through the writer connection, in order. */
  #handle (record: RunRecord): RunHandle {
    const { writer, writerScripts, instance, now, maxEvents, maxEventBytes, logger } = this.#options
    const id = record.id
    return {
      record,
      event: (type, data) => {
        const json = serialiseEvent(data)
        if (writer.status !== 'ready') {
          // Queued in memory until Redis is back, within a bound: past it, events are dropped.
          if (this.#offlineEventBytes + json.length > MAX_OFFLINE_EVENT_BYTES) return
          this.#offlineEventBytes += json.length
          writerScripts.append(id, instance, type, json, now(), maxEvents, maxEventBytes)
            .catch(() => {}).finally(() => { this.#offlineEventBytes -= json.length })
          return
        }
        writerScripts.append(id, instance, type, json, now(), maxEvents, maxEventBytes).catch(error => {
          logger.warn({ err: error, runId: id }, 'could not append an event')
        })
      },
      save: () => {
        writerScripts.save(id, instance, JSON.stringify(record)).catch(error => {
          logger.warn({ err: error, runId: id }, 'could not save a run')
        })
      },
      claimSpawn: async () => {
        if (await writerScripts.spawn(id, instance) !== 1) throw new SpawnClaimLostError(`run ${id} was taken over by another replica`)
      },
      finish: (update, lines) => this.#finish(record, update, lines, instance, writerScripts),
    }
  }

  #retryAfter (waiting: number, capacity: number): number {
    return retryAfterSeconds(this.#averageRunMs, waiting, capacity)
  }
}
