import { TOKEN } from './app.ts'

export interface SseEvent {
  id: number | undefined
  type: string
  data: any
}

/**
 * Follows `path` over real HTTP and collects events until the stream ends or `until` says stop
 * (then the connection is dropped, as a client that goes away would).
 */
export async function collectEvents (base: string, path: string, options: { lastEventId?: number, until?: (event: SseEvent) => boolean } = {}): Promise<{ events: SseEvent[], status: number, contentType: string | null }> {
  const controller = new AbortController()
  const response = await fetch(`${base}${path}`, {
    headers: { authorization: `Bearer ${TOKEN}`, accept: 'text/event-stream', ...(options.lastEventId === undefined ? {} : { 'last-event-id': String(options.lastEventId) }) },
    signal: controller.signal,
  })
  const events: SseEvent[] = []
  if (!response.ok || response.body === null) return { events, status: response.status, contentType: response.headers.get('content-type') }
  const decoder = new TextDecoder()
  let buffer = ''
  try {
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true })
      let boundary = buffer.indexOf('\n\n')
      while (boundary !== -1) {
        const frame = buffer.slice(0, boundary)
        buffer = buffer.slice(boundary + 2)
        boundary = buffer.indexOf('\n\n')
        const event: SseEvent = { id: undefined, type: 'message', data: undefined }
        const data: string[] = []
        for (const line of frame.split('\n')) {
          if (line.startsWith('id: ')) event.id = Number(line.slice(4))
          else if (line.startsWith('event: ')) event.type = line.slice(7)
          else if (line.startsWith('data: ')) data.push(line.slice(6))
        }
        if (data.length === 0) continue
        event.data = JSON.parse(data.join('\n'))
        events.push(event)
        if (options.until?.(event) === true) {
          controller.abort()
          return { events, status: response.status, contentType: response.headers.get('content-type') }
        }
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error
  }
  return { events, status: response.status, contentType: response.headers.get('content-type') }
}
