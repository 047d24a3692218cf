import { Type, type Static, type TSchema } from 'typebox'

/**
 * A schema or null. A schema with one `type` becomes `type: [type, "null"]`, which
 * fast-json-stringify serialises with a null check; an `anyOf` would make it run a validator over
 * the whole value on every response to pick a branch.
 */
export const Nullable = <T extends TSchema>(schema: T) => {
  const { type } = schema as { type?: unknown }
  if (typeof type !== 'string') return Type.Union([schema, Type.Null()])
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [type, 'null'] })
}

/** One of a few strings, as `type: string, enum: [...]` (not an `anyOf` of literals: see Nullable). */
export const StringEnum = <const T extends readonly string[]>(values: T, options: { description?: string } = {}) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options })

/** A free-form JSON object (usage, model usage, metadata). */
export const AnyObject = Type.Record(Type.String(), Type.Unknown())

/** Names of agents and models: what `claude --agent` / `--model` take, and nothing that could be an option. */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]*$'
export const NAME_MAX_LENGTH = 128

/** One name, or several comma-separated (`--fallback-model sonnet,haiku`). */
export const NAME_LIST_PATTERN = `^${NAME_PATTERN.slice(1, -1)}(,${NAME_PATTERN.slice(1, -1)})*$`
export const NO_CONTROL_CHARACTERS_PATTERN = '^[^\\u0000-\\u001f\\u007f]+$'
/** NUL cannot be passed in an argv element. */
export const NO_NUL_PATTERN = '^[^\\u0000]*$'

/** Tenant names (TENANTS_FILE): they appear in Redis keys and metric labels. */
export const TENANT_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$'

/** A UTC day (GET /usage). */
export const DATE_PATTERN = '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'

/** What a value that fails one of these patterns was expected to be, for the 400's message. */
export const PATTERN_MESSAGES: Readonly<Record<string, string>> = {
  [NAME_PATTERN]: 'must be a name: letters, digits, ".", "_", "-", ":", starting with a letter or digit',
  [NAME_LIST_PATTERN]: 'must be one name or several separated by commas (no spaces): letters, digits, ".", "_", "-", ":", each starting with a letter or digit',
  [NO_CONTROL_CHARACTERS_PATTERN]: 'must not contain control characters (newlines, tabs, NUL...)',
  [NO_NUL_PATTERN]: 'must not contain NUL characters',
  [DATE_PATTERN]: 'must be a date YYYY-MM-DD (UTC)',
  [TENANT_PATTERN]: 'must be a tenant name: 1-63 lower-case letters, digits, "_" or "-", starting with a letter or digit',
}

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String({ description: 'Stable, machine-readable error code.' }),
    message: Type.String({ description: 'What went wrong and what to do about it.' }),
  }, { additionalProperties: true }),
}, { description: 'Every error has this shape.' })
