// The native count of multipart parts in front of busboy: on any body, in any chunking, it refuses
// only what busboy alone would refuse and finds the token wherever busboy alone finds it.
import type { Writable } from 'node:stream'
import fc from 'fast-check'
import { describe, expect, test, vi } from 'vitest'
import { CsrfError } from '../core/errors.js'
import { type FormLimits, formScan } from './form.js'

/** Bytes handed to busboy, by every parser made in this file. */
const parsedBytes = vi.hoisted(() => ({ total: 0 }))
vi.mock('busboy', async (importOriginal) => {
  const real = ((await importOriginal()) as { default: (config: unknown) => Writable }).default
  return {
    default: (config: unknown) => {
      const parser = real(config)
      const write = parser.write.bind(parser) as (chunk: Buffer) => boolean
      parser.write = ((chunk: Buffer) => {
        parsedBytes.total += chunk.length
        return write(chunk)
      }) as typeof parser.write
      return parser
    },
  }
})

type Outcome = { fields: Record<string, string> } | { refused: string }

async function scanned(
  type: string,
  chunks: readonly Buffer[],
  limits: FormLimits,
  countParts: boolean,
): Promise<Outcome> {
  const scan = formScan(type, limits, { countParts })
  let done = false
  for (const chunk of chunks) {
    if (scan.write(chunk)) {
      done = true
      break
    }
  }
  try {
    return { fields: { ...(await scan.finish(!done)) } }
  } catch (error) {
    if (!(error instanceof CsrfError)) throw error
    return { refused: error.reason }
  }
}

const NAMES = ['_csrf', 'a', 'b_csrf', '_csrfx', '_csr', 'x*', 'q\\"']

/** One part's headers: named fields, encoded names, files, no disposition, none at all. */
const partHeaders = fc.oneof(
  fc.constantFrom(...NAMES).map((name) => `Content-Disposition: form-data; name="${name}"`),
  fc.constant(`Content-Disposition: form-data; name*=utf-8''%5Fcsrf`),
  fc.constant('Content-Disposition: form-data; name=_csrf'),
  fc.constant('Content-Disposition: form-data; name="\\_csrf"'),
  fc.constant('Content-Disposition: form-data; name="_\\csrf"'),
  fc.constant('Content-Disposition: form-data; name="up"; filename="a.txt"\r\nContent-Type: text/plain'),
  fc.constant('Content-Type: text/plain'),
  fc.constant(''),
)

const value = (boundary: string) =>
  fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.constantFrom('token-value', '--', '\r\n', `--${boundary}`, `\r\n--${boundary}x`, boundary),
  )

const form = fc
  .record({
    boundary: fc.constantFrom('zz', 'WebKitFormBoundaryq7', 'a-b', 'x'),
    count: fc.nat({ max: 9 }),
    preamble: fc.constantFrom('', 'preamble\r\n', '\r\n'),
    close: fc.constantFrom('--', '', '  \r\n'),
  })
  .chain(({ boundary, count, preamble, close }) =>
    fc.record({
      boundary: fc.constant(boundary),
      preamble: fc.constant(preamble),
      close: fc.constant(close),
      parts: fc.array(fc.tuple(partHeaders, value(boundary)), { minLength: count, maxLength: count }),
      // Cut anywhere, or into single bytes.
      cuts: fc.oneof(
        fc.array(fc.nat({ max: 400 }), { maxLength: 6 }),
        fc.constant(Array.from({ length: 1200 }, (_, i) => i)),
      ),
      limits: fc.record({
        maxFields: fc.integer({ min: 1, max: 6 }),
        maxBytesBeforeStop: fc.integer({ min: 16, max: 600 }),
      }),
    }),
  )

function chunked(body: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((cut) => Math.min(cut, body.length)))].sort((a, b) => a - b)
  const chunks: Buffer[] = []
  let from = 0
  for (const point of [...points, body.length]) {
    chunks.push(body.subarray(from, point))
    from = point
  }
  return chunks
}

describe('the native count of multipart parts', () => {
  test('refuses only what busboy alone refuses, and finds the token wherever busboy does', async () => {
    await fc.assert(
      fc.asyncProperty(form, async ({ boundary, preamble, close, parts, cuts, limits }) => {
        const body = Buffer.from(
          `${preamble}${parts.map(([headers, v]) => `--${boundary}\r\n${headers}\r\n\r\n${v}\r\n`).join('')}--${boundary}${close}`,
        )
        const type = `multipart/form-data; boundary=${boundary}`
        const full: FormLimits = { ...limits, stopAt: '_csrf', maxValueBytes: 256 }
        const chunks = chunked(body, cuts)
        const alone = await scanned(type, chunks, full, false)
        const counted = await scanned(type, chunks, full, true)
        if ('fields' in alone && '_csrf' in alone.fields) expect(counted).toEqual(alone)
        else expect('refused' in counted || !('_csrf' in counted.fields)).toBe(true)
        // Where neither refuses, both read the same fields.
        if ('fields' in alone && 'fields' in counted) expect(counted).toEqual(alone)
      }),
      {
        numRuns: 4000,
        examples: [
          // Found by this test: a value that begins with the boundary right after the blank line (busboy
          // sees a delimiter at that line's CRLF, so the part's headers never end).
          [
            {
              boundary: 'WebKitFormBoundaryq7',
              preamble: '\r\n',
              close: '',
              parts: [
                ['', ''],
                ['Content-Disposition: form-data; name="_\\csrf"', '--WebKitFormBoundaryq7'],
                ['', 'token-value'],
                ['', 'token-value'],
              ],
              cuts: Array.from({ length: 1200 }, (_, i) => i),
              limits: { maxFields: 5, maxBytesBeforeStop: 234 },
            },
          ],
        ],
      },
    )
  })

  test('refuses a form of many parts before the token without parsing them, in one native pass', async () => {
    const part = (i: number) => `--zz\r\nContent-Disposition: form-data; name="f${i}"\r\n\r\n1\r\n`
    const hostile = Buffer.from(`${Array.from({ length: 5000 }, (_, i) => part(i)).join('')}--zz--\r\n`)
    const limits: FormLimits = { maxFields: 100, stopAt: '_csrf', maxBytesBeforeStop: 65_536 }
    const type = 'multipart/form-data; boundary=zz'
    const before = parsedBytes.total
    const scan = formScan(type, limits)
    expect(scan.write(hostile)).toBe(true)
    await expect(scan.finish(false)).rejects.toMatchObject({ reason: 'too-many-fields' })
    expect(parsedBytes.total - before).toBe(0)
    // busboy alone parses the first hundred parts or so to say the same.
    const alone = formScan(type, limits, { countParts: false })
    expect(alone.write(hostile)).toBe(true)
    await expect(alone.finish(false)).rejects.toMatchObject({ reason: 'too-many-fields' })
    expect(parsedBytes.total - before).toBeGreaterThan(100 * part(0).length)
    // The token among the first hundred parts is found, by busboy, as before.
    const honest = Buffer.from(
      `${Array.from({ length: 99 }, (_, i) => part(i)).join('')}--zz\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\nt\r\n${part(100)}--zz--\r\n`,
    )
    const found = formScan(type, limits)
    expect(found.write(honest)).toBe(true)
    expect((await found.finish(false))._csrf).toBe('t')
  })
})
