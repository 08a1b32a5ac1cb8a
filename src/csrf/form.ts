/**
 * Form bodies for the CSRF check: which content types are forms (by essence, case-insensitively),
 * and their string fields. Parsing is node's own (`URLSearchParams`, and the Fetch API's multipart
 * parser): nothing hand-written.
 */

/** The two kinds of body an HTML form sends that the `_csrf` field is read from. */
export type FormKind = 'urlencoded' | 'multipart'

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

/**
 * The string fields of a form body (files are left out), the first value of each name, in an object
 * without a prototype. A body that does not parse gives `{}`: then there is no token, and the check
 * fails with `missing-token`, never with an exception.
 */
export async function parseFormFields(
  body: Uint8Array,
  contentType: string | undefined,
): Promise<Readonly<Record<string, string>>> {
  const fields: Record<string, string> = Object.create(null)
  const kind = formKind(contentType)
  if (kind === null) return fields
  let entries: Iterable<[string, unknown]>
  if (kind === 'urlencoded') {
    entries = new URLSearchParams(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'))
  } else {
    try {
      const data = await new Response(body, { headers: { 'content-type': contentType as string } }).formData()
      entries = data.entries()
    } catch {
      return fields
    }
  }
  for (const [name, value] of entries) {
    if (typeof value === 'string' && !(name in fields)) fields[name] = value
  }
  return fields
}
