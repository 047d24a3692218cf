/** What one `claude -p` run is asked to do. A plain, JSON-serialisable object. */
export interface AgentSpec {
  /**
   * Sent on stdin as one stream-json user message, never on the command line (argv elements are
   * capped at 128 KiB on Linux).
   */
  prompt: string
  model?: string | undefined
  agent?: string | undefined
  maxTurns?: number | undefined
  maxBudgetUsd?: number | undefined
  appendSystemPrompt?: string | undefined
  systemPrompt?: string | undefined
  /** Set by runAgent for system prompts too long for one argv element. */
  appendSystemPromptFile?: string | undefined
  systemPromptFile?: string | undefined
  permissionMode?: string | undefined
  /** Adds `stream_event` text deltas to the output (used to relay answers token by token). */
  includePartialMessages?: boolean | undefined
  /** A JSON Schema (already checked): the run must end with a `structured_output` matching it. */
  jsonSchema?: Record<string, unknown> | undefined
  /** Permission rules in the CLI's syntax, one rule each (`Read`, `Bash(git diff:*)`). */
  allowedTools?: readonly string[] | undefined
  disallowedTools?: readonly string[] | undefined
  effort?: string | undefined
  /** One model, or several comma-separated, tried in order. */
  fallbackModel?: string | undefined
  /**
   * MCP configuration files the CLI reads, by absolute path (operator-kept profiles, never a
   * request's). When set, even empty, only these servers run (`--strict-mcp-config`).
   */
  mcpConfigFiles?: readonly string[] | undefined
  /** A session id to resume (`--resume`): its transcript must be in the run's configuration folder. */
  resume?: string | undefined
  /**
   * `off`: render the system prompt afresh. A resumed session otherwise reuses the one its first run
   * recorded, and silently ignores a new `--append-system-prompt` or agent (measured, 2.1.332).
   */
  systemPromptSnapshot?: 'off' | undefined
}

/**
 * Builds the CLI's argv. Values travel as `--flag=value`, one argv element each, so no value can
 * ever be read as another option, whatever it starts with; there is no shell anywhere. The
 * variadic options (`--allowedTools <tools...>`, `--mcp-config <configs...>`) are repeated, one
 * `--flag=value` per value: in that form they never swallow the elements after them, and the
 * CLI adds the repeats up (measured with 2.1.332, see test/fixtures/cli-samples/README.md).
 *
 * The prompt never affects the argv: a CLI started before its prompt is known (a warm start) has
 * the argv a cold start of the same request would have. Every run reads its prompt as stream-json
 * (`--input-format=stream-json`), warm or cold: the CLI does not behave quite the same with text
 * input (measured: it tells the model another default timeout for background commands), so one
 * input format for all is what makes a warm run and a cold one the same run.
 */
export function buildCliArgs (spec: AgentSpec): string[] {
  const args = ['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose']
  if (spec.includePartialMessages === true) args.push('--include-partial-messages')
  if (spec.resume !== undefined) args.push(`--resume=${spec.resume}`)
  if (spec.systemPromptSnapshot !== undefined) args.push(`--system-prompt-snapshot=${spec.systemPromptSnapshot}`)
  if (spec.model !== undefined) args.push(`--model=${spec.model}`)
  if (spec.fallbackModel !== undefined) args.push(`--fallback-model=${spec.fallbackModel}`)
  if (spec.agent !== undefined) args.push(`--agent=${spec.agent}`)
  if (spec.effort !== undefined) args.push(`--effort=${spec.effort}`)
  if (spec.maxTurns !== undefined) args.push(`--max-turns=${spec.maxTurns}`)
  if (spec.maxBudgetUsd !== undefined) args.push(`--max-budget-usd=${spec.maxBudgetUsd}`)
  if (spec.permissionMode !== undefined) args.push(`--permission-mode=${spec.permissionMode}`)
  for (const rule of spec.allowedTools ?? []) args.push(`--allowedTools=${rule}`)
  for (const rule of spec.disallowedTools ?? []) args.push(`--disallowedTools=${rule}`)
  if (spec.mcpConfigFiles !== undefined) {
    for (const file of spec.mcpConfigFiles) args.push(`--mcp-config=${file}`)
    args.push('--strict-mcp-config')
  }
  if (spec.jsonSchema !== undefined) args.push(`--json-schema=${JSON.stringify(spec.jsonSchema)}`)
  if (spec.systemPrompt !== undefined) args.push(`--system-prompt=${spec.systemPrompt}`)
  if (spec.appendSystemPrompt !== undefined) args.push(`--append-system-prompt=${spec.appendSystemPrompt}`)
  if (spec.systemPromptFile !== undefined) args.push(`--system-prompt-file=${spec.systemPromptFile}`)
  if (spec.appendSystemPromptFile !== undefined) args.push(`--append-system-prompt-file=${spec.appendSystemPromptFile}`)
  return args
}
