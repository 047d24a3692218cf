import { Type, type Static } from 'typebox'
import { Nullable, StringEnum } from './common.ts'

const Part = Type.Object({ type: Type.String() }, { additionalProperties: true })

const Message = Type.Object({
  role: Type.String({ description: 'system, developer, user, assistant or tool' }),
  content: Type.Optional(Type.Union([Type.String(), Type.Array(Part), Type.Null()])),
  name: Type.Optional(Type.String({ maxLength: 256 })),
  tool_call_id: Type.Optional(Type.String({ maxLength: 256 })),
  tool_calls: Type.Optional(Nullable(Type.Array(Type.Object({}, { additionalProperties: true })))),
  refusal: Type.Optional(Nullable(Type.String())),
}, { additionalProperties: true })

/**
 * OpenAI's Chat Completions request. Parameters the CLI cannot honour are accepted and ignored
 * (docs/api.md lists them); the ones that would change the meaning of the answer are refused.
 */
export const ChatCompletionBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 256 }),
  messages: Type.Array(Message, { minItems: 1, maxItems: 100_000 }),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(Nullable(Type.Object({ include_usage: Type.Optional(Nullable(Type.Boolean())) }, { additionalProperties: true }))),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
  tools: Type.Optional(Type.Unknown()),
  tool_choice: Type.Optional(Type.Unknown()),
  functions: Type.Optional(Type.Unknown()),
  function_call: Type.Optional(Type.Unknown()),
  modalities: Type.Optional(Nullable(Type.Array(Type.String()))),
  audio: Type.Optional(Type.Unknown()),
  logprobs: Type.Optional(Nullable(Type.Boolean())),
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
