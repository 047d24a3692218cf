// An agent's answer is Markdown written by whoever steered the agent. markdown-it parses it (raw
// HTML off: `<script>` is text to it), and its tokens become elements here, one by one. No HTML
// string is ever made, so there is nothing to sanitise; link targets are checked, images are
// never loaded (a pixel would tell a third party that someone read the job).
import MarkdownIt from './vendor/markdown-it.mjs'
import { append, h, safeHref } from './dom.js'

/** @typedef {import('./vendor/markdown-it.mjs').Token} Token */

const md = new MarkdownIt({ html: false, linkify: true, typographer: false })

/** The tags markdown-it makes from Markdown; anything else would be a bug, shown as a span. */
const TAGS = new Set(['p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'blockquote', 'ul', 'ol', 'li', 'table', 'thead',
  'tbody', 'tr', 'th', 'td', 'strong', 'em', 's', 'code', 'pre', 'hr', 'br'])

/**
 * Markdown as a fragment of elements and text nodes.
 * @param {string} source
 * @returns {DocumentFragment}
 */
export function renderMarkdown (source) {
  const fragment = document.createDocumentFragment()
  build(md.parse(source, {}), fragment)
  return fragment
}

/**
 * @param {Token[]} tokens
 * @param {Node} root
 */
function build (tokens, root) {
  /** @type {Node[]} */
  const stack = [root]
  const top = () => /** @type {Node} */ (stack.at(-1))
  for (const token of tokens) {
    if (token.nesting === 1) {
      // Tight lists hide their paragraphs: the text goes straight into the item.
      const element = token.hidden ? top() : open(token)
      if (element !== top()) top().appendChild(element)
      stack.push(element)
    } else if (token.nesting === -1) {
      stack.pop()
    } else {
      leaf(token, top())
    }
  }
}

/** @param {Token} token */
function open (token) {
  if (token.type === 'link_open') {
    const href = safeHref(String(token.attrGet('href') ?? ''))
    if (href === undefined) return h('span', { class: 'md-link' })
    const a = h('a', { rel: 'noopener noreferrer nofollow', target: '_blank' })
    a.href = href
    return a
  }
  const tag = TAGS.has(token.tag) ? token.tag : 'span'
  const element = document.createElement(tag)
  const start = token.attrGet('start')
  if (tag === 'ol' && start !== null) element.setAttribute('start', String(Number(start) || 1))
  // Column alignment arrives as a style attribute, which the CSP forbids: a class instead.
  const align = /text-align:(left|right|center)/.exec(String(token.attrGet('style') ?? ''))
  if (align !== null) element.classList.add(`align-${align[1]}`)
  return element
}

/**
 * @param {Token} token
 * @param {Node} parent
 */
function leaf (token, parent) {
  switch (token.type) {
    case 'inline':
      build(token.children ?? [], parent)
      return
    case 'text':
    case 'html_inline':
    case 'html_block':
      append(parent, [token.content])
      return
    case 'softbreak':
      append(parent, ['\n'])
      return
    case 'hardbreak':
      parent.appendChild(h('br'))
      return
    case 'code_inline':
      parent.appendChild(h('code', null, token.content))
      return
    case 'fence':
    case 'code_block':
      parent.appendChild(h('pre', null, h('code', null, token.content)))
      return
    case 'hr':
      parent.appendChild(h('hr'))
      return
    case 'image': {
      const alt = token.children?.map(child => child.content).join('') || 'image'
      const href = safeHref(String(token.attrGet('src') ?? ''))
      const label = `[image: ${alt}]`
      if (href === undefined) {
        append(parent, [label])
      } else {
        const a = h('a', { rel: 'noopener noreferrer nofollow', target: '_blank', class: 'md-image' }, label)
        a.href = href
        parent.appendChild(a)
      }
      return
    }
    default:
      append(parent, [token.content])
  }
}
