import { Type, type TSchema } from 'typebox'

export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

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
