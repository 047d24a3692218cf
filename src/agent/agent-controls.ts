import { AppError } from '../errors.ts'
import type { AgentSpec } from './cli-args.ts'
import type { JsonSchemaChecker } from './json-schema-check.ts'
import type { McpProfiles } from './mcp-profiles.ts'

/** `claude --effort` levels (2.1.332); the CLI ignores any other value with a warning. */
export const EFFORT_LEVELS = ['low', 'medium', 'high', 'xhigh', 'max'] as const
export type EffortLevel = (typeof EFFORT_LEVELS)[number]

export const MAX_JSON_SCHEMA_BYTES = 64 * 1024
export const MAX_JSON_SCHEMA_DEPTH = 64
export const MAX_APPEND_SYSTEM_PROMPT_BYTES = 64 * 1024
export const MAX_TOOL_RULES = 100
export const MAX_TOOL_RULE_LENGTH = 256

/** How a run may be steered beyond its prompt: the request's own names, plain JSON. */
export interface AgentControlFields {
  json_schema?: Record<string, unknown> | undefined
  allowed_tools?: string[] | undefined
  disallowed_tools?: string[] | undefined
  append_system_prompt?: string | undefined
  effort?: EffortLevel | undefined
  fallback_model?: string | undefined
  mcp_servers?: string[] | undefined
}

/**
 * Checks what a request asks of the agent beyond its prompt, and turns it into the run's spec.
 * The checks mirror what Claude Code 2.1.332 itself takes (test/fixtures/cli-samples/README.md),
 * so a request it would refuse, or silently half-apply, is a 400 naming the field instead of a
 * failed run.
 */
export class AgentControls {
  readonly #mcp: McpProfiles
  readonly #schemas: JsonSchemaChecker

  constructor (options: { mcpProfiles: McpProfiles, schemas: JsonSchemaChecker }) {
    this.#mcp = options.mcpProfiles
    this.#schemas = options.schemas
  }

  get mcpProfiles (): McpProfiles {
    return this.#mcp
  }

  close (): Promise<void> {
    return this.#schemas.close()
  }

  /** Throws a 400 naming the first field that the CLI would not take as asked. */
  async check (fields: AgentControlFields): Promise<void> {
    for (const name of ['allowed_tools', 'disallowed_tools'] as const) {
      for (const [index, rule] of (fields[name] ?? []).entries()) {
        const problem = toolRuleProblem(rule)
        if (problem !== undefined) throw invalid(`${name}.${index}`, `body.${name}.${index} ${JSON.stringify(rule)} ${problem}`)
      }
    }
    if (fields.append_system_prompt !== undefined) {
      const bytes = Buffer.byteLength(fields.append_system_prompt)
      if (bytes > MAX_APPEND_SYSTEM_PROMPT_BYTES) throw invalid('append_system_prompt', `body.append_system_prompt is ${bytes} bytes; the limit is ${MAX_APPEND_SYSTEM_PROMPT_BYTES} (64 KiB)`)
    }
    if (fields.mcp_servers !== undefined) this.#mcp.files(fields.mcp_servers, 'mcp_servers')
    // Last: the only check that takes time.
    if (fields.json_schema !== undefined) {
      const problem = await this.jsonSchemaProblem(fields.json_schema)
      if (problem !== undefined) throw invalid('json_schema', `body.json_schema ${problem}`)
    }
  }

  /** Why the CLI (or the API behind it) would not take `schema` for `--json-schema`, or undefined. */
  async jsonSchemaProblem (schema: unknown): Promise<string | undefined> {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return 'must be a JSON Schema object'
    if (deeperThan(schema, MAX_JSON_SCHEMA_DEPTH)) return `is nested more than ${MAX_JSON_SCHEMA_DEPTH} levels deep`
    const bytes = Buffer.byteLength(JSON.stringify(schema))
    if (bytes > MAX_JSON_SCHEMA_BYTES) return `is ${bytes} bytes of JSON; the limit is ${MAX_JSON_SCHEMA_BYTES} (64 KiB)`
    // The CLI hands the schema to the API as the input_schema of a tool, which must be an object.
    if ((schema as { type?: unknown }).type !== 'object') return 'must describe an object: its top level needs "type": "object"'
    const problem = await this.#schemas.problem(schema)
    return problem === undefined ? undefined : `is not a JSON Schema the CLI takes (draft-07, strict; formats are not checked): ${problem}`
  }

  /** The spec fields for these controls (already checked); MCP profile names become their files. */
  toSpec (fields: AgentControlFields): Partial<AgentSpec> {
    const spec: Partial<AgentSpec> = {}
    if (fields.json_schema !== undefined) spec.jsonSchema = fields.json_schema
    if (fields.allowed_tools !== undefined) spec.allowedTools = fields.allowed_tools
    if (fields.disallowed_tools !== undefined) spec.disallowedTools = fields.disallowed_tools
    if (fields.append_system_prompt !== undefined) spec.appendSystemPrompt = fields.append_system_prompt
    if (fields.effort !== undefined) spec.effort = fields.effort
    if (fields.fallback_model !== undefined) spec.fallbackModel = fields.fallback_model
    if (fields.mcp_servers !== undefined) spec.mcpConfigFiles = this.#mcp.files(fields.mcp_servers, 'mcp_servers')
    return spec
  }
}

/**
 * Why `rule` is not one permission rule, or undefined. The CLI splits a value on commas and
 * whitespace outside parentheses (`Read,Write` is two rules, `Bash(echo a,b)` one), so such a
 * value would quietly become several rules: each must be an item of its own.
 */
export function toolRuleProblem (rule: string): string | undefined {
  let depth = 0
  for (const char of rule) {
    if (char === '(') depth++
    else if (char === ')') depth = Math.max(0, depth - 1)
    else if (depth === 0 && (char === ',' || /\s/.test(char))) {
      return 'holds a comma or a space outside parentheses, which the CLI reads as several rules: send each rule as an item of its own'
    }
  }
  return undefined
}

/** Whether `value` nests objects and arrays deeper than `max` (walked without recursion). */
function deeperThan (value: object, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]]
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!
    if (typeof item !== 'object' || item === null) continue
    if (depth > max) return true
    for (const child of Object.values(item)) stack.push([child, depth + 1])
  }
  return false
}

function invalid (field: string, message: string): AppError {
  return new AppError('validation_error', message, { details: { field } })
}
