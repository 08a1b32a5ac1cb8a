/**
 * Form bodies for the CSRF check in the framework adapters, read so that the application can still
 * read them afterwards: a node request stream is read and its bytes put back at its front, for
 * whatever body parser comes later (body-parser, multer, co-body, busboy); a body the framework parsed
 * already is taken as parsed.
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

function readAndPutBack(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = req.headers['content-length']
  if (declared !== undefined && Number(declared) > maxBytes)
    return Promise.reject(new CsrfError('body-too-large'))
  if (req.readableEnded || req.destroyed) return Promise.resolve(Buffer.alloc(0))
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const done = () => {
      req.off('readable', onReadable)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('close', onClose)
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
      }
      // The parser has pushed the end, and everything before it has been read. `end` is only due on
      // the next tick: put the bytes back now and it waits for the next reader instead.
      if (!req.complete) return
      done()
      const body = Buffer.concat(chunks, size)
      if (size > 0) req.unshift(body)
      resolve(body)
    }
    // An empty body can end without a `readable` event: nothing to put back then.
    const onEnd = () => {
      done()
      resolve(Buffer.concat(chunks, size))
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

/** Reads a Web `ReadableStream` body of at most `maxBytes` (declared or received), else a `CsrfError` `body-too-large`. */
export async function readWebBody(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
  declaredLength: string | null,
): Promise<Uint8Array> {
  if (declaredLength !== null && Number(declaredLength) > maxBytes) throw new CsrfError('body-too-large')
  if (body === null) return new Uint8Array(0)
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel().catch(() => {})
      throw new CsrfError('body-too-large')
    }
    chunks.push(value)
  }
  const bytes = new Uint8Array(size)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.byteLength
  }
  return bytes
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
