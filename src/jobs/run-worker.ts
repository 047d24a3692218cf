import type { Logger } from 'pino'
import { RunCancelledError } from '../errors.ts'
import type { RunProcessor } from '../engine/types.ts'
import type { AgentExecutor, ExecuteOutcome } from '../runner/agent-executor.ts'
import { agentEvent, enterPhase } from './job.ts'

export interface RunWorkerOptions {
  /** Runs jobs: in a workspace of BASE_REPO when there is one. */
  jobs: AgentExecutor
  /** Runs chat completions: always in an empty folder. */
  chats: AgentExecutor
  now: () => number
  logger: Logger
}

/** Thrown by a spawn claim another replica won: that replica runs the agent; this one lets go. */
export class SpawnClaimLostError extends Error {
  override name = 'SpawnClaimLostError'
}

/**
 * What a replica does with each run it takes, jobs and chat completions alike: execute it, tell
 * followers what happens as it happens, and write how it ended. It never throws.
 */
export function createRunWorker (options: RunWorkerOptions): RunProcessor {
  const { now, logger } = options
  return async (handle, signal) => {
    const { record } = handle
    const executor = record.kind === 'chat' ? options.chats : options.jobs
    logger.info({ runId: record.id, kind: record.kind, queueWaitMs: (record.startedAt ?? now()) - record.createdAt }, 'run started')
    let outcome: ExecuteOutcome
    try {
      outcome = await executor.execute(record.execute, {
        onPhase: phase => {
          const event = enterPhase(record, phase, now())
          handle.event(event.type, event.data)
          handle.save()
        },
        onEvent: event => {
          const logged = agentEvent(record, event)
          if (logged !== undefined) handle.event(logged.type, logged.data)
          if (event.type === 'init') handle.save()
        },
        onSpawn: pid => {
          record.pid = pid
          handle.save()
        },
        beforeSpawn: () => handle.claimSpawn(),
      }, signal)
    } catch (error) {
      if (error instanceof SpawnClaimLostError) {
        logger.warn({ runId: record.id }, 'another replica started this run\'s agent; leaving it to that one')
        return
      }
      logger.error({ err: error, runId: record.id }, 'run failed unexpectedly')
      await handle.finish({ status: 'failed', error: { code: 'agent_crashed', message: `internal error while running the job: ${(error as Error).message}` } }, [])
      return
    }
    const reason: unknown = signal.reason
    const cancel = outcome.status === 'cancelled' && reason instanceof RunCancelledError ? { requestedAt: now(), reason: reason.reason } : undefined
    await handle.finish({
      status: outcome.status,
      result: outcome.result,
      exit: outcome.exit,
      error: outcome.error,
      output: outcome.output,
      changes: outcome.changes,
      cancel,
    }, outcome.output.lines)
  }
}
