import { Type, type Static } from 'typebox'
import { EFFORT_LEVELS, MAX_APPEND_SYSTEM_PROMPT_BYTES, MAX_TOOL_RULE_LENGTH, MAX_TOOL_RULES } from '../agent/agent-controls.ts'
import { isTerminal, type RunRecord } from '../engine/types.ts'
import { AnyObject, NAME_LIST_PATTERN, NAME_MAX_LENGTH, NAME_PATTERN, NO_CONTROL_CHARACTERS_PATTERN, NO_NUL_PATTERN, Nullable, StringEnum } from './common.ts'

export const MAX_PROMPT_BYTES = 1024 * 1024
export const MAX_METADATA_BYTES = 16 * 1024

const Name = (description: string) => Type.String({ minLength: 1, maxLength: NAME_MAX_LENGTH, pattern: NAME_PATTERN, description })

const ToolRules = (description: string) => Type.Array(
  Type.String({ minLength: 1, maxLength: MAX_TOOL_RULE_LENGTH, pattern: NO_CONTROL_CHARACTERS_PATTERN }),
  { maxItems: MAX_TOOL_RULES, description }
)

export const ExecuteBody = Type.Object({
  prompt: Type.String({ minLength: 1, maxLength: MAX_PROMPT_BYTES, description: 'The task for the agent; up to 1 MiB of UTF-8. Sent to the CLI on stdin.' }),
  agent: Type.Optional(Name('Runs `.claude/agents/NAME.md` (or a built-in agent) as the main agent.')),
  model: Type.Optional(Name('A model alias (haiku, sonnet, opus) or a full model id.')),
  ref: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'Branch, tag or commit of BASE_REPO to check out (default: BASE_REF).' })),
  push: Type.Optional(Type.Boolean({ description: 'Commit what the agent left and push it as branch claude-runner/<job_id> (needs ALLOW_PUSH).' })),
  timeout_seconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 7 * 24 * 3600, description: 'Execution timeout (not counting queue wait). Default JOB_TIMEOUT_SECONDS.' })),
  max_turns: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
  max_budget_usd: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 100_000 })),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { maxProperties: 64, description: 'Free-form JSON kept with the job (up to 16 KiB).' })),
  callback_url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: 'POSTed the job JSON, signed, when it ends. The host must be in WEBHOOK_ALLOWED_HOSTS.' })),
  json_schema: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema (draft-07, top-level "type": "object", up to 64 KiB) the answer must match: `--json-schema`. The finished job has `result.structured_output`.' })),
  allowed_tools: Type.Optional(ToolRules('Permission rules in the CLI\'s syntax (`Read`, `Bash(git diff:*)`, `mcp__github__*`), one per item: `--allowedTools`.')),
  disallowed_tools: Type.Optional(ToolRules('Tools or rules the agent may not use, one per item: `--disallowedTools`.')),
  append_system_prompt: Type.Optional(Type.String({ minLength: 1, maxLength: MAX_APPEND_SYSTEM_PROMPT_BYTES, pattern: NO_NUL_PATTERN, description: 'Added to the end of Claude Code\'s system prompt (up to 64 KiB of UTF-8, no NUL): `--append-system-prompt`.' })),
  effort: Type.Optional(StringEnum(EFFORT_LEVELS, { description: '`--effort`.' })),
  fallback_model: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, pattern: NAME_LIST_PATTERN, description: 'Models to fall back to when the model is overloaded, comma-separated, in order: `--fallback-model`.' })),
  mcp_servers: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: NAME_MAX_LENGTH }), { maxItems: 32, uniqueItems: true, description: 'Names of MCP server profiles of MCP_CONFIG_DIR; only their servers run (`--mcp-config` + `--strict-mcp-config`). `[]`: no MCP servers at all.' })),
  continue_from: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'The id of a finished job of yours: this job resumes its Claude Code session (`--resume`) with this prompt, in a workspace that starts where it left off (its commits and uncommitted changes). Not with `ref`.' })),
}, { additionalProperties: false })
export type ExecuteBody = Static<typeof ExecuteBody>

export const JobStatusSchema = StringEnum(['queued', 'running', 'completed', 'failed', 'timed_out', 'cancelled'])

const Result = Type.Object({
  text: Nullable(Type.String()),
  is_error: Type.Boolean(),
  subtype: Type.String(),
  num_turns: Nullable(Type.Integer()),
  total_cost_usd: Nullable(Type.Number()),
  usage: Nullable(AnyObject),
  model_usage: Nullable(AnyObject),
  session_id: Nullable(Type.String()),
  duration_ms: Nullable(Type.Number()),
  duration_api_ms: Nullable(Type.Number()),
  terminal_reason: Nullable(Type.String()),
  api_error_status: Nullable(Type.Integer()),
  errors: Type.Array(Type.String()),
  permission_denials: Type.Array(Type.Unknown()),
  structured_output: Nullable(AnyObject),
}, { description: "The CLI's final `result` message." })

const Changes = Type.Object({
  base_commit: Type.String({ description: 'Where the workspace started: a commit of BASE_REPO, or for a continuation the final tree of the job it continues.' }),
  original_base_commit: Type.String({ description: 'The commit of BASE_REPO a chain of continuations started from (base_commit, for a job that continues none).' }),
  head_commit: Type.String(),
  commits: Type.Array(Type.Object({ sha: Type.String(), subject: Type.String() })),
  files: Type.Array(Type.Object({ path: Type.String(), status: Type.String(), old_path: Type.Optional(Type.String()) })),
  stats: Type.Object({ files_changed: Type.Integer(), insertions: Type.Integer(), deletions: Type.Integer() }),
  diff: Type.String(),
  diff_truncated: Type.Boolean(),
  push: Nullable(Type.Object({
    branch: Type.Optional(Type.String()),
    commit: Type.Optional(Type.String()),
    remote: Type.Optional(Type.String()),
    error: Type.Optional(Type.String()),
  })),
}, { description: 'What the agent changed in its git workspace, measured against where it started (base_commit).' })

export const JobView = Type.Object({
  job_id: Type.String(),
  tenant: Type.String({ description: 'The tenant that submitted it (`default` for AUTH_TOKENS).' }),
  status: JobStatusSchema,
  phase: StringEnum(['queued', 'preparing', 'running', 'collecting', 'finished']),
  queue_position: Nullable(Type.Integer({ description: '1-based place in the queue while queued.' })),
  created_at: Type.String({ description: 'ISO 8601 time' }),
  started_at: Nullable(Type.String({ description: 'ISO 8601 time' })),
  finished_at: Nullable(Type.String({ description: 'ISO 8601 time' })),
  queue_wait_ms: Nullable(Type.Integer()),
  run_ms: Nullable(Type.Integer({ description: 'From leaving the queue to the end: preparing + running + collecting.' })),
  phase_ms: Type.Object({
    preparing: Type.Optional(Type.Integer()),
    running: Type.Optional(Type.Integer()),
    collecting: Type.Optional(Type.Integer()),
  }),
  timeout_seconds: Type.Number(),
  request: Type.Object({
    prompt: Type.String(),
    agent: Nullable(Type.String()),
    model: Nullable(Type.String()),
    ref: Nullable(Type.String()),
    push: Type.Boolean(),
    timeout_seconds: Nullable(Type.Number()),
    max_turns: Nullable(Type.Integer()),
    max_budget_usd: Nullable(Type.Number()),
    metadata: Nullable(AnyObject),
    callback_url: Nullable(Type.String()),
    json_schema: Nullable(AnyObject),
    allowed_tools: Nullable(Type.Array(Type.String())),
    disallowed_tools: Nullable(Type.Array(Type.String())),
    append_system_prompt: Nullable(Type.String()),
    effort: Nullable(Type.String()),
    fallback_model: Nullable(Type.String()),
    mcp_servers: Nullable(Type.Array(Type.String())),
    continue_from: Nullable(Type.String()),
  }),
  continued_from: Nullable(Type.String({ description: 'The job this one continues (continue_from).' })),
  resumable: Nullable(Type.Boolean({ description: 'Once it ended: whether continue_from may name it (it kept its session; see MAX_RESUME_BYTES).' })),
  agent: Nullable(Type.Object({
    instance: Nullable(Type.String({ description: 'INSTANCE_ID of the replica that ran it.' })),
    pid: Nullable(Type.Integer({ description: 'On that replica.' })),
    session_id: Nullable(Type.String()),
    model: Nullable(Type.String()),
    claude_code_version: Nullable(Type.String()),
  })),
  result: Nullable(Result),
  exit: Nullable(Type.Object({ code: Nullable(Type.Integer()), signal: Nullable(Type.String()) })),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  output: Nullable(Type.Object({
    bytes: Type.Integer({ description: 'Bytes the agent printed on stdout.' }),
    kept_bytes: Type.Integer({ description: 'Bytes kept (at most MAX_OUTPUT_BYTES); see GET /jobs/{id}/output.' }),
    lines: Type.Integer(),
    truncated: Type.Boolean(),
    stderr_tail: Type.String(),
  })),
  changes: Nullable(Changes),
  cancel: Nullable(Type.Object({ requested_at: Type.String({ description: 'ISO 8601 time' }), reason: Type.String() })),
  callback: Nullable(Type.Object({
    delivered: Nullable(Type.Boolean()),
    attempts: Type.Array(Type.Object({
      at: Type.String({ description: 'ISO 8601 time' }),
      status: Nullable(Type.Integer()),
      error: Nullable(Type.String()),
      duration_ms: Type.Integer(),
    })),
  })),
})
export type JobView = Static<typeof JobView>

const PROMPT_LINE_MAX = 200

/** A lighter view for listings: no prompt (its first line only), output or diff. */
export const JobSummary = Type.Object({
  job_id: Type.String(),
  tenant: Type.String(),
  status: JobStatusSchema,
  phase: Type.String(),
  created_at: Type.String({ description: 'ISO 8601 time' }),
  started_at: Nullable(Type.String({ description: 'ISO 8601 time' })),
  finished_at: Nullable(Type.String({ description: 'ISO 8601 time' })),
  agent: Nullable(Type.String()),
  model: Nullable(Type.String()),
  ref: Nullable(Type.String()),
  metadata: Nullable(AnyObject),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  total_cost_usd: Nullable(Type.Number()),
  prompt_first_line: Type.String({ description: `The prompt's first line that is not blank, trimmed, at most ${PROMPT_LINE_MAX} characters.` }),
  run_ms: Nullable(Type.Integer({ description: 'From leaving the queue to the end, once the job ended.' })),
})
export type JobSummary = Static<typeof JobSummary>

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()

export function toJobView (record: RunRecord, queuePosition: number | undefined): JobView {
  const { result } = record
  const request = record.request ?? { prompt: record.execute.spec.prompt }
  return {
    job_id: record.id,
    tenant: record.tenant,
    status: record.status,
    phase: record.phase,
    queue_position: queuePosition ?? null,
    created_at: new Date(record.createdAt).toISOString(),
    started_at: iso(record.startedAt),
    finished_at: iso(record.finishedAt),
    queue_wait_ms: record.startedAt === null ? null : record.startedAt - record.createdAt,
    run_ms: record.startedAt === null || record.finishedAt === null ? null : record.finishedAt - record.startedAt,
    phase_ms: { ...record.phaseMs },
    timeout_seconds: record.timeoutMs / 1000,
    request: {
      prompt: request.prompt,
      agent: request.agent ?? null,
      model: request.model ?? null,
      ref: request.ref ?? null,
      push: request.push === true,
      timeout_seconds: request.timeout_seconds ?? null,
      max_turns: request.max_turns ?? null,
      max_budget_usd: request.max_budget_usd ?? null,
      metadata: request.metadata ?? null,
      callback_url: request.callback_url ?? null,
      json_schema: request.json_schema ?? null,
      allowed_tools: request.allowed_tools ?? null,
      disallowed_tools: request.disallowed_tools ?? null,
      append_system_prompt: request.append_system_prompt ?? null,
      effort: request.effort ?? null,
      fallback_model: request.fallback_model ?? null,
      mcp_servers: request.mcp_servers ?? null,
      continue_from: request.continue_from ?? null,
    },
    continued_from: record.execute.resume?.run ?? null,
    resumable: isTerminal(record.status) ? record.resume?.resumable ?? false : null,
    agent: record.pid === null && record.agent === null
      ? null
      : {
          instance: record.instance,
          pid: record.pid,
          session_id: record.agent?.session_id ?? null,
          model: record.agent?.model ?? null,
          claude_code_version: record.agent?.claude_code_version ?? null,
        },
    result: result === null
      ? null
      : {
          text: typeof result.result === 'string' ? result.result : null,
          is_error: result.is_error,
          subtype: result.subtype,
          num_turns: result.num_turns ?? null,
          total_cost_usd: result.total_cost_usd ?? null,
          usage: result.usage ?? null,
          model_usage: result.modelUsage ?? null,
          session_id: result.session_id ?? null,
          duration_ms: result.duration_ms ?? null,
          duration_api_ms: result.duration_api_ms ?? null,
          terminal_reason: result.terminal_reason ?? null,
          api_error_status: result.api_error_status ?? null,
          errors: Array.isArray(result.errors) ? result.errors : [],
          permission_denials: Array.isArray(result.permission_denials) ? result.permission_denials : [],
          structured_output: isObject(result.structured_output) ? result.structured_output : null,
        },
    exit: record.exit,
    error: record.error,
    output: record.output === null
      ? null
      : {
          bytes: record.output.bytes,
          kept_bytes: record.output.keptBytes,
          lines: record.output.lines,
          truncated: record.output.truncated,
          stderr_tail: record.output.stderrTail,
        },
    changes: record.changes,
    cancel: record.cancel === null ? null : { requested_at: new Date(record.cancel.requestedAt).toISOString(), reason: record.cancel.reason },
    callback: record.callback === null
      ? null
      : {
          delivered: record.callback.delivered,
          attempts: record.callback.attempts.map(attempt => ({ ...attempt, at: new Date(attempt.at).toISOString() })),
        },
  }
}

export function toJobSummary (record: RunRecord): JobSummary {
  const request = record.request ?? { prompt: record.execute.spec.prompt }
  return {
    job_id: record.id,
    tenant: record.tenant,
    status: record.status,
    phase: record.phase,
    created_at: new Date(record.createdAt).toISOString(),
    started_at: iso(record.startedAt),
    finished_at: iso(record.finishedAt),
    agent: request.agent ?? null,
    model: request.model ?? null,
    ref: request.ref ?? null,
    metadata: request.metadata ?? null,
    error: record.error,
    total_cost_usd: record.result?.total_cost_usd ?? null,
    prompt_first_line: firstLine(request.prompt, PROMPT_LINE_MAX),
    run_ms: record.startedAt === null || record.finishedAt === null ? null : record.finishedAt - record.startedAt,
  }
}

/**
 * The first line with something on it, cut at `max` characters (code points). Listings call it
 * for every job on a page and prompts reach 1 MiB, so it looks at no more than it keeps.
 */
export function firstLine (text: string, max: number): string {
  const start = text.search(/\S/)
  if (start === -1) return ''
  const head = text.slice(start, start + 2 * max + 1)
  const chars = Array.from(head.split(/[\r\n]/, 1)[0]!.trimEnd())
  return chars.length <= max ? chars.join('') : chars.slice(0, max - 1).join('') + '…'
}
