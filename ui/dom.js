// Building the page out of elements and text nodes: nothing here, or anywhere in the dashboard,
// turns a string into markup (the lint forbids innerHTML and friends, the CSP's Trusted Types
// make them throw), so whatever a job holds can only ever be shown as text.

/**
 * @typedef {string | number | Node | null | undefined | false} Child
 * @typedef {{
 *   class?: string | undefined,
 *   on?: Partial<Record<keyof HTMLElementEventMap, (event: any) => void>>,
 *   dataset?: Record<string, string>,
 *   [attribute: string]: unknown,
 * }} Props
 */

/**
 * An element with attributes and children; strings become text nodes.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props | null} [props]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h (tag, props, ...children) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (name === 'on') {
      for (const [type, listener] of Object.entries(/** @type {Record<string, EventListener>} */ (value))) element.addEventListener(type, listener)
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value)
    } else if (name === 'class') {
      element.className = String(value)
    } else if (name === 'href' || name === 'src' || name === 'action' || name === 'formaction' || name.startsWith('on')) {
      // URLs and handlers are set where they are made, after checking them (see safeHref).
      throw new Error(`h(): set ${name} explicitly`)
    } else {
      element.setAttribute(name, value === true ? '' : String(value))
    }
  }
  append(element, children)
  return element
}

/**
 * @param {Node} parent
 * @param {Array<Child | Child[]>} children
 */
export function append (parent, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)))
  }
}

/**
 * A link within the dashboard (its hash routes) or to this origin.
 * @param {string} href
 * @param {Props | null} props
 * @param {...(Child | Child[])} children
 */
export function link (href, props, ...children) {
  const a = h('a', props, ...children)
  if (!href.startsWith('#/')) throw new Error(`not a dashboard route: ${href}`)
  a.href = href
  return a
}

/**
 * An absolute http(s) or mailto URL, or undefined: nothing else becomes a link target.
 * @param {string} url
 */
export function safeHref (url) {
  try {
    const parsed = new URL(url)
    return ['http:', 'https:', 'mailto:'].includes(parsed.protocol) ? parsed.href : undefined
  } catch {
    return undefined
  }
}

/** @param {Element} element @param {...(Child | Child[])} children */
export function replace (element, ...children) {
  element.replaceChildren()
  append(element, children)
  return element
}
