import { AppError } from '../errors.ts'

/** A Chat Completions message, as validated by the route's schema. */
export interface ChatMessage {
  role: string
  content?: string | Array<{ type: string, text?: unknown, refusal?: unknown }> | null | undefined
  name?: string | undefined
  tool_call_id?: string | undefined
  tool_calls?: unknown[] | null | undefined
  refusal?: string | null | undefined
}

export interface AgentPrompt {
  /** System and developer messages, for --append-system-prompt (or --system-prompt). */
  system: string | undefined
  /** What goes to the CLI on stdin. */
  prompt: string
}

const TRANSCRIPT_PREAMBLE = 'Below is a conversation between a user and you, the assistant, oldest message first. ' +
  'Each message is wrapped in a tag naming its role. Reply as the assistant to the last message; do not repeat the transcript or its tags.'

/**
 * Maps OpenAI messages to one `claude -p` run. A conversation of a single user message goes to the
 * CLI as it is; a longer one becomes a transcript that keeps every turn's role and order, so the
 * last user message is last. Anything that is not text is refused rather than silently dropped.
 */
export function toAgentPrompt (messages: readonly ChatMessage[]): AgentPrompt {
  const system: string[] = []
  const turns: Array<{ tag: string, attributes: string, text: string }> = []
  for (const [index, message] of messages.entries()) {
    const text = contentText(message, index)
    switch (message.role) {
      case 'system':
      case 'developer':
        // The system prompt travels as an argv element (or a file), where NUL cannot go.
        if (text.includes('\u0000')) {
          throw new AppError('validation_error', `messages[${index}].content holds a NUL character, which a system prompt cannot carry`, { details: { field: `messages.${index}.content` } })
        }
        if (text !== '') system.push(text)
        break
      case 'user':
        turns.push({ tag: 'user', attributes: nameAttribute(message), text })
        break
      case 'assistant': {
        const calls = (message.tool_calls ?? []).map(call => `(called a tool: ${JSON.stringify(call)})`)
        turns.push({ tag: 'assistant', attributes: nameAttribute(message), text: [text, ...calls].filter(part => part !== '').join('\n') })
        break
      }
      case 'tool':
      case 'function':
        turns.push({ tag: 'tool_result', attributes: message.tool_call_id ? ` tool_call_id="${escapeAttribute(message.tool_call_id)}"` : nameAttribute(message), text })
        break
      default:
        throw new AppError('validation_error', `messages[${index}].role ${JSON.stringify(message.role)} is not one of system, developer, user, assistant, tool`, { details: { field: `messages.${index}.role` } })
    }
  }
  if (turns.length === 0) {
    throw new AppError('validation_error', 'messages has no user message: at least one message must not be a system or developer message', { details: { field: 'messages' } })
  }
  const only = turns[0]!
  const prompt = turns.length === 1 && only.tag === 'user'
    ? only.text
    : [TRANSCRIPT_PREAMBLE, '', ...turns.map(turn => `<${turn.tag}${turn.attributes}>\n${turn.text}\n</${turn.tag}>`)].join('\n')
  if (prompt.trim() === '') {
    throw new AppError('validation_error', 'the conversation has no text', { details: { field: 'messages' } })
  }
  return { system: system.length > 0 ? system.join('\n\n') : undefined, prompt }
}

function contentText (message: ChatMessage, index: number): string {
  const { content } = message
  if (content === undefined || content === null) return message.refusal ?? ''
  if (typeof content === 'string') return content
  const parts: string[] = []
  for (const [partIndex, part] of content.entries()) {
    if (part.type === 'text' && typeof part.text === 'string') parts.push(part.text)
    else if (part.type === 'refusal' && typeof part.refusal === 'string') parts.push(part.refusal)
    else {
      throw new AppError('unsupported', `messages[${index}].content[${partIndex}] is of type ${JSON.stringify(part.type)}: only text content is supported (no images, audio or files)`, { details: { field: `messages.${index}.content.${partIndex}` } })
    }
  }
  return parts.join('\n')
}

function nameAttribute (message: ChatMessage): string {
  return message.name ? ` name="${escapeAttribute(message.name)}"` : ''
}

function escapeAttribute (value: string): string {
  return value.replace(/[&"<>]/g, char => ({ '&': '&amp;', '"': '&quot;', '<': '&lt;', '>': '&gt;' })[char]!)
}
