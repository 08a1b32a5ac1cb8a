// The native counts in front of busboy: of multipart parts (on any body, in any chunking, it refuses
// only what busboy alone would refuse and finds the token wherever busboy alone finds it) and of
// urlencoded fields (on any body, in any chunking, the same answer as busboy alone, at the same chunk).
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

type Outcome = { fields: Record<string, string> } | { refused: string; message: string }

/** What the scan answers for a body fed in these chunks, and how many it read (all, when it asked for all). */
async function scannedAt(
  type: string,
  chunks: readonly Buffer[],
  limits: FormLimits,
  preScan: boolean,
): Promise<{ outcome: Outcome; read: number }> {
  const scan = formScan(type, limits, { preScan })
  let read = 0
  let done = false
  for (const chunk of chunks) {
    read++
    if (scan.write(chunk)) {
      done = true
      break
    }
  }
  try {
    return { outcome: { fields: { ...(await scan.finish(!done)) } }, read }
  } catch (error) {
    if (!(error instanceof CsrfError)) throw error
    return { outcome: { refused: error.reason, message: error.message }, read }
  }
}

async function scanned(
  type: string,
  chunks: readonly Buffer[],
  limits: FormLimits,
  preScan: boolean,
): Promise<Outcome> {
  return (await scannedAt(type, chunks, limits, preScan)).outcome
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
    const alone = formScan(type, limits, { preScan: false })
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

/** Field names: the one looked for as is, encoded and near it, and any mix of the bytes busboy decodes. */
const fieldName = fc.oneof(
  fc.constantFrom(
    '_csrf',
    '%5Fcsrf',
    '%5fcsrf',
    '_%63srf',
    '_csrf+',
    '+_csrf',
    '_csrf%',
    '_csr',
    '_csrfx',
    'x_csrf',
    'a',
    '',
    '%',
    '%4',
    '%zz',
    '%41',
    '+',
    'é',
    'n'.repeat(120),
  ),
  fc.string({
    unit: fc.constantFrom('_', 'c', 's', 'r', 'f', 'a', '%', '5', 'F', '4', '1', 'z', '+'),
    maxLength: 7,
  }),
)

/** Values: short mixes of escapes and the rest, and long runs (past any value size, or 2 KiB slices), maybe with a bad escape at the end. */
const fieldValue = fc.oneof(
  fc.string({ unit: fc.constantFrom('x', '%', '4', '1', 'F', 'z', '+', '=', 'é'), maxLength: 10 }),
  fc.constant('token-value'),
  fc
    .record({
      unit: fc.constantFrom('x', '%41', '%4', 'é', '+'),
      times: fc.integer({ min: 1, max: 1000 }),
      tail: fc.constantFrom('', '%zz', '%', '%4', 'x'),
    })
    .map(({ unit, times, tail }) => unit.repeat(times) + tail),
)

type Cuts = { at: number[] } | { every: number }

const urlencodedForm = fc.record({
  type: fc.constantFrom(
    'application/x-www-form-urlencoded',
    'application/x-www-form-urlencoded; charset=UTF-8',
    'Application/X-WWW-Form-Urlencoded;charset=latin1',
    'application/x-www-form-urlencoded; charset=utf-16le',
  ),
  // A field: a name alone (no `=`), or a name and a value; empty names alone make `&&`.
  fields: fc.array(fc.tuple(fieldName, fc.option(fieldValue, { nil: null })), { maxLength: 10 }),
  before: fc.constantFrom('', '&', '='),
  after: fc.constantFrom('', '&', '=', '&&'),
  // Cut anywhere, into single bytes, or into pieces of one size (some past a 2 KiB slice).
  cuts: fc.oneof(
    fc.array(fc.nat({ max: 6000 }), { maxLength: 8 }).map((at): Cuts => ({ at })),
    fc.constant<Cuts>({ every: 1 }),
    fc.integer({ min: 1, max: 5000 }).map((every): Cuts => ({ every })),
  ),
  limits: fc.record({
    maxFields: fc.integer({ min: 0, max: 8 }),
    maxBytesBeforeStop: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 9000 })),
    maxValueBytes: fc.option(fc.oneof(fc.integer({ min: 0, max: 12 }), fc.constant(128)), { nil: undefined }),
  }),
})

type UrlencodedForm = typeof urlencodedForm extends fc.Arbitrary<infer T> ? T : never

function urlencodedBody({ fields, before, after }: UrlencodedForm): Buffer {
  const text = fields.map(([name, v]) => (v === null ? name : `${name}=${v}`)).join('&')
  return Buffer.from(before + text + after)
}

function cut(body: Buffer, cuts: Cuts): Buffer[] {
  if ('at' in cuts) return chunked(body, cuts.at)
  const chunks: Buffer[] = []
  for (let at = 0; at < body.length; at += cuts.every) chunks.push(body.subarray(at, at + cuts.every))
  return chunks
}

/** A form with these fields, the rest of it as the generator's defaults. */
function example(fields: [string, string | null][], cuts: Cuts, limits: UrlencodedForm['limits']) {
  const form: UrlencodedForm = {
    type: 'application/x-www-form-urlencoded',
    fields,
    before: '',
    after: '',
    cuts,
    limits,
  }
  return [form] as [UrlencodedForm]
}

describe('the native count of urlencoded fields', () => {
  test('answers as busboy alone does, at the same chunk, on any body in any chunking', async () => {
    await fc.assert(
      fc.asyncProperty(urlencodedForm, async (form) => {
        const full: FormLimits = { ...form.limits, stopAt: '_csrf' }
        const chunks = cut(urlencodedBody(form), form.cuts)
        const alone = await scannedAt(form.type, chunks, full, false)
        const counted = await scannedAt(form.type, chunks, full, true)
        expect(counted).toEqual(alone)
      }),
      {
        numRuns: 4000,
        examples: [
          // An encoded name before the cap: busboy finds it, so the count must hand over there.
          example(
            [
              ['%5Fcsrf', 't'],
              ['a', null],
              ['b', null],
            ],
            { at: [] },
            { maxFields: 1, maxBytesBeforeStop: 600, maxValueBytes: undefined },
          ),
          // An empty field is counted by busboy's cap but never seen as a field: the token as field
          // maxFields + 1 after one is found.
          example(
            [
              ['a', '1'],
              ['', null],
              ['_csrf', 't'],
              ['b', null],
            ],
            { every: 1 },
            { maxFields: 2, maxBytesBeforeStop: 600, maxValueBytes: undefined },
          ),
          // An escape that ends a write is not counted into the value's size by busboy, which then
          // decodes (and fails on) one escape more.
          example(
            [
              ['a', '%41%41%zz'],
              ['b', null],
              ['c', null],
            ],
            { at: [5] },
            { maxFields: 1, maxBytesBeforeStop: 600, maxValueBytes: 1 },
          ),
          // The budget reached inside the token's name, a byte at a time.
          example(
            [
              ['a', 'xxxxx'],
              ['_csrf', 't'],
            ],
            { every: 1 },
            { maxFields: 5, maxBytesBeforeStop: 10, maxValueBytes: undefined },
          ),
        ],
      },
    )
  })

  test('refuses a form of many fields, or of one long field, before the token without parsing it', async () => {
    const type = 'application/x-www-form-urlencoded'
    const limits: FormLimits = {
      maxFields: 100,
      stopAt: '_csrf',
      maxBytesBeforeStop: 65_536,
      maxValueBytes: 128,
    }
    const fields = (count: number) => Array.from({ length: count }, (_, i) => `f${i}=1`).join('&')
    const feed = (scan: ReturnType<typeof formScan>, body: Buffer) => {
      for (let at = 0; at < body.length; at += 65_536)
        if (scan.write(body.subarray(at, at + 65_536))) return true
      return false
    }
    const hostile: [Buffer, RegExp][] = [
      [Buffer.from(fields(5000)), /more fields than csrf\.maxFields/],
      [Buffer.from(`a=${'x'.repeat(1 << 20)}`), /more than 65536 bytes/],
      [Buffer.from('&'.repeat(5000)), /more fields than csrf\.maxFields/],
    ]
    for (const [body, message] of hostile) {
      const before = parsedBytes.total
      const scan = formScan(type, limits)
      expect(feed(scan, body)).toBe(true)
      await expect(scan.finish(false)).rejects.toMatchObject({ reason: 'too-many-fields', message })
      expect(parsedBytes.total - before).toBe(0)
      // busboy alone parses up to a hundred fields or 64 KiB to say the same.
      const alone = formScan(type, limits, { preScan: false })
      expect(feed(alone, body)).toBe(true)
      await expect(alone.finish(false)).rejects.toMatchObject({ reason: 'too-many-fields', message })
      expect(parsedBytes.total - before).toBeGreaterThan(100)
    }
    // The token among the first hundred fields is found, by busboy, written as is or encoded.
    for (const name of ['_csrf', '%5Fcsrf']) {
      const honest = Buffer.from(`${fields(99)}&${name}=t&${fields(5000)}`)
      const found = formScan(type, limits)
      expect(feed(found, honest)).toBe(true)
      expect((await found.finish(false))._csrf).toBe('t')
    }
  })
})
