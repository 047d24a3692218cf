// Per-job agent controls of POST /execute: structured output, tool rules, the appended system
// prompt, effort, fallback models and MCP profiles, run by the fake CLI.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { JsonSchemaChecker } from '../src/agent/json-schema-check.ts'
import { buildApp } from '../src/app.ts'
import { ConfigError, defaultConfig } from '../src/config.ts'
import { AUTH, FAKE_CLAUDE, finished, makeApp, run, submit, tempDir, TOKEN } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'

const stdio = (name: string) => ({ command: 'node', args: ['server.mjs', name] })

/** An MCP_CONFIG_DIR holding these profiles (name → file content). */
async function mcpDir (profiles: Record<string, unknown>): Promise<string> {
  const dir = await tempDir('cr-mcp-')
  for (const [name, content] of Object.entries(profiles)) {
    writeFileSync(join(dir, name), typeof content === 'string' ? content : JSON.stringify(content))
  }
  return dir
}

const VERDICT = {
  type: 'object',
  properties: { verdict: { type: 'string', enum: ['pass', 'fail'] }, reasons: { type: 'array', items: { type: 'string' } } },
  required: ['verdict'],
  additionalProperties: false,
}

const echoed = (text: string | null) => JSON.parse(text!) as { argv: string[], stdin: string }

describe('agent controls on the command line', () => {
  it('passes each control as its own argv elements, one per rule, values that start with "-" kept as values', async () => {
    const dir = await mcpDir({ 'github.json': { mcpServers: { github: stdio('github') } }, 'docs.json': { mcpServers: { docs: { type: 'http', url: 'http://127.0.0.1:9/mcp' } } } })
    const { app } = await makeApp({ mcpConfigDir: dir })
    const request = {
      prompt: '[[fake echo]]',
      model: 'opus',
      allowed_tools: ['Read', 'Bash(git diff:*)', '-x', 'mcp__github__*', 'Bash(echo a,b)'],
      disallowed_tools: ['Write', 'Bash(rm -rf:*)'],
      append_system_prompt: '--dangerously-skip-permissions is text here\nand so is this line',
      effort: 'xhigh',
      fallback_model: 'sonnet,haiku',
      mcp_servers: ['github', 'docs'],
    }
    const job = await run(app, request)
    expect(job.status).toBe('completed')
    expect(echoed(job.result!.text).argv).toEqual([
      '-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose',
      '--model=opus',
      '--fallback-model=sonnet,haiku',
      '--effort=xhigh',
      '--allowedTools=Read', '--allowedTools=Bash(git diff:*)', '--allowedTools=-x', '--allowedTools=mcp__github__*', '--allowedTools=Bash(echo a,b)',
      '--disallowedTools=Write', '--disallowedTools=Bash(rm -rf:*)',
      // The profiles are copied into the run's inputs folder: the sandbox shows the CLI that, read-only.
      '--mcp-config=/run/claude-runner/inputs/github.json', '--mcp-config=/run/claude-runner/inputs/docs.json', '--strict-mcp-config',
      '--append-system-prompt=--dangerously-skip-permissions is text here\nand so is this line',
    ])
    // The job shows what was asked, as asked: profile names, not the files they stand for.
    expect(job.request).toMatchObject({ ...request, json_schema: null })
  })

  it('runs with no MCP server at all for mcp_servers: [], even without MCP_CONFIG_DIR', async () => {
    const { app } = await makeApp()
    const job = await run(app, { prompt: '[[fake echo]]', mcp_servers: [] })
    const { argv } = echoed(job.result!.text)
    expect(argv).toContain('--strict-mcp-config')
    expect(argv.some(arg => arg.startsWith('--mcp-config'))).toBe(false)
    expect(job.request.mcp_servers).toEqual([])
  })

  it('adds nothing to the command line for a request without controls', async () => {
    const { app } = await makeApp()
    const job = await run(app, { prompt: '[[fake echo]]' })
    expect(echoed(job.result!.text).argv).toEqual(['-p', '--input-format=stream-json', '--output-format=stream-json', '--verbose'])
    expect(job.request).toMatchObject({ json_schema: null, allowed_tools: null, disallowed_tools: null, append_system_prompt: null, effort: null, fallback_model: null, mcp_servers: null })
  })

  it('passes json_schema as one element holding its JSON', async () => {
    const { app } = await makeApp()
    const probe = await AgentProbe.start()
    probe.release()
    await run(app, { prompt: `${probe.directive} [[fake structured {"verdict": "pass"}]]`, json_schema: VERDICT })
    expect(probe.started[0]!.argv.filter(arg => arg.startsWith('--json-schema'))).toEqual([`--json-schema=${JSON.stringify(VERDICT)}`])
  })
})

describe('agent controls: bad values', () => {
  const big = { type: 'object', properties: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`p${i}`, { type: 'string', description: 'x'.repeat(20) }])) }
  let deep: Record<string, unknown> = { type: 'object' }
  for (let i = 0; i < 40; i++) deep = { type: 'object', properties: { a: deep } }
  const bad: Array<[string, Record<string, unknown>, string, string | RegExp]> = [
    ['a control character in a tool rule', { allowed_tools: ['Read\nWrite'] }, 'allowed_tools.0', 'allowed_tools.0'],
    ['two rules in one item', { allowed_tools: ['Read', 'Read,Write'] }, 'allowed_tools.1', 'several rules'],
    ['two rules split by a space', { disallowed_tools: ['Bash(x) Write'] }, 'disallowed_tools.0', 'several rules'],
    ['an empty rule', { disallowed_tools: [''] }, 'disallowed_tools.0', 'disallowed_tools.0'],
    ['a rule over 256 characters', { allowed_tools: [`Bash(${'x'.repeat(260)})`] }, 'allowed_tools.0', 'allowed_tools.0'],
    ['over 100 rules', { allowed_tools: Array.from({ length: 101 }, (_, i) => `Tool${i}`) }, 'allowed_tools', 'allowed_tools'],
    ['tools not an array', { allowed_tools: 'Read' }, 'allowed_tools', 'allowed_tools'],
    ['an unknown effort', { effort: 'extreme' }, 'effort', 'effort'],
    ['a fallback model that looks like an option', { fallback_model: '--model=x' }, 'fallback_model', 'fallback_model'],
    ['an empty fallback in the list', { fallback_model: 'sonnet,,haiku' }, 'fallback_model', 'fallback_model'],
    ['spaces in the fallback list', { fallback_model: 'sonnet, haiku' }, 'fallback_model', 'fallback_model'],
    ['a system prompt over 64 KiB of UTF-8', { append_system_prompt: 'é'.repeat(40_000) }, 'append_system_prompt', '64 KiB'],
    ['a NUL in the system prompt', { append_system_prompt: 'a\u0000b' }, 'append_system_prompt', 'append_system_prompt'],
    ['mcp_servers not names', { mcp_servers: [1] }, 'mcp_servers.0', 'mcp_servers.0'],
    ['the same profile twice', { mcp_servers: ['a', 'a'] }, 'mcp_servers', 'duplicate'],
    ['a schema that is not an object', { json_schema: [] }, 'json_schema', 'json_schema'],
    ['a schema of a string', { json_schema: { type: 'string' } }, 'json_schema', '"type": "object"'],
    ['a schema with an unknown keyword', { json_schema: { type: 'object', 'x-extra': 1 } }, 'json_schema', 'unknown keyword: "x-extra"'],
    ['a schema with a bad type', { json_schema: { type: 'object', properties: { a: { type: 'bogus' } } } }, 'json_schema', 'must be equal to one of the allowed values'],
    ['a schema with a reference to nothing', { json_schema: { type: 'object', properties: { a: { $ref: '#/definitions/x' } } } }, 'json_schema', "can't resolve reference #/definitions/x"],
    ['a draft 2020-12 schema', { json_schema: { $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'object' } }, 'json_schema', 'no schema with key or ref'],
    ['a schema with a broken pattern', { json_schema: { type: 'object', properties: { a: { type: 'string', pattern: '(' } } } }, 'json_schema', 'Invalid regular expression'],
    ['a schema over 64 KiB', { json_schema: big }, 'json_schema', '64 KiB'],
    ['a schema nested too deep', { json_schema: deep }, 'json_schema', 'levels deep'],
  ]
  for (const [name, fields, field, says] of bad) {
    it(`refuses ${name} with 400 naming ${field}`, async () => {
      const { app } = await makeApp()
      const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', ...fields } })
      expect(response.statusCode, response.body).toBe(400)
      const { error } = response.json()
      expect(error).toMatchObject({ code: 'validation_error', field })
      expect(error.message).toMatch(says)
      expect(error.message).not.toContain('is not a known field')
      expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
    })
  }

  it('takes the schemas the CLI takes: formats unchecked, $defs, draft-07 named', async () => {
    const { app } = await makeApp()
    const schemas = [
      { type: 'object', properties: { a: { type: 'string', format: 'no-such-format' } } },
      { type: 'object', $defs: { x: { type: 'string' } }, properties: { a: { $ref: '#/$defs/x' } } },
      { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', definitions: { x: { type: 'integer' } }, properties: { a: { $ref: '#/definitions/x' } } },
      // The same $id twice in a row: one request's schema must not linger for the next.
      { $id: 'https://example.com/verdict', type: 'object' },
      { $id: 'https://example.com/verdict', type: 'object' },
    ]
    for (const schema of schemas) {
      const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: '[[fake structured {}]]', json_schema: schema } })
      expect(response.statusCode, `${JSON.stringify(schema)}: ${response.body}`).toBe(202)
      await finished(app, response.json().job_id)
    }
  })

  it('refuses an unknown MCP profile, listing the known ones', async () => {
    const dir = await mcpDir({ 'github.json': { mcpServers: { github: stdio('github') } }, 'docs.json': { mcpServers: { docs: stdio('docs') } }, 'notes.txt': 'not a profile' })
    const { app } = await makeApp({ mcpConfigDir: dir })
    const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', mcp_servers: ['github', 'gitlab'] } })
    expect(response.statusCode).toBe(400)
    expect(response.json().error).toEqual({
      code: 'unknown_mcp_server',
      message: 'body.mcp_servers.1 "gitlab" is not an MCP server profile here: the profiles are: docs, github',
      field: 'mcp_servers.1',
      known: ['docs', 'github'],
    })
    expect(app.ctx.engine.queue.counts.active + app.ctx.engine.queue.counts.queued).toBe(0)
  })

  it('says there are no profiles when MCP_CONFIG_DIR is not set', async () => {
    const { app } = await makeApp()
    const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', mcp_servers: ['github'] } })
    expect(response.statusCode).toBe(400)
    expect(response.json().error).toMatchObject({ code: 'unknown_mcp_server', message: expect.stringContaining('MCP_CONFIG_DIR is not set'), known: [] })
  })

  it('refuses two profiles that define the same server', async () => {
    const dir = await mcpDir({ 'a.json': { mcpServers: { github: stdio('a') } }, 'b.json': { mcpServers: { github: stdio('b') } } })
    const { app } = await makeApp({ mcpConfigDir: dir })
    const response = await app.inject({ method: 'POST', url: '/execute', headers: AUTH, payload: { prompt: 'hi', mcp_servers: ['a', 'b'] } })
    expect(response.statusCode).toBe(400)
    expect(response.json().error).toMatchObject({ code: 'validation_error', field: 'mcp_servers.1', message: expect.stringContaining('both define the MCP server "github"') })
  })
})

describe('MCP_CONFIG_DIR at start-up', () => {
  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['a file that is not JSON', { 'broken.json': '{"mcpServers": ' }, /broken\.json is not valid JSON/],
    ['a file without mcpServers', { 'servers.json': { servers: { x: stdio('x') } } }, /servers\.json has no "mcpServers" object/],
    ['an array', { 'list.json': [] }, /list\.json must be a JSON object/],
    ['a server without a command', { 'nocmd.json': { mcpServers: { x: {} } } }, /nocmd\.json server "x" needs a "command"/],
    ['a server of an unknown type', { 'odd.json': { mcpServers: { x: { type: 'bogus', url: 'http://h/' } } } }, /odd\.json server "x" has type "bogus"/],
    ['an http server without a url', { 'web.json': { mcpServers: { x: { type: 'http' } } } }, /web\.json server "x" \(http\) needs a "url"/],
    ['arguments that are not strings', { 'args.json': { mcpServers: { x: { command: 'node', args: [1] } } } }, /args\.json server "x": "args" must be an array of strings/],
    ['a profile name that is not a name', { 'my profile.json': { mcpServers: {} } }, /my profile\.json: a profile name must be/],
  ]
  for (const [name, files, message] of bad) {
    it(`stops on ${name}, naming the file`, async () => {
      const dir = await mcpDir({ 'good.json': { mcpServers: { ok: stdio('ok') } }, ...files })
      const config = defaultConfig({ workspaceRoot: await tempDir(), claudeBin: FAKE_CLAUDE, authTokens: [TOKEN], mcpConfigDir: dir })
      const built = buildApp(config, { logger: false })
      await expect(built).rejects.toBeInstanceOf(ConfigError)
      await expect(built).rejects.toThrow(message)
    })
  }

  it('stops when the folder cannot be read', async () => {
    const config = defaultConfig({ workspaceRoot: await tempDir(), claudeBin: FAKE_CLAUDE, authTokens: [TOKEN], mcpConfigDir: join(await tempDir(), 'missing') })
    await expect(buildApp(config, { logger: false })).rejects.toThrow(/MCP_CONFIG_DIR .*missing cannot be read/)
  })
})

describe('structured output', () => {
  it('gives the finished job result.structured_output', async () => {
    const { app } = await makeApp()
    const job = await run(app, { prompt: 'Review. [[fake structured {"verdict": "pass", "reasons": ["tests cover it"]}]]', json_schema: VERDICT })
    expect(job).toMatchObject({ status: 'completed', error: null })
    expect(job.result!.structured_output).toEqual({ verdict: 'pass', reasons: ['tests cover it'] })
    expect(JSON.parse(job.result!.text!)).toEqual({ verdict: 'pass', reasons: ['tests cover it'] })
    expect(job.request.json_schema).toEqual(VERDICT)
    const result = (await app.ctx.engine.events.since(job.job_id, 0)).find(event => event.type === 'result')!
    expect(JSON.parse(result.json).structured_output).toEqual({ verdict: 'pass', reasons: ['tests cover it'] })
  })

  it('fails the job as structured_output_missing when the agent answers in prose, with what it said', async () => {
    const { app } = await makeApp()
    const job = await run(app, { prompt: '[[fake text The change looks fine to me.]]', json_schema: VERDICT })
    expect(job.status).toBe('failed')
    expect(job.error!.code).toBe('structured_output_missing')
    expect(job.error!.message).toContain('did not call the StructuredOutput tool')
    expect(job.error!.message).toContain('"The change looks fine to me."')
    // The CLI itself called it a success.
    expect(job.result).toMatchObject({ is_error: false, subtype: 'success', structured_output: null })
    expect(job.exit).toEqual({ code: 0, signal: null })
  })

  it('fails the job as structured_output_missing when the output never matches, with the CLI\'s reason', async () => {
    const { app } = await makeApp()
    const job = await run(app, { prompt: '[[fake structured {"verdict": "maybe"}]]', json_schema: VERDICT })
    expect(job.status).toBe('failed')
    expect(job.error).toEqual({
      code: 'structured_output_missing',
      message: 'Failed to provide valid structured output after 5 attempts — last StructuredOutput error: Output does not match required schema: /verdict: must be equal to one of the allowed values',
    })
    expect(job.result).toMatchObject({ is_error: true, subtype: 'error_max_structured_output_retries' })
  })

  it('leaves a run without json_schema alone, whatever it answers', async () => {
    const { app } = await makeApp()
    const job = await run(app, { prompt: 'plain' })
    expect(job).toMatchObject({ status: 'completed', result: { structured_output: null } })
  })
})

describe('JsonSchemaChecker', () => {
  const heavy = { type: 'object', anyOf: Array.from({ length: 2000 }, (_, i) => ({ required: [`x${i}`] })) }

  it('compiles off the event loop', async () => {
    // A bound far past the compile's time even on a loaded machine: this test is about the loop.
    const checker = new JsonSchemaChecker({ timeoutMs: 60_000 })
    let settled = false
    const checked = checker.problem(heavy).then(problem => { settled = true; return problem })
    // An in-thread compile of this schema holds the loop for hundreds of milliseconds.
    await new Promise(resolve => setImmediate(resolve))
    expect(settled).toBe(false)
    expect(await checked).toBeUndefined()
    await checker.close()
  })

  it('refuses a schema that takes too long to compile, then goes on checking', async () => {
    // The heavy schema takes 0.5-1 s to compile; a small one a millisecond.
    const checker = new JsonSchemaChecker({ timeoutMs: 200 })
    const [slow, next] = await Promise.all([checker.problem(heavy), checker.problem({ type: 'object', 'x-y': 1 })])
    expect(slow).toMatch(/could not be compiled within 0.2 s/)
    expect(next).toBe('strict mode: unknown keyword: "x-y"')
    await checker.close()
  })

  it('answers after close without starting anything', async () => {
    const checker = new JsonSchemaChecker()
    await checker.close()
    expect(await checker.problem({ type: 'object' })).toMatch(/shutting down/)
  })
})

describe('the job JSON', () => {
  it('lists the controls in the OpenAPI document of POST /execute', async () => {
    const { app } = await makeApp()
    const document = (await app.inject({ method: 'GET', url: '/openapi.json', headers: AUTH })).json()
    const body = document.paths['/execute'].post.requestBody.content['application/json'].schema
    expect(Object.keys(body.properties)).toEqual(expect.arrayContaining(['json_schema', 'allowed_tools', 'disallowed_tools', 'append_system_prompt', 'effort', 'fallback_model', 'mcp_servers']))
    expect(body.properties.effort.enum).toEqual(['low', 'medium', 'high', 'xhigh', 'max'])
    const job = await submit(app, { prompt: 'hi', effort: 'low' })
    expect(job.request.effort).toBe('low')
    await finished(app, job.job_id)
  })
})
