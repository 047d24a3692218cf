import type { Logger } from 'pino'
import { RunCancelledError } from '../errors.ts'
import type { RunProcessor } from '../engine/types.ts'
import type { AgentExecutor, ExecuteOutcome } from '../runner/agent-executor.ts'
import { AnswerText } from './answer-text.ts'
import { agentEvent, enterPhase } from './job.ts'

export interface RunWorkerOptions {
  /** Runs jobs: in a workspace of BASE_REPO when there is one. */
  jobs: AgentExecutor
  /** Runs chat completions: always in an empty folder. */
  chats: AgentExecutor
  /** MAX_OUTPUT_BYTES: where a chat's answer is cut. */
  maxAnswerBytes: number
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
    // A stored chat answer is read back from its record, on any replica: the run's event log is
    // bounded too, and may have dropped its first blocks by then.
    const answer = record.chat?.stored === true ? new AnswerText(options.maxAnswerBytes) : undefined
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
          if (answer !== undefined && event.type === 'text' && event.parent_tool_use_id === null) answer.add(event.text)
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
    if (answer !== undefined) record.chat!.answer = { text: answer.text, cut: answer.exhausted }
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
