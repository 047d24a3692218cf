// The form that submits a job. Every submission carries an Idempotency-Key that changes only with
// what is submitted: pressing Submit again after a lost answer returns the same job, never a second.
import { randomKey } from './api.js'
import { h, replace } from './dom.js'

const FIELDS = /** @type {const} */ (['agent', 'model', 'ref'])

/**
 * @param {import('./app.js').Context} context
 * @returns {import('./app.js').View}
 */
export function submitView ({ api, navigate }) {
  const prompt = h('textarea', { id: 'prompt-input', name: 'prompt', rows: 10, required: true, spellcheck: 'false', placeholder: 'What the agent should do' })
  const inputs = {
    agent: h('input', { id: 'agent-input', name: 'agent', autocomplete: 'off', placeholder: 'default' }),
    model: h('input', { id: 'model-input', name: 'model', autocomplete: 'off', list: 'models', placeholder: 'the CLI\'s default' }),
    ref: h('input', { id: 'ref-input', name: 'ref', autocomplete: 'off', placeholder: 'BASE_REF (needs BASE_REPO)' }),
  }
  const message = h('p', { class: 'error', role: 'alert', id: 'submit-error' })
  const button = h('button', { type: 'submit', id: 'submit' }, 'Submit')
  /** @param {string} id @param {string} text @param {HTMLElement} input @param {string} [hint] */
  const field = (id, text, input, hint) => h('div', { class: 'field' }, h('label', { for: id }, text), input, hint ? h('span', { class: 'hint' }, hint) : null)
  const form = h('form', { class: 'card submit', novalidate: true },
    h('h1', null, 'New job'),
    field('prompt-input', 'Prompt', prompt),
    h('div', { class: 'row' },
      field('agent-input', 'Agent', inputs.agent, '.claude/agents/NAME.md or a built-in one'),
      field('model-input', 'Model', inputs.model, 'haiku, sonnet, opus or a model id'),
      field('ref-input', 'Ref', inputs.ref, 'branch, tag or commit')
    ),
    h('datalist', { id: 'models' }, ['haiku', 'sonnet', 'opus'].map(value => h('option', { value }))),
    message,
    button
  )

  let key = randomKey()
  form.addEventListener('input', () => { key = randomKey() })
  form.addEventListener('submit', async event => {
    event.preventDefault()
    for (const input of [prompt, ...Object.values(inputs)]) input.removeAttribute('aria-invalid')
    if (prompt.value.trim() === '') {
      prompt.setAttribute('aria-invalid', 'true')
      replace(message, 'The prompt is empty.')
      return
    }
    /** @type {{ prompt: string, agent?: string, model?: string, ref?: string }} */
    const body = { prompt: prompt.value }
    for (const name of FIELDS) {
      const value = inputs[name].value.trim()
      if (value !== '') body[name] = value
    }
    button.disabled = true
    replace(message)
    try {
      const job = await api.submit(body, key)
      navigate(`#/jobs/${encodeURIComponent(job.job_id)}`)
    } catch (error) {
      const { field } = /** @type {{ field?: string }} */ (error)
      const input = field === 'prompt' ? prompt : FIELDS.find(name => name === field) !== undefined ? inputs[/** @type {typeof FIELDS[number]} */ (field)] : undefined
      input?.setAttribute('aria-invalid', 'true')
      input?.focus()
      replace(message, error instanceof Error ? error.message : String(error))
    } finally {
      button.disabled = false
    }
  })
  queueMicrotask(() => prompt.focus())
  return { element: form }
}
