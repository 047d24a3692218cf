import type { AgentOutput, RunError } from '../agent/agent-run.ts'
import type { CliResult } from '../agent/stream-json.ts'
import type { CancelReason } from '../errors.ts'
import type { JobRequest, TerminalUpdate } from '../jobs/job.ts'
import type { ExecuteRequest } from '../runner/agent-executor.ts'
import type { WorkspaceChanges } from '../workspace/workspace.ts'

/**
 * The engine: where runs are admitted, queued, recorded and followed. Two implementations share
 * these interfaces (memory: one process, the embedded default; Redis: any number of replicas), and
 * the domain (JobService, ChatService) works through them without knowing which it has.
 */

export type RunKind = 'job' | 'chat'

/** A finished chat run is read by its caller at once; it is kept a little for a late reader. */
export const CHAT_TTL_MS = 60_000

/**
 * What a chat run keeps for the protocol adapter it came through (plain JSON): a stored OpenAI
 * response is read back from its run's record.
 */
export interface ChatRecord {
  /** The wire protocol: `chat.completions`, `responses`, `messages`. */
  api: string
  /** Kept to be read back (`store`): for the run's keep time, JOB_TTL_SECONDS. */
  stored: boolean
  /** What the adapter echoes when it reads the answer back (instructions, metadata...). */
  echo: Record<string, unknown> | null
  /**
   * A stored run's answer, as its caller got it (the main agent's text within MAX_OUTPUT_BYTES),
   * written with the terminal record by the replica that ran it; null until then.
   */
  answer?: { text: string, cut: boolean } | null | undefined
}
export type RunStatus = 'queued' | 'running' | 'completed' | 'failed' | 'timed_out' | 'cancelled'
export type TerminalStatus = Exclude<RunStatus, 'queued' | 'running'>
export type ExecutionPhase = 'preparing' | 'running' | 'collecting'
export type RunPhase = 'queued' | ExecutionPhase | 'finished'

export const TERMINAL_STATUSES: ReadonlySet<RunStatus> = new Set<RunStatus>(['completed', 'failed', 'timed_out', 'cancelled'])
export const isTerminal = (status: RunStatus): status is TerminalStatus => TERMINAL_STATUSES.has(status)

export interface CallbackRecord {
  /** Stable for every attempt of this delivery, on whichever replica: receivers deduplicate on it. */
  delivery_id: string
  attempts: Array<{ at: number, status: number | null, error: string | null, duration_ms: number }>
  delivered: boolean | null
}

/**
 * Everything known about one run (a job, or the run behind a chat completion): plain JSON, so it
 * can live in Redis and be read by any replica. While it is queued the engine writes it; while it
 * runs only the replica running it does; once it is terminal nobody changes it but the callback.
 */
export interface RunRecord {
  id: string
  kind: RunKind
  /** Submission order, cluster-wide. */
  seq: number
  tenant: string
  createdAt: number
  /** Execution timeout (never counts the wait in the queue). */
  timeoutMs: number
  /** What to run: everything a replica needs to execute it. */
  execute: ExecuteRequest
  /** The body of POST /execute, for jobs. */
  request: JobRequest | null
  idempotency: { key: string, fingerprint: string } | null
  status: RunStatus
  phase: RunPhase
  startedAt: number | null
  finishedAt: number | null
  phaseMs: Partial<Record<ExecutionPhase, number>>
  phaseStartedAt: number | null
  /** The replica that ran it (INSTANCE_ID). */
  instance: string | null
  pid: number | null
  agent: { session_id: string | null, model: string | null, claude_code_version: string | null } | null
  result: CliResult | null
  exit: { code: number | null, signal: string | null } | null
  error: RunError | null
  /** What the agent printed; the lines themselves are kept apart (see JobStore.output). */
  output: Omit<AgentOutput, 'lines'> & { lines: number } | null
  changes: WorkspaceChanges | null
  cancel: { requestedAt: number, reason: CancelReason } | null
  callback: CallbackRecord | null
  /** Chat runs: what their protocol adapter keeps with them. */
  chat?: ChatRecord | undefined
}

/** A tenant's limits, as configured (unset fields mean no limit). */
export interface TenantLimits {
  maxRunning?: number | undefined
  maxQueued?: number | undefined
  budgetUsdPerDay?: number | undefined
}

export interface AdmitOptions {
  limits: TenantLimits
  /** How long this run is kept once it has finished (and so its Idempotency-Key), at most JOB_TTL_SECONDS. */
  keepMs: number
}

export type AdmitResult =
  | { admitted: true, record: RunRecord }
  /** The Idempotency-Key was seen: the job it made (the body matched; else the engine throws). */
  | { admitted: false, record: RunRecord }

export interface LoggedEvent {
  id: number
  type: string
  at: number
  /** The event's data, serialised once when it was appended. */
  json: string
}

export interface ListQuery {
  /** Only this tenant's jobs; undefined: everyone's. */
  tenant?: string | undefined
  status?: RunStatus | undefined
  limit: number
  /** Only jobs older than the one this cursor came from (a `seq`). */
  before?: number | undefined
}

/** Records of runs, kept after they end for JOB_TTL_SECONDS within the count and byte bounds. */
export interface JobStore {
  get (id: string): Promise<RunRecord | undefined>
  /** The raw stream-json lines the agent printed (at most MAX_OUTPUT_BYTES of them). */
  output (id: string): Promise<string[]>
  /** Jobs (not chat runs), newest first. */
  list (query: ListQuery): Promise<{ records: RunRecord[], next: number | undefined }>
  /** Drops finished jobs past their TTL; returns how many went. */
  evictExpired (): Promise<number>
  /** Drops a finished run now (a deleted response); one still queued or running stays. */
  remove (id: string): Promise<'removed' | 'unfinished' | 'unknown'>
}

/** The events of one run, ids 1, 2, 3... whichever replica wrote them. */
export interface EventFeed extends AsyncIterable<LoggedEvent> {
  /** True when events between the requested id and the oldest held one were already dropped. */
  readonly missed: boolean
  /** The oldest id still held, for a `gap` notice. */
  readonly firstId: number
  /** True when the follower fell too far behind and was cut off (it may resume from its last id). */
  readonly overflowed: boolean
  /** Called once when the feed ends (the run ended, it overflowed, or it was closed). */
  onEnd: (() => void) | undefined
  /** Stops following; safe to call more than once. */
  close (): void
}

export interface JobEvents {
  /**
   * Follows a run's events after `afterId`: what is held, then live ones, ending after the
   * terminal status event. A reader too slow to keep up is cut off (`overflowed`) and may resume
   * from its last id: in memory when `maxBufferedBytes` wait for it; with Redis, which holds the
   * events itself, when what it has not read yet was trimmed from the run's bounded log.
   */
  follow (id: string, afterId: number, maxBufferedBytes: number): Promise<EventFeed>
  /** What is held after `afterId`, without following. */
  since (id: string, afterId: number): Promise<LoggedEvent[]>
  /** Resolves when the run is terminal, after `ms`, or when `signal` aborts, whichever is first. */
  waitTerminal (id: string, ms: number, signal?: AbortSignal): Promise<void>
  /** Feeds open on this replica now (followers of /events and of chat answers). */
  readonly followers: number
}

/**
 * The replica side of a run in flight: the only writer of its record while it runs. Writes are
 * ordered; with Redis they are queued while Redis is unreachable and written when it is back.
 */
export interface RunHandle {
  readonly record: RunRecord
  /** Appends an event to the run's log. */
  event (type: string, data: unknown): void
  /** Writes the record as it is now (phase, pid, agent...). */
  save (): void
  /**
   * Resolves before the agent is started, rejecting if it must not be (another replica took the
   * run meanwhile): a spawned agent is never started twice.
   */
  claimSpawn (): Promise<void>
  /**
   * Writes the terminal record, the raw output and the terminal status event in one step, unless
   * the run already ended elsewhere (e.g. declared lost); settles the admission counters.
   */
  finish (update: TerminalUpdate, lines: readonly string[]): Promise<boolean>
}

/** What a replica's worker does with a run it takes. It never throws. */
export type RunProcessor = (handle: RunHandle, signal: AbortSignal) => Promise<void>

export interface QueueCounts {
  /** Runs executing on this replica. */
  active: number
  /** This replica's MAX_CONCURRENCY. */
  capacity: number
  /** Runs waiting for a slot: on this replica (memory) or in the cluster (Redis). */
  queued: number
  closing: boolean
}

export interface ClusterCounts {
  replicas: number
  active: number
  queued: number
  capacity: number
}

export interface WorkQueue {
  /**
   * Admits a run in one atomic step: the depth limit (running + waiting, cluster-wide), the
   * tenant's limits and Idempotency-Key, the record and its first event. Throws `queue_full`,
   * `tenant_queue_full`, `budget_exceeded`, `idempotency_conflict` or `shutting_down`.
   */
  admit (record: RunRecord, options: AdmitOptions): Promise<AdmitResult>
  /**
   * Cancels a run: a waiting one ends `cancelled` at once ('dequeued'); a running one, wherever it
   * runs, has its signal aborted ('signalled'). 'unknown' when there is nothing to cancel.
   */
  cancel (id: string, reason: CancelReason): Promise<'dequeued' | 'signalled' | 'unknown'>
  /** 1-based place among waiting runs, or undefined when the run does not wait. */
  position (id: string): Promise<number | undefined>
  /** Starts taking runs on this replica. */
  process (processor: RunProcessor): void
  /**
   * Stops taking runs on this replica; its running runs get `graceMs`, then are cancelled
   * ('shutdown'). Waiting runs: cancelled by the memory engine; left for other replicas by Redis.
   */
  drain (graceMs: number): Promise<void>
  readonly counts: QueueCounts
}

/** What one finished run adds to its tenant's day (UTC). */
export interface UsageDelta {
  status: TerminalStatus
  total_cost_usd: number
  input_tokens: number
  output_tokens: number
  cache_read_input_tokens: number
  cache_creation_input_tokens: number
  agent_seconds: number
}

export interface UsageDay {
  date: string
  runs: Record<TerminalStatus, number>
  total_cost_usd: number
  input_tokens: number
  output_tokens: number
  cache_read_input_tokens: number
  cache_creation_input_tokens: number
  agent_seconds: number
}

/** Per tenant and UTC day, kept 90 days whatever happens to the runs themselves. */
export interface UsageLedger {
  /** Days from `from` to `to` (YYYY-MM-DD, inclusive) of the given tenants (every tenant seen: undefined). */
  days (tenants: readonly string[] | undefined, from: string, to: string): Promise<Array<{ tenant: string, days: UsageDay[] }>>
}

export interface EngineHealth {
  kind: 'memory' | 'redis'
  /** Redis only: whether this replica reaches Redis now. */
  connected: boolean
  /** Redis only: the last refresh of the cluster's numbers (never waited on by /health). */
  cluster: ClusterCounts | null
  lastError: string | null
}

/** The cluster's callbacks to deliver (the Redis engine's outbox; see redis-scripts.ts). */
export interface CallbackOutbox {
  /** The next callback due, leased to this replica for `leaseMs`; undefined when none is due. */
  claim (leaseMs: number): Promise<string | undefined>
  /** Records an attempt (null: none was made); `done` true/false ends the delivery, null retries at `nextDueAt`. */
  record (id: string, attempt: CallbackRecord['attempts'][number] | null, done: boolean | null, nextDueAt: number): Promise<void>
}

export interface Engine {
  readonly kind: 'memory' | 'redis'
  readonly instance: string
  readonly store: JobStore
  readonly queue: WorkQueue
  readonly events: JobEvents
  readonly usage: UsageLedger
  /** Redis: callbacks are delivered from the cluster's outbox by any replica. Memory: by the process that ended the job. */
  readonly callbacks?: CallbackOutbox
  /** The same object until something it reports changes (so /health can cache its answer). */
  health (): EngineHealth
  /** Resolves once the engine can serve (Redis: connected and scripts loaded). */
  readonly ready: Promise<void>
  close (): Promise<void>
}
