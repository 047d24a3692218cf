// A unified diff (git's) with its added and removed lines marked.
import { h } from './dom.js'

/** @typedef {'file' | 'meta' | 'hunk' | 'add' | 'del' | 'context' | 'note'} LineKind */

/**
 * What each line of a unified diff is. Inside a hunk, the counts of its header say where it ends,
 * so a removed line reading "-- x" or an added "++ y" is never taken for a file header.
 * @param {string} diff
 * @returns {Array<{ kind: LineKind, text: string }>}
 */
export function diffLines (diff) {
  /** @type {Array<{ kind: LineKind, text: string }>} */
  const lines = []
  let oldLeft = 0
  let newLeft = 0
  const all = diff.split('\n')
  if (all.at(-1) === '') all.pop()
  for (const text of all) {
    if (oldLeft > 0 || newLeft > 0) {
      const sign = text[0]
      if (sign === '+') { newLeft--; lines.push({ kind: 'add', text }); continue }
      if (sign === '-') { oldLeft--; lines.push({ kind: 'del', text }); continue }
      if (sign === ' ' || text === '') { oldLeft--; newLeft--; lines.push({ kind: 'context', text }); continue }
      if (sign === '\\') { lines.push({ kind: 'note', text }); continue }
      oldLeft = newLeft = 0
    }
    const hunk = /^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@/.exec(text)
    if (hunk !== null) {
      oldLeft = hunk[1] === undefined ? 1 : Number(hunk[1])
      newLeft = hunk[2] === undefined ? 1 : Number(hunk[2])
      lines.push({ kind: 'hunk', text })
    } else if (text.startsWith('diff --git ')) {
      lines.push({ kind: 'file', text })
    } else if (text.startsWith('\\')) {
      lines.push({ kind: 'note', text })
    } else {
      lines.push({ kind: 'meta', text })
    }
  }
  return lines
}

/** @param {string} diff */
export function renderDiff (diff) {
  return h('pre', { class: 'diff' }, diffLines(diff).map(({ kind, text }) => h('span', { class: `line ${kind}` }, text, '\n')))
}
