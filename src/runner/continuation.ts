import { compressTranscript, decompressTranscript, readTranscript, SESSION_ID, writeTranscript } from '../agent/session-transcript.ts'
import type { AgentOutcome } from '../agent/agent-run.ts'
import type { RunRecord } from '../engine/types.ts'
import type { Collected, KeptTree } from '../workspace/workspace.ts'

/*
 * Continuing a finished run (`continue_from`): the new run resumes its Claude Code session in a
 * workspace that starts where it left off. What that needs is kept with the finished run in the
 * engine, since the continuation may run on another replica: its session transcript (gzipped) and,
 * in a git workspace, a bundle of the commits the base lacks. Both count in MAX_RETAINED_BYTES and
 * go when the run is evicted.
 */

/** Names of the artifacts a finished run keeps for its continuations (JobStore.artifact). */
export const ARTIFACT = { session: 'session', tree: 'tree' } as const

/** Whether a finished run can be continued, and from what (RunRecord.resume): plain JSON. */
export type ResumeState =
  | { resumable: true, session_id: string, transcript_bytes: number, tree: KeptTree | null }
  | { resumable: false, reason: string }

/** What a continuation starts from (ExecuteRequest.resume): the run it continues, as it was kept. */
export interface ResumeFrom {
  run: string
  session_id: string
  transcript_bytes: number
  tree: KeptTree | null
}

/** What a finished run keeps, to be put in the engine with it. */
export interface Kept {
  state: ResumeState
  artifacts: Array<[name: string, data: Buffer]>
}

/** What a run continuing this finished one starts from, or why it cannot be continued. */
export function resumeFrom (record: RunRecord): ResumeFrom | { reason: string } {
  const state = record.resume ?? null
  if (state === null) return { reason: 'its agent never started a session' }
  if (!state.resumable) return { reason: state.reason }
  return { run: record.id, session_id: state.session_id, transcript_bytes: state.transcript_bytes, tree: state.tree }
}

/** The run a continuation continues is gone, or what it kept is: the continuation fails `not_resumable`. */
export class ResumeError extends Error {
  override name = 'ResumeError'
  readonly code = 'not_resumable'
}

export type ArtifactReader = (runId: string, name: string) => Promise<Buffer | undefined>

/** Reads what the continued run kept: its transcript and, when there is one, its bundle. */
export async function loadResume (from: ResumeFrom, read: ArtifactReader): Promise<{ transcript: Buffer, bundle: Buffer | undefined }> {
  const gone = (): ResumeError => new ResumeError(`job ${from.run}, which this job continues, is gone (evicted after JOB_TTL_SECONDS, or by MAX_FINISHED_JOBS or MAX_RETAINED_BYTES) with its session; there is nothing to resume`)
  const [session, bundle] = await Promise.all([
    read(from.run, ARTIFACT.session),
    from.tree !== null && from.tree.bundle_bytes > 0 ? read(from.run, ARTIFACT.tree) : undefined,
  ])
  if (session === undefined) throw gone()
  if (from.tree !== null && from.tree.bundle_bytes > 0 && bundle === undefined) throw gone()
  return { transcript: await decompressTranscript(session, from.transcript_bytes), bundle }
}

/** Puts the continued run's transcript where this run's CLI looks for it (`cwd`: the workspace as the agent sees it). */
export async function restoreTranscript (from: ResumeFrom, transcript: Buffer, configDir: string, cwd: string): Promise<void> {
  await writeTranscript(configDir, cwd, from.session_id, transcript)
}

/**
 * What a finished run keeps for its continuations, within `maxBytes` (MAX_RESUME_BYTES: the
 * transcript as the CLI wrote it plus the bundle). Past it, or with nothing to resume, the run is
 * simply not resumable, and says why: keeping never fails a run.
 */
export async function keepForContinuation (input: {
  outcome: Pick<AgentOutcome, 'init' | 'result'>
  /** What collecting the workspace kept of its tree (undefined: a plain folder, nothing to keep). */
  tree: Collected['kept']
  configDir: string
  cwd: string
  maxBytes: number
}): Promise<Kept> {
  const not = (reason: string): Kept => ({ state: { resumable: false, reason }, artifacts: [] })
  if (input.maxBytes === 0) return not('the service keeps nothing to continue jobs from (MAX_RESUME_BYTES is 0)')
  const sessionId = input.outcome.init?.session_id ?? input.outcome.result?.session_id ?? null
  if (sessionId === null || !SESSION_ID.test(sessionId)) return not('its agent never started a session')
  if (input.tree !== undefined && 'reason' in input.tree) return not(input.tree.reason)
  const bundle = input.tree?.bundle
  const room = input.maxBytes - (bundle?.length ?? 0)
  const transcript = await readTranscript(input.configDir, input.cwd, sessionId, room)
  if (transcript === undefined) return not(`its CLI left no transcript of session ${sessionId}`)
  if (transcript === 'too_large') return not(`its session transcript${bundle === undefined ? '' : ' and the git bundle of its final tree'} are larger than MAX_RESUME_BYTES (${input.maxBytes})`)
  const artifacts: Kept['artifacts'] = [[ARTIFACT.session, await compressTranscript(transcript)]]
  if (bundle !== undefined) artifacts.push([ARTIFACT.tree, bundle])
  return {
    state: { resumable: true, session_id: sessionId, transcript_bytes: transcript.length, tree: input.tree?.tree ?? null },
    artifacts,
  }
}
