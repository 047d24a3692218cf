import type { FastifyReply, FastifyRequest } from 'fastify'
import type { AppContext } from '../app.ts'
import { RunCancelledError } from '../errors.ts'
import type { ShapedError } from '../http/api-errors.ts'
import { SseStream, type SseFrame } from '../http/sse.ts'
import { ClientGoneError, type ChatOutcome, type ChatRequest, type ChatRun } from '../openai/chat-service.ts'

/** How a protocol adapter streams an answer: the events of each delta, of the end, of a failure. */
export interface AnswerEncoder {
  delta (run: ChatRun, text: string): SseFrame[]
  finish (run: ChatRun, outcome: ChatOutcome): SseFrame[]
  /** The events that end a stream already started with this failure. */
  fail (run: ChatRun, error: unknown): SseFrame[]
}

export interface Wire<T> {
  json: (outcome: ChatOutcome) => T
  stream: () => AnswerEncoder
  error: (error: unknown) => ShapedError<unknown>
}

/**
 * Answers a chat as every protocol does: one JSON answer, or a stream of the adapter's events.
 * The run is cancelled when the client goes away. Refusals (unknown model, full queue) throw
 * before anything is sent; a failure before the first event is still a plain error with its
 * status (the stream's headers wait for the first event or keep-alive), one after it ends the
 * stream with the adapter's failure events.
 */
export async function answerChat<T> (ctx: AppContext, request: FastifyRequest, reply: FastifyReply, chat: ChatRequest, wire: Wire<T>): Promise<T | FastifyReply> {
  await ctx.chat.check(chat)
  const client = new AbortController()
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) client.abort(new RunCancelledError('client_disconnected'))
  })

  if (!chat.stream) {
    const run = await ctx.chat.submit(chat, request.caller, {}, client.signal)
    try {
      return wire.json(await run.result)
    } catch (error) {
      if (error instanceof ClientGoneError) return reply
      throw error
    }
  }

  // A client that does not read is cut off past the stream's buffer (or its write timeout): its
  // close cancels the run as the client gone, so the answer is never held whole in memory.
  const sse = new SseStream(reply.raw, { keepAliveMs: ctx.config.sseKeepAliveSeconds * 1000, writeTimeoutMs: ctx.config.sseWriteTimeoutSeconds * 1000 })
  const encoder = wire.stream()
  const send = (frames: readonly SseFrame[]): void => {
    for (const frame of frames) sse.send(frame.data, frame.event === undefined ? {} : { event: frame.event })
  }
  const run = await ctx.chat.submit(chat, request.caller, { onDelta: (text, run) => send(encoder.delta(run, text)) }, client.signal)
  reply.hijack()
  sse.watch()
  try {
    send(encoder.finish(run, await run.result))
  } catch (error) {
    if (!(error instanceof ClientGoneError)) {
      const failure = wire.error(error)
      if (failure.statusCode >= 500) request.log.error({ err: error }, 'chat failed')
      if (!sse.fail(failure.statusCode, failure.body)) send(encoder.fail(run, error))
    }
  } finally {
    sse.end()
  }
  return reply
}
