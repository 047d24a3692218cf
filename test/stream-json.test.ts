import { readdirSync, readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { LineSplitter, parseLine, type AgentEvent } from '../src/agent/stream-json.ts'

const samplesDir = new URL('./fixtures/cli-samples/', import.meta.url)
const events = (name: string): AgentEvent[] =>
  readFileSync(new URL(name, samplesDir), 'utf8').split('\n').flatMap(line => parseLine(line))

describe('parsing the recorded CLI output', () => {
  it('finds exactly one result in every recorded stream', () => {
    const files = readdirSync(samplesDir).filter(name => name.endsWith('.jsonl'))
    expect(files.length).toBeGreaterThanOrEqual(9)
    for (const file of files) {
      const all = events(file)
      expect(all.filter(event => event.type === 'result'), file).toHaveLength(1)
      expect(all.filter(event => event.type === 'log'), file).toHaveLength(0)
      // A CLI that gives up before it has a session (one it cannot resume) prints its result alone.
      if (file.startsWith('sample-stream-resume-')) expect(all, file).toMatchObject([{ type: 'result', result: { is_error: true, num_turns: 0 } }])
      else expect(all[0], file).toMatchObject({ type: 'init', claude_code_version: '2.1.332' })
    }
  })

  it('reads a plain answer', () => {
    const all = events('sample-stream.jsonl')
    expect(all.map(event => event.type)).toEqual(['init', 'text', 'result'])
    const result = all.at(-1) as Extract<AgentEvent, { type: 'result' }>
    expect(result.result).toMatchObject({ is_error: false, subtype: 'success', result: 'Hi! (fake model)', num_turns: 1, total_cost_usd: 0.049864 })
  })

  it('reads an API error reported as subtype "success" with is_error', () => {
    const all = events('sample-stream-api-error-401.jsonl')
    expect(all.map(event => event.type)).toEqual(['init', 'api_error', 'result'])
    expect(all[1]).toEqual({ type: 'api_error', status: 401, message: 'Failed to authenticate. API Error: 401 fake 401 error' })
    expect((all[2] as Extract<AgentEvent, { type: 'result' }>).result).toMatchObject({ subtype: 'success', is_error: true, api_error_status: 401 })
  })

  it('reads text deltas of partial messages, in order', () => {
    const deltas = events('sample-stream-partial.jsonl').filter(event => event.type === 'text_delta')
    expect(deltas.map(event => event.text).join('')).toBe('Hi! (fake model)')
    expect(deltas.every(event => event.parent_tool_use_id === null)).toBe(true)
  })

  it('reads tool use and its result', () => {
    const all = events('sample-stream-tooluse.jsonl')
    expect(all.map(event => event.type)).toEqual(['init', 'tool_use', 'tool_result', 'text', 'result'])
    expect(all[1]).toMatchObject({ type: 'tool_use', name: 'Write', input: { file_path: '/srv/job/work2/hello.txt', content: 'hello from fake model\n' } })
    expect(all[2]).toMatchObject({ type: 'tool_result', is_error: false, summary: expect.stringContaining('File created successfully') })
  })

  it('reads retries, fallbacks and the limits', () => {
    const retries = events('sample-stream-api-retry-500.jsonl').filter(event => event.type === 'api_retry')
    expect(retries).toEqual([
      { type: 'api_retry', attempt: 1, max_retries: 2, retry_delay_ms: 569, error_status: 500, error: 'server_error' },
      { type: 'api_retry', attempt: 2, max_retries: 2, retry_delay_ms: 1205, error_status: 500, error: 'server_error' },
    ])
    expect(events('sample-stream-model-fallback-529.jsonl').find(event => event.type === 'model_fallback'))
      .toMatchObject({ original_model: 'fail529', fallback_model: 'claude-sonnet-5-5' })
    const turns = events('sample-stream-max-turns.jsonl').at(-1) as Extract<AgentEvent, { type: 'result' }>
    expect(turns.result).toMatchObject({ subtype: 'error_max_turns', is_error: true, errors: ['Reached maximum number of turns (1)'] })
    // Recorded: no `result` field at all on a max-turns result.
    expect(turns.result.result ?? null).toBeNull()
  })

  it('keeps a non-JSON line as log instead of throwing', () => {
    expect(parseLine('Warning: something odd')).toEqual([{ type: 'log', line: 'Warning: something odd' }])
    expect(parseLine('[1,2]')).toEqual([{ type: 'log', line: '[1,2]' }])
    expect(parseLine('')).toEqual([])
    expect(parseLine('{"type":"result"}')).toEqual([{ type: 'log', line: '{"type":"result"}' }])
  })
})

describe('LineSplitter', () => {
  const collect = (maxLineBytes = 1024) => {
    const lines: string[] = []
    const overflows: number[] = []
    const splitter = new LineSplitter({ maxLineBytes, onLine: line => lines.push(line), onOverflow: bytes => overflows.push(bytes) })
    return { lines, overflows, splitter }
  }

  it('joins lines split across chunks, including inside a multi-byte character', () => {
    const { lines, splitter } = collect()
    const bytes = Buffer.from('{"a":"é"}\n{"b":2}\nlast')
    for (let i = 0; i < bytes.length; i++) splitter.push(bytes.subarray(i, i + 1))
    expect(lines).toEqual(['{"a":"é"}', '{"b":2}'])
    splitter.end()
    expect(lines).toEqual(['{"a":"é"}', '{"b":2}', 'last'])
  })

  it('drops a line past the limit and goes on with the next', () => {
    const { lines, overflows, splitter } = collect(10)
    splitter.push(Buffer.from('short\n' + 'x'.repeat(8)))
    splitter.push(Buffer.from('x'.repeat(100)))
    splitter.push(Buffer.from('\nafter\n'))
    expect(lines).toEqual(['short', 'after'])
    expect(overflows).toEqual([108])
  })
})
