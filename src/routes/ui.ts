import { basename, dirname, extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyError, FastifyPluginAsync } from 'fastify'

/** The dashboard's files: static, the same for everyone, holding no data and no token. */
export const UI_ROOT = fileURLToPath(new URL('../../ui/', import.meta.url))
/** markdown-it's browser build: one ES module with no imports, served as it is from node_modules. */
const MARKDOWN_IT = fileURLToPath(import.meta.resolve('markdown-it/browser'))

/** What the browser may fetch from ui/; its tsconfig and type shims are not for it. */
const SERVED_EXTENSIONS = new Set(['.html', '.css', '.js', '.mjs', '.svg'])

/**
 * The page runs with no inline script or style, talks to this origin only, cannot be framed, and
 * Trusted Types make any HTML string written into the DOM (innerHTML and friends) throw: job data
 * can only become text nodes. `form-action 'none'` means a form that JavaScript failed to take
 * over can never put the token into a URL.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join('; ')

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  // Revalidated on every load (ETag), so an upgrade never runs yesterday's script.
  'cache-control': 'no-cache',
}

/**
 * GET /ui/: the dashboard, a single page that signs in with a bearer token and reads everything
 * from the API. Browser navigations cannot carry that header, so these files load without one;
 * they are the same static files for everyone and every datum comes from the API, with the token.
 */
export const uiRoutes: FastifyPluginAsync = async app => {
  app.addHook('onRequest', (_request, reply, done) => {
    void reply.headers(SECURITY_HEADERS)
    done()
  })
  // A path that leaves ui/ (`..`, a symlink) or names a file not served is just not there.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error.statusCode !== 403 && error.statusCode !== 404) throw error
    void reply.code(404).send({ error: { code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` } })
  })
  await app.register(fastifyStatic, {
    root: UI_ROOT,
    // Without the trailing slash, so that /ui redirects to /ui/.
    prefix: '/ui',
    redirect: true,
    index: 'index.html',
    dotfiles: 'ignore',
    cacheControl: false,
    allowedPath: pathName => SERVED_EXTENSIONS.has(extname(pathName)) || pathName.endsWith('/'),
  })
  app.get('/ui/vendor/markdown-it.mjs', { schema: { hide: true } }, (_request, reply) => reply.sendFile(basename(MARKDOWN_IT), dirname(MARKDOWN_IT)))
  app.get('/', { schema: { hide: true } }, (_request, reply) => reply.redirect('/ui/'))
}
