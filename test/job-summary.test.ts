import { describe, expect, it } from 'vitest'
import { firstLine } from '../src/schemas/job.ts'
import { AUTH, makeApp, run, submit } from './helpers/app.ts'
import { AgentProbe } from './helpers/probe.ts'

describe('GET /jobs summaries', () => {
  it('lists each job\'s prompt first line and run time', async () => {
    const { app } = await makeApp()
    const long = 'é'.repeat(300)
    const made = []
    for (const prompt of ['\n\n   Review the parser  \r\nand more lines', `${long}\nsecond`, 'one line [[fake sleep 30]]']) made.push(await run(app, { prompt }))
    const probe = await AgentProbe.start()
    const held = await submit(app, { prompt: `held ${probe.directive}` })
    await probe.waitStarted(1)
    const { jobs } = (await app.inject({ method: 'GET', url: '/jobs', headers: AUTH })).json()
    const byId = Object.fromEntries(jobs.map((job: { job_id: string }) => [job.job_id, job]))
    expect(byId[made[0]!.job_id]).toMatchObject({ prompt_first_line: 'Review the parser', run_ms: made[0]!.run_ms })
    expect(byId[made[1]!.job_id].prompt_first_line).toBe('é'.repeat(199) + '…')
    expect(byId[made[2]!.job_id].run_ms).toBeGreaterThanOrEqual(30)
    expect(byId[held.job_id]).toMatchObject({ status: 'running', prompt_first_line: `held ${probe.directive}`, run_ms: null })
    probe.release()
  })

  it('cuts the first line at code points', () => {
    expect(firstLine('', 10)).toBe('')
    expect(firstLine(' \n\t\r\n ', 10)).toBe('')
    expect(firstLine('abc', 3)).toBe('abc')
    expect(firstLine('abcd', 3)).toBe('ab…')
    expect(firstLine('a\rb', 10)).toBe('a')
    // Code points, not UTF-16 units: an emoji is never cut in half.
    expect(firstLine('😀'.repeat(5), 3)).toBe('😀😀…')
    expect(firstLine('😀'.repeat(3), 3)).toBe('😀😀😀')
    expect(firstLine(`  ${'x'.repeat(1024 * 1024)}\nmore`, 200)).toBe('x'.repeat(199) + '…')
  })
})
