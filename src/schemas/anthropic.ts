import { Type, type Static } from 'typebox'
import { EFFORT_LEVELS } from '../agent/agent-controls.ts'
import { Nullable, StringEnum } from './common.ts'
import { Nothing } from './openai.ts'

/*
 * Anthropic's Messages API (`/v1/messages`), as strict as the adapter (anthropic/messages.ts):
 * what the CLI cannot do (images, documents, client tools) is refused before this schema, with
 * the code `unsupported` naming it; sampling parameters are accepted and ignored.
 */

const TextBlock = Type.Object({ type: Type.Literal('text'), text: Type.String() }, { additionalProperties: true })

const MessageParam = Type.Object({
  role: StringEnum(['user', 'assistant']),
  content: Type.Union([Type.String(), Type.Array(TextBlock)], { description: 'Text only: image, document, tool_use, tool_result and thinking blocks are refused (400).' }),
}, { additionalProperties: true })

const OutputConfig = Type.Object({
  effort: Type.Optional(Nullable(StringEnum(EFFORT_LEVELS, { description: '`--effort`.' }))),
  format: Type.Optional(Nullable(Type.Object({
    type: Type.Literal('json_schema'),
    schema: Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema (draft-07) whose top level is `"type": "object"`, up to 64 KiB: `--json-schema`; the text is the JSON of an object matching it.' }),
  }, { additionalProperties: true }))),
}, { additionalProperties: true })

const conversation = {
  model: Type.String({ minLength: 1, maxLength: 256 }),
  messages: Type.Array(MessageParam, { minItems: 1, maxItems: 100_000 }),
  system: Type.Optional(Type.Union([Type.String(), Type.Array(TextBlock)], { description: 'Added to the system prompt.' })),
  tools: Nothing({ type: 'array', maxItems: 0 }, 'Client tools are refused: Claude Code runs its own.'),
  tool_choice: Type.Optional(Type.Object({ type: StringEnum(['auto', 'none']) }, { additionalProperties: true, description: 'Only `auto` or `none` (there are no client tools).' })),
  output_config: Type.Optional(OutputConfig),
}

export const MessageCreateBody = Type.Object({
  ...conversation,
  max_tokens: Type.Integer({ minimum: 1, description: 'Required, as by the API; not enforced: Claude Code decides the length of its answer.' }),
  stream: Type.Optional(Type.Boolean()),
  metadata: Type.Optional(Type.Object({ user_id: Type.Optional(Nullable(Type.String({ maxLength: 256 }))) }, { additionalProperties: true })),
  stop_sequences: Type.Optional(Type.Array(Type.String(), { maxItems: 1000, description: 'Accepted and ignored.' })),
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'Accepted and ignored.' })),
  top_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: 'Accepted and ignored.' })),
  top_k: Type.Optional(Type.Integer({ minimum: 0, description: 'Accepted and ignored.' })),
}, { additionalProperties: true })
export type MessageCreateBody = Static<typeof MessageCreateBody>

export const MessageCountTokensBody = Type.Object(conversation, { additionalProperties: true })
export type MessageCountTokensBody = Static<typeof MessageCountTokensBody>

export const AnthropicUsage = Type.Object({
  input_tokens: Type.Integer(),
  output_tokens: Type.Integer(),
  cache_creation_input_tokens: Type.Integer(),
  cache_read_input_tokens: Type.Integer(),
})

export const AnthropicMessage = Type.Object({
  id: Type.String(),
  type: Type.Literal('message'),
  role: Type.Literal('assistant'),
  model: Type.String(),
  content: Type.Array(Type.Object({ type: Type.Literal('text'), text: Type.String() })),
  stop_reason: StringEnum(['end_turn', 'max_tokens']),
  stop_sequence: Type.Null(),
  usage: AnthropicUsage,
})
export type AnthropicMessage = Static<typeof AnthropicMessage>

export const TokenCount = Type.Object({ input_tokens: Type.Integer({ description: 'An estimate: see docs/api.md.' }) })

export const AnthropicModel = Type.Object({
  type: Type.Literal('model'),
  id: Type.String(),
  display_name: Type.String(),
  created_at: Type.String({ description: 'RFC 3339.' }),
})

export const AnthropicModelList = Type.Object({
  data: Type.Array(AnthropicModel),
  has_more: Type.Boolean(),
  first_id: Nullable(Type.String()),
  last_id: Nullable(Type.String()),
})

export const AnthropicErrorBody = Type.Object({
  type: Type.Literal('error'),
  error: Type.Object({
    type: Type.String({ description: 'Anthropic\'s error type: invalid_request_error, authentication_error, not_found_error, rate_limit_error, api_error, overloaded_error...' }),
    message: Type.String(),
    code: Type.String({ description: 'The service\'s own stable code (docs/api.md).' }),
  }),
}, { description: 'Errors of the Messages API, in Anthropic\'s shape.' })
