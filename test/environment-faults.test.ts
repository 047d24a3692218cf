import { execFileSync } from 'node:child_process'
import { renameSync, rmSync, writeFileSync } from 'node:fs'
import { statfs } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { AUTH, makeApp, run, tempDir } from './helpers/app.ts'
import { makeRepo } from './helpers/repos.ts'

/**
 * What the environment does to jobs, and what they say: a full disk under WORKSPACE_ROOT (a real
 * tmpfs of 24 MiB, mounted by the test: it must run as root, as CI does), a BASE_REPO that cannot
 * be fetched.
 */

const MiB = 1024 * 1024
const root = process.getuid?.() === 0
if (!root && process.env.CI === 'true') throw new Error('the disk-full tests mount a tmpfs: run them as root (CI does)')

async function smallDisk (): Promise<string> {
  const dir = await tempDir()
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'tmpfs', dir])
  onTestFinished(() => { execFileSync('umount', ['-l', dir]) })
  return dir
}

/** Leaves `left` bytes free on the filesystem of `dir`; returns the file to remove to free it again. */
async function fill (dir: string, left: number): Promise<string> {
  const filler = join(dir, 'filler')
  const { bavail, bsize } = await statfs(dir)
  writeFileSync(filler, Buffer.alloc(Math.max(0, bavail * bsize - left)))
  return filler
}

const health = async (app: Awaited<ReturnType<typeof makeApp>>['app']) => {
  await app.ctx.disk.refresh()
  const response = await app.inject({ method: 'GET', url: '/health' })
  return { code: response.statusCode, ...response.json() }
}

describe.skipIf(!root)('a full disk under WORKSPACE_ROOT', () => {
  it('fails jobs with workspace_full and the free space, says degraded on /health, and recovers when space frees', async () => {
    const disk = await smallDisk()
    const repo = makeRepo(await tempDir())
    const { app } = await makeApp({ workspaceRoot: disk, baseRepo: repo.origin, baseRefreshSeconds: 0, workspaceMinFreeBytes: 8 * MiB })
    await app.ctx.workspaces.ready
    expect(await health(app)).toMatchObject({ code: 200, status: 'ok', reasons: [], disk: { total_bytes: 24 * MiB, min_free_bytes: 8 * MiB, error: null } })

    // Too little left for a workspace: git, mkdir or cp fail, rarely saying why.
    const filler = await fill(disk, 64 * 1024)
    const degraded = await health(app)
    expect(degraded).toMatchObject({ code: 200, status: 'degraded', reasons: [expect.stringContaining('less than WORKSPACE_MIN_FREE_BYTES (8.0 MiB)')] })
    expect(degraded.disk.free_bytes).toBeLessThan(MiB)
    const noRoom = await run(app, { prompt: 'hi' })
    expect(noRoom).toMatchObject({ status: 'failed', error: { code: 'workspace_full', message: expect.stringMatching(/^the disk under WORKSPACE_ROOT is full \(0\.\d MiB free of 24\.0 MiB\): free some space; the run said: /) } })

    // Room for the workspace, not for what the agent writes: the CLI crashes, and the job says why.
    rmSync(filler)
    await fill(disk, 3 * MiB)
    const crashed = await run(app, { prompt: '[[fake sh dd if=/dev/zero of=/workspace/big bs=1M count=50]] [[fake exit 3]]' })
    expect(crashed).toMatchObject({ status: 'failed', error: { code: 'workspace_full', message: expect.stringContaining('the run said: the CLI exited with code 3') } })

    rmSync(join(disk, 'filler'))
    expect(await health(app)).toMatchObject({ code: 200, status: 'ok', reasons: [] })
    expect(await run(app, { prompt: 'hi' })).toMatchObject({ status: 'completed', error: null })
  })
})

describe('a BASE_REPO that cannot be fetched', () => {
  it('fails a job whose ref needs a fetch with fetch_failed and git\'s reason, never ref_not_found', async () => {
    const repo = makeRepo(await tempDir())
    const { app } = await makeApp({ baseRepo: repo.origin, baseRefreshSeconds: 0 })
    await app.ctx.workspaces.ready
    renameSync(repo.origin, `${repo.origin}.gone`)
    const job = await run(app, { prompt: 'hi', ref: 'pushed-after-start' })
    expect(job).toMatchObject({ status: 'failed', error: { code: 'fetch_failed', message: expect.stringContaining('fetching BASE_REPO to look for it failed: git fetch:') } })
    // What the base already has still works.
    expect(await run(app, { prompt: 'hi', ref: 'main' })).toMatchObject({ status: 'completed' })
    renameSync(`${repo.origin}.gone`, repo.origin)
    const notThere = await run(app, { prompt: 'hi', ref: 'no-such-branch' })
    expect(notThere.error).toMatchObject({ code: 'ref_not_found' })
    const listed = await app.inject({ method: 'GET', url: '/jobs?status=failed', headers: AUTH })
    expect(listed.json().jobs.map((summary: { error: { code: string } }) => summary.error.code).sort()).toEqual(['fetch_failed', 'ref_not_found'])
  })
})
