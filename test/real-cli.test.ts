// The real Claude Code CLI (npm @anthropic-ai/claude-code, pinned), run by the service in its
// sandbox against a local stand-in for the Anthropic Messages API: no network, no fake of our own making.
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Anthropic from '@anthropic-ai/sdk'
import OpenAI from 'openai'
import { describe, expect, it, vi } from 'vitest'
import { runAgent } from '../src/agent/agent-run.ts'
import { Bubblewrap, type RunPaths } from '../src/agent/sandbox.ts'
import { buildApp } from '../src/app.ts'
import { ConfigError, defaultConfig, type Config } from '../src/config.ts'
import { AnthropicStub, hasToolResult, lastUserText, structuredReply, systemText, toolNamed, toolResults, type MessagesCall, type Script } from './helpers/anthropic-stub.ts'
import { AUTH, eventTypes, FAKE_CLAUDE, finished, listen, makeApp, record, run, submit, tempDir, TOKEN } from './helpers/app.ts'
import { descendants, expectAllGone } from './helpers/probe.ts'
import { makeRepo, pushCommit } from './helpers/repos.ts'

const CLAUDE = fileURLToPath(new URL('../node_modules/.bin/claude', import.meta.url))
const MCP_SERVER = fileURLToPath(new URL('./fixtures/mcp-server.mjs', import.meta.url))
const VERDICT = {
  type: 'object',
  properties: { verdict: { type: 'string', enum: ['pass', 'fail'] }, reasons: { type: 'array', items: { type: 'string' } } },
  required: ['verdict', 'reasons'],
  additionalProperties: false,
}
const SERVICE_SECRETS = { AUTH_TOKENS: 'service-auth-token-must-not-leak', WEBHOOK_SECRET: 'service-webhook-secret-must-not-leak', DATABASE_PASSWORD: 'db-password-must-not-leak' }

/** The working directory the CLI tells the model about. */
const cwdOf = (call: MessagesCall): string => {
  const match = /Primary working directory: (\S+)/.exec(JSON.stringify(call.body))
  if (match === null) throw new Error('no working directory in the request')
  return match[1]!.replace(/\\n$/, '')
}

async function realApp (script: Script, overrides: Partial<Config> = {}) {
  const stub = await AnthropicStub.start(script)
  const home = await tempDir('cr-home-')
  const env = {
    PATH: process.env.PATH!,
    HOME: home,
    ANTHROPIC_BASE_URL: stub.url,
    ANTHROPIC_API_KEY: 'dummy-key',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    // No IS_SANDBOX: the tests run as root in CI, but in the sandbox the CLI is not root.
    ...SERVICE_SECRETS,
  }
  const made = await makeApp({ claudeBin: CLAUDE, agentPermissionMode: 'bypassPermissions', killGraceSeconds: 1, ...overrides }, { env })
  return { ...made, stub, home }
}

describe('the real Claude Code CLI', () => {
  it.runIf(process.getuid?.() === 0)('as root with SANDBOX=off, refuses bypassPermissions without IS_SANDBOX at start-up, saying what to do', async () => {
    const config = defaultConfig({ workspaceRoot: await tempDir(), claudeBin: CLAUDE, agentPermissionMode: 'bypassPermissions', authTokens: [TOKEN], sandbox: 'off' })
    await expect(buildApp(config, { logger: false, env: { PATH: process.env.PATH! } })).rejects.toThrow(/IS_SANDBOX=1/)
    await expect(buildApp(config, { logger: false, env: { PATH: process.env.PATH! } })).rejects.toBeInstanceOf(ConfigError)
  })

  it('is the pinned version, found by the service', async () => {
    const { app } = await realApp(() => ({ text: 'unused' }))
    await app.ctx.cli.ready
    expect((await app.inject({ method: 'GET', url: '/health' })).json().claude).toMatchObject({ state: 'found', version: '2.1.332 (Claude Code)' })
  })

  it('writes a file with the Write tool, and the job shows it among its changes', async () => {
    const repo = makeRepo(await tempDir())
    const cwds: string[] = []
    const { app, stub } = await realApp(call => {
      cwds.push(cwdOf(call))
      return hasToolResult(call)
        ? { text: 'I wrote hello.txt.' }
        : { toolUse: { name: 'Write', input: { file_path: join(cwdOf(call), 'hello.txt'), content: 'hello from the model\n' } } }
    }, { baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const job = await run(app, { prompt: 'Create hello.txt saying hello.', model: 'haiku' })
    // The model is told the sandbox's fixed path, never the host's.
    expect(cwds).toEqual(['/workspace', '/workspace'])
    expect(job).toMatchObject({ status: 'completed', result: { text: 'I wrote hello.txt.', is_error: false, num_turns: 2 }, agent: { claude_code_version: '2.1.332', model: 'claude-haiku-5-5' } })
    expect(job.changes!.files).toEqual([{ path: 'hello.txt', status: 'added' }])
    expect(job.changes!.diff).toContain('+hello from the model')
    expect(stub.calls).toHaveLength(2)
    expect(stub.calls.every(call => call.url === '/v1/messages?beta=true' && call.body.stream === true)).toBe(true)
    expect(stub.otherRequests).toEqual([])
    const events = await eventTypes(app, job.job_id)
    expect(events).toEqual(expect.arrayContaining(['init', 'tool_use', 'tool_result', 'text', 'result']))
  })

  it('runs .claude/agents/NAME.md as the main agent with agent: NAME', async () => {
    const repo = makeRepo(await tempDir())
    pushCommit(repo, 'main', '.claude/agents/reviewer.md', '---\nname: reviewer\ndescription: Reviews code\n---\nYou are REVIEWER-7. Begin every answer with "REVIEWED:".\n')
    const { app } = await realApp(call => ({ text: systemText(call).includes('REVIEWER-7') || JSON.stringify(call.body).includes('REVIEWER-7') ? 'REVIEWED: looks fine' : 'not the reviewer' }),
      { baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const job = await run(app, { prompt: 'Review the code.', agent: 'reviewer' })
    expect(job.status).toBe('completed')
    expect(job.result!.text).toBe('REVIEWED: looks fine')
  })

  it('fails a job whose agent does not exist, naming the agents there are, before any API call', async () => {
    const { app, stub } = await realApp(() => ({ text: 'unused' }))
    const job = await run(app, { prompt: 'hi', agent: 'no-such-agent' })
    // With stream-json input the CLI would run its default agent instead: the service refuses,
    // from the agents the CLI listed in its handshake, and closes its stdin with no prompt.
    expect(job).toMatchObject({ status: 'failed', error: { code: 'unknown_agent', message: "agent 'no-such-agent' not found. Available agents: claude, Explore, general-purpose, Plan, statusline-setup" } })
    expect(job.exit).toEqual({ code: 0, signal: null })
    expect(stub.calls).toHaveLength(0)
  })

  it('fails a job that hits max_turns, with the reason', async () => {
    const { app } = await realApp(() => ({ toolUse: { name: 'Bash', input: { command: 'echo again', description: 'Echo' } } }))
    const job = await run(app, { prompt: 'Loop forever.', max_turns: 1 })
    expect(job).toMatchObject({ status: 'failed', error: { code: 'max_turns', message: 'Reached maximum number of turns (1)' }, result: { subtype: 'error_max_turns' } })
  })

  it('fails a job when the API answers 401, saying so', async () => {
    const { app } = await realApp(() => ({ status: 401, errorType: 'authentication_error', message: 'invalid x-api-key' }))
    const job = await run(app, { prompt: 'hi' })
    expect(job.status).toBe('failed')
    expect(job.error!.code).toBe('api_error')
    expect(job.error!.message).toBe('Invalid API key · Fix external API key (API status 401)')
    expect(job.result).toMatchObject({ is_error: true, api_error_status: 401 })
  })

  it('fails a job when the API is overloaded (529)', async () => {
    const { app } = await realApp(() => ({ status: 529, errorType: 'overloaded_error', message: 'Overloaded' }))
    const job = await run(app, { prompt: 'hi' })
    expect(job).toMatchObject({ status: 'failed', error: { code: 'api_error', message: expect.stringContaining('529') }, result: { is_error: true, api_error_status: 529 } })
  })

  it('surfaces the CLI\'s API retries as job events', async () => {
    const { app } = await realApp((_call, index) => index === 0 ? { status: 500, errorType: 'api_error', message: 'try again', retry: true } : { text: 'made it' })
    const job = await run(app, { prompt: 'hi' })
    expect(job).toMatchObject({ status: 'completed', result: { text: 'made it' } })
    const retries = (await app.ctx.engine.events.since(job.job_id, 0)).filter(event => event.type === 'api_retry').map(event => JSON.parse(event.json))
    expect(retries).toEqual([expect.objectContaining({ attempt: 1, error_status: 500 })])
  })

  it('leaves no process behind when a job is cancelled while the CLI waits on a slow answer', async () => {
    const { app, stub, root } = await realApp(() => ({ hang: true }))
    const job = await submit(app, { prompt: 'Take your time.' })
    await stub.waitForCalls(1)
    const pid = (await record(app, job.job_id)).pid!
    const inside = descendants(pid)
    expect(inside.length).toBeGreaterThan(1)
    const response = await app.inject({ method: 'DELETE', url: `/jobs/${job.job_id}`, headers: AUTH })
    expect(response.statusCode).toBe(202)
    const done = await finished(app, job.job_id)
    expect(done.status).toBe('cancelled')
    await expectAllGone([pid, ...inside])
    expect(readdirSync(join(root, 'jobs'))).toEqual([])
  })

  it('streams a chat completion through the openai SDK', async () => {
    const answer = 'Hello from the stand-in model, in pieces.'
    const { app, stub } = await realApp(() => ({ text: answer, chunks: 6 }))
    const url = await listen(app)
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const stream = await client.chat.completions.create({
      model: 'sonnet',
      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello.' }],
      stream: true,
      stream_options: { include_usage: true },
    })
    const deltas: string[] = []
    let usage
    for await (const chunk of stream) {
      const text = chunk.choices[0]?.delta.content
      if (text) deltas.push(text)
      if (chunk.usage) usage = chunk.usage
    }
    expect(deltas.join('')).toBe(answer)
    expect(deltas.length).toBeGreaterThan(1)
    expect(usage).toMatchObject({ completion_tokens: expect.any(Number), prompt_tokens: expect.any(Number) })
    expect(JSON.stringify(stub.calls[0]!.body.system)).toContain('Be brief.')
  })

  it('gives the agent none of the service\'s secrets, and a configuration folder of its own seeded from the template', async () => {
    const template = await tempDir('cr-template-')
    writeFileSync(join(template, 'settings.json'), JSON.stringify({ env: { FROM_CONFIG_TEMPLATE: 'seeded' } }))
    const { app, stub, root, home } = await realApp(call => hasToolResult(call) ? { text: 'done' } : { toolUse: { name: 'Bash', input: { command: 'env', description: 'Print the environment' } } },
      { claudeConfigTemplate: template })
    const job = await run(app, { prompt: 'Print your environment.' })
    expect(job.status).toBe('completed')
    const printed = toolResults(stub.calls[1]!).join('\n')
    expect(printed).toContain('ANTHROPIC_BASE_URL=')
    for (const secret of Object.values(SERVICE_SECRETS)) expect(printed).not.toContain(secret)
    expect(printed).not.toContain('AUTH_TOKENS')
    expect(printed).toContain('CLAUDE_CONFIG_DIR=/home/agent/.claude')
    expect(printed).toContain('HOME=/home/agent')
    expect(printed).not.toContain(root)
    expect(printed).toContain('FROM_CONFIG_TEMPLATE=seeded')
    // The run's configuration (and its session transcript) went with it; the home was never used.
    expect(readdirSync(join(root, 'claude-config'))).toEqual([])
    expect(existsSync(join(home, '.claude.json'))).toBe(false)
    expect(existsSync(join(home, '.claude'))).toBe(false)
  })

  it('ends a json_schema job with the object the model gave the CLI\'s StructuredOutput tool', async () => {
    const { app, stub } = await realApp(call => structuredReply(call, { verdict: 'fail', reasons: ['no tests'] }))
    const job = await run(app, { prompt: 'Review the change.', json_schema: VERDICT })
    expect(job).toMatchObject({ status: 'completed', error: null, result: { is_error: false, structured_output: { verdict: 'fail', reasons: ['no tests'] } } })
    expect(JSON.parse(job.result!.text!)).toEqual({ verdict: 'fail', reasons: ['no tests'] })
    // The schema reached the model as the tool's input schema; a matching call ends the run.
    expect(toolNamed(stub.calls[0]!, 'StructuredOutput')!.input_schema).toEqual(VERDICT)
    expect(stub.calls).toHaveLength(1)
  })

  it('fails a json_schema job as structured_output_missing when the model only answers in prose', async () => {
    const { app, stub } = await realApp(() => ({ text: 'It looks fine to me.' }))
    const job = await run(app, { prompt: 'Review the change.', json_schema: VERDICT })
    expect(job.status).toBe('failed')
    expect(job.error).toMatchObject({ code: 'structured_output_missing', message: expect.stringContaining('It looks fine to me.') })
    // The CLI asked once more, then called it a success.
    expect(stub.calls).toHaveLength(2)
    expect(lastUserText(stub.calls[1]!)).toContain('You MUST call the StructuredOutput tool')
    expect(job.result).toMatchObject({ is_error: false, subtype: 'success', structured_output: null })
  })

  it('takes tool rules, effort, the appended system prompt, fallback models and MCP profiles as the service passes them', async () => {
    const mcp = await tempDir('cr-mcp-')
    writeFileSync(join(mcp, 'alpha.json'), JSON.stringify({ mcpServers: { alpha: { command: process.execPath, args: [MCP_SERVER, 'alpha'] } } }))
    // A server of the user's own configuration, which --strict-mcp-config must leave out.
    const template = await tempDir('cr-template-')
    writeFileSync(join(template, '.claude.json'), JSON.stringify({ mcpServers: { stray: { command: process.execPath, args: [MCP_SERVER, 'stray'] } } }))
    const { app, stub } = await realApp(call => {
      if (call.body.model !== 'claude-haiku-5-5') return { status: 529, errorType: 'overloaded_error', message: 'Overloaded' }
      return hasToolResult(call) ? { text: 'done' } : { toolUse: { name: 'Bash', input: { command: 'touch allowed.txt', description: 'Create a file' } } }
    }, { agentPermissionMode: undefined, mcpConfigDir: mcp, claudeConfigTemplate: template })
    const job = await run(app, {
      prompt: 'Create allowed.txt.',
      model: 'sonnet',
      fallback_model: 'haiku',
      // Outside bypassPermissions, touch needs approval unless a rule allows it.
      allowed_tools: ['Bash(touch allowed.txt)'],
      disallowed_tools: ['Write', 'WebFetch'],
      effort: 'high',
      append_system_prompt: '-MARK- is appended text, not an option',
      mcp_servers: ['alpha'],
    })
    expect(job).toMatchObject({ status: 'completed', result: { text: 'done', permission_denials: [] } })
    const events = (await app.ctx.engine.events.since(job.job_id, 0)).map(event => ({ type: event.type, data: JSON.parse(event.json) }))
    expect(events.find(event => event.type === 'tool_result')!.data).toMatchObject({ is_error: false, summary: '(Bash completed with no output)' })
    expect(events.find(event => event.type === 'model_fallback')!.data).toMatchObject({ original_model: 'claude-sonnet-5-5', fallback_model: 'claude-haiku-5-5' })
    expect(stub.calls.map(call => call.body.model)).toEqual(['claude-sonnet-5-5', 'claude-haiku-5-5', 'claude-haiku-5-5'])
    for (const call of stub.calls) {
      expect(call.body.output_config).toMatchObject({ effort: 'high' })
      expect(call.body.tools!.map(tool => tool.name)).not.toContain('Write')
      expect(systemText(call)).toContain('-MARK- is appended text, not an option')
    }
    const output = await app.inject({ method: 'GET', url: `/jobs/${job.job_id}/output`, headers: AUTH })
    const init = output.body.split('\n').map(line => JSON.parse(line || 'null')).find(line => line?.subtype === 'init')
    expect(init.mcp_servers.map((server: { name: string }) => server.name)).toEqual(['alpha'])
    expect(init.tools).toContain('mcp__alpha__ping')
    expect(init.tools).not.toContain('WebFetch')
  })

  it('gives the openai SDK\'s chat.completions.parse the object, streamed or not', async () => {
    const { app } = await realApp(call => structuredReply(call, { verdict: 'pass', reasons: ['tests cover it'] }))
    const url = await listen(app)
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const request = {
      model: 'haiku',
      messages: [{ role: 'user' as const, content: 'Review the change.' }],
      response_format: { type: 'json_schema' as const, json_schema: { name: 'verdict', schema: VERDICT, strict: true } },
    }
    const parsed = await client.chat.completions.parse(request)
    expect(parsed.choices[0]!.message.parsed).toEqual({ verdict: 'pass', reasons: ['tests cover it'] })
    const streamed = await client.chat.completions.stream(request).finalChatCompletion()
    expect(streamed.choices[0]!.message.parsed).toEqual({ verdict: 'pass', reasons: ['tests cover it'] })
  })

  it('continues a finished job: the second run\'s request carries the first conversation, and its workspace holds the file the first wrote', async () => {
    const repo = makeRepo(await tempDir())
    const { app, stub } = await realApp((call, index) => {
      switch (index) {
        case 0: return { toolUse: { name: 'Write', input: { file_path: '/workspace/hello.txt', content: 'hello from the model\n' } } }
        case 1: return { text: 'I wrote hello.txt.' }
        case 2: return { toolUse: { name: 'Bash', input: { command: 'cat hello.txt && git status --porcelain', description: 'Show the file' } } }
        default: return { text: 'It says hello.' }
      }
    }, { baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    const first = await run(app, { prompt: 'Create hello.txt saying hello.', model: 'haiku' })
    expect(first).toMatchObject({ status: 'completed', resumable: true, changes: { files: [{ path: 'hello.txt', status: 'added' }] } })
    const second = await run(app, { prompt: 'What does hello.txt say?', continue_from: first.job_id, model: 'haiku' })
    expect(second).toMatchObject({ status: 'completed', continued_from: first.job_id, result: { text: 'It says hello.' }, agent: { session_id: first.agent!.session_id } })
    expect(stub.calls).toHaveLength(4)
    // The first request of the second run: the whole first conversation, then the new prompt.
    const { messages } = stub.calls[2]!.body
    const said = JSON.stringify(messages)
    expect(said).toContain('Create hello.txt saying hello.')
    expect(said).toContain('I wrote hello.txt.')
    expect(messages.flatMap(message => Array.isArray(message.content) ? message.content : []).find(block => block.type === 'tool_use')).toMatchObject({ name: 'Write', input: { file_path: '/workspace/hello.txt' } })
    expect(lastUserText(stub.calls[2]!)).toContain('What does hello.txt say?')
    // It ran in the sandbox's /workspace again, so the model is not told the directory moved.
    expect(said).not.toMatch(/Primary working directory: \S+ \(was /)
    // The file the first job wrote (never committed) is there, still uncommitted.
    expect(toolResults(stub.calls[3]!).at(-1)).toContain('hello from the model\n?? hello.txt')
    expect(second.changes).toMatchObject({ files: [], original_base_commit: repo.commits.main })
  })

  it('fails to resume a session it has no transcript of, as the fake CLI does', async () => {
    const dir = await tempDir()
    const stub = await AnthropicStub.start(() => ({ text: 'unused' }))
    const env = { PATH: process.env.PATH!, ANTHROPIC_BASE_URL: stub.url, ANTHROPIC_API_KEY: 'dummy-key', CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }
    const sessionId = randomUUID()
    const outcomes = []
    for (const bin of [CLAUDE, FAKE_CLAUDE]) {
      const paths = Object.fromEntries(['workspace', 'config', 'home', 'tmp', 'inputs'].map(name => [name, join(dir, `${basename(bin)}-${name}`)])) as unknown as RunPaths
      for (const path of Object.values(paths)) mkdirSync(path)
      outcomes.push(await runAgent({ prompt: 'go on', resume: sessionId }, {
        bin,
        sandbox: await Bubblewrap.create({ cli: bin, env, stateDir: join(dir, `${basename(bin)}-state`), readOnly: [] }),
        paths,
        env,
        killGraceMs: 1000,
        maxOutputBytes: 1 << 20,
        signal: new AbortController().signal,
      }))
    }
    for (const outcome of outcomes) {
      expect(outcome).toMatchObject({
        status: 'failed',
        error: { code: 'agent_error', message: `No conversation found with session ID: ${sessionId}` },
        exit: { code: 1, signal: null },
        init: null,
        result: { subtype: 'error_during_execution', is_error: true, session_id: sessionId },
      })
      expect(outcome.output.stderrTail).toBe(`No conversation found with session ID: ${sessionId}\n`)
    }
    expect(stub.calls).toHaveLength(0)
  })

  it('answers the Responses and Messages APIs, streamed or not, through the CLI\'s partial messages', async () => {
    const { app, stub } = await realApp(() => ({ text: 'Hello from the model, in a few pieces.' }))
    const url = await listen(app)
    const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const anthropic = new Anthropic({ baseURL: url, authToken: TOKEN, apiKey: null, maxRetries: 0 })
    const answer = 'Hello from the model, in a few pieces.'
    expect((await openai.responses.create({ model: 'haiku', input: 'Say hello.' })).output_text).toBe(answer)
    const deltas: string[] = []
    const stream = openai.responses.stream({ model: 'haiku', input: 'Say hello.' })
    stream.on('response.output_text.delta', event => deltas.push(event.delta))
    const response = await stream.finalResponse()
    expect(response).toMatchObject({ status: 'completed', output_text: answer, model: 'claude-haiku-5-5' })
    expect(deltas.length).toBeGreaterThan(1)
    expect(response.usage!.output_tokens).toBeGreaterThan(0)
    const message = await anthropic.messages.create({ model: 'haiku', max_tokens: 100, messages: [{ role: 'user', content: 'Say hello.' }] })
    expect(message.content).toEqual([{ type: 'text', text: answer }])
    const streamed = await anthropic.messages.stream({ model: 'haiku', max_tokens: 100, messages: [{ role: 'user', content: 'Say hello.' }] }).finalMessage()
    expect(streamed).toMatchObject({ content: [{ type: 'text', text: answer }], stop_reason: 'end_turn', model: 'claude-haiku-5-5' })
    expect(streamed.usage.output_tokens).toBeGreaterThan(0)
    expect(stub.calls).toHaveLength(4)
  })

  it('carries on a response with previous_response_id: the second request carries the first conversation, not its instructions', async () => {
    const { app, stub } = await realApp((call, index) => ({ text: index === 0 ? 'Noted: PELICAN.' : 'You said PELICAN.' }))
    const openai = new OpenAI({ baseURL: `${await listen(app)}/v1`, apiKey: TOKEN, maxRetries: 0 })
    const first = await openai.responses.create({ model: 'haiku', instructions: 'Speak like -SAILOR-.', input: 'Remember the word PELICAN.' })
    expect(first.output_text).toBe('Noted: PELICAN.')
    const second = await openai.responses.create({ model: 'haiku', input: 'Which word did I say?', previous_response_id: first.id })
    expect(second).toMatchObject({ status: 'completed', output_text: 'You said PELICAN.', previous_response_id: first.id })
    expect(stub.calls).toHaveLength(2)
    const said = JSON.stringify(stub.calls[1]!.body.messages)
    expect(said).toContain('Remember the word PELICAN.')
    expect(said).toContain('Noted: PELICAN.')
    expect(lastUserText(stub.calls[1]!)).toContain('Which word did I say?')
    // The Responses API carries no instructions over: the session's recorded system prompt is not reused.
    expect(systemText(stub.calls[0]!)).toContain('-SAILOR-')
    expect(systemText(stub.calls[1]!)).not.toContain('-SAILOR-')
  })

  it('runs 10 jobs at once without corrupting each other\'s CLI state', async () => {
    const { app, stub, home, root } = await realApp(call => ({ text: `answer to ${/job (\d+)/.exec(lastUserText(call))?.[1] ?? '?'}` }), { maxConcurrency: 10 })
    const jobs = []
    for (let i = 0; i < 10; i++) jobs.push(await submit(app, { prompt: `This is job ${i}.` }))
    const done = await Promise.all(jobs.map(job => finished(app, job.job_id)))
    expect(done.map(job => job.status)).toEqual(Array(10).fill('completed'))
    expect(done.map(job => job.result!.text)).toEqual(Array.from({ length: 10 }, (_, i) => `answer to ${i}`))
    expect(new Set(done.map(job => job.result!.session_id)).size).toBe(10)
    expect(stub.calls).toHaveLength(10)
    expect(existsSync(join(home, '.claude.json'))).toBe(false)
    expect(readdirSync(join(root, 'claude-config'))).toEqual([])
  })

  describe('started ahead of time (WARM_AGENTS)', () => {
    /** A request as the model sees it, without what differs between any two runs (the user id, the stand-in's tool ids). */
    const asSeen = (call: MessagesCall): unknown => JSON.parse(JSON.stringify({ ...call.body, metadata: undefined }).replace(/toolu_[0-9a-f]+/g, 'toolu_'))

    it('runs a warm job at BASE_REF, asking the model exactly what a cold start asks', async () => {
      const repo = makeRepo(await tempDir())
      const script: Script = call => hasToolResult(call)
        ? { text: 'I wrote hello.txt.' }
        : { toolUse: { name: 'Write', input: { file_path: join(cwdOf(call), 'hello.txt'), content: 'hello from the model\n' } } }
      const warm = await realApp(script, { baseRepo: repo.origin, baseRefreshSeconds: 0, warmAgents: 1 })
      await vi.waitFor(() => expect(warm.app.ctx.warm.describe().ready).toBe(1), { timeout: 60_000, interval: 50 })
      expect(warm.stub.calls).toHaveLength(0)
      const request = { prompt: 'Create hello.txt saying hello.' }
      const warmJob = await run(warm.app, request)
      expect(warm.app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 0 })
      expect(warmJob).toMatchObject({ status: 'completed', result: { text: 'I wrote hello.txt.', num_turns: 2 }, changes: { files: [{ path: 'hello.txt', status: 'added' }] } })
      const cold = await realApp(script, { baseRepo: repo.origin, baseRefreshSeconds: 0 })
      await cold.app.ctx.workspaces.ready
      const coldJob = await run(cold.app, request)
      expect(coldJob.status).toBe('completed')
      expect(warm.stub.calls.map(asSeen)).toEqual(cold.stub.calls.map(asSeen))
    })

    it('answers a warm chat completion through the openai SDK, streamed', async () => {
      const { app, stub } = await realApp(() => ({ text: 'Hello, warmly.', chunks: 4 }), { warmAgents: 2 })
      const url = await listen(app)
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: TOKEN, maxRetries: 0 })
      const ask = async (): Promise<string> => {
        const stream = await client.chat.completions.create({ model: 'haiku', messages: [{ role: 'user', content: 'Say hello.' }], stream: true })
        let text = ''
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
        return text
      }
      expect(await ask()).toBe('Hello, warmly.')
      // Its argument set is now kept warm, next to the default job's.
      await vi.waitFor(() => expect(app.ctx.warm.describe()).toMatchObject({ ready: 2, starting: 0 }), { timeout: 60_000, interval: 50 })
      expect(await ask()).toBe('Hello, warmly.')
      expect(app.ctx.warm.describe()).toMatchObject({ hits: 1, misses: 1 })
      expect(asSeen(stub.calls[1]!)).toEqual(asSeen(stub.calls[0]!))
    })
  })
})
