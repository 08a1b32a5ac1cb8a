/**
 * Form bodies for the CSRF check in the framework adapters, read so that the application can still
 * read them afterwards: a node request stream is read only as far as the check needs (its first
 * bytes, up to the token) and those bytes put back at its front, the rest left in the stream, for
 * whatever body parser comes later (body-parser, multer, co-body, busboy); a body the framework
 * parsed already is taken as parsed. A Web stream (Hono) is read as far as needed to refuse, and
 * read whole to pass.
 */
import type { IncomingMessage } from 'node:http'
import { CsrfError } from '../core/errors.js'

const PEEKED = Symbol('latchkey.peekedBody')

type Peekable = IncomingMessage & { [PEEKED]?: Promise<Buffer> }

/**
 * The body of `req`, at most `maxBytes` (declared or received; past it, rejects with a `CsrfError`
 * `body-too-large` and leaves the rest unread), read from the stream and then put back: the stream
 * gives the same bytes again to the next reader, and ends after them. A stream already read by
 * someone else gives an empty body. Rejects with the stream's error if it fails or is aborted.
 */
export function peekBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const peekable = req as Peekable
  const known = peekable[PEEKED]
  if (known !== undefined) return known
  const body = readAndPutBack(req, maxBytes)
  peekable[PEEKED] = body
  return body
}

async function readAndPutBack(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  await readUntil(req, maxBytes, (chunk) => {
    chunks.push(chunk)
    return false
  })
  return Buffer.concat(chunks)
}

/**
 * Reads `req` chunk by chunk, handing each to `enough` as it arrives, until `enough` answers `true`
 * or the body ends; then puts every byte read back at the front of the stream, and leaves the rest
 * where it is (unread, possibly still on the wire) for the next reader. Resolves whether the body
 * ended. At most `maxBytes` (declared or received; past it, rejects with a `CsrfError`
 * `body-too-large` and puts nothing back). A stream already read by someone else is an ended, empty
 * body; one read whole by {@link peekBody} is handed over from its bytes. Rejects with the stream's
 * error if it fails or is aborted.
 */
export async function peekUntil(
  req: IncomingMessage,
  maxBytes: number,
  enough: (chunk: Buffer) => boolean,
): Promise<boolean> {
  const known = (req as Peekable)[PEEKED]
  if (known !== undefined) {
    const body = await known
    if (body.length > 0) enough(body)
    return true
  }
  return readUntil(req, maxBytes, enough)
}

function readUntil(
  req: IncomingMessage,
  maxBytes: number,
  enough: (chunk: Buffer) => boolean,
): Promise<boolean> {
  const declared = req.headers['content-length']
  if (declared !== undefined && Number(declared) > maxBytes)
    return Promise.reject(new CsrfError('body-too-large'))
  if (req.readableEnded || req.destroyed) return Promise.resolve(true)
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const done = () => {
      req.off('readable', onReadable)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('close', onClose)
    }
    const putBack = (ended: boolean) => {
      done()
      if (size > 0) req.unshift(Buffer.concat(chunks, size))
      resolve(ended)
    }
    const onReadable = () => {
      for (let chunk: Buffer | string | null = req.read(); chunk !== null; chunk = req.read()) {
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
        size += bytes.length
        if (size > maxBytes) {
          done()
          chunks.length = 0
          reject(new CsrfError('body-too-large'))
          return
        }
        chunks.push(bytes)
        if (enough(bytes)) return putBack(req.complete && req.readableLength === 0)
      }
      // The parser has pushed the end, and everything before it has been read. `end` is only due on
      // the next tick: put the bytes back now and it waits for the next reader instead.
      if (req.complete) putBack(true)
    }
    // An empty body can end without a `readable` event: nothing to put back then.
    const onEnd = () => {
      done()
      resolve(true)
    }
    const onError = (error: unknown) => {
      done()
      reject(error)
    }
    const onClose = () => {
      done()
      reject(new Error('the request was aborted before its body was read'))
    }
    req.on('readable', onReadable)
    req.on('end', onEnd)
    req.on('error', onError)
    req.on('close', onClose)
  })
}

/**
 * Reads a Web `ReadableStream` body chunk by chunk, handing each to `enough`, until it answers `true`
 * or the body ends: the bytes read, and whether that was the end. Stopped early, the stream is left
 * unlocked with the rest unread, for another call to go on from there. At most `maxBytes` (declared
 * or received), else a `CsrfError` `body-too-large`.
 */
export async function readWebBody(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
  declaredLength: string | null,
  enough: (chunk: Uint8Array) => boolean = () => false,
): Promise<{ readonly bytes: Uint8Array; readonly ended: boolean }> {
  if (declaredLength !== null && Number(declaredLength) > maxBytes) throw new CsrfError('body-too-large')
  if (body === null) return { bytes: new Uint8Array(0), ended: true }
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  let ended = false
  for (;;) {
    const { done, value } = await reader.read()
    if (done) {
      ended = true
      break
    }
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel().catch(() => {})
      throw new CsrfError('body-too-large')
    }
    chunks.push(value)
    if (enough(value)) break
  }
  reader.releaseLock()
  const bytes = new Uint8Array(size)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return { bytes, ended }
}

/**
 * The string fields of a body a framework parsed already (Express `req.body`, Fastify's
 * `request.body`, Koa's `ctx.request.body`): a repeated field's first value, a multipart field
 * object's `value` (@fastify/multipart). `{}` for anything that is not a plain object.
 */
export function parsedFields(body: unknown): Readonly<Record<string, string>> {
  const fields: Record<string, string> = Object.create(null)
  if (typeof body !== 'object' || body === null || Array.isArray(body) || Buffer.isBuffer(body)) return fields
  for (const [name, raw] of Object.entries(body)) {
    let value: unknown = Array.isArray(raw) ? raw[0] : raw
    if (typeof value === 'object' && value !== null && 'value' in value)
      value = (value as { value: unknown }).value
    if (typeof value === 'string') fields[name] = value
  }
  return fields
}
