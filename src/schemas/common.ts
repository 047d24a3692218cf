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

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String({ description: 'Stable, machine-readable error code.' }),
    message: Type.String({ description: 'What went wrong and what to do about it.' }),
  }, { additionalProperties: true }),
}, { description: 'Every error has this shape.' })
