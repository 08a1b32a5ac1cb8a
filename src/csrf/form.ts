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
 * A {@link FormScan} of a body of this content type, bounded by `limits`. `preScan: false` turns off
 * the native count of fields (urlencoded) and parts (multipart) in front of busboy (for tests that
 * compare it with busboy alone).
 */
export function formScan(
  contentType: string | undefined,
  limits: FormLimits = UNLIMITED,
  { preScan = true }: { preScan?: boolean } = {},
): FormScan {
  const kind = formKind(contentType)
  if (kind === null) return EMPTY_SCAN
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
  // A form's fields (a multipart form's parts) are first counted natively, so that a hostile form of
  // many small fields, or of one long one, is refused without busboy parsing them; the parse takes
  // over, from the first byte, at the first field that may be the one looked for (or anything the
  // count cannot tell as busboy would).
  let counter: PreScan | null = null
  if (preScan && limits.stopAt !== undefined && Number.isFinite(budget)) {
    counter =
      kind === 'multipart'
        ? Number.isFinite(limits.maxFields)
          ? PartCounter.of(contentType, limits.stopAt, limits.maxFields, budget)
          : null
        : FieldCounter.of(parser, limits, budget)
  }
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
  /**
   * Hands what the counter held to the parser, chunk by chunk as it came: from now on it parses as it
   * would have from the start.
   */
  const handOver = (current: PreScan): void => {
    counter = null
    for (const chunk of current.received()) parse(chunk)
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
        if (verdict === 'parse') handOver(counter)
        else if (verdict !== 'more') {
          counter = null
          outcome = verdict
        }
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

/**
 * What a native count in front of busboy says after a chunk: `more` (it cannot tell yet), `too-many`
 * or `too-large` (busboy alone would refuse so, at the same chunk), or `parse` (busboy decides: hand
 * it everything received).
 */
type Verdict = 'more' | 'too-many' | 'too-large' | 'parse'

/** A native count of a body's fields or parts, in front of busboy. */
interface PreScan {
  feed(chunk: Buffer): Verdict
  /** The body as received so far, in the chunks it is to be parsed in. */
  received(): readonly Buffer[]
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
class PartCounter implements PreScan {
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
    private readonly budget: number,
  ) {}

  /** A counter for a multipart body of this type, or `null` when it has no boundary that can be read. */
  static of(
    contentType: string | undefined,
    stopAt: string,
    maxFields: number,
    budget: number,
  ): PartCounter | null {
    if (formKind(contentType) !== 'multipart') return null
    let boundary: string | null
    try {
      boundary = new MIMEType(contentType as string).params.get('boundary')
    } catch {
      return null
    }
    if (boundary === null || boundary === '') return null
    return new PartCounter(Buffer.from(`\r\n--${boundary}`, 'latin1'), Buffer.from(stopAt), maxFields, budget)
  }

  /** The body as received so far, in one piece. */
  received(): readonly Buffer[] {
    return [this.buffered]
  }

  /** Past the byte budget, busboy decides. */
  feed(chunk: Buffer): Verdict {
    const verdict = this.count(chunk)
    return verdict === 'more' && this.buffered.length >= this.budget ? 'parse' : verdict
  }

  private count(chunk: Buffer): 'more' | 'too-many' | 'parse' {
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

/**
 * The charsets (lower-cased) whose decoder in busboy gives a urlencoded name without `%` as its bytes
 * read as latin1: utf-8 (busboy decodes only names that held an escape of a byte past ASCII) and the
 * latin1 family. Any other (utf-16le, base64, ...) could turn other bytes into the name looked for:
 * busboy alone reads those.
 */
const AS_IS_CHARSETS = new Set([
  'utf-8',
  'utf8',
  'latin1',
  'ascii',
  'us-ascii',
  'iso-8859-1',
  'iso8859-1',
  'iso88591',
  'iso_8859-1',
  'windows-1252',
  'iso_8859-1:1987',
  'cp1252',
  'x-cp1252',
])

/** busboy cuts a urlencoded name past this many bytes (its default `fieldNameSize`). */
const MAX_NAME_BYTES = 100

/** Bytes that are hex digits, as busboy reads a percent escape: 1, else 0. */
const HEX = new Uint8Array(256)
for (const digit of Buffer.from('0123456789abcdefABCDEF', 'latin1')) HEX[digit] = 1

const AMP = 0x26
const EQUALS = 0x3d
const PERCENT = 0x25
const PLUS = 0x2b

/**
 * Counts the fields of a urlencoded body with native searches for `&`, for the CSRF check, and
 * answers as busboy alone (fed the same chunks, in the same slices) would, where it can tell without
 * busboy: `too-many` at the `&` that ends field `maxFields + 1` (busboy counts every field it ends,
 * empty ones between `&&` too, and stops there), and `too-large` at the end of the first slice at or
 * past the byte budget; `parse` as soon as a field may be the one looked for (its name, the bytes
 * before its first `=`, is `stopAt` or holds `%` or `+`) or busboy would fail on the body (a `%` not
 * followed by two hex digits in the part of a value busboy decodes), so that busboy decides, from
 * the first byte; `more` while it cannot tell yet.
 */
class FieldCounter implements PreScan {
  private readonly chunks: Buffer[] = []
  private size = 0
  /** Fields ended (at `&`), empty ones included, as busboy counts them. */
  private fields = 0
  private inName = true
  private nameBytes = 0
  /** Whether the name's bytes so far are the start of the one looked for. */
  private nameMatches = true
  /** Bytes of the value so far as busboy counts them (an escape as one), while it decodes them. */
  private valueBytes = 0
  /** Whether busboy still decodes the value's escapes: until it has more than `maxValueBytes`. */
  private decoding = true
  /** Hex digits of a value's escape still to come. */
  private hexDigits = 0
  /** The chunk being scanned, and where the next `&`, `=`, `%` and `+` are in it (its length: none). */
  private chunk: Buffer = EMPTY
  private readonly next = [-1, -1, -1, -1]

  private constructor(
    private readonly name: Buffer,
    private readonly maxFields: number,
    private readonly maxValueBytes: number,
    private readonly budget: number,
  ) {}

  /**
   * A counter for the body `parser` reads with these limits, or `null` when its count could differ
   * from busboy's: a charset that decodes names otherwise, a long name looked for (busboy cuts long
   * names), a field cap that is not a whole number.
   */
  static of(parser: busboy.Busboy, limits: FormLimits, budget: number): FieldCounter | null {
    const { stopAt, maxFields, maxValueBytes } = limits
    const charset = (parser as unknown as { charset?: unknown }).charset
    if (typeof charset !== 'string' || !AS_IS_CHARSETS.has(charset.toLowerCase())) return null
    if (stopAt === undefined || stopAt.length >= MAX_NAME_BYTES) return null
    if (!Number.isSafeInteger(maxFields) || maxFields < 0) return null
    return new FieldCounter(
      Buffer.from(stopAt, 'latin1'),
      maxFields,
      maxValueBytes ?? Number.POSITIVE_INFINITY,
      budget,
    )
  }

  received(): readonly Buffer[] {
    return this.chunks
  }

  feed(chunk: Buffer): Verdict {
    this.chunks.push(chunk)
    const start = this.size
    this.size += chunk.length
    if (chunk.length === 0) return 'more'
    // formScan parses a chunk in slices and checks the budget after each: the answer is known at the
    // end of the first slice that reaches it, whatever comes after.
    let end = chunk.length
    if (this.size >= this.budget) {
      const slices = Math.ceil(Math.max(this.budget - start, 1) / SLICE_BYTES)
      end = Math.min(end, slices * SLICE_BYTES)
    }
    this.chunk = chunk
    this.next.fill(-1)
    const verdict = this.scan(end)
    this.chunk = EMPTY
    return verdict ?? (this.size >= this.budget ? 'too-large' : 'more')
  }

  /** Where the next `byte` (kept in `next[slot]`) is in the chunk from `from` on; its length if none. */
  private find(slot: number, byte: number, from: number): number {
    let at = this.next[slot] as number
    if (at < from) {
      at = this.chunk.indexOf(byte, from)
      if (at === -1) at = this.chunk.length
      this.next[slot] = at
    }
    return at
  }

  /** Scans the chunk up to `end`: a verdict, or `null` when it has not found one there. */
  private scan(end: number): Verdict | null {
    const chunk = this.chunk
    let pos = 0
    for (;;) {
      while (this.hexDigits > 0) {
        if (pos >= end) return null
        // busboy fails here.
        if (HEX[chunk[pos] as number] === 0) return 'parse'
        pos++
        // busboy does not count an escape whose last digit ends a write (a slice of a chunk).
        if (--this.hexDigits === 0 && pos % SLICE_BYTES !== 0 && pos !== chunk.length) this.valueBytes++
      }
      if (pos >= end) return null
      if (this.inName) {
        const stop = Math.min(this.find(0, EQUALS, pos), this.find(1, AMP, pos), end)
        if (this.find(2, PERCENT, pos) < stop || this.find(3, PLUS, pos) < stop) return 'parse'
        const length = stop - pos
        if (this.nameMatches) {
          const at = this.nameBytes
          this.nameMatches =
            at + length <= this.name.length && chunk.compare(this.name, at, at + length, pos, stop) === 0
        }
        this.nameBytes += length
        if (stop === end) return null
        if (this.nameMatches && this.nameBytes === this.name.length) return 'parse'
        pos = stop + 1
        if (chunk[stop] === AMP) {
          if (this.endField()) return 'too-many'
        } else {
          this.inName = false
          this.valueBytes = 0
          this.decoding = true
        }
        continue
      }
      const amp = this.find(1, AMP, pos)
      const stop = Math.min(amp, end)
      if (this.decoding) {
        const percent = this.find(2, PERCENT, pos)
        if (percent < stop) {
          this.valueBytes += percent - pos
          // busboy skips the rest of a value past its size, escapes unread.
          if (this.valueBytes > this.maxValueBytes) this.decoding = false
          else {
            this.hexDigits = 2
            pos = percent + 1
            continue
          }
        } else this.valueBytes += stop - pos
      }
      if (stop === end) return null
      pos = amp + 1
      if (this.endField()) return 'too-many'
    }
  }

  /** A field ended at `&`: whether it is one too many. */
  private endField(): boolean {
    this.inName = true
    this.nameBytes = 0
    this.nameMatches = true
    return ++this.fields > this.maxFields
  }
}
