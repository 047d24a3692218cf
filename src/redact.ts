/**
 * Hides the credentials of every URL in `text` (`https://user:token@host/...` becomes
 * `https://***@host/...`). git puts the remote's URL, userinfo included, into some of its errors
 * (a dumb-HTTP fetch names the URL it could not read), and those errors reach /health, job errors
 * and logs: everything the service stores or shows goes through here first.
 */
export function redactCredentials (text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@'"]+@/gi, '$1***@')
}
