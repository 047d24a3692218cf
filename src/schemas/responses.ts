import { Type, type Static } from 'typebox'
import { Nullable, StringEnum } from './common.ts'
import { Nothing, REASONING_EFFORTS } from './openai.ts'

/*
 * OpenAI's Responses API (`/v1/responses`), as strict as the adapter (openai/responses.ts): what
 * the CLI cannot do is allowed only in the form that asks for nothing; those refusals run before
 * this schema so they keep the code `unsupported` and say why.
 */

const InputText = Type.Object({ type: Type.Literal('input_text'), text: Type.String() }, { additionalProperties: true })
const OutputText = Type.Object({ type: Type.Literal('output_text'), text: Type.String() }, { additionalProperties: true })
const Refusal = Type.Object({ type: Type.Literal('refusal'), refusal: Type.String() }, { additionalProperties: true })

const InputMessage = Type.Object({
  type: Type.Optional(Type.Literal('message', { description: 'Other item types (tool calls and their outputs, reasoning, item references) are refused (400 `unsupported`).' })),
  role: StringEnum(['user', 'assistant', 'system', 'developer'], { description: '`system` and `developer` go to the system prompt, like `instructions`.' }),
  content: Type.Union([Type.String(), Type.Array(Type.Union([InputText, OutputText, Refusal]))], { description: 'Text only: image, file and audio parts are refused (400 `unsupported`).' }),
}, { additionalProperties: true })

const TextFormat = Type.Union([
  Type.Object({ type: Type.Literal('text') }),
  Type.Object({ type: Type.Literal('json_object') }),
  Type.Object({
    type: Type.Literal('json_schema'),
    name: Type.String({ minLength: 1, maxLength: 256 }),
    schema: Type.Record(Type.String(), Type.Unknown(), { description: 'A JSON Schema (draft-07) whose top level is `"type": "object"`, up to 64 KiB.' }),
    description: Type.Optional(Type.String()),
    strict: Type.Optional(Nullable(Type.Boolean())),
  }),
], { description: '`json_schema` and `json_object` run the CLI with `--json-schema`: the output text is the JSON of an object matching it.' })

export const ResponseCreateBody = Type.Object({
  model: Type.String({ minLength: 1, maxLength: 256 }),
  // The list first: a wrong item is then reported as itself (input.0.role), not as "not a string".
  input: Type.Union([Type.Array(InputMessage, { maxItems: 100_000 }), Type.String()], { description: 'A user message, or a conversation of messages, oldest first.' }),
  instructions: Type.Optional(Nullable(Type.String({ description: 'Added to the system prompt, like system messages.' }))),
  stream: Type.Optional(Nullable(Type.Boolean())),
  text: Type.Optional(Nullable(Type.Object({ format: Type.Optional(Nullable(TextFormat)) }, { additionalProperties: true }))),
  reasoning: Type.Optional(Nullable(Type.Object({
    effort: Type.Optional(Nullable(StringEnum(REASONING_EFFORTS, { description: '`--effort`; `minimal` runs as `low`; `none` is refused.' }))),
  }, { additionalProperties: true }))),
  metadata: Type.Optional(Nullable(Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 512 }), { maxProperties: 16, description: 'Kept with the response.' }))),
  store: Type.Optional(Nullable(Type.Boolean({ description: 'Keep the response for `GET /v1/responses/{id}` (JOB_TTL_SECONDS). Default true.' }))),
  previous_response_id: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 256, description: 'Not supported yet: 400 `unsupported` for a kept response, 404 `previous_response_not_found` otherwise.' }))),
  tools: Nothing({ type: 'array', maxItems: 0 }, 'Client-side tools are refused: Claude Code runs its own.'),
  tool_choice: Nothing({ enum: ['none', 'auto'] }, 'Only "none" or "auto" (there are no client tools).'),
  background: Nothing({ const: false }, 'Background responses are refused.'),
  conversation: Type.Optional(Type.Null({ description: 'Conversations kept by the server are refused.' })),
  prompt: Type.Optional(Type.Null({ description: 'Prompt templates are refused.' })),
}, { additionalProperties: true })
export type ResponseCreateBody = Static<typeof ResponseCreateBody>

const OutputMessage = Type.Object({
  type: Type.Literal('message'),
  id: Type.String(),
  status: StringEnum(['in_progress', 'completed', 'incomplete']),
  role: Type.Literal('assistant'),
  content: Type.Array(Type.Object({
    type: Type.Literal('output_text'),
    text: Type.String(),
    annotations: Type.Array(Type.Unknown(), { maxItems: 0 }),
    logprobs: Type.Array(Type.Unknown(), { maxItems: 0 }),
  })),
})

export const ResponseUsage = Type.Object({
  input_tokens: Type.Integer(),
  input_tokens_details: Type.Object({ cached_tokens: Type.Integer() }),
  output_tokens: Type.Integer(),
  output_tokens_details: Type.Object({ reasoning_tokens: Type.Integer() }),
  total_tokens: Type.Integer(),
})

export const ResponseObject = Type.Object({
  id: Type.String(),
  object: Type.Literal('response'),
  created_at: Type.Integer(),
  status: StringEnum(['queued', 'in_progress', 'completed', 'incomplete', 'failed', 'cancelled']),
  background: Type.Boolean(),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  incomplete_details: Nullable(Type.Object({ reason: Type.String() })),
  instructions: Nullable(Type.String()),
  max_output_tokens: Type.Null(),
  model: Type.String(),
  output: Type.Array(OutputMessage),
  parallel_tool_calls: Type.Boolean(),
  previous_response_id: Type.Null(),
  reasoning: Type.Object({ effort: Nullable(Type.String()), summary: Type.Null() }),
  store: Type.Boolean(),
  temperature: Type.Null(),
  text: Type.Object({ format: Type.Record(Type.String(), Type.Unknown()) }),
  tool_choice: Type.String(),
  tools: Type.Array(Type.Unknown(), { maxItems: 0 }),
  top_p: Type.Null(),
  truncation: Type.Literal('disabled'),
  usage: Nullable(ResponseUsage),
  user: Type.Null(),
  metadata: Type.Record(Type.String(), Type.String()),
})
export type ResponseObject = Static<typeof ResponseObject>

export const ResponseDeleted = Type.Object({
  id: Type.String(),
  object: Type.Literal('response'),
  deleted: Type.Literal(true),
})
