/**
 * Form bodies for the CSRF check: which content types are forms (by essence, case-insensitively),
 * and their string fields, parsed by busboy (urlencoded and multipart alike, whatever the boundary
 * and whatever the fields hold). For the check the parse is bounded and incremental: a
 * {@link FormScan} is fed the body as it arrives and says as soon as the answer is known (the field
 * looked for found, too many fields, too many bytes without it, a malformed body), so that the rest
 * of a hostile body is neither parsed nor read. Files are skipped, never buffered.
 */
import { MIMEType } from 'node:util'
import busboy from 'busboy'
import { CsrfError } from '../core/errors.js'

/** The two kinds of body an HTML form sends that the `_csrf` field is read from. */
export type FormKind = 'urlencoded' | 'multipart'

/** How much of a form the CSRF check reads. */
export interface FormLimits {
  /**
   * The most fields read (for multipart, parts, files included); one more rejects with a `CsrfError`
   * `too-many-fields`.
   */
  readonly maxFields: number
  /** Stop at the first field of this name: nothing after it is parsed. */
  readonly stopAt?: string
  /** Field values longer than this are cut to it (a token is far shorter); default no cut. */
  readonly maxValueBytes?: number
  /**
   * With `stopAt`: the most body bytes parsed without finding it; past them, a `CsrfError`
   * `too-many-fields`, so that one huge field before it costs no more than this many bytes. Default
   * no limit.
   */
  readonly maxBytesBeforeStop?: number
}

/**
 * An incremental parse of one form body: {@link FormScan.write} its bytes as they arrive until it
 * answers `true` (the answer is known: read no more), then {@link FormScan.finish}.
 */
export interface FormScan {
  /** Parses `chunk`; `true` once nothing more needs reading (parsing then stops, whatever follows). */
  write(chunk: Uint8Array): boolean
  /**
   * The fields read, once the scan answered `true` or the body `ended`; rejects with a `CsrfError`
   * `too-many-fields` past the limits. A body that did not parse gives the fields before the fault.
   */
  finish(ended: boolean): Promise<Readonly<Record<string, string>>>
}

/**
 * The body is fed to the parser in slices of this size, so that parsing stops within one slice of
 * the field looked for or of the field cap (busboy parses each write to its end): small enough to stop close, large enough that a long field costs few writes.
 */
const SLICE_BYTES = 2048

const UNLIMITED: FormLimits = Object.freeze({ maxFields: Number.POSITIVE_INFINITY })

/**
 * The form kind of a `Content-Type` value, compared by its essence (type/subtype, before any `;`),
 * case-insensitively: `Application/x-www-form-urlencoded; charset=UTF-8` is urlencoded. `null` for
 * anything else (`text/plain`, JSON, none): the token must then come in the header.
 */
export function formKind(contentType: string | undefined): FormKind | null {
  if (typeof contentType !== 'string') return null
  const end = contentType.indexOf(';')
  const essence = (end === -1 ? contentType : contentType.slice(0, end)).trim().toLowerCase()
  if (essence === 'application/x-www-form-urlencoded') return 'urlencoded'
  if (essence === 'multipart/form-data') return 'multipart'
  return null
}

const TOO_MANY_FIELDS_MESSAGE =
  'CSRF check failed: too-many-fields (the form has more fields than csrf.maxFields before its _csrf field; put _csrf first, or send the token in the x-csrf-token header)'

const TOO_MANY_BYTES_MESSAGE = (bytes: number) =>
  `CSRF check failed: too-many-fields (the form has more than ${bytes} bytes before its _csrf field; put _csrf first, or send the token in the x-csrf-token header)`

/**
 * The string fields of a whole form body (files are left out), the first value of each name, in an
 * object without a prototype. A body that does not parse gives the fields read before the fault
 * (`{}` for a content type that is no form): then there is no token, and the check fails with
 * `missing-token`, never with an exception. With `limits`: the fields up to the first named
 * `stopAt`, and a rejection with a `CsrfError` `too-many-fields` past `maxFields` (or
 * `maxBytesBeforeStop`).
 */
export function parseFormFields(
  body: Uint8Array,
  contentType: string | undefined,
  limits: FormLimits = UNLIMITED,
): Promise<Readonly<Record<string, string>>> {
  const scan = formScan(contentType, limits)
  return scan.finish(!scan.write(body))
}

/** No fields, for a body that is no form or cannot be parsed (a multipart type without a boundary). */
const EMPTY_SCAN: FormScan = {
  write: () => true,
  finish: () => Promise.resolve(Object.create(null)),
}

/**
 * A {@link FormScan} of a body of this content type, bounded by `limits`. `countParts: false` turns
 * off the native count of multipart parts (for tests that compare it with busboy alone).
 */
export function formScan(
  contentType: string | undefined,
  limits: FormLimits = UNLIMITED,
  { countParts = true }: { countParts?: boolean } = {},
): FormScan {
  if (formKind(contentType) === null) return EMPTY_SCAN
  const cap = limits.maxFields + 1
  let parser: busboy.Busboy
  try {
    parser = busboy({
      headers: { 'content-type': contentType },
      defParamCharset: 'utf8',
      limits: {
        fields: cap,
        parts: cap,
        fieldSize: limits.maxValueBytes ?? Number.POSITIVE_INFINITY,
        // A file is counted, and none of its bytes kept: busboy cuts it at once and skips the rest.
        fileSize: 0,
      },
    })
  } catch {
    // busboy refuses a multipart type without a boundary.
    return EMPTY_SCAN
  }
  const fields: Record<string, string> = Object.create(null)
  const budget =
    limits.stopAt === undefined
      ? Number.POSITIVE_INFINITY
      : (limits.maxBytesBeforeStop ?? Number.POSITIVE_INFINITY)
  let count = 0
  let parsed = 0
  let outcome: 'open' | 'found' | 'failed' | 'too-many' | 'too-large' = 'open'
  const tooMany = () => {
    if (outcome === 'open') outcome = 'too-many'
  }
  parser.on('field', (name, value) => {
    if (outcome !== 'open') return
    if (++count > limits.maxFields) return tooMany()
    if (!(name in fields)) fields[name] = value
    if (name === limits.stopAt) outcome = 'found'
  })
  parser.on('file', (_name, file) => {
    // A parse stopped inside a file ends it with an error: it is skipped all the same.
    file.on('error', () => {})
    file.resume()
    if (outcome === 'open' && ++count > limits.maxFields) tooMany()
  })
  parser.on('partsLimit', tooMany)
  parser.on('fieldsLimit', tooMany)
  // busboy reports a malformed part and goes on with the next; a malformed body ends the parse
  // where it broke (the parser is errored then, see write).
  parser.on('error', () => {})
  const closed = new Promise<void>((resolve) => parser.on('close', resolve))
  // A multipart form's parts are first counted natively, so that a hostile form of many small parts
  // is refused without busboy parsing each one; the parse takes over at the first part that may be
  // the one looked for, or once the byte budget is spent.
  let counter =
    countParts && limits.stopAt !== undefined && Number.isFinite(limits.maxFields) && Number.isFinite(budget)
      ? PartCounter.of(contentType, limits.stopAt, limits.maxFields)
      : null
  const parse = (bytes: Buffer): void => {
    for (let offset = 0; offset < bytes.length && outcome === 'open'; offset += SLICE_BYTES) {
      const slice = bytes.subarray(offset, offset + SLICE_BYTES)
      parser.write(slice)
      parsed += slice.length
      if (outcome !== 'open') break
      if (parser.errored !== null) outcome = 'failed'
      else if (parsed >= budget) outcome = 'too-large'
    }
  }
  /** Hands what the counter held to the parser: from now on it parses as it would have from the start. */
  const handOver = (current: PartCounter): void => {
    counter = null
    parse(current.received())
  }
  const settle = (): Promise<Readonly<Record<string, string>>> => {
    if (outcome === 'too-many')
      return Promise.reject(new CsrfError('too-many-fields', TOO_MANY_FIELDS_MESSAGE))
    if (outcome === 'too-large')
      return Promise.reject(new CsrfError('too-many-fields', TOO_MANY_BYTES_MESSAGE(budget)))
    return Promise.resolve(fields)
  }
  return {
    write(chunk) {
      const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
      if (counter === null) parse(bytes)
      else {
        const verdict = counter.feed(bytes)
        if (verdict === 'too-many') outcome = 'too-many'
        else if (verdict === 'parse' || counter.size >= budget) handOver(counter)
      }
      return outcome !== 'open'
    },
    finish(ended) {
      if (counter !== null && outcome === 'open' && ended) handOver(counter)
      if (outcome === 'open' && ended) {
        parser.end()
        return closed.then(settle)
      }
      parser.destroy()
      return settle()
    },
  }
}

/** The most bytes of one part's headers busboy reads (node's limit): past it, the parse decides. */
const MAX_PART_HEADER_BYTES = 16 * 1024

const EMPTY = Buffer.alloc(0)
const CRLF = Buffer.from('\r\n')
const CRLF_CRLF = Buffer.from('\r\n\r\n')

/**
 * Counts the parts of a multipart body with native searches, for the CSRF check: it answers
 * `too-many` once more than `maxFields` parts have begun and none of their headers holds the bytes of
 * the name looked for (busboy takes a name as written: it decodes no `name*=` and unescapes no `\\`,
 * which the tests check), so that busboy would have counted too many fields before finding it;
 * `parse` as soon as a part's headers might name it, or anything is unusual (a close delimiter,
 * padding after a boundary, a delimiter inside a part's headers, headers past node's size), so that
 * busboy decides; `more` while it cannot tell yet. The delimiter is busboy's (`CRLF--boundary`, the
 * body read as if it began with CRLF), so both see the same parts.
 */
class PartCounter {
  /** The body so far (one chunk as it came, more than one copied together). */
  private buffered: Buffer = EMPTY
  /** Where the search goes on: the start of a part's headers, or of the bytes still to search. */
  private cursor = 0
  /** Whether the body's start, where the first boundary needs no CRLF before it, is still to be looked at. */
  private atStart = true
  private inHeaders = false
  private parts = 0

  private constructor(
    private readonly delimiter: Buffer,
    private readonly name: Buffer,
    private readonly maxFields: number,
  ) {}

  /** A counter for a multipart body of this type, or `null` when it has no boundary that can be read. */
  static of(contentType: string | undefined, stopAt: string, maxFields: number): PartCounter | null {
    if (formKind(contentType) !== 'multipart') return null
    let boundary: string | null
    try {
      boundary = new MIMEType(contentType as string).params.get('boundary')
    } catch {
      return null
    }
    if (boundary === null || boundary === '') return null
    return new PartCounter(Buffer.from(`\r\n--${boundary}`, 'latin1'), Buffer.from(stopAt), maxFields)
  }

  /** How many bytes of the body it holds. */
  get size(): number {
    return this.buffered.length
  }

  /** The body as received so far. */
  received(): Buffer {
    return this.buffered
  }

  feed(chunk: Buffer): 'more' | 'too-many' | 'parse' {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    const body = this.buffered
    for (;;) {
      if (this.inHeaders) {
        const start = this.cursor
        const end = headersEnd(body, start)
        if (end === -1) return body.length - start > MAX_PART_HEADER_BYTES ? 'parse' : 'more'
        // busboy ends a part wherever a delimiter starts, also inside its headers or at their blank
        // line's CRLF: such a part is for busboy. Known once the bytes that could finish one are here.
        if (body.length < end - 2 + this.delimiter.length) return 'more'
        const cut = body.indexOf(this.delimiter, start - 2)
        if (cut !== -1 && cut < end) return 'parse'
        const headers = body.subarray(start, end)
        if (headers.includes(this.name)) return 'parse'
        if (++this.parts > this.maxFields) return 'too-many'
        this.inHeaders = false
        this.cursor = end
        continue
      }
      const at = this.cursor
      const after = this.boundaryEnd(body)
      if (after === -1) return 'more'
      if (body.length < after + 2) {
        // Found again, from where it was looked for, once more bytes have come.
        if (after === this.delimiter.length - 2 && at === 0) this.atStart = true
        else this.cursor = after - this.delimiter.length
        return 'more'
      }
      // Anything but CRLF after a boundary (the close delimiter's `--`, padding) is for busboy.
      if (body.compare(CRLF, 0, 2, after, after + 2) !== 0) return 'parse'
      this.inHeaders = true
      this.cursor = after + 2
    }
  }

  /** Where the next boundary found from the cursor ends, or -1 (the cursor then moved on) when none is there yet. */
  private boundaryEnd(body: Buffer): number {
    if (this.atStart) {
      // busboy reads the body as if a CRLF came first: a body may begin with `--boundary`.
      const dashed = this.delimiter.length - 2
      if (body.length < dashed) return -1
      this.atStart = false
      if (body.compare(this.delimiter, 2, this.delimiter.length, 0, dashed) === 0) return dashed
    }
    const at = body.indexOf(this.delimiter, this.cursor)
    if (at === -1) {
      // The next search starts where a delimiter cut by the chunk's end could begin.
      this.cursor = Math.max(this.cursor, body.length - this.delimiter.length + 1)
      return -1
    }
    return at + this.delimiter.length
  }
}

/** Where the headers starting at `start` end (after their blank line), or -1 when they have not yet. */
function headersEnd(body: Buffer, start: number): number {
  // No headers at all: the blank line comes first.
  if (body.length >= start + 2 && body[start] === 13 && body[start + 1] === 10) return start + 2
  const at = body.indexOf(CRLF_CRLF, start)
  return at === -1 ? -1 : at + CRLF_CRLF.length
}
