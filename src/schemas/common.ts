import { Type, type Static, type TSchema } from 'typebox'

/** An object (or array) or null. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

/**
 * A string, number, integer or boolean, or null, as `type: [..., "null"]`: fast-json-stringify
 * serialises that directly, where an `anyOf` makes it validate every value to pick a branch.
 */
export const NullableScalar = <T extends TSchema>(schema: T) => {
  const { type } = schema as { type?: unknown }
  if (typeof type !== 'string' || type === 'object' || type === 'array') throw new TypeError('NullableScalar takes a scalar schema')
  return Type.Unsafe<Static<T> | null>({ ...schema, type: [type, 'null'] })
}

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
