#!/usr/bin/env node
// Debian's Firefox ESR, as playwright-core's BiDi Firefox (channel moz-firefox) launches it, with one
// gap closed: playwright-core 1.65 sends `emulation.setMediaFeaturesOverride` (prefers-color-scheme)
// for every new context and page, and Firefox 153 ESR answers "unknown command", so no context
// opens. Playwright runs this file as the browser's executable: it starts the real Firefox with
// the same arguments and relays its WebDriver BiDi socket, answering that one command itself
// (success: the dashboard's tests do not emulate a color scheme, so nothing is lost) and passing
// every other message through unchanged, both ways.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import WebSocket, { WebSocketServer } from 'ws'

const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr'
const ANSWERED_HERE = new Set(['emulation.setMediaFeaturesOverride'])

const firefox = spawn(FIREFOX, process.argv.slice(2), { stdio: ['ignore', 'inherit', 'pipe'] })
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => firefox.kill(signal))
firefox.on('exit', (code, signal) => process.exit(code ?? (signal === null ? 0 : 1)))

// Firefox says where it listens on stderr; Playwright reads that line from ours, so it gets the relay's.
const lines = createInterface({ input: firefox.stderr })
lines.on('line', line => {
  const match = /WebDriver BiDi listening on (ws:\/\/\S+)$/.exec(line)
  if (match === null) {
    process.stderr.write(`${line}\n`)
    return
  }
  const upstream = match[1]
  const relay = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  relay.on('listening', () => process.stderr.write(`WebDriver BiDi listening on ws://127.0.0.1:${relay.address().port}\n`))
  relay.on('connection', (client, request) => {
    const browser = new WebSocket(`${upstream}${request.url ?? ''}`)
    const pending = []
    browser.on('open', () => { for (const message of pending.splice(0)) browser.send(message) })
    browser.on('message', data => client.send(data.toString()))
    browser.on('close', () => client.close())
    browser.on('error', () => client.terminate())
    client.on('message', data => {
      const text = data.toString()
      const message = JSON.parse(text)
      if (ANSWERED_HERE.has(message.method)) {
        client.send(JSON.stringify({ type: 'success', id: message.id, result: {} }))
      } else if (browser.readyState === WebSocket.OPEN) {
        browser.send(text)
      } else {
        pending.push(text)
      }
    })
    client.on('close', () => browser.close())
  })
})
