import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError } from '../config.ts'
import { AppError } from '../errors.ts'

/** A profile's name is its file's name without `.json`: plain, so it is safe in a path and a message. */
const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const SERVER_TYPES = ['stdio', 'http', 'sse', 'ws']

interface Profile {
  file: string
  servers: string[]
  /** The stdio servers' commands: the CLI starts them inside the agent's sandbox. */
  commands: McpCommand[]
}

export interface McpCommand {
  command: string
  args: string[]
}

/**
 * The MCP server profiles an operator keeps in MCP_CONFIG_DIR, one `<name>.json` per profile in
 * the CLI's `--mcp-config` format. A request may only name them: it never brings an MCP
 * configuration of its own, which would let any caller run any command on the host.
 *
 * They are read and checked once, at start-up. The CLI silently drops a server entry it cannot
 * use (no `command`, an unknown `type`, http without `url`: measured with 2.1.332), so such an
 * entry stops the start-up instead, naming the file and the server.
 */
export class McpProfiles {
  readonly #profiles: ReadonlyMap<string, Profile>

  private constructor (profiles: ReadonlyMap<string, Profile>) {
    this.#profiles = profiles
  }

  static none (): McpProfiles {
    return new McpProfiles(new Map())
  }

  /** Reads every `*.json` of `dir`; throws a ConfigError naming the first bad file. */
  static async load (dir: string | undefined): Promise<McpProfiles> {
    if (dir === undefined) return McpProfiles.none()
    let entries
    try {
      entries = await readdir(dir, { withFileTypes: true })
    } catch (error) {
      throw new ConfigError(`MCP_CONFIG_DIR ${dir} cannot be read: ${(error as Error).message}`)
    }
    const profiles = new Map<string, Profile>()
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!entry.name.endsWith('.json')) continue
      const name = entry.name.slice(0, -'.json'.length)
      const file = join(dir, entry.name)
      if (!PROFILE_NAME.test(name)) {
        throw new ConfigError(`MCP_CONFIG_DIR: ${file}: a profile name must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit`)
      }
      let text: string
      try {
        text = await readFile(file, 'utf8')
      } catch (error) {
        throw new ConfigError(`MCP_CONFIG_DIR: ${file} cannot be read: ${(error as Error).message}`)
      }
      profiles.set(name, { file, ...parseProfile(text, file) })
    }
    return new McpProfiles(profiles)
  }

  get names (): string[] {
    return [...this.#profiles.keys()]
  }

  /** Every stdio server's command line, of every profile. */
  get commands (): McpCommand[] {
    return [...this.#profiles.values()].flatMap(profile => profile.commands)
  }

  /** The files of these profiles, in order; throws a 400 naming `field` for an unknown name or a clash. */
  files (names: readonly string[], field: string): string[] {
    const owners = new Map<string, string>()
    return names.map((name, index) => {
      const profile = this.#profiles.get(name)
      if (profile === undefined) {
        const known = this.#profiles.size === 0
          ? 'this service has no MCP server profiles (MCP_CONFIG_DIR is not set or empty)'
          : `the profiles are: ${this.names.join(', ')}`
        throw new AppError('unknown_mcp_server', `body.${field}.${index} ${JSON.stringify(name)} is not an MCP server profile here: ${known}`, { details: { field: `${field}.${index}`, known: this.names } })
      }
      for (const server of profile.servers) {
        const owner = owners.get(server)
        if (owner !== undefined && owner !== name) {
          throw new AppError('validation_error', `body.${field}: profiles ${JSON.stringify(owner)} and ${JSON.stringify(name)} both define the MCP server ${JSON.stringify(server)}; ask for one of them`, { details: { field: `${field}.${index}` } })
        }
        owners.set(server, name)
      }
      return profile.file
    })
  }
}

/** The server names and commands of a profile file, or a ConfigError saying what is wrong with it. */
function parseProfile (text: string, file: string): Pick<Profile, 'servers' | 'commands'> {
  const bad = (what: string): never => { throw new ConfigError(`MCP_CONFIG_DIR: ${file} ${what}`) }
  const commands: McpCommand[] = []
  let config: unknown
  try {
    config = JSON.parse(text)
  } catch (error) {
    return bad(`is not valid JSON: ${(error as Error).message}`)
  }
  if (!isObject(config)) return bad('must be a JSON object: {"mcpServers": {"NAME": {...}}}')
  const servers = config.mcpServers
  if (!isObject(servers)) return bad('has no "mcpServers" object: {"mcpServers": {"NAME": {...}}}')
  for (const [name, server] of Object.entries(servers)) {
    const where = `server ${JSON.stringify(name)}`
    if (!isObject(server)) return bad(`${where} must be an object`)
    const type = server.type ?? 'stdio'
    if (typeof type !== 'string' || !SERVER_TYPES.includes(type)) return bad(`${where} has type ${JSON.stringify(type)}; the CLI takes ${SERVER_TYPES.join(', ')}`)
    if (type === 'stdio') {
      if (typeof server.command !== 'string' || server.command === '') return bad(`${where} needs a "command" (a non-empty string)`)
      if (server.args !== undefined && !(Array.isArray(server.args) && server.args.every(arg => typeof arg === 'string'))) return bad(`${where}: "args" must be an array of strings`)
      if (server.env !== undefined && !stringRecord(server.env)) return bad(`${where}: "env" must be an object of strings`)
      commands.push({ command: server.command, args: (server.args as string[] | undefined) ?? [] })
    } else {
      if (typeof server.url !== 'string' || !URL.canParse(server.url)) return bad(`${where} (${type}) needs a "url"`)
      if (server.headers !== undefined && !stringRecord(server.headers)) return bad(`${where}: "headers" must be an object of strings`)
    }
  }
  return { servers: Object.keys(servers), commands }
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

const stringRecord = (value: unknown): boolean => isObject(value) && Object.values(value).every(item => typeof item === 'string')
