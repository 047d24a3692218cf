// A git server over smart HTTP for tests: `git http-backend` (git's own CGI program) behind a node
// HTTP server that demands Basic credentials, so a BASE_REPO URL can carry a real user:token.
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { dirname } from 'node:path'
import { onTestFinished } from 'vitest'

export interface GitHttpServer {
  /** The repository's URL with `user:token@` in it. */
  url: string
  /** How many requests came with the right credentials. */
  authorized: () => number
}

export async function serveGitHttp (bareRepo: string, user: string, token: string): Promise<GitHttpServer> {
  const expected = `Basic ${Buffer.from(`${user}:${token}`).toString('base64')}`
  let authorized = 0
  const server = createServer((request, response) => {
    if (request.headers.authorization !== expected) {
      response.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end()
      return
    }
    authorized++
    const url = new URL(request.url!, 'http://git')
    const cgi = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: dirname(bareRepo),
        GIT_HTTP_EXPORT_ALL: '1',
        REMOTE_USER: user,
        REQUEST_METHOD: request.method,
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: request.headers['content-type'] ?? '',
        ...(request.headers['content-encoding'] === undefined ? {} : { HTTP_CONTENT_ENCODING: request.headers['content-encoding'] }),
      },
    })
    request.pipe(cgi.stdin)
    // CGI: headers, a blank line, then the body, all on stdout.
    let head = Buffer.alloc(0)
    let headersDone = false
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) { response.write(chunk); return }
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      headersDone = true
      let status = 200
      for (const line of head.subarray(0, end).toString().split('\r\n')) {
        const colon = line.indexOf(':')
        const name = line.slice(0, colon).trim()
        const value = line.slice(colon + 1).trim()
        if (name.toLowerCase() === 'status') status = Number.parseInt(value, 10)
        else response.setHeader(name, value)
      }
      response.writeHead(status)
      response.write(head.subarray(end + 4))
    })
    cgi.on('close', () => response.end())
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  const port = (server.address() as { port: number }).port
  const name = bareRepo.slice(dirname(bareRepo).length + 1)
  return { url: `http://${user}:${token}@127.0.0.1:${port}/${name}`, authorized: () => authorized }
}
