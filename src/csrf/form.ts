/**
 * Form bodies for the CSRF check: which content types are forms (by essence, case-insensitively),
 * and their string fields, parsed by busboy (urlencoded and multipart alike, whatever the boundary
 * and whatever the fields hold). For the check the parse is bounded: it stops at the field it looks
 * for, and refuses a form with more fields than allowed, so a hostile body costs little more than
 * an honest one. Files are skipped, never buffered.
 */
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

/**
 * The string fields of a form body (files are left out), the first value of each name, in an object
 * without a prototype. A body that does not parse gives the fields read before the fault (`{}` for a
 * content type that is no form): then there is no token, and the check fails with `missing-token`,
 * never with an exception. With `limits`: the fields up to the first named `stopAt`, and a rejection
 * with a `CsrfError` `too-many-fields` past `maxFields`.
 */
export function parseFormFields(
  body: Uint8Array,
  contentType: string | undefined,
  limits: FormLimits = UNLIMITED,
): Promise<Readonly<Record<string, string>>> {
  const fields: Record<string, string> = Object.create(null)
  if (formKind(contentType) === null) return Promise.resolve(fields)
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
    return Promise.resolve(fields)
  }
  return new Promise((resolve, reject) => {
    let count = 0
    let outcome: 'open' | 'found' | 'too-many' = 'open'
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
      file.resume()
      if (outcome === 'open' && ++count > limits.maxFields) tooMany()
    })
    parser.on('partsLimit', tooMany)
    parser.on('fieldsLimit', tooMany)
    // A malformed body ends the parse where it broke; 'close' follows.
    parser.on('error', () => {})
    const settle = () => {
      if (outcome === 'too-many') reject(new CsrfError('too-many-fields', TOO_MANY_FIELDS_MESSAGE))
      else resolve(fields)
    }
    parser.on('close', settle)
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
    for (let offset = 0; offset < bytes.length && outcome === 'open'; offset += SLICE_BYTES) {
      parser.write(bytes.subarray(offset, offset + SLICE_BYTES))
    }
    if (outcome === 'open') {
      parser.end()
      return
    }
    parser.destroy()
    settle()
  })
}
