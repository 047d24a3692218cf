import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { gunzip, gzip } from 'node:zlib'
import { readPlainFile } from '../plain-files.ts'

/**
 * A Claude Code session's transcript, which is all `claude -p --resume <id>` needs (measured with
 * 2.1.332: a fresh CLAUDE_CONFIG_DIR holding only that file resumes, and the model gets the whole
 * conversation again). The CLI keeps it at CLAUDE_CONFIG_DIR/projects/<cwd>/<session id>.jsonl,
 * where <cwd> is the working directory with every character but a letter or a digit made `-`; in
 * the sandbox the cwd is always /workspace, so the folder is `-workspace` in every run. A resumed
 * session keeps its id and is appended to the same file.
 */

/** The CLI's session ids are UUIDs. Anything else never becomes a file name (an agent can print lines of its own). */
export const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

function transcriptParts (cwd: string, sessionId: string): string[] {
  if (!SESSION_ID.test(sessionId)) throw new TypeError(`not a session id: ${JSON.stringify(sessionId)}`)
  return ['projects', cwd.replace(/[^A-Za-z0-9]/g, '-'), `${sessionId}.jsonl`]
}

/**
 * The transcript a run's CLI wrote, at most `maxBytes` of it. The configuration folder was the
 * agent's to write: it is read as a plain file, never through a symlink.
 */
export async function readTranscript (configDir: string, cwd: string, sessionId: string, maxBytes: number): Promise<Buffer | 'too_large' | undefined> {
  return readPlainFile(configDir, transcriptParts(cwd, sessionId), maxBytes)
}

/** Puts a transcript where the CLI of a new run (with this configuration folder and cwd) finds it. */
export async function writeTranscript (configDir: string, cwd: string, sessionId: string, data: Buffer): Promise<void> {
  const parts = transcriptParts(cwd, sessionId)
  await mkdir(join(configDir, ...parts.slice(0, -1)), { recursive: true, mode: 0o700 })
  await writeFile(join(configDir, ...parts), data, { mode: 0o600, flag: 'wx' })
}

/** Transcripts are JSON lines, mostly the API requests' shapes: gzip keeps about a quarter (measured: 146 KB → 42 KB). */
export const compressTranscript: (data: Buffer) => Promise<Buffer> = promisify(gzip)

const gunzipAsync = promisify(gunzip)

/** Never more than the `bytes` the transcript had when it was kept. */
export async function decompressTranscript (data: Buffer, bytes: number): Promise<Buffer> {
  return gunzipAsync(data, { maxOutputLength: Math.max(1, bytes) })
}
