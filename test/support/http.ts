import type { Server } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { SessionHandler } from '../../src/adapters/node.js'
import { withSessions } from '../../src/adapters/node.js'
import type { SessionManager } from '../../src/core/manager.js'
import type { SessionData } from '../../src/core/session.js'

/** A running test server on an ephemeral loopback port. */
export interface TestServer {
  readonly url: string
  readonly server: Server
  close(): Promise<void>
}

/** Serves `handler` with sessions from `manager` on 127.0.0.1:0. Adapter errors are collected in `errors`. */
export async function serve<T extends SessionData>(
  manager: SessionManager<T>,
  handler: SessionHandler<T>,
  errors: unknown[] = [],
): Promise<TestServer> {
  const server = createServer(withSessions(manager, handler, { onError: (error) => errors.push(error) }))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** One parsed Set-Cookie header. */
export interface ParsedSetCookie {
  readonly name: string
  readonly value: string
  readonly attributes: ReadonlyMap<string, string>
  readonly raw: string
}

/** Splits a Set-Cookie header into name, value and lower-cased attributes (test-side inspection only). */
export function parseSetCookieHeader(raw: string): ParsedSetCookie {
  const [pair = '', ...parts] = raw.split(';')
  const eq = pair.indexOf('=')
  const attributes = new Map<string, string>()
  for (const part of parts) {
    const at = part.indexOf('=')
    const name = (at === -1 ? part : part.slice(0, at)).trim().toLowerCase()
    attributes.set(name, at === -1 ? '' : part.slice(at + 1).trim())
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attributes, raw }
}

/** A minimal cookie-keeping HTTP client for one cookie name, like a browser tab. */
export class Client {
  /** The session cookie value the client holds, or undefined. */
  cookie: string | undefined
  /** Set-Cookie headers of the last response. */
  lastSetCookies: ParsedSetCookie[] = []

  constructor(
    readonly base: string,
    readonly cookieName = 'sid',
  ) {}

  /** Sends a request with the held cookie (or `headers.cookie` when given) and keeps what comes back. */
  async request(
    path: string,
    init: RequestInit & { headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...(init.headers ?? {}) }
    if (headers.cookie === undefined && this.cookie !== undefined)
      headers.cookie = `${this.cookieName}=${this.cookie}`
    const response = await fetch(this.base + path, { ...init, headers, redirect: 'manual' })
    this.lastSetCookies = response.headers.getSetCookie().map(parseSetCookieHeader)
    for (const cookie of this.lastSetCookies) {
      if (cookie.name !== this.cookieName) continue
      const cleared = cookie.attributes.get('max-age') === '0' || cookie.value === ''
      this.cookie = cleared ? undefined : cookie.value
    }
    return response
  }

  /** GET `path` and parse JSON. */
  async json<R = Record<string, unknown>>(
    path: string,
    init: RequestInit & { headers?: Record<string, string> } = {},
  ) {
    const response = await this.request(path, init)
    return { response, body: (await response.json()) as R }
  }
}

/**
 * Sends a GET with an arbitrary raw Cookie header (bytes fetch refuses: NUL, control characters, latin1)
 * over a plain socket, and resolves the status code (0 if the server closed without answering).
 */
export async function rawCookieRequest(base: string, path: string, cookie: Buffer): Promise<number> {
  const { hostname, port } = new URL(base)
  const { connect } = await import('node:net')
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    const chunks: Buffer[] = []
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => {
      const match = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(chunks).toString('latin1'))
      resolve(match ? Number(match[1]) : 0)
    })
    socket.write(
      Buffer.concat([
        Buffer.from(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\nCookie: `, 'latin1'),
        cookie,
        Buffer.from('\r\n\r\n', 'latin1'),
      ]),
    )
  })
}
