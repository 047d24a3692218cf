// Numbers and times as people read them. Pure functions: no DOM, tested under Node.

/** @param {number | null | undefined} ms */
export function duration (ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—'
  if (ms < 1000) return `${Math.round(ms)} ms`
  const s = ms / 1000
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`
  const m = Math.floor(s / 60)
  if (m < 60) return `${m} min ${String(Math.floor(s % 60)).padStart(2, '0')} s`
  const hours = Math.floor(m / 60)
  if (hours < 48) return `${hours} h ${String(m % 60).padStart(2, '0')} min`
  return `${Math.floor(hours / 24)} d ${hours % 24} h`
}

/**
 * How long ago `iso` was, as of `now`.
 * @param {string} iso
 * @param {number} now
 */
export function age (iso, now) {
  const ms = now - Date.parse(iso)
  if (!Number.isFinite(ms)) return '—'
  const s = Math.floor(ms / 1000)
  if (s < 5) return 'just now'
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 48 * 3600) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86400)} d ago`
}

/** @param {number | null | undefined} usd */
export function cost (usd) {
  if (usd === null || usd === undefined) return '—'
  if (usd === 0) return '$0'
  return usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(usd < 10 ? 3 : 2)}`
}

/** @param {number | null | undefined} n */
export function count (n) {
  return n === null || n === undefined ? '—' : n.toLocaleString('en-US')
}

/** @param {number} bytes */
export function bytes (bytes) {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

/** @param {string | null | undefined} iso */
export function time (iso) {
  if (iso === null || iso === undefined) return '—'
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? '—' : date.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' })
}

/**
 * Words for a status or phase: `timed_out` reads "timed out".
 * @param {string} value
 */
export function words (value) {
  return value.replaceAll('_', ' ')
}
