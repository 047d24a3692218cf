import { describe, expect, it } from 'vitest'
import { isCommitId, refProblem } from '../src/workspace/refs.ts'
import { RwLock } from '../src/workspace/rw-lock.ts'

describe('refProblem', () => {
  it('accepts branches, tags and commit ids', () => {
    for (const ref of ['main', 'feature/login-form', 'release-1.2', 'v1.0', 'user_x/fix.2', 'a1b2c3d', '0123456789abcdef0123456789abcdef01234567']) {
      expect(refProblem(ref), ref).toBeUndefined()
    }
    expect(isCommitId('a1b2c3d')).toBe(true)
    expect(isCommitId('main')).toBe(false)
  })

  it('refuses what git could read as an option or a revision expression', () => {
    const refused: Record<string, string> = {
      '-x': 'must not start with "-"',
      '--upload-pack=evil': 'must not start with "-"',
      'main~1': 'must not contain spaces',
      'HEAD^2': 'must not contain spaces',
      'a..b': 'must not contain ".."',
      '@{-1}': 'must not contain "@{"',
      '@': 'must not contain "@{" or be "@"',
      'x/.y': 'no part may start with "."',
      'x.lock': 'no part may end with ".lock"',
      'x.': 'must not end with "."',
      '/x': 'must not start or end with "/"',
      'a\nb': 'must not contain spaces',
      '': 'must be 1 to 255 characters',
    }
    for (const [ref, problem] of Object.entries(refused)) expect(refProblem(ref), JSON.stringify(ref)).toContain(problem)
  })
})

describe('RwLock', () => {
  it('lets readers share, keeps a writer alone, and serves a waiting writer before later readers', async () => {
    const lock = new RwLock()
    const log: string[] = []
    const hold = () => {
      const { promise, resolve } = Promise.withResolvers<void>()
      return { promise, resolve }
    }
    const r1 = hold()
    const r2 = hold()
    const w = hold()
    const reads = [
      lock.read(async () => { log.push('r1 in'); await r1.promise; log.push('r1 out') }),
      lock.read(async () => { log.push('r2 in'); await r2.promise; log.push('r2 out') }),
    ]
    const write = lock.write(async () => { log.push('w in'); await w.promise; log.push('w out') })
    const late = lock.read(async () => { log.push('r3 in') })
    await Promise.resolve()
    expect(log).toEqual(['r1 in', 'r2 in'])
    r1.resolve()
    r2.resolve()
    await Promise.all(reads)
    await new Promise(resolve => setImmediate(resolve))
    expect(log).toEqual(['r1 in', 'r2 in', 'r1 out', 'r2 out', 'w in'])
    w.resolve()
    await write
    await late
    expect(log.slice(-2)).toEqual(['w out', 'r3 in'])
  })

  it('releases on errors', async () => {
    const lock = new RwLock()
    await expect(lock.write(async () => { throw new Error('boom') })).rejects.toThrow('boom')
    await expect(lock.read(async () => 'ok')).resolves.toBe('ok')
  })
})
