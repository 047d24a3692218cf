import { Type, type Static } from 'typebox'
import { Nullable, StringEnum } from './common.ts'

export const CHAT_ROLES = ['system', 'developer', 'user', 'assistant', 'tool', 'function'] as const
/** OpenAI's levels that map onto `claude --effort` (`minimal` is taken as `low`); `none` has no counterpart. */
export const REASONING_EFFORTS = ['minimal', 'low', 'medium', 'high', 'xhigh', 'max'] as const

const TextPart = Type.Object({ type: Type.Literal('text'), text: Type.String() }, { additionalProperties: true })
const RefusalPart = Type.Object({ type: Type.Literal('refusal'), refusal: Type.String() }, { additionalProperties: true })

const Message = Type.Object({
  role: StringEnum(CHAT_ROLES, { description: '`function` is read as `tool`.' }),
  content: Type.Optional(Type.Union([Type.String(), Type.Array(Type.Union([TextPart, RefusalPart])), Type.Null()], { description: 'Text only: image, audio and file parts are refused (400 `unsupported`).' })),
  name: Type.Optional(Type.String({ maxLength: 256 })),
  tool_call_id: Type.Optional(Type.String({ maxLength: 256 })),
  tool_calls: Type.Optional(Nullable(Type.Array(Type.Object({}, { additionalProperties: true })))),
  refusal: Type.Optional(Nullable(Type.String())),
}, { additionalProperties: true })

/** Something the service cannot do, taken only as absent: null, or the one value that asks for nothing. */
export const Nothing = <T>(schema: Record<string, unknown>, description: string) =>
  Type.Optional(Type.Unsafe<T | null>({ anyOf: [{ type: 'null' }, schema], description }))

const ResponseFormat = Type.Union([
  Type.Object({ type: Type.Literal('text') }),
  Type.Object({ type: Type.Literal('json_object') }),
  Type.Object({
    type: Type.Literal('json_schema'),
    json_schema: Type.Object({
      name: Type.String({ minLength: 1, maxLength: 256 }),
      description: Type.Optional(Type.String()),
      schema: Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema (draft-07) whose top level is `"type": "object"`, up to 64 KiB.' }),
      strict: Type.Optional(Nullable(Type.Boolean())),
    }),
  }),
], { description: '`json_schema` and `json_object` run the CLI with `--json-schema`: the content is the JSON text of an object matching it.' })

/**
 * OpenAI's Chat Completions request, as strict as the handler: what the CLI cannot do is allowed
 * here only in the form that asks for nothing (`n: 1`, `tools: []`, `logprobs: false`, ...).
 * Those refusals run before this schema (the route's preValidation), so they keep the code
 * `unsupported` and say why. Sampling parameters are accepted and ignored (docs/api.md lists them).
 */
export const ChatCompletionBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 256 }),
  messages: Type.Array(Message, { minItems: 1, maxItems: 100_000 }),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(Nullable(Type.Object({ include_usage: Type.Optional(Nullable(Type.Boolean())) }, { additionalProperties: true }))),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 1, description: 'One choice only.' }))),
  tools: Nothing({ type: 'array', maxItems: 0 }, 'Client-side tools are refused: Claude Code runs its own.'),
  functions: Nothing({ type: 'array', maxItems: 0 }, 'Refused, like tools.'),
  tool_choice: Nothing({ const: 'none' }, 'Only "none".'),
  function_call: Nothing({ const: 'none' }, 'Only "none".'),
  modalities: Type.Optional(Nullable(Type.Array(StringEnum(['text'])))),
  audio: Type.Optional(Type.Null()),
  logprobs: Nothing({ const: false }, 'Log probabilities are refused.'),
  stop: Nothing({ type: 'array', maxItems: 0 }, 'Stop sequences are refused: the CLI cannot stop the model at them.'),
  response_format: Type.Optional(Nullable(ResponseFormat)),
  reasoning_effort: Type.Optional(Nullable(StringEnum(REASONING_EFFORTS, { description: '`--effort`; `minimal` runs as `low`.' }))),
}, { additionalProperties: true })
export type ChatCompletionBody = Static<typeof ChatCompletionBody>

const Usage = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
  prompt_tokens_details: Type.Object({ cached_tokens: Type.Integer() }),
})

export const ChatCompletion = Type.Object({
  id: Type.String(),
  object: Type.Literal('chat.completion'),
  created: Type.Integer(),
  model: Type.String(),
  system_fingerprint: Type.Null(),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({ role: Type.Literal('assistant'), content: Type.String(), refusal: Type.Null() }),
    logprobs: Type.Null(),
    finish_reason: StringEnum(['stop', 'length']),
  })),
  usage: Usage,
})
export type ChatCompletion = Static<typeof ChatCompletion>

export const ModelObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('model'),
  created: Type.Integer(),
  owned_by: Type.String(),
})

export const ModelList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(ModelObject),
})

export const OpenAIErrorBody = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.String(),
    param: Nullable(Type.String()),
    code: Nullable(Type.String()),
  }),
})
