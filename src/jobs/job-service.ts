import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { AgentControls } from '../agent/agent-controls.ts'
import type { AgentSpec } from '../agent/cli-args.ts'
import { AppError } from '../errors.ts'
import { forbidden } from '../tenants/scopes.ts'
import type { Engine, ListQuery, RunRecord, TenantLimits } from '../engine/types.ts'
import { resumeFrom, type ResumeFrom } from '../runner/continuation.ts'
import { createRecord, isTerminal, type JobRequest } from './job.ts'

export interface JobServiceOptions {
  engine: Engine
  /** Turns a request's agent controls (tool rules, schema, MCP profiles...) into the run's spec. */
  controls: AgentControls
  /** Execution timeout when the request names none. */
  defaultTimeoutMs: number
  /** How long a finished job is kept (JOB_TTL_SECONDS). */
  keepMs: number
  permissionMode?: string | undefined
  now: () => number
  logger: Logger
}

/** Who is asking: a job belongs to the tenant that submitted it, and only it (or an admin) sees it. */
export interface Caller {
  tenant: string
  limits: TenantLimits
  /** Sees every tenant's jobs. */
  admin: boolean
}

/**
 * The jobs of `POST /execute`: admits them through the engine's queue, and answers for them until
 * they are evicted. Which replica runs a job, and where its record lives, is the engine's business.
 */
export class JobService {
  readonly #options: JobServiceOptions

  constructor (options: JobServiceOptions) {
    this.#options = options
  }

  /**
   * Admits a job (it waits, or starts at once) or throws (`queue_full`, `tenant_queue_full`,
   * `budget_exceeded`, `idempotency_conflict`, `shutting_down`). `replayed` when the
   * Idempotency-Key was seen: the job it made then.
   */
  async submit (request: JobRequest, caller: Caller, options: { idempotency?: { key: string, fingerprint: string } | undefined } = {}): Promise<{ record: RunRecord, replayed: boolean }> {
    const { engine, now, logger } = this.#options
    const resume = request.continue_from === undefined ? undefined : await this.#continuation(request.continue_from, caller)
    const id = randomUUID()
    const record = createRecord({
      id,
      kind: 'job',
      tenant: caller.tenant,
      createdAt: now(),
      timeoutMs: request.timeout_seconds === undefined ? this.#options.defaultTimeoutMs : request.timeout_seconds * 1000,
      execute: {
        id,
        ref: request.ref,
        push: request.push,
        keep: true,
        resume,
        spec: {
          ...this.specFor(request),
          // A resumed session keeps the system prompt its first run recorded, and would drop this job's own.
          ...(resume !== undefined && (request.append_system_prompt !== undefined || request.agent !== undefined) ? { systemPromptSnapshot: 'off' as const } : {}),
        },
      },
      request,
      idempotency: options.idempotency ?? null,
      callback: request.callback_url !== undefined,
    })
    const admitted = await engine.queue.admit(record, { limits: caller.limits, keepMs: this.#options.keepMs })
    if (admitted.admitted) {
      const { queued, active } = engine.queue.counts
      logger.info({ jobId: id, tenant: caller.tenant, queued, active }, 'job accepted')
    }
    return { record: admitted.record, replayed: !admitted.admitted }
  }

  /**
   * What a job continuing `id` starts from: that job must be the caller's, still kept, ended, and
   * have kept its session (`job_not_found`, `job_not_finished`, `not_resumable`).
   */
  async #continuation (id: string, caller: Caller): Promise<ResumeFrom> {
    const previous = await this.get(id, caller)
    if (previous === undefined) {
      throw new AppError('job_not_found', `body.continue_from: no job ${id}: it never existed or was evicted after JOB_TTL_SECONDS`, { details: { field: 'continue_from' } })
    }
    if (!isTerminal(previous.status)) {
      throw new AppError('job_not_finished', `body.continue_from: job ${id} is ${previous.status}; a job can be continued once it has ended (wait for it: GET /jobs/${id}?wait=60)`, { details: { field: 'continue_from', status: previous.status } })
    }
    const from = resumeFrom(previous)
    if ('reason' in from) {
      throw new AppError('not_resumable', `body.continue_from: job ${id} cannot be continued: ${from.reason}`, { details: { field: 'continue_from' } })
    }
    return from
  }

  /** What the agent of a job is asked to do (the default argument set of warm starts is that of `{ prompt }`). */
  specFor (request: JobRequest): AgentSpec {
    return {
      prompt: request.prompt,
      model: request.model,
      agent: request.agent,
      maxTurns: request.max_turns,
      maxBudgetUsd: request.max_budget_usd,
      permissionMode: this.#options.permissionMode,
      ...this.#options.controls.toSpec(request),
    }
  }

  /** The job, if it exists and the caller may see it: for anyone else it does not exist. */
  async get (id: string, caller: Caller): Promise<RunRecord | undefined> {
    const record = await this.#options.engine.store.get(id)
    if (record === undefined || record.kind !== 'job' || !visible(record, caller)) return undefined
    return record
  }

  async find (id: string, caller: Caller): Promise<RunRecord> {
    const record = await this.get(id, caller)
    if (record === undefined) throw jobNotFound(id)
    return record
  }

  async output (record: RunRecord): Promise<string[]> {
    return this.#options.engine.store.output(record.id)
  }

  /** 1-based place in the queue while the job waits. */
  async position (record: RunRecord): Promise<number | undefined> {
    return record.status === 'queued' ? this.#options.engine.queue.position(record.id) : undefined
  }

  /** The caller's jobs; an admin's: everyone's, or one tenant's (`tenant`, which only an admin may ask for: else 403). */
  async list (query: ListQuery, caller: Caller): Promise<{ records: RunRecord[], next: number | undefined }> {
    if (query.tenant !== undefined && !caller.admin) throw forbidden(['admin'])
    const tenant = caller.admin ? query.tenant : caller.tenant
    return this.#options.engine.store.list({ ...query, tenant })
  }

  /**
   * Cancels a job: a queued one is cancelled at once; a running one, on whichever replica, has its
   * process group sent SIGTERM (SIGKILL after the grace period) and becomes `cancelled` when it has
   * exited.
   */
  /**
   * `stopping`: the run's agent was signalled (202) rather than the run taken off the queue (200).
   * Decided by what the cancel found, not by the record read afterwards: with Redis the run's
   * replica may have ended it as cancelled before that read.
   */
  async cancel (id: string, caller: Caller): Promise<{ record: RunRecord, stopping: boolean }> {
    const { engine, now, logger } = this.#options
    const record = await this.find(id, caller)
    if (isTerminal(record.status)) throw jobFinished(record)
    const found = await engine.queue.cancel(id, 'user')
    logger.info({ jobId: id, found }, 'job cancel requested')
    const current = (await engine.store.get(id)) ?? record
    if (found === 'unknown' && isTerminal(current.status)) throw jobFinished(current)
    if (!isTerminal(current.status)) current.cancel ??= { requestedAt: now(), reason: 'user' }
    return { record: current, stopping: found === 'signalled' || (found === 'unknown' && !isTerminal(current.status)) }
  }

  /** Resolves when the job is terminal or after `ms`, whichever comes first. */
  async wait (record: RunRecord, ms: number, signal?: AbortSignal): Promise<RunRecord> {
    if (isTerminal(record.status) || ms <= 0) return record
    await this.#options.engine.events.waitTerminal(record.id, ms, signal)
    return (await this.#options.engine.store.get(record.id)) ?? record
  }
}

function visible (record: RunRecord, caller: Caller): boolean {
  return caller.admin || record.tenant === caller.tenant
}

export function jobNotFound (id: string): AppError {
  return new AppError('job_not_found', `no job ${id}: it never existed or was evicted after JOB_TTL_SECONDS`)
}

function jobFinished (record: RunRecord): AppError {
  return new AppError('job_finished', `job ${record.id} already ended as ${record.status}; there is nothing to cancel`, { details: { status: record.status } })
}
