import { AppError } from '../errors.ts'

/**
 * One turn of a conversation as every protocol adapter maps it (Chat Completions messages,
 * Responses input items, Anthropic messages): its text only, since anything else is refused.
 */
export interface Turn {
  role: 'system' | 'user' | 'assistant' | 'tool'
  text: string
  /** Where the turn came from in the request (`messages.2`), for errors that name it. */
  field: string
  name?: string | undefined
  toolCallId?: string | undefined
}

export interface AgentPrompt {
  /** System turns, for --append-system-prompt (or --system-prompt). */
  system: string | undefined
  /** What goes to the CLI on stdin. */
  prompt: string
}

const TRANSCRIPT_PREAMBLE = 'Below is a conversation between a user and you, the assistant, oldest message first. ' +
  'Each message is wrapped in a tag naming its role. Reply as the assistant to the last message; do not repeat the transcript or its tags.'

/**
 * Maps a conversation to one `claude -p` run. A conversation of a single user turn goes to the
 * CLI as it is; a longer one becomes a transcript that keeps every turn's role and order, so the
 * last user turn is last. `conversation` names the request's list of turns in errors.
 */
export function toAgentPrompt (turns: readonly Turn[], conversation: string): AgentPrompt {
  const system: string[] = []
  const tagged: Array<{ tag: string, attributes: string, text: string }> = []
  for (const turn of turns) {
    switch (turn.role) {
      case 'system':
        // The system prompt travels as an argv element (or a file), where NUL cannot go.
        if (turn.text.includes('\u0000')) {
          throw new AppError('validation_error', `${turn.field} holds a NUL character, which a system prompt cannot carry`, { details: { field: turn.field } })
        }
        if (turn.text !== '') system.push(turn.text)
        break
      case 'user':
        tagged.push({ tag: 'user', attributes: nameAttribute(turn.name), text: turn.text })
        break
      case 'assistant':
        tagged.push({ tag: 'assistant', attributes: nameAttribute(turn.name), text: turn.text })
        break
      case 'tool':
        tagged.push({ tag: 'tool_result', attributes: turn.toolCallId ? ` tool_call_id="${escapeAttribute(turn.toolCallId)}"` : nameAttribute(turn.name), text: turn.text })
        break
    }
  }
  if (tagged.length === 0) {
    throw new AppError('validation_error', `${conversation} has no user message: at least one message must not be a system or developer message`, { details: { field: conversation } })
  }
  const only = tagged[0]!
  const prompt = tagged.length === 1 && only.tag === 'user'
    ? only.text
    : [TRANSCRIPT_PREAMBLE, '', ...tagged.map(turn => `<${turn.tag}${turn.attributes}>\n${turn.text}\n</${turn.tag}>`)].join('\n')
  if (prompt.trim() === '') {
    throw new AppError('validation_error', 'the conversation has no text', { details: { field: conversation } })
  }
  return { system: system.length > 0 ? system.join('\n\n') : undefined, prompt }
}

/** A turn of text parts only: `kinds` are the part types that carry text (in `text`), anything else is refused, naming it. */
export function partsText (parts: ReadonlyArray<{ type: string, text?: unknown, refusal?: unknown }>, field: string, kinds: readonly string[]): string {
  const texts: string[] = []
  for (const [index, part] of parts.entries()) {
    if (kinds.includes(part.type) && typeof part.text === 'string') texts.push(part.text)
    else if (part.type === 'refusal' && typeof part.refusal === 'string') texts.push(part.refusal)
    else throw unsupportedPart(`${field}.${index}`, part.type)
  }
  return texts.join('\n')
}

export function unsupportedPart (field: string, type: unknown): AppError {
  return new AppError('unsupported', `${bracketed(field)} is of type ${JSON.stringify(type)}: only text content is supported (no images, audio, documents or files)`, { details: { field } })
}

/** `messages.0.content.1` as people write it: `messages[0].content[1]`. */
export function bracketed (field: string): string {
  return field.replace(/\.(\d+)/g, '[$1]')
}

function nameAttribute (name: string | undefined): string {
  return name ? ` name="${escapeAttribute(name)}"` : ''
}

function escapeAttribute (value: string): string {
  return value.replace(/[&"<>]/g, char => ({ '&': '&amp;', '"': '&quot;', '<': '&lt;', '>': '&gt;' })[char]!)
}
