/**
 * Makes the screenshots small: an 8-bit truecolour PNG (what Chromium writes) becomes a palette PNG of
 * its 256 most frequent colours, every other colour drawn as the nearest of them. A page is mostly flat
 * backgrounds and anti-aliased text, so the picture looks the same at a third of the bytes or less.
 */
import { crc32, deflateSync, inflateSync } from 'node:zlib'

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

interface Image {
  readonly width: number
  readonly height: number
  /** RGB, 3 bytes a pixel, row after row. */
  readonly rgb: Buffer
}

/** Decodes an 8-bit RGB or RGBA, non-interlaced PNG (alpha dropped: screenshots are opaque). */
function decode(png: Buffer): Image {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG')
  let width = 0
  let height = 0
  let channels = 0
  const data: Buffer[] = []
  for (let at = 8; at < png.length; ) {
    const length = png.readUInt32BE(at)
    const type = png.toString('latin1', at + 4, at + 8)
    const body = png.subarray(at + 8, at + 8 + length)
    if (type === 'IHDR') {
      width = body.readUInt32BE(0)
      height = body.readUInt32BE(4)
      const [depth, colour, , , interlace] = [body[8], body[9], body[10], body[11], body[12]]
      if (depth !== 8 || (colour !== 2 && colour !== 6) || interlace !== 0) throw new Error('unsupported PNG')
      channels = colour === 6 ? 4 : 3
    } else if (type === 'IDAT') {
      data.push(body)
    }
    at += 12 + length
  }
  const raw = inflateSync(Buffer.concat(data))
  const stride = width * channels
  const rows = Buffer.alloc(stride * height)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)] as number
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1))
    const out = rows.subarray(y * stride, (y + 1) * stride)
    const up = y > 0 ? rows.subarray((y - 1) * stride, y * stride) : null
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? (out[x - channels] as number) : 0
      const b = up ? (up[x] as number) : 0
      const c = up && x >= channels ? (up[x - channels] as number) : 0
      let predicted = 0
      if (filter === 1) predicted = a
      else if (filter === 2) predicted = b
      else if (filter === 3) predicted = (a + b) >> 1
      else if (filter === 4) {
        const p = a + b - c
        const pa = Math.abs(p - a)
        const pb = Math.abs(p - b)
        const pc = Math.abs(p - c)
        predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
      }
      out[x] = ((line[x] as number) + predicted) & 0xff
    }
  }
  const rgb = Buffer.alloc(width * height * 3)
  for (let i = 0, j = 0; i < rows.length; i += channels, j += 3) {
    rgb[j] = rows[i] as number
    rgb[j + 1] = rows[i + 1] as number
    rgb[j + 2] = rows[i + 2] as number
  }
  return { width, height, rgb }
}

function chunk(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(body.length, 0)
  head.write(type, 4, 'latin1')
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), body])), 0)
  return Buffer.concat([head, body, crc])
}

/** `png` as a palette PNG of at most 256 colours. */
export function toPalettePng(png: Buffer): Buffer {
  const { width, height, rgb } = decode(png)
  const counts = new Map<number, number>()
  for (let i = 0; i < rgb.length; i += 3) {
    const colour = ((rgb[i] as number) << 16) | ((rgb[i + 1] as number) << 8) | (rgb[i + 2] as number)
    counts.set(colour, (counts.get(colour) ?? 0) + 1)
  }
  const palette = [...counts.entries()]
    .sort((x, y) => y[1] - x[1])
    .slice(0, 256)
    .map(([colour]) => colour)
  const index = new Map<number, number>()
  const nearest = (colour: number): number => {
    let found = index.get(colour)
    if (found !== undefined) return found
    let best = Number.POSITIVE_INFINITY
    found = 0
    for (let i = 0; i < palette.length; i++) {
      const p = palette[i] as number
      const dr = ((p >> 16) & 0xff) - ((colour >> 16) & 0xff)
      const dg = ((p >> 8) & 0xff) - ((colour >> 8) & 0xff)
      const db = (p & 0xff) - (colour & 0xff)
      const distance = 3 * dr * dr + 4 * dg * dg + 2 * db * db
      if (distance < best) {
        best = distance
        found = i
      }
    }
    index.set(colour, found)
    return found
  }
  const rows = Buffer.alloc((width + 1) * height)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3
      const colour = ((rgb[i] as number) << 16) | ((rgb[i + 1] as number) << 8) | (rgb[i + 2] as number)
      rows[y * (width + 1) + 1 + x] = nearest(colour)
    }
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 8
  header[9] = 3
  const plte = Buffer.alloc(palette.length * 3)
  palette.forEach((colour, i) => {
    plte[i * 3] = (colour >> 16) & 0xff
    plte[i * 3 + 1] = (colour >> 8) & 0xff
    plte[i * 3 + 2] = colour & 0xff
  })
  return Buffer.concat([
    SIGNATURE,
    chunk('IHDR', header),
    chunk('PLTE', plte),
    chunk('IDAT', deflateSync(rows, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ])
}
