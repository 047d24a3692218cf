import type { AgentControlFields } from '../agent/agent-controls.ts'
import type { AgentOutput, RunError } from '../agent/agent-run.ts'
import type { AgentEvent, CliResult } from '../agent/stream-json.ts'
import type { CancelReason } from '../errors.ts'
import type { ExecutionPhase, RunRecord, RunStatus, TerminalStatus, UsageDelta } from '../engine/types.ts'
import type { ResumeState } from '../runner/continuation.ts'
import type { WorkspaceChanges } from '../workspace/workspace.ts'

export { isTerminal, TERMINAL_STATUSES } from '../engine/types.ts'
export type { ExecutionPhase, RunPhase as JobPhase } from '../engine/types.ts'
export type JobStatus = RunStatus

export const JobStatus = {
  queued: 'queued',
  running: 'running',
  completed: 'completed',
  failed: 'failed',
  timed_out: 'timed_out',
  cancelled: 'cancelled',
} as const satisfies Record<RunStatus, RunStatus>

/** Rough heap cost of one kept string (a line, an event) and one small object (a file, a commit) beyond their JSON. */
export const LINE_OVERHEAD = 32
const ENTRY_OVERHEAD = 64

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
  /** The id of a finished job whose session this one resumes, where it left off. */
  continue_from?: string | undefined
}

/** A new run's record, queued. */
export function createRecord (init: Pick<RunRecord, 'id' | 'kind' | 'tenant' | 'createdAt' | 'timeoutMs' | 'execute' | 'request' | 'idempotency'> & { callback: boolean }): RunRecord {
  const { callback, ...fields } = init
  return {
    ...fields,
    seq: 0,
    status: 'queued',
    phase: 'queued',
    startedAt: null,
    finishedAt: null,
    phaseMs: {},
    phaseStartedAt: null,
    instance: null,
    pid: null,
    agent: null,
    result: null,
    exit: null,
    error: null,
    output: null,
    changes: null,
    resume: null,
    cancel: null,
    callback: callback ? { delivery_id: fields.id, attempts: [], delivered: null } : null,
  }
}

/** How a run ended, as the replica that ran it (or the engine, for runs that never started) saw it. */
export interface TerminalUpdate {
  status: TerminalStatus
  error: RunError | null
  result?: CliResult | null
  exit?: RunRecord['exit']
  output?: AgentOutput | null
  changes?: WorkspaceChanges | null
  resume?: ResumeState | null
  cancel?: { requestedAt: number, reason: CancelReason } | undefined
}

type Event = { type: string, data: unknown }

/*
 * A run's record changes only through these functions, on whichever side owns it at the time
 * (the engine while it waits, the replica running it, the engine again for a run declared lost).
 * Each returns the event that tells followers about the change, so the two never disagree.
 */

export function startRun (record: RunRecord, now: number, instance: string): void {
  record.status = 'running'
  record.startedAt = now
  record.instance = instance
}

export function enterPhase (record: RunRecord, phase: ExecutionPhase, now: number): Event {
  closePhase(record, now)
  record.phase = phase
  record.phaseStartedAt = now
  return { type: 'status', data: { status: record.status, phase } }
}

/**
 * Logs what the agent did, named by kind: init, text, tool_use, tool_result, api_retry, ...
 * Text deltas are kept only for chat runs, whose answer is relayed as it is written (possibly by
 * another replica than the one running it).
 */
export function agentEvent (record: RunRecord, event: AgentEvent): Event | undefined {
  switch (event.type) {
    case 'text_delta':
    case 'text_block_start': {
      if (record.kind !== 'chat') return undefined
      const { type, ...data } = event
      return { type, data }
    }
    case 'init':
      record.agent = { session_id: event.session_id, model: event.model, claude_code_version: event.claude_code_version }
      return { type: 'init', data: { session_id: event.session_id, model: event.model, claude_code_version: event.claude_code_version, cwd: event.cwd, permission_mode: event.permission_mode } }
    case 'result': {
      const { result } = event
      return {
        type: 'result',
        data: {
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
        },
      }
    }
    default: {
      const { type, ...data } = event
      return { type, data }
    }
  }
}

/** Applies the end; returns the terminal status event. */
export function finishRun (record: RunRecord, update: TerminalUpdate, now: number): Event {
  closePhase(record, now)
  record.status = update.status
  record.phase = 'finished'
  record.finishedAt = now
  record.phaseStartedAt = null
  record.error = update.error
  if (update.result !== undefined) record.result = update.result
  if (update.exit !== undefined) record.exit = update.exit
  if (update.changes !== undefined) record.changes = update.changes
  if (update.resume !== undefined) record.resume = update.resume
  if (update.output != null) {
    const { lines, ...meta } = update.output
    record.output = { ...meta, lines: lines.length }
  }
  if (update.cancel !== undefined) record.cancel ??= update.cancel
  return terminalEvent(record)
}

export function terminalEvent (record: RunRecord): Event {
  return { type: 'status', data: { status: record.status, phase: record.phase, error: record.error } }
}

/**
 * Bytes a finished run holds, for MAX_RETAINED_BYTES: everything in its record (request, result,
 * changed files and commits, diff), its raw output and its event history, with what each kept line,
 * event, file and commit costs beyond its JSON.
 */
export function retainedBytes (record: RunRecord, output: { lines: number, bytes: number }, events: { count: number, bytes: number }): number {
  const entries = record.changes === null ? 0 : record.changes.files.length + record.changes.commits.length
  return Buffer.byteLength(JSON.stringify(record)) + entries * ENTRY_OVERHEAD +
    output.bytes + output.lines * LINE_OVERHEAD +
    events.bytes + events.count * LINE_OVERHEAD
}

/** What a finished run adds to its tenant's usage of the day. */
export function usageDelta (record: RunRecord): UsageDelta | undefined {
  if (record.status === 'queued' || record.status === 'running') return undefined
  const usage = (record.result?.usage ?? {}) as Record<string, unknown>
  const count = (key: string): number => typeof usage[key] === 'number' && Number.isFinite(usage[key]) ? usage[key] : 0
  const cost = record.result?.total_cost_usd
  return {
    status: record.status,
    total_cost_usd: typeof cost === 'number' && Number.isFinite(cost) ? cost : 0,
    input_tokens: count('input_tokens'),
    output_tokens: count('output_tokens'),
    cache_read_input_tokens: count('cache_read_input_tokens'),
    cache_creation_input_tokens: count('cache_creation_input_tokens'),
    agent_seconds: record.startedAt === null || record.finishedAt === null ? 0 : (record.finishedAt - record.startedAt) / 1000,
  }
}

function closePhase (record: RunRecord, now: number): void {
  if (record.phase === 'preparing' || record.phase === 'running' || record.phase === 'collecting') {
    record.phaseMs[record.phase] = now - (record.phaseStartedAt ?? now)
  }
}
