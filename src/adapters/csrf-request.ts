/**
 * Requests of Express, Fastify and Koa (all node requests underneath) as the CSRF check sees them.
 * Each framework says where the request came from (its own trust-proxy setting decides `secure`) and
 * where its parsed body is; the rest is the node request.
 */
import type { IncomingMessage } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { CsrfRequest } from '../csrf/index.js'
import { formKind, parseFormFields } from '../csrf/index.js'
import { parsedFields, peekBody } from './body.js'

/** A node request for the CSRF check; subclasses name the URL, the scheme and the parsed body. */
export abstract class NodeCsrfRequest implements CsrfRequest {
  constructor(
    protected readonly req: IncomingMessage,
    private readonly maxBodyBytes: number,
  ) {}

  get method(): string {
    return this.req.method ?? 'GET'
  }

  /** The request target as received (before any router rewrote it). */
  abstract get url(): string

  /** Over TLS, or a proxy the framework trusts says so. */
  abstract get secure(): boolean

  get host(): string | undefined {
    return this.req.headers.host ?? this.req.headers[':authority']?.toString()
  }

  header(name: string): string | undefined {
    const value = this.req.headers[name]
    return Array.isArray(value) ? value.join(', ') : value
  }

  /** The body as the framework's parser left it, if one ran. */
  protected abstract parsedBody(): unknown

  /**
   * The form's string fields: from the framework's parsed body when a parser has read the stream
   * already, else read from the stream and put back for the parser that comes later.
   */
  async form(): Promise<Readonly<Record<string, string>> | null> {
    const type = this.req.headers['content-type']
    if (formKind(type) === null) return null
    if (this.req.readableEnded) return parsedFields(this.parsedBody())
    return parseFormFields(await peekBody(this.req, this.maxBodyBytes), type)
  }
}

/** Whether a node request arrived over TLS. */
export function encrypted(req: IncomingMessage): boolean {
  return (req.socket as TLSSocket | null)?.encrypted === true
}
