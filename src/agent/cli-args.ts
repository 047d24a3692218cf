/** What one `claude -p` run is asked to do. */
export interface AgentSpec {
  /** Sent on stdin, never on the command line (argv elements are capped at 128 KiB on Linux). */
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
}

/**
 * Builds the CLI's argv. Values travel as `--flag=value`, one argv element each, so no value can
 * ever be read as another option, whatever it starts with; there is no shell anywhere.
 */
export function buildCliArgs (spec: AgentSpec): string[] {
  const args = ['-p', '--output-format=stream-json', '--verbose']
  if (spec.includePartialMessages === true) args.push('--include-partial-messages')
  if (spec.model !== undefined) args.push(`--model=${spec.model}`)
  if (spec.agent !== undefined) args.push(`--agent=${spec.agent}`)
  if (spec.maxTurns !== undefined) args.push(`--max-turns=${spec.maxTurns}`)
  if (spec.maxBudgetUsd !== undefined) args.push(`--max-budget-usd=${spec.maxBudgetUsd}`)
  if (spec.permissionMode !== undefined) args.push(`--permission-mode=${spec.permissionMode}`)
  if (spec.systemPrompt !== undefined) args.push(`--system-prompt=${spec.systemPrompt}`)
  if (spec.appendSystemPrompt !== undefined) args.push(`--append-system-prompt=${spec.appendSystemPrompt}`)
  if (spec.systemPromptFile !== undefined) args.push(`--system-prompt-file=${spec.systemPromptFile}`)
  if (spec.appendSystemPromptFile !== undefined) args.push(`--append-system-prompt-file=${spec.appendSystemPromptFile}`)
  return args
}
