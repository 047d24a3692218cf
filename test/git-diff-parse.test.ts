import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { parseRawNumstat } from '../src/workspace/changes.ts'
import { tempDir } from './helpers/app.ts'
import { sh, writeFile } from './helpers/repos.ts'

describe('parseRawNumstat', () => {
  it('reads statuses, renames and line counts from real git output', async () => {
    const repo = await tempDir()
    sh(repo, ['init', '-q', '-b', 'main'])
    writeFile(repo, 'keep.txt', 'a\n')
    writeFile(repo, 'gone.txt', 'b\n')
    writeFile(repo, 'old name.txt', Array.from({ length: 50 }, (_, i) => `line ${i}`).join('\n') + '\n')
    sh(repo, ['add', '-A'])
    sh(repo, ['commit', '-q', '-m', 'base'])
    writeFile(repo, 'dir/.keep', '')
    sh(repo, ['mv', 'old name.txt', 'dir/new name.txt'])
    writeFile(repo, 'keep.txt', 'a\nmore\n')
    sh(repo, ['rm', '-q', 'gone.txt'])
    writeFile(repo, 'added.txt', 'x\ny\n')
    writeFileSync(join(repo, 'blob.bin'), Buffer.from([0, 1, 2, 3]))
    sh(repo, ['add', '-A'])
    const output = sh(repo, ['diff', '--cached', '-M', '--raw', '--numstat', '-z', 'HEAD'])
    const { files, stats } = parseRawNumstat(output)
    expect(files).toEqual(expect.arrayContaining([
      { path: 'keep.txt', status: 'modified' },
      { path: 'gone.txt', status: 'deleted' },
      { path: 'dir/new name.txt', status: 'renamed', old_path: 'old name.txt' },
      { path: 'added.txt', status: 'added' },
      { path: 'blob.bin', status: 'added' },
      { path: 'dir/.keep', status: 'added' },
    ]))
    expect(files).toHaveLength(6)
    // keep +1, gone -1, added +2; the rename changes no line; the binary file counts none.
    expect(stats).toEqual({ files_changed: 6, insertions: 3, deletions: 1 })
  })

  it('reads an empty diff', () => {
    expect(parseRawNumstat('')).toEqual({ files: [], stats: { files_changed: 0, insertions: 0, deletions: 0 } })
  })
})
