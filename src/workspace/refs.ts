/**
 * What a job may ask to check out: a commit id, or a branch or tag name that passes git's
 * ref-format rules (git-check-ref-format(1)). Anything that could be read as an option, a revision
 * expression (`main~2`, `@{-1}`) or a path trick is refused before git ever sees it.
 */
const COMMIT_ID = /^[0-9a-f]{4,64}$/i

export function isCommitId (ref: string): boolean {
  return COMMIT_ID.test(ref)
}

/** Returns why `ref` is not acceptable, or undefined when it is. */
export function refProblem (ref: string): string | undefined {
  if (ref.length === 0 || ref.length > 255) return 'must be 1 to 255 characters'
  if (ref.startsWith('-')) return 'must not start with "-"'
  if (isCommitId(ref)) return undefined
  // Names are looked up under refs/heads/ and refs/tags/; a full name would be looked up as
  // refs/heads/refs/heads/... and fail only once the job ran.
  const full = /^refs\/(heads|tags)\/(.+)$/.exec(ref)
  if (full !== null) return `must be a branch, tag or commit as it is named in the repository: send ${JSON.stringify(full[2])}, not ${JSON.stringify(ref)}`
  if (ref.startsWith('refs/')) return 'must be a branch, tag or commit name, not a full ref name (refs/...)'
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(ref)) return 'must not contain spaces, control characters or any of ~ ^ : ? * [ \\'
  if (ref.includes('..')) return 'must not contain ".."'
  if (ref.includes('@{') || ref === '@') return 'must not contain "@{" or be "@"'
  if (ref.startsWith('/') || ref.endsWith('/') || ref.includes('//')) return 'must not start or end with "/" or contain "//"'
  if (ref.endsWith('.')) return 'must not end with "."'
  for (const component of ref.split('/')) {
    if (component.startsWith('.')) return 'no part may start with "."'
    if (component.endsWith('.lock')) return 'no part may end with ".lock"'
  }
  return undefined
}
