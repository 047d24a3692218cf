import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

/** Runs real git in `cwd` and returns its trimmed stdout. */
export function sh (cwd: string, args: string[]): string {
  return execFileSync('git', args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: '1', GIT_AUTHOR_NAME: 'Test', GIT_AUTHOR_EMAIL: 'test@example.invalid', GIT_COMMITTER_NAME: 'Test', GIT_COMMITTER_EMAIL: 'test@example.invalid' },
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim()
}

export function writeFile (root: string, path: string, content: string): void {
  mkdirSync(dirname(join(root, path)), { recursive: true })
  writeFileSync(join(root, path), content)
}

export interface FixtureRepo {
  /** A working clone, unlocked when git-crypt is used: where the tests make new commits. */
  work: string
  /** A bare "origin": what BASE_REPO points at, fetched from and pushed to. */
  origin: string
  /** The exported git-crypt key, when git-crypt is used. */
  key: string | undefined
  commits: { initial: string, feature: string, main: string }
}

/**
 * A small repository made in the test, no network: main with two commits, a tag v1.0 on the
 * first, a branch `feature`, and (with gitCrypt) `secret/` encrypted with git-crypt.
 */
export function makeRepo (dir: string, options: { gitCrypt?: boolean } = {}): FixtureRepo {
  const work = join(dir, 'work')
  const origin = join(dir, 'origin.git')
  mkdirSync(work, { recursive: true })
  sh(work, ['init', '-q', '-b', 'main'])
  let key: string | undefined
  if (options.gitCrypt === true) {
    execFileSync('git-crypt', ['init'], { cwd: work, stdio: 'ignore' })
    key = join(dir, 'git-crypt.key')
    execFileSync('git-crypt', ['export-key', key], { cwd: work, stdio: 'ignore' })
    writeFile(work, '.gitattributes', 'secret/** filter=git-crypt diff=git-crypt\n')
    writeFile(work, 'secret/token.txt', 'TOPSECRET\n')
  }
  writeFile(work, 'README.md', '# fixture\n')
  writeFile(work, 'src/app.txt', 'line 1\nline 2\n')
  sh(work, ['add', '-A'])
  sh(work, ['commit', '-q', '-m', 'initial'])
  const initial = sh(work, ['rev-parse', 'HEAD'])
  sh(work, ['tag', 'v1.0'])
  sh(work, ['checkout', '-q', '-b', 'feature'])
  writeFile(work, 'feature.txt', 'feature work\n')
  sh(work, ['add', '-A'])
  sh(work, ['commit', '-q', '-m', 'feature'])
  const feature = sh(work, ['rev-parse', 'HEAD'])
  sh(work, ['checkout', '-q', 'main'])
  writeFile(work, 'CHANGELOG.md', '- second commit\n')
  sh(work, ['add', '-A'])
  sh(work, ['commit', '-q', '-m', 'second'])
  const main = sh(work, ['rev-parse', 'HEAD'])
  sh(dir, ['clone', '-q', '--bare', work, origin])
  sh(work, ['remote', 'add', 'origin', origin])
  return { work, origin, key, commits: { initial, feature, main } }
}

/** Adds a commit on `branch` in the working clone and pushes it to origin. */
export function pushCommit (repo: FixtureRepo, branch: string, file: string, content: string): string {
  sh(repo.work, ['checkout', '-q', '-B', branch])
  writeFile(repo.work, file, content)
  sh(repo.work, ['add', '-A'])
  sh(repo.work, ['commit', '-q', '-m', `add ${file}`])
  sh(repo.work, ['push', '-q', 'origin', `${branch}:${branch}`])
  const commit = sh(repo.work, ['rev-parse', 'HEAD'])
  sh(repo.work, ['checkout', '-q', 'main'])
  return commit
}
