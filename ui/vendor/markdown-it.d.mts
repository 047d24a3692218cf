// Types of /ui/vendor/markdown-it.mjs, which the service serves from node_modules/markdown-it
// (its browser build, `markdown-it/browser`): the page imports it by that URL, tsc by this file.
export { default } from 'markdown-it'
export type * from 'markdown-it'
