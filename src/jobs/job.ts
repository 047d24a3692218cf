import type { AgentControlFields } from '../agent/agent-controls.ts'
import type { AgentOutcome, AgentOutput, RunError } from '../agent/agent-run.ts'
import type { AgentEvent, CliResult } from '../agent/stream-json.ts'
import type { CancelReason } from '../errors.ts'
import type { WorkspaceChanges } from '../workspace/workspace.ts'
import { EventLog } from './event-log.ts'

export const JobStatus = {
  queued: 'queued',
  running: 'running',
  completed: 'completed',
  failed: 'failed',
  timed_out: 'timed_out',
  cancelled: 'cancelled',
} as const
export type JobStatus = (typeof JobStatus)[keyof typeof JobStatus]

/** Rough heap cost of one kept string (a line, an event) and one small object (a file, a commit) beyond their JSON. */
const LINE_OVERHEAD = 32
const ENTRY_OVERHEAD = 64

const jsonBytes = (value: unknown): number => value == null ? 0 : Buffer.byteLength(JSON.stringify(value))

export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set(['completed', 'failed', 'timed_out', 'cancelled'])

/** Finer than status: where a running job is. `status` stays `running` through all three. */
export type ExecutionPhase = 'preparing' | 'running' | 'collecting'
export type JobPhase = 'queued' | ExecutionPhase | 'finished'

/** The fields of `POST /execute`, as validated: plain JSON. */
export interface JobRequest extends AgentControlFields {
  prompt: string
  agent?: string | undefined
  model?: string | undefined
  ref?: string | undefined
  push?: boolean | undefined
  timeout_seconds?: number | undefined
  max_turns?: number | undefined
  max_budget_usd?: number | undefined
  metadata?: Record<string, unknown> | undefined
  callback_url?: string | undefined
}

export interface JobLimits {
  /** The execution timeout that applies (the request's or the default). */
  timeoutMs: number
}

/**
 * One submitted job and everything known about it. Mutated only by the JobService that owns it;
 * read by routes through the job view.
 */
export class Job {
  readonly id: string
  readonly seq: number
  readonly request: JobRequest
  readonly limits: JobLimits
  readonly createdAt: number
  /** The Idempotency-Key it was submitted with, and a fingerprint of its body. */
  readonly idempotency: { key: string, fingerprint: string } | undefined
  readonly events: EventLog
  status: JobStatus = 'queued'
  phase: JobPhase = 'queued'
  startedAt: number | undefined
  finishedAt: number | undefined
  readonly phaseMs: Partial<Record<ExecutionPhase, number>> = {}
  #phaseStartedAt: number | undefined
  pid: number | undefined
  agent: { session_id: string | null, model: string | null, claude_code_version: string | null } | undefined
  result: CliResult | null = null
  exit: AgentOutcome['exit'] = null
  error: RunError | null = null
  output: AgentOutput | null = null
  changes: WorkspaceChanges | null = null
  cancel: { requestedAt: number, reason: CancelReason } | undefined
  callback: { attempts: Array<{ at: number, status: number | null, error: string | null, duration_ms: number }>, delivered: boolean | null } | undefined
  readonly #done: PromiseWithResolvers<void> = Promise.withResolvers<void>()

  constructor (init: { id: string, seq: number, request: JobRequest, limits: JobLimits, createdAt: number, idempotency?: { key: string, fingerprint: string } | undefined, events: EventLog }) {
    this.id = init.id
    this.seq = init.seq
    this.request = init.request
    this.limits = init.limits
    this.createdAt = init.createdAt
    this.idempotency = init.idempotency
    this.events = init.events
    if (init.request.callback_url !== undefined) this.callback = { attempts: [], delivered: null }
  }

  get terminal (): boolean {
    return TERMINAL_STATUSES.has(this.status)
  }

  /** Resolves once the job is terminal. */
  get done (): Promise<void> {
    return this.#done.promise
  }

  /** Leaves the queue; the first phase (and its status event) follows at once. */
  start (now: number): void {
    this.status = 'running'
    this.startedAt = now
  }

  enterPhase (phase: ExecutionPhase, now: number): void {
    this.#closePhase(now)
    this.phase = phase
    this.#phaseStartedAt = now
    this.events.append('status', { status: this.status, phase })
  }

  /** Logs what the agent did, named by kind: init, text, tool_use, tool_result, api_retry, ... */
  recordAgentEvent (event: AgentEvent): void {
    switch (event.type) {
      case 'text_delta':
      case 'text_block_start':
        return
      case 'init':
        this.agent = { session_id: event.session_id, model: event.model, claude_code_version: event.claude_code_version }
        this.events.append('init', { session_id: event.session_id, model: event.model, claude_code_version: event.claude_code_version, cwd: event.cwd, permission_mode: event.permission_mode })
        return
      case 'result': {
        const { result } = event
        this.events.append('result', {
          is_error: result.is_error,
          subtype: result.subtype,
          text: typeof result.result === 'string' ? result.result : null,
          errors: result.errors ?? [],
          num_turns: result.num_turns ?? null,
          total_cost_usd: result.total_cost_usd ?? null,
          usage: result.usage ?? null,
          session_id: result.session_id ?? null,
          duration_ms: result.duration_ms ?? null,
          structured_output: result.structured_output ?? null,
        })
        return
      }
      default: {
        const { type, ...data } = event
        this.events.append(type, data)
      }
    }
  }

  finish (status: Exclude<JobStatus, 'queued' | 'running'>, now: number, outcome: Partial<Pick<Job, 'result' | 'exit' | 'error' | 'output' | 'changes'>> = {}): void {
    if (this.terminal) return
    this.#closePhase(now)
    this.status = status
    this.phase = 'finished'
    this.finishedAt = now
    if (outcome.result !== undefined) this.result = outcome.result
    if (outcome.exit !== undefined) this.exit = outcome.exit
    if (outcome.error !== undefined) this.error = outcome.error
    if (outcome.output !== undefined) this.output = outcome.output
    if (outcome.changes !== undefined) this.changes = outcome.changes
    this.events.append('status', { status, phase: this.phase, error: this.error })
    this.events.close()
    this.#done.resolve()
  }

  /**
   * Approximate bytes this job holds, for the store's memory budget: everything a finished job
   * keeps (request, result, output, changes with their file and commit lists, events), as JSON,
   * plus a little per object for what JSON does not show.
   */
  retainedBytes (): number {
    const events = this.events.lastId - this.events.firstId + 1
    return jsonBytes(this.request) +
      jsonBytes(this.result) +
      jsonBytes(this.error) +
      (this.output === null ? 0 : this.output.keptBytes + this.output.lines.length * LINE_OVERHEAD + Buffer.byteLength(this.output.stderrTail)) +
      (this.changes === null ? 0 : jsonBytes(this.changes) + (this.changes.files.length + this.changes.commits.length) * ENTRY_OVERHEAD) +
      this.events.bytes + events * LINE_OVERHEAD +
      2048
  }

  #closePhase (now: number): void {
    if (this.phase === 'preparing' || this.phase === 'running' || this.phase === 'collecting') {
      this.phaseMs[this.phase] = now - (this.#phaseStartedAt ?? now)
    }
  }
}
